"""`kron export --format hf`: a transformers folder, Kronecker (remote code) or dense (`--dense`).

Kronecker: config.json (model_type kron_<family>, e.g. kron_bert, `auto_map` to the shipped configuration_kron.py
and modeling_kron.py, `kron_layers` with every factored module's shape), model.safetensors with the factors,
tokenizer files. The shipped code is the family's export template (kroncli/families.py names it; hf_template/ for
every encoder family): it subclasses the family's own transformers classes, named in two lines that the export
writes, and needs only torch + transformers:
    AutoModelForSequenceClassification.from_pretrained(folder, trust_remote_code=True)
Dense: an ordinary checkpoint of the same architecture with A (x) B materialised (`dense_weight`).
"""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path

import torch
from torch import nn

from .. import families
from ..errors import KronError
from ..kron.layers import KroneckerEmbedding, KroneckerLinear, KroneckerTiedDecoder

TEMPLATES = Path(__file__).parent
TEMPLATE_FILES = ("configuration_kron.py", "modeling_kron.py")


def kron_layers(model: nn.Module) -> dict[str, dict]:
    """Every Kronecker module of `model` by name, with the shape the shipped modelling code rebuilds."""
    out = {}
    for name, m in model.named_modules():
        if isinstance(m, KroneckerLinear):
            out[name] = {"kind": "linear", "m1": m.m1, "n1": m.n1, "m2": m.m2, "n2": m.n2, "rank": m.rank,
                         "bias": m.bias is not None}
        elif isinstance(m, KroneckerEmbedding):
            out[name] = {"kind": "embedding", "f": m.f, "rank": m.rank, "num_embeddings": m.num_embeddings,
                         "embedding_dim": m.embedding_dim}
    return out


def _swap(model: nn.Module, name: str, new: nn.Module) -> None:
    parent, _, attr = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, attr, new)


def _original_kinds(model: nn.Module) -> dict[str, families.ModuleKind]:
    """The module type each module of the architecture has before factoring (GPT-2's are Conv1D), from an empty copy
    built on the meta device (no memory, no init)."""
    with torch.device("meta"):
        ref = type(model)(copy.deepcopy(model.config))
    return {name: k for name, m in ref.named_modules() if (k := families.module_kind(m)) is not None}


def _dense_linear(m: KroneckerLinear, kind: families.ModuleKind | None) -> nn.Module:
    """The nn.Linear, or the Conv1D (in x out: the transpose) the architecture had, equal to `m`."""
    weight = m.dense_weight()
    if kind is not None and kind.weight == "in_out":
        new = kind.resolve()(m.out_features, m.in_features)
        new.to(m.a.dtype)
        new.weight.copy_(weight.t())
    else:
        new = nn.Linear(m.in_features, m.out_features, bias=m.bias is not None, dtype=m.a.dtype)
        new.weight.copy_(weight)
    if m.bias is not None:
        new.bias.copy_(m.bias)
    return new


@torch.no_grad()
def densify(model: nn.Module) -> nn.Module:
    """A copy of `model` with every Kronecker module replaced by the nn.Linear / Conv1D / nn.Embedding it equals."""
    model = copy.deepcopy(model)
    kinds = _original_kinds(model)
    tied = isinstance(model.get_output_embeddings(), KroneckerTiedDecoder) if hasattr(
        model, "get_output_embeddings") else False
    for name, m in list(model.named_modules()):
        if isinstance(m, KroneckerLinear):
            new = _dense_linear(m, kinds.get(name))
        elif isinstance(m, KroneckerEmbedding):
            new = nn.Embedding(m.num_embeddings, m.embedding_dim, padding_idx=m.padding_idx, dtype=m.a.dtype)
            new.weight.copy_(m.dense_weight())
        elif isinstance(m, KroneckerTiedDecoder):
            if not families.find(model.config) or not families.find(model.config).is_decoder:
                raise KronError("a tied Kronecker decoder (masked-LM head) cannot be exported; export a task model")
            continue  # a decoder's tied LM head: re-tied to the dense table below
        else:
            continue
        _swap(model, name, new)
    if tied:  # an ordinary tied head: the Linear shares the dense embedding's weight, as save_pretrained expects
        emb, old = model.get_input_embeddings(), model.get_output_embeddings()
        head = nn.Linear(emb.embedding_dim, emb.num_embeddings, bias=old.bias is not None, dtype=emb.weight.dtype)
        head.weight = emb.weight
        if old.bias is not None:
            head.bias = old.bias
        model.set_output_embeddings(head)
    return model


def write_hf(model: nn.Module, tokenizer, out: Path) -> dict:
    """The Kronecker folder (out must be a fresh folder); returns what it wrote."""
    from safetensors.torch import save_model

    family = families.family_of(model.config)
    kind = "causal_lm" if family.is_decoder else "classification"
    arch, expected = type(model), family.head_model_class(kind, model.config)
    if arch is not expected:
        raise KronError(f"--format hf ships modelling code for {expected.__name__} ({family.name}), not "
                        f"{arch.__name__}; use --format onnx, or --format hf --dense for a plain checkpoint")
    layers = kron_layers(model)
    cfg = model.config.to_dict()
    cfg.pop("_attn_implementation_autoset", None)
    base_config, model_type = type(model.config).__name__, f"kron_{family.model_type}"
    cfg.update(model_type=model_type, architectures=[f"Kron{arch.__name__}"], kron_layers=layers,
               kron_tied_head=isinstance(model.get_output_embeddings(), KroneckerTiedDecoder),
               auto_map={"AutoConfig": f"configuration_kron.Kron{base_config}",
                         family.heads[kind]: f"modeling_kron.Kron{arch.__name__}"})
    (out / "config.json").write_text(json.dumps(cfg, indent=2, sort_keys=True, default=str) + "\n")
    save_model(model, str(out / "model.safetensors"), metadata={"format": "pt"})
    filled = {"BASE_CONFIG": base_config, "MODEL_TYPE": model_type, "BASE_MODEL": arch.__name__}
    for name in TEMPLATE_FILES:
        (out / name).write_text(_fill(TEMPLATES / family.export_template / name, filled))
    tokenizer.save_pretrained(out)
    return {"kron_layers": len(layers)}


def _fill(template: Path, values: dict[str, str]) -> str:
    """The template's text with each `NAME = "..."` line that `values` names set to its value."""
    text = template.read_text()
    for name, value in values.items():
        text = re.sub(rf'^{name} = "[^"]*"', f'{name} = "{value}"', text, count=1, flags=re.M)
    return text


def write_dense(model: nn.Module, tokenizer, out: Path) -> dict:
    """An ordinary transformers checkpoint with the Kronecker products materialised."""
    dense = densify(model)
    dense.config.architectures = [type(dense).__name__]
    dense.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return {"kron_layers": 0, "dense_params": sum(p.numel() for p in dense.parameters())}
