"""`kron eval data`: an own-data task's models (data/own.py) scored on its dev and test files and on any other
labelled file read with the task's columns and label set (out of distribution).

Rows go to WS/metrics/eval.csv (split `dev`, `test` or `data:<file name>`), beside the majority-class (regression:
mean) floor; the JSON result carries each classifier's per-class precision, recall and F1 too.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ..data.own import OwnTask
from ..data.tasks import stored_task
from ..errors import KronError
from ..metrics import majority_baseline, per_class
from ..workspace import Workspace
from .glue_eval import (Evaluation, append_eval_rows, check_labels, check_options, load_task_model, predict,
                        require_workspace, score_logits, select_models)


@dataclass
class DataOptions:
    task: str
    data: list[str] | None = None  # more labelled files, read with the task's columns and labels
    splits: tuple[str, ...] = ("dev", "test")  # the task's own splits scored, where it has them
    model: str | None = None  # student | teacher; None: both where present
    batch_size: int = 64
    max_seq_len: int | None = None


def own_task(ws: Workspace, name: str) -> OwnTask:
    """The workspace's own task `name`, as `kron finetune` defined it."""
    task = stored_task(ws, name)
    if task is None:
        defined = sorted(p.parent.name for p in ws.tasks_dir.glob("*/task.json"))
        raise KronError(f"{ws.root} has no own-data task {name!r} ({'tasks: ' + ', '.join(defined) if defined else 'none defined'}); "
                        f"define it with kron finetune --workspace {ws.root} --task {name} --train FILE --dev FILE"
                        + ("; GLUE tasks are scored by kron eval glue" if not defined else ""))
    return task


def file_frame(task: OwnTask, path: str):
    """A labelled file read as the task reads its own splits (same columns, label set and checks)."""
    if not Path(path).expanduser().exists():
        raise KronError(f"--data {path}: no such file; pass a labelled .csv/.tsv/.jsonl/.json/.parquet file")
    files = dataclasses.replace(task.files, test=str(Path(path).expanduser().resolve()), dataset=None)
    other = dataclasses.replace(task, files=files, test_splits=("test",), dev_rows=(),
                                hashes=tuple(h for h in task.hashes if h[0] != "test"))
    frame = other.load("test")
    if frame["label"].isna().all() if not task.is_multilabel else False:
        raise KronError(f"--data {path}: no label column {', '.join(task.label_cols)}; it cannot be scored")
    return frame


def _labelled(task: OwnTask, frame) -> bool:
    return task.is_multilabel or not frame["label"].isna().all()


def evaluate_data(ws: Workspace, opts: DataOptions, progress: Callable | None = None) -> dict:
    """Score the task's models on each labelled split and file; rows to metrics/eval.csv."""
    require_workspace(ws)
    check_options(opts.model, opts.batch_size)
    task = own_task(ws, opts.task)
    models = select_models(ws, task, opts.model)
    for m in models:
        check_labels(ws, task, m)
    frames = {s: task.load(s) for s in opts.splits if s in task.splits}
    frames = {s: f for s, f in frames.items() if _labelled(task, f)}
    for path in opts.data or []:
        frames[f"data:{Path(path).name}"] = file_frame(task, path)  # every file read and checked before a model runs
    train = task.load("train")["label"]
    results, classes, csv_path = [], {}, None
    for which in models:
        tm = load_task_model(ws, task, which, opts.max_seq_len)
        for split, frame in frames.items():
            logits, seconds = predict(tm, task, frame, opts.batch_size, progress, f"{task.name} {which} {split}")
            ev = Evaluation(task.name, which, split, len(frame), seconds,
                            metrics=score_logits(task, logits, frame["label"]), primary=task.primary)
            csv_path = append_eval_rows(ws, ev.rows(ws))
            results.append(ev)
            scores = logits[:, 0] if task.is_regression else logits
            classes.setdefault(which, {})[split] = per_class(task, scores, list(frame["label"]))
        del tm
    for split, frame in frames.items():
        ev = Evaluation(task.name, "majority", split, len(frame), 0.0,
                        metrics=majority_baseline(task, list(train), list(frame["label"])), primary=task.primary)
        csv_path = append_eval_rows(ws, ev.rows(ws))
        results.append(ev)
    return {"workspace": str(ws.root), "task": task.name, "kind": task.kind, "labels": list(task.names),
            "results": [r.as_dict() for r in results], "per_class": classes if not task.is_regression else {},
            "eval_csv": str(csv_path) if csv_path else None}
