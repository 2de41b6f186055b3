"""`kron eval glue`, and the pieces `kron eval ood` shares with it.

Reads what `kron finetune` writes: WS/tasks/<task>/student (a Kronecker student, `kroncli.load_student`) and
WS/tasks/<task>/teacher (a transformers folder), both with tokenizer files. Writes WS/metrics/eval.csv, one
row per metric (EVAL_COLUMNS), and, with `--predict`, WS/predictions/<TASK>.tsv (predictions.py).

Shared pieces: which task folder holds a task's models (MNLI-m, MNLI-mm and AX use the MNLI models), the
checks made before any prediction (model present, label count), batched prediction with a progress bar,
metric rows, and one KronError for a folder that cannot be written.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from ..data.encode import EncodedSplit, encode
from ..data.glue import TASKS, Task
from ..errors import KronError
from ..workspace import Workspace, atomic_write_text, now

MODELS = ("student", "teacher")
EVAL_CSV = "eval.csv"
EVAL_COLUMNS = ["workspace", "model", "task", "split", "metric", "value", "n", "seconds", "timestamp"]
DEFAULT_MAX_SEQ_LEN = 128
CHUNK_BATCHES = 8  # progress advances every CHUNK_BATCHES batches


def model_task(task: Task) -> Task:
    """The task whose fine-tuned models predict `task`: MNLI for MNLI-m, MNLI-mm and AX (the diagnostic)."""
    return TASKS["MNLI"] if task.folder in ("MNLI", "diagnostic") else task


def model_dir(ws: Workspace, task: Task, which: str) -> Path:
    from ..stages.finetune import task_dir

    return task_dir(ws, model_task(task)) / which


def has_model(ws: Workspace, task: Task, which: str) -> bool:
    from ..student import KRON_CONFIG

    return (model_dir(ws, task, which) / (KRON_CONFIG if which == "student" else "config.json")).is_file()


def finetune_hint(ws: Workspace, task: Task, which: str) -> str:
    """The `kron finetune` command(s) that create the missing model."""
    base = f"kron finetune --workspace {ws.root} --task {model_task(task).hub_config}"
    if which == "teacher":
        return f"{base} --teacher-only"
    if not has_model(ws, task, "teacher"):
        return f"{base} --teacher-only, then {base}"
    return base


def require_workspace(ws: Workspace) -> None:
    if not ws.root.is_dir():
        raise KronError(f"workspace {ws.root} does not exist; create it with kron factorize MODEL --workspace "
                        f"{ws.root}, then kron finetune")


def check_model_choice(which: str | None) -> None:
    if which is not None and which not in MODELS:
        raise KronError(f"--model {which!r}: choose student or teacher")


def select_models(ws: Workspace, task: Task, which: str | None) -> list[str]:
    """`which` (must exist), else every model the task has (at least one)."""
    check_model_choice(which)
    wanted = [which] if which else [m for m in MODELS if has_model(ws, task, m)]
    for m in wanted:
        if not has_model(ws, task, m):
            raise KronError(f"no fine-tuned {model_task(task).name} {m} in {ws.root} ({model_dir(ws, task, m)} "
                            f"missing); run {finetune_hint(ws, task, m)}")
    if not wanted:
        raise KronError(f"no fine-tuned {model_task(task).name} model in {ws.root} (neither "
                        f"{model_dir(ws, task, 'student')} nor the teacher); run {finetune_hint(ws, task, 'student')}")
    return wanted


def check_labels(ws: Workspace, task: Task, which: str) -> None:
    """The model's output count must be the task's (cheap: config.json only)."""
    path = model_dir(ws, task, which)
    try:
        cfg = json.loads((path / "config.json").read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise KronError(f"cannot read {path / 'config.json'} ({e}); re-run {finetune_hint(ws, task, which)}") from None
    n = cfg.get("num_labels") or len(cfg.get("id2label") or {}) or 2  # transformers' default is 2
    want = model_task(task).num_labels
    if n != want:
        raise KronError(f"{path} predicts {n} label(s) but {model_task(task).name} has {want}; it was not "
                        f"fine-tuned on {model_task(task).name}: re-run {finetune_hint(ws, task, which)}")


@dataclass
class TaskModel:
    which: str  # student | teacher
    path: Path
    model: object
    tokenizer: object
    max_seq_len: int


def _max_seq_len(path: Path, config, requested: int | None) -> int:
    """--max-seq-len, else the student's recorded max_seq_len (kron.json), else 128; within the positions."""
    limit = getattr(config, "max_position_embeddings", None) or 10**9
    if requested is not None:
        if requested < 8 or requested > limit:
            raise KronError(f"--max-seq-len {requested}: choose 8..{limit} (the model has {limit} positions)")
        return requested
    from ..student import KRON_CONFIG

    recorded = None
    if (path / KRON_CONFIG).is_file():
        recorded = json.loads((path / KRON_CONFIG).read_text()).get("max_seq_len")
    return min(int(recorded or DEFAULT_MAX_SEQ_LEN), limit)


