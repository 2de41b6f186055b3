"""`kron eval glue`, and the pieces `kron eval ood` shares with it.

Reads what `kron finetune` writes: WS/tasks/<task>/student (a Kronecker student, `kroncli.load_student`) and
WS/tasks/<task>/teacher (a transformers folder), both with tokenizer files. Writes WS/metrics/eval.csv, one
row per metric (EVAL_COLUMNS), and, with `--predict`, WS/predictions/<TASK>.tsv (predictions.py).

Shared pieces: which task folder holds a task's models (MNLI-m, MNLI-mm and AX use the MNLI models), the
checks made before any prediction (model present, label count), batched prediction with a progress bar,
metric rows, and one KronError for a folder that cannot be written.
"""

from __future__ import annotations

import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from ..data.encode import encode
from ..data.glue import TASKS, VARIANTS, Task, find_task, load_split, normalize_task
from .. import metrics_csv
from ..errors import KronError, first_line
from ..integrity import check_folder, read_json_object
from ..metrics import compute_metrics, majority_baseline
from ..workspace import Workspace, now
from .predictions import unwritable, write_submission

MODELS = ("student", "teacher")
EVAL_CSV = "eval.csv"
EVAL_COLUMNS = ["workspace", "model", "task", "split", "metric", "value", "n", "seconds", "timestamp"]


def model_task(task: Task) -> Task:
    """The task whose fine-tuned models predict `task`: MNLI for MNLI-m, MNLI-mm and AX (the diagnostic)."""
    return TASKS["MNLI"] if task.folder in ("MNLI", "diagnostic") else task


def model_dir(ws: Workspace, task: Task, which: str) -> Path:
    """The folder of the model that predicts `task` (MNLI's for MNLI-m, MNLI-mm and AX), from the workspace layout."""
    return ws.task_model_dir(model_task(task), which)


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
    if not ws.is_workspace():
        raise KronError(f"{ws.root} is not a kron workspace (no manifest.json, student/ or tasks/); pass the folder "
                        "kron factorize created")


def check_options(which: str | None, batch_size: int) -> None:
    if which is not None and which not in MODELS:
        raise KronError(f"--model {which!r}: choose student or teacher")
    if batch_size < 1:
        raise KronError(f"--batch-size {batch_size}: choose a positive number")


def select_models(ws: Workspace, task: Task, which: str | None) -> list[str]:
    """`which` (must exist), else every model the task has (at least one)."""
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
        cfg = read_json_object(path / "config.json")
    except OSError as e:
        raise KronError(f"cannot read {path / 'config.json'} ({e}); re-run {finetune_hint(ws, task, which)}") from None
    n = cfg.get("num_labels") or len(cfg.get("id2label") or {}) or 2  # transformers' default is 2
    if n != model_task(task).num_labels:
        raise _wrong_labels(ws, task, which, n)
    from ..student import KRON_CONFIG

    if which == "student" and (path / KRON_CONFIG).is_file():  # same label count, other task (MRPC and CoLA: 2)
        made_for = read_json_object(path / KRON_CONFIG).get("task")
        known = made_for and find_task(made_for)  # any spelling (mrpc, MRPC); a name kron does not know is refused
        made_for = known.name if known else made_for
        if made_for and made_for != model_task(task).name:
            raise KronError(f"{path} was fine-tuned on {made_for}, not {model_task(task).name}; re-run "
                            f"{finetune_hint(ws, task, which)}")


def _wrong_labels(ws: Workspace, task: Task, which: str, n) -> KronError:
    name, want = model_task(task).name, model_task(task).num_labels
    return KronError(f"{model_dir(ws, task, which)} predicts {n} label(s) but {name} has {want}; it was not "
                     f"fine-tuned on {name}: re-run {finetune_hint(ws, task, which)}")


@dataclass
class TaskModel:
    which: str  # student | teacher
    path: Path
    model: object
    tokenizer: object
    max_seq_len: int


