"""Save and reload a Kronecker student: safetensors weights + HF config + kron.json (factor shapes).

kron.json stores the architecture class and every factored module's shape and rank, so the model is
rebuilt from the config, re-factored with empty Kronecker modules, and the weights load strictly: the
architecture cannot drift between save and load.
"""

from __future__ import annotations

import contextlib
import errno
from pathlib import Path
from typing import Iterator

import torch
from safetensors import SafetensorError
from safetensors.torch import load_model, save_model

from .errors import KronError, first_line
from .integrity import check_folder, damaged, guard, read_json_object
from .kron.search import Choice
from .surgery import apply_choices
from .workspace import atomic_dir, atomic_write_json, recover, versions

KRON_CONFIG = "kron.json"
WEIGHTS = "model.safetensors"
FORMAT_VERSION = 1


def _failed_write(error: BaseException) -> bool:
    """A write that ran out of room (a full disk, a quota, a file-size limit), as safetensors, the OS and torch's zip
    writer ("unexpected pos", "file write failed") report it."""
    if isinstance(error, SafetensorError):
        return True
    if isinstance(error, OSError):
        return error.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)
    text = str(error)
    return isinstance(error, RuntimeError) and any(k in text for k in ("unexpected pos", "file write failed",
                                                                        "PytorchStreamWriter"))


@contextlib.contextmanager
def model_dir_write(out_dir: Path) -> Iterator[Path]:
    """`atomic_dir` for a model folder (student, task teacher or student): a write that fails is one line naming the
    folder, and the folder as it was is kept."""
    out_dir = Path(out_dir)
    try:
        with atomic_dir(out_dir) as tmp:
            yield tmp
    except Exception as e:
        if not _failed_write(e):
            raise
        raise KronError(f"could not write {out_dir} ({first_line(e)}); free disk space (or raise the quota) and "
                        f"run the command again: {out_dir.name} was not replaced") from None


def save_student(model: torch.nn.Module, choices: list[Choice], out_dir: Path, tokenizer=None,
                 extra: dict | None = None) -> None:
    """Write the student folder atomically (a crash leaves the previous student intact). A narrow student's
    training-only projection goes to its own file, so model.safetensors holds the deployable student alone."""
    from .narrow import attach_projection, detach_projection, save_projection

    with model_dir_write(Path(out_dir)) as tmp:
        model.config.save_pretrained(tmp)
        projection = detach_projection(model)
        try:
            save_model(model, str(tmp / WEIGHTS), metadata={"format": "pt"})
        finally:
            attach_projection(model, projection)
        if projection is not None:
            save_projection(projection, tmp)
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)
        atomic_write_json(tmp / KRON_CONFIG, {
            "format_version": FORMAT_VERSION,
            "architecture": type(model).__name__,
            "kroncli_version": versions().get("kroncli", "unknown"),
            "layers": {c.name: c.row() for c in choices if c.rank > 0},
            **(extra or {}),
        })


def student_dir(path: str | Path) -> Path:
    """Accept a workspace or a student folder (a folder swap a killed save left half done is finished first)."""
    path = Path(path)
    for folder in (path.parent, path):
        recover(folder)
    for cand in (path, path / "student"):
        if (cand / KRON_CONFIG).is_file():
            return cand
    if not path.exists():
        raise KronError(f"{path} does not exist; pass a workspace made by `kron factorize`")
    raise KronError(f"{path} holds no student ({KRON_CONFIG} missing); run `kron factorize ... --workspace "
                    f"{path}` first")


def read_kron_config(folder: Path) -> dict:
    path = Path(folder) / KRON_CONFIG
    cfg = read_json_object(path)
    if not isinstance(cfg.get("layers"), dict) or "architecture" not in cfg:
        raise damaged(path, "no architecture or layers")
    if cfg.get("format_version") != FORMAT_VERSION:
        raise KronError(f"{folder / KRON_CONFIG} has format {cfg.get('format_version')}, this kron reads "
                        f"{FORMAT_VERSION}; re-run kron factorize with this version")
    return cfg


def choices_from_config(cfg: dict) -> list[Choice]:
    fields = set(Choice.__dataclass_fields__)
    return [Choice(**{k: v for k, v in row.items() if k in fields}) for row in cfg["layers"].values()]


def build_student(folder: Path) -> torch.nn.Module:
    """The student architecture with uninitialised Kronecker modules (weights not loaded)."""
    import transformers

    from .sources import _quiet_transformers

    _quiet_transformers()
    cfg = read_kron_config(folder)
    check_folder(folder)  # config, tokenizer files and weights: each readable, before anything is built
    with guard(folder):
        config = transformers.AutoConfig.from_pretrained(folder)
    cls = getattr(transformers, cfg["architecture"], None)
    if cls is None:
        raise KronError(f"transformers has no class {cfg['architecture']}; install the transformers version "
                        f"in {folder / KRON_CONFIG}")
    model = cls(config)
    return apply_choices(model, choices_from_config(cfg), init=False)


def load_student(path: str | Path, projection: bool = False) -> torch.nn.Module:
    """Reload a saved student (workspace or student folder) in eval mode with bit-identical weights;
    `projection`: with a narrow student's learned map into the teacher's width (the training stages)."""
    folder = student_dir(path)
    model = build_student(folder)
    if not (folder / WEIGHTS).is_file():
        raise damaged(folder / WEIGHTS, "missing")
    with guard(folder):
        missing, unexpected = load_model(model, str(folder / WEIGHTS), strict=False)
    if missing or unexpected:
        raise KronError(f"{folder / WEIGHTS} does not match {KRON_CONFIG}: missing {sorted(missing)[:3]}, "
                        f"unexpected {sorted(unexpected)[:3]}")
    if projection:
        from .narrow import load_projection

        with guard(folder):
            load_projection(model, folder)
    return model.eval()


DEFAULT_TASK_SEQ_LEN = 128


def task_seq_len(student: Path, config, requested: int | None, default: int = DEFAULT_TASK_SEQ_LEN) -> int:
    """The input length a task model runs at: `requested` (--max-seq-len), else what its student recorded
    (kron.json max_seq_len), else `default`; within the model's positions. One rule for fine-tuning, evaluation
    and export, so that the teacher is compared with its student on equal inputs and an export keeps the length
    the model was tuned at."""
    from .families import max_positions

    limit = max_positions(config) or 10**9
    if requested is not None:
        if requested < 8 or requested > limit:
            raise KronError(f"--max-seq-len {requested}: choose 8..{limit} (the model has {limit} positions)")
        return requested
    recorded = None
    if (Path(student) / KRON_CONFIG).is_file():
        recorded = read_json_object(Path(student) / KRON_CONFIG).get("max_seq_len")
    return min(int(recorded or default), limit)