def load_task_model(ws: Workspace, task: Task, which: str, max_seq_len: int | None = None) -> TaskModel:
    """The task's student or teacher in eval mode (on the GPU when there is one) with its tokenizer."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    check_labels(ws, task, which)
    path = model_dir(ws, task, which)
    try:
        if which == "student":
            from ..student import load_student

            model = load_student(path)
        else:
            model = AutoModelForSequenceClassification.from_pretrained(path)
        tokenizer = AutoTokenizer.from_pretrained(path)
    except (OSError, ValueError) as e:
        first = (str(e).splitlines() or [type(e).__name__])[0]
        raise KronError(f"cannot load the {which} in {path} ({first}); re-run {finetune_hint(ws, task, which)}") \
            from None
    if not hasattr(model, "config") or getattr(model.config, "num_labels", None) != model_task(task).num_labels:
        raise KronError(f"{path} is not a {model_task(task).name} sequence classifier; re-run "
                        f"{finetune_hint(ws, task, which)}")
    model = model.eval().to("cuda" if torch.cuda.is_available() else "cpu")
    return TaskModel(which, path, model, tokenizer, _max_seq_len(path, model.config, max_seq_len))


def predict(tm: TaskModel, task: Task, frame, batch_size: int, progress: Callable | None = None,
            label: str = "") -> tuple[np.ndarray, float]:
    """(logits (n, num_labels), seconds of model time) for a load_split-style frame."""
    from ..evaluate import predict_logits

    if len(frame) == 0:
        raise KronError(f"{task.name} {label}: no examples to evaluate (empty split)")
    if batch_size < 1:
        raise KronError(f"--batch-size {batch_size}: choose a positive number")
    data = encode(task, frame, tm.tokenizer, tm.max_seq_len)
    chunk = batch_size * CHUNK_BATCHES  # a multiple of the batch size: the same batches as one call
    parts, seconds = [], 0.0
    with (progress(label or task.name, len(data)) if progress else _no_progress()) as advance:
        for start in range(0, len(data), chunk):
            part = EncodedSplit(data.features[start:start + chunk], None)
            t0 = time.perf_counter()
            parts.append(predict_logits(tm.model, part, tm.tokenizer, task.is_regression, batch_size))
            seconds += time.perf_counter() - t0
            advance(len(part))
    return np.concatenate(parts), seconds


class _no_progress:
    def __enter__(self):
        return lambda n=1: None

    def __exit__(self, *exc):
        return False


@dataclass
class Evaluation:
    """One model on one split: its metrics (0-100) or, for --predict, the submission file written."""

    task: str
    model: str
    split: str
    n: int
    seconds: float
    metrics: dict[str, float] = field(default_factory=dict)
    primary: str | None = None
    file: str | None = None

    @property
    def examples_per_s(self) -> float:
        return self.n / max(self.seconds, 1e-9)

    def as_dict(self) -> dict:
        return {**asdict(self), "examples_per_s": self.examples_per_s}

    def rows(self, ws: Workspace) -> list[dict]:
        stamp = now()
        return [{"workspace": str(ws.root), "model": self.model, "task": self.task, "split": self.split,
                 "metric": name, "value": value, "n": self.n, "seconds": round(self.seconds, 4), "timestamp": stamp}
                for name, value in self.metrics.items()]


def write_file(path: Path, text: str) -> None:
    """Atomic write; a folder that cannot be written is one KronError naming it."""
    try:
        atomic_write_text(path, text)
    except OSError as e:
        raise KronError(f"cannot write {path}: {e.strerror or e}; make {path.parent} a writable folder") from None


def append_eval_rows(ws: Workspace, rows: list[dict]) -> Path:
    """Append rows to WS/metrics/eval.csv (EVAL_COLUMNS)."""
    from ..train import append_rows

    path = ws.metrics_dir / EVAL_CSV
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        append_rows(path, [{c: r.get(c) for c in EVAL_COLUMNS} for r in rows])
    except OSError as e:
        raise KronError(f"cannot write {path}: {e.strerror or e}; make {path.parent} a writable folder") from None
    return path