def load_task_model(ws: Workspace, task: Task, which: str, max_seq_len: int | None = None) -> TaskModel:
    """The task's student or teacher in eval mode (on the GPU when there is one) with its tokenizer."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from ..student import load_student, task_seq_len

    path = model_dir(ws, task, which)
    check_folder(path)  # a damaged file: one line naming it, before anything loads
    try:
        if which == "student":
            model = load_student(path)
        else:
            model = AutoModelForSequenceClassification.from_pretrained(path)
        tokenizer = AutoTokenizer.from_pretrained(path)
    except (OSError, ValueError) as e:
        first = first_line(e)
        raise KronError(f"cannot load the {which} in {path} ({first}); re-run {finetune_hint(ws, task, which)}") \
            from None
    if getattr(model.config, "num_labels", None) != model_task(task).num_labels:
        raise _wrong_labels(ws, task, which, getattr(model.config, "num_labels", None))
    model = model.eval().to("cuda" if torch.cuda.is_available() else "cpu")
    seq_len = task_seq_len(model_dir(ws, task, "student"), model.config, max_seq_len)
    return TaskModel(which, path, model, tokenizer, seq_len)


def predict(tm: TaskModel, task: Task, frame, batch_size: int, progress: Callable | None = None,
            label: str = "") -> tuple[np.ndarray, float]:
    """(logits (n, num_labels), seconds of model time) for a load_split-style frame."""
    from ..evaluate import predict_logits

    if len(frame) == 0:
        raise KronError(f"{task.name} {label}: no examples to evaluate (empty split)")
    data = encode(task, frame, tm.tokenizer, tm.max_seq_len)
    with progress(label or task.name, len(data)) if progress else nullcontext(lambda n=1: None) as advance:
        t0 = time.perf_counter()  # the bar's advance is a counter update: its time is not worth taking out
        logits = predict_logits(tm.model, data, tm.tokenizer, task.float_labels, batch_size, on_batch=advance)
        return logits, time.perf_counter() - t0


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
    def examples_per_s(self) -> float | None:
        return self.n / self.seconds if self.seconds else None  # None: no model ran (the majority floor)

    def as_dict(self) -> dict:
        return {**asdict(self), "examples_per_s": self.examples_per_s}

    def rows(self, ws: Workspace) -> list[dict]:
        stamp = now()
        return [{"workspace": str(ws.root), "model": self.model, "task": self.task, "split": self.split,
                 "metric": name, "value": value, "n": self.n, "seconds": round(self.seconds, 4), "timestamp": stamp}
                for name, value in self.metrics.items()]


def append_eval_rows(ws: Workspace, rows: list[dict]) -> Path:
    """Append rows to WS/metrics/eval.csv (EVAL_COLUMNS)."""
    path = ws.eval_csv
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        metrics_csv.append(path, [{c: r.get(c) for c in EVAL_COLUMNS} for r in rows])
    except OSError as e:
        raise unwritable(path, e) from None
    return path


def score_logits(task: Task, logits: np.ndarray, labels) -> dict[str, float]:
    """The task's metrics (0-100) of logits against a labelled frame's `label` column."""
    return compute_metrics(task, logits[:, 0] if task.is_regression else logits, np.asarray(labels))


# --------------------------------------------------------------------------------------------- kron eval glue

SPLITS = ("dev", "test")


@dataclass
class GlueOptions:
    task: str = "all"  # a task, a comma list, or "all" (as --task)
    split: str = "dev"  # dev: score the dev split(s); test: with predict, write submission files
    predict: bool = False
    model: str | None = None  # student | teacher; None: both where present (--predict: the student)
    data_dir: str | None = None
    batch_size: int = 64
    max_seq_len: int | None = None


@dataclass
class _Job:
    task: Task  # the task whose data is read; its models live under model_task(task)
    models: list[str]
    frames: dict  # split -> load_split frame


def _requested(spec: str) -> list[Task] | None:
    """The tasks named by --task (variants kept), or None for all."""
    names = [n.strip() for n in spec.split(",") if n.strip()]
    if not names:
        raise KronError("--task is empty; pass a GLUE task (mrpc), a comma list (mrpc,rte) or all")
    if any(n.lower() == "all" for n in names):
        if len(names) > 1:
            raise KronError(f"--task {spec!r}: 'all' cannot be combined with other tasks")
        return None
    return [normalize_task(n) for n in names]


def _splits(task: Task, opts: GlueOptions) -> tuple[str, ...]:
    splits = task.eval_splits if opts.split == "dev" else task.test_splits
    if not splits:
        raise KronError(f"{task.name} has no labelled dev split (the diagnostic set is test-only); predict it "
                        f"with an MNLI model: --task {task.name.lower()} --split test --predict")
    return splits


def _check_split(opts: GlueOptions) -> None:
    if opts.split not in SPLITS:
        raise KronError(f"--split {opts.split!r}: choose dev (scores) or test (with --predict)")
    if opts.split == "test" and not opts.predict:
        raise KronError("GLUE test labels are not public, so test splits cannot be scored; add --predict to write "
                        "submission files")
    if opts.predict and opts.split != "test":
        raise KronError("--predict writes GLUE test submission files; add --split test")


def _discover(ws: Workspace, opts: GlueOptions) -> tuple[list[Task], list[dict]]:
    """--task all: every task with a model in the workspace (and AX with MNLI when predicting)."""
    wanted = [opts.model or "student"] if opts.predict else [opts.model] if opts.model else list(MODELS)
    found, skipped = [], []
    for task in TASKS.values():
        if task.name == "AX":
            continue
        if any(has_model(ws, task, m) for m in wanted):
            found.append(task)
        else:
            where = " or ".join(str(model_dir(ws, task, m).relative_to(ws.root)) for m in wanted)
            skipped.append({"task": task.name, "reason": f"no {where}"})
    if opts.predict and TASKS["MNLI"] in found:
        found.append(TASKS["AX"])
    return found, skipped


def _plan(ws: Workspace, opts: GlueOptions) -> tuple[list[_Job], list[dict]]:
    """Every check before the first prediction: tasks, models, label counts, data, an eval.csv rows can join."""
    require_workspace(ws)
    metrics_csv.check(ws.eval_csv)
    check_options(opts.model, opts.batch_size)
    _check_split(opts)
    requested = _requested(opts.task)
    tasks, skipped = _discover(ws, opts) if requested is None else (requested, [])
    if not tasks:
        where = f"tasks/<task>/{opts.model}" if opts.model else "tasks/<task>/student or teacher"
        raise KronError(f"no fine-tuned task {opts.model or 'model'} in {ws.root} ({where}); run kron finetune "
                        f"--workspace {ws.root} --task TASK --teacher-only, then without --teacher-only")
    jobs: dict[str, _Job] = {}
    for task in tasks:
        data_task = TASKS["MNLI"] if task.name in VARIANTS else task
        models = select_models(ws, task, (opts.model or "student") if opts.predict else opts.model)
        for m in models:
            check_labels(ws, task, m)
        job = jobs.setdefault(data_task.name, _Job(data_task, [], {}))
        job.models += [m for m in models if m not in job.models]
        try:
            for split in _splits(task, opts):
                if split not in job.frames:
                    job.frames[split] = load_split(data_task, split, opts.data_dir)
        except KronError as e:
            if requested is not None or task.name != "AX":
                raise
            del jobs[data_task.name]  # --task all: the diagnostic set is optional
            skipped.append({"task": "AX", "reason": str(e)})
    return list(jobs.values()), skipped


def majority_floor(task: Task, frames: dict, data_dir: str | None) -> list[Evaluation]:
    """Model "majority": always answering the most common training label (STS-B: the mean), on each scored split.

    The floor of the report's "gain over the majority baseline retained". A folder without the training split (dev
    files only) has no floor, and that is not an error.
    """
    try:
        train = load_split(task, "train", data_dir)["label"]
        return [Evaluation(task.name, "majority", split, len(frame), 0.0,
                           metrics=majority_baseline(task, train, frame["label"]), primary=task.primary)
                for split, frame in frames.items()]
    except KronError:
        return []


def evaluate_glue(ws: Workspace, opts: GlueOptions, progress: Callable | None = None) -> dict:
    """Score (dev) or predict (test, --predict) every planned task model; rows go to metrics/eval.csv."""
    jobs, skipped = _plan(ws, opts)
    results: list[Evaluation] = []
    csv_path = None
    for job in jobs:
        for which in job.models:
            tm = load_task_model(ws, job.task, which, opts.max_seq_len)
            for split, frame in job.frames.items():
                logits, seconds = predict(tm, job.task, frame, opts.batch_size, progress,
                                          f"{job.task.name} {which} {split}")
                if opts.predict:
                    path = write_submission(ws, job.task, split, frame["idx"].tolist(), logits)
                    results.append(Evaluation(job.task.name, which, split, len(frame), seconds, file=str(path)))
                    continue
                ev = Evaluation(job.task.name, which, split, len(frame), seconds,
                                metrics=score_logits(job.task, logits, frame["label"]), primary=job.task.primary)
                csv_path = append_eval_rows(ws, ev.rows(ws))  # each result kept as soon as it exists
                results.append(ev)
            del tm
        if not opts.predict:
            for ev in majority_floor(job.task, job.frames, opts.data_dir):
                csv_path = append_eval_rows(ws, ev.rows(ws))
                results.append(ev)
    return {"workspace": str(ws.root), "split": opts.split, "predict": opts.predict,
            "results": [r.as_dict() for r in results], "skipped": skipped,
            "eval_csv": str(csv_path) if csv_path else None}
