"""A user's own labelled task: its files, columns and kind, turned into a Task that every stage takes as it takes
GLUE's.

`OwnTask` is a `glue.Task` (so finetune, eval, export and predict need nothing else) whose splits are read from
the user's files (`data/files.py`) by the options in `TaskFiles`. Kinds:

- classification: one label column, binary or multi-class, values strings or integers. The label set is the
  training split's, sorted (integers by value); a fine-tuned teacher's own label order wins (`label_order`).
- regression: one column of numbers.
- multilabel: one column holding a list of labels per row, or several 0/1 columns (each column a label).

The kind is inferred when not given: several label columns or list values -> multilabel; numbers that are not
all integers -> regression; else classification. Rows whose text is empty, labels that are empty, unknown or
of mixed types are errors naming their row; nothing is skipped. Without a dev file, `dev_fraction` carves a
seeded share of the training rows as dev; their row numbers are recorded with the task definition.

The definition (`definition()`, tasks/<name>/task.json) fixes the files by content hash: a later command reading
the task again checks that its files are the ones it was trained on.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import KronError
from .files import Table, load_hub, load_saved, looks_like_path, read_file
from .task_files import TaskFiles
from .glue import COLUMNS, Task

KINDS = ("classification", "regression", "multilabel")
SPLITS = ("train", "dev", "test")
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*\Z")
SHOW = 5  # values named in an error


@dataclass(frozen=True)
class OwnTask(Task):
    """A task on the user's files; `glue.Task`'s fields describe its labels and metrics, these its data."""

    kind: str = "classification"
    files: TaskFiles = TaskFiles()
    text: tuple[str, ...] = ()  # the text column(s) as named in the files
    label_cols: tuple[str, ...] = ()  # one, or several 0/1 columns (multilabel)
    dev_rows: tuple[int, ...] = ()  # training rows held out as dev (--dev-fraction)
    hashes: tuple[tuple[str, str], ...] = ()  # (split, sha256 of its file) where the split is a file

    @property
    def is_multilabel(self) -> bool:
        return self.kind == "multilabel"

    @property
    def is_pair(self) -> bool:
        return len(self.text) == 2

    @property
    def splits(self) -> tuple[str, ...]:
        return ("train", "dev", *self.test_splits)

    def definition(self) -> dict:
        """What tasks/<name>/task.json holds: enough to read the task again and to tell whether files changed."""
        return {"name": self.name, "kind": self.kind, "files": dataclasses.asdict(self.files),
                "text_columns": list(self.text), "label_columns": list(self.label_cols),
                "label_names": list(self.label_names), "dev_rows": list(self.dev_rows),
                "sha256": dict(self.hashes)}

    def load(self, split: str) -> pd.DataFrame:
        """One split as a load_split frame (text_a, text_b, label, idx)."""
        if split not in self.splits:
            raise KronError(f"{self.name} has no split {split!r}; choose one of {', '.join(self.splits)}")
        if split == "dev" and self.dev_rows:
            return _carve(read_split(self, "train"), self.dev_rows, keep=True)
        frame = read_split(self, split)
        return _carve(frame, self.dev_rows, keep=False) if split == "train" and self.dev_rows else frame


# ------------------------------------------------------------------------------------------------ reading

def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _table(files: TaskFiles, split: str) -> Table:
    source = files.source(split)
    if files.dataset is not None:
        folder = Path(files.dataset).expanduser()
        if folder.is_dir():
            return load_saved(folder, source)
        if looks_like_path(files.dataset):
            raise KronError(f"--dataset {files.dataset}: no such folder; pass a folder written by save_to_disk or "
                            "a datasets name")
        return load_hub(files.dataset, files.dataset_config, source)
    path = Path(source).expanduser()
    if path.is_dir():
        return load_saved(path, {"dev": "validation"}.get(split, split))
    if not path.is_file():
        raise KronError(f"--{split} {source}: no such file; pass a .csv/.tsv/.jsonl/.json/.parquet file or a "
                        "save_to_disk folder")
    return read_file(path, files.quoting)


def _columns(frame: pd.DataFrame, wanted: list[str], option: str, origin: str) -> None:
    missing = [c for c in wanted if c not in frame.columns]
    if missing:
        raise KronError(f"{origin} has no column(s) {', '.join(map(repr, missing))} (has: "
                        f"{', '.join(map(str, frame.columns))}); pass {option}")


def _text_columns(files: TaskFiles, frame: pd.DataFrame, origin: str) -> tuple[str, ...]:
    if files.text_columns:
        cols = [c.strip() for c in files.text_columns.split(",") if c.strip()]
        if not 1 <= len(cols) <= 2:
            raise KronError(f"--text-columns {files.text_columns}: name one text column or two (a pair)")
        _columns(frame, cols, "--text-columns A[,B]", origin)
        return tuple(cols)
    for cols in (["text"], ["sentence"], ["sentence1", "sentence2"], ["text_a", "text_b"], ["text_a"]):
        if all(c in frame.columns for c in cols):
            return tuple(cols)
    raise KronError(f"{origin} has no column 'text' (has: {', '.join(map(str, frame.columns))}); pass "
                    "--text-columns A[,B]")


def _label_columns(files: TaskFiles, frame: pd.DataFrame, origin: str) -> tuple[str, ...]:
    cols = tuple(c.strip() for c in (files.label_column or "label").split(",") if c.strip())
    if not cols:
        raise KronError("--label-column is empty; name the label column, e.g. --label-column label")
    _columns(frame, list(cols), "--label-column NAME", origin)
    return cols


def _missing(v) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v)) or (isinstance(v, str) and not v.strip())


def _texts(frame: pd.DataFrame, cols: tuple[str, ...], table: Table) -> list[list[str]]:
    out = []
    for c in cols:
        values = frame[c].tolist()
        for i, v in enumerate(values):
            if _missing(v):
                raise KronError(f"{table.where(i)}: the text in column {c!r} is empty; fill or remove the row")
        out.append([str(v) for v in values])
    return out


def _cell(v) -> str:
    """A label cell as text: 1.0 -> "1", True -> "true", strings stripped."""
    if isinstance(v, (bool, np.bool_)):
        return str(bool(v)).lower()
    if isinstance(v, (float, np.floating)) and float(v).is_integer():
        return str(int(v))
    return str(v).strip()


def _is_number(v) -> bool:
    if isinstance(v, (bool, np.bool_)):
        return False
    if isinstance(v, (int, float, np.integer, np.floating)):
        return math.isfinite(float(v))
    try:
        return math.isfinite(float(str(v)))
    except ValueError:
        return False


def _as_list(v) -> list | None:
    if isinstance(v, (list, tuple, np.ndarray)):
        return list(v)
    return None


def _check_labels_present(values: list, col: str, table: Table) -> None:
    for i, v in enumerate(values):
        if _as_list(v) is None and _missing(v):
            raise KronError(f"{table.where(i)}: the label in column {col!r} is empty; fill or remove the row")


def _check_one_type(values: list, col: str, table: Table) -> None:
    """JSON / parquet cells keep their types: a column mixing numbers and strings is a mistake, not a label set."""
    def kind(v):
        return "list" if _as_list(v) is not None else "number" if isinstance(v, (int, float, np.integer, np.floating)) \
            and not isinstance(v, (bool, np.bool_)) else "bool" if isinstance(v, (bool, np.bool_)) else "text"

    first = kind(values[0])
    for i, v in enumerate(values):
        if kind(v) != first:
            raise KronError(f"{table.where(i)}: label {v!r} is {kind(v)} where the first row's is {first}; column "
                            f"{col!r} mixes types: give every row the same kind of label")


def infer_kind(values: list, n_cols: int) -> str:
    if n_cols > 1 or any(_as_list(v) is not None for v in values):
        return "multilabel"
    if all(_is_number(v) for v in values) and not all(float(v).is_integer() for v in values):
        return "regression"
    return "classification"


def _sorted_labels(names: set[str]) -> tuple[str, ...]:
    try:
        return tuple(sorted(names, key=lambda n: (float(n), n)))  # integers (and numbers) by value
    except ValueError:
        return tuple(sorted(names))


def _label_set(kind: str, values: list, cols: tuple[str, ...], table: Table) -> tuple[str, ...]:
    if kind == "regression":
        return ()
    if kind == "multilabel":
        if len(cols) > 1:
            return cols
        return _sorted_labels({_cell(x) for v in values for x in (_as_list(v) or [])})
    return _sorted_labels({_cell(v) for v in values})


def _parse(task: "OwnTask", frame: pd.DataFrame, table: Table, split: str) -> list:
    """The label of every row: class ids, floats, or 0/1 vectors; an empty/unknown/non-numeric one is an error."""
    cols = task.label_cols
    if task.kind == "multilabel" and len(cols) > 1:
        out = []
        for i, row in enumerate(zip(*(frame[c].tolist() for c in cols))):
            vec = []
            for c, v in zip(cols, row):
                value = _cell(v) if not _missing(v) else ""
                if value not in ("0", "1", "true", "false"):
                    raise KronError(f"{table.where(i)}: label column {c!r} holds {v!r}; a multi-label column is "
                                    "0 or 1")
                vec.append(1.0 if value in ("1", "true") else 0.0)
            out.append(vec)
        return out
    values = frame[cols[0]].tolist()
    _check_labels_present(values, cols[0], table)
    _check_one_type(values, cols[0], table)
    if task.kind == "regression":
        out = []
        for i, v in enumerate(values):
            if not _is_number(v):
                raise KronError(f"{table.where(i)}: label {v!r} in column {cols[0]!r} is not a number; a regression "
                                "task needs numeric scores (or pass --kind classification)")
            out.append(float(v))
        return out
    index = {n: i for i, n in enumerate(task.label_names)}
    known = ", ".join(task.label_names[:SHOW]) + (" ..." if len(task.label_names) > SHOW else "")
    if task.kind == "multilabel":
        out = []
        for i, v in enumerate(values):
            items = _as_list(v)
            if items is None:
                raise KronError(f"{table.where(i)}: label {v!r} is not a list; a multi-label column holds a list "
                                "of labels per row (or pass several 0/1 columns)")
            vec = [0.0] * len(task.label_names)
            for x in items:
                if _cell(x) not in index:
                    raise KronError(f"{table.where(i)}: label {_cell(x)!r} is not among the training split's labels "
                                    f"({known}); fix the row or add the label to the training data")
                vec[index[_cell(x)]] = 1.0
            out.append(vec)
        return out
    out = []
    for i, v in enumerate(values):
        if _cell(v) not in index:
            raise KronError(f"{table.where(i)}: label {_cell(v)!r} is not among the training split's labels "
                            f"({known}); fix the row or add the label to the training data")
        out.append(index[_cell(v)])
    return out


def _frame(task: "OwnTask", texts: list[list[str]], labels: list | None) -> pd.DataFrame:
    n = len(texts[0])
    if labels is None:
        label = pd.Series([math.nan] * n, dtype="float64")
    elif task.kind == "multilabel":
        label = pd.Series([np.asarray(v, dtype=np.float32) for v in labels], dtype=object)
    else:
        label = pd.Series(labels, dtype="float64" if task.kind == "regression" else "int64")
    return pd.DataFrame({"text_a": pd.Series(texts[0], dtype=object),
                         "text_b": pd.Series(texts[1] if len(texts) > 1 else [None] * n, dtype=object),
                         "label": label, "idx": pd.Series(range(n), dtype="int64")}, columns=COLUMNS)


def read_split(task: "OwnTask", split: str) -> pd.DataFrame:
    """A split of the task's files, checked (columns, texts, labels), as a load_split frame."""
    table = _table(task.files, split)
    _check_hash(task, split)
    frame = table.frame
    _columns(frame, list(task.text), "--text-columns A[,B]", table.origin)
    texts = _texts(frame, task.text, table)
    labelled = all(c in frame.columns for c in task.label_cols)
    if not labelled and split != "test":
        _columns(frame, list(task.label_cols), "--label-column NAME", table.origin)
    return _frame(task, texts, _parse(task, frame, table, split) if labelled else None)


def _carve(frame: pd.DataFrame, rows: tuple[int, ...], keep: bool) -> pd.DataFrame:
    mask = frame["idx"].isin(rows)
    return frame[mask if keep else ~mask].reset_index(drop=True)


def _file_of(files: TaskFiles, split: str) -> Path | None:
    source = files.source(split)
    if files.dataset is not None or source is None:
        return None
    path = Path(source).expanduser()
    return path if path.is_file() else None


def check_files(task: "OwnTask") -> None:
    """Every file the task was defined on is still there with the same content (before any model loads)."""
    for split, _ in task.hashes:
        path = _file_of(task.files, split)
        if path is None:
            raise KronError(f"task {task.name}: its {split} file {task.files.source(split)} is gone; restore it, or "
                            "define the task again under another --task name")
        _check_hash(task, split)


def _check_hash(task: "OwnTask", split: str) -> None:
    want = dict(task.hashes).get(split)
    path = _file_of(task.files, split)
    if want and path is not None and sha256(path) != want:
        raise KronError(f"{path} changed since task {task.name} was defined on it (its models learnt the old "
                        f"rows); restore it, or pass another --task name for the new data")


# ------------------------------------------------------------------------------------------------ defining

METRICS = {
    "binary": (("accuracy", "f1", "macro_f1", "mcc"), "macro_f1"),
    "classification": (("accuracy", "macro_f1", "mcc"), "macro_f1"),
    "regression": (("pearson", "spearman", "mse"), "pearson"),
    "multilabel": (("micro_f1", "macro_f1", "subset_accuracy"), "micro_f1"),
}


def check_name(name: str) -> None:
    from .tasks import find_any_task

    if not NAME.match(name):
        raise KronError(f"--task {name!r}: a task name is letters, digits, '-', '_' or '.', starting with a letter "
                        "or digit (it names the folder tasks/<name>)")
    if find_any_task(name) is not None:
        raise KronError(f"--task {name} is the name of a built-in task (GLUE/SQuAD); give your own data another "
                        f"name, e.g. --task my-{name.lower()}")


def define(name: str, files: TaskFiles, label_order: tuple[str, ...] | None = None) -> OwnTask:
    """The task on `files`, every split read and checked once (before any model loads); `label_order`: a
    fine-tuned teacher's id2label names, which must be the training labels (see `match_teacher_labels`)."""
    check_name(name)
    if files.train is None and files.dataset is None:
        raise KronError(f"task {name}: pass --train FILE (or --dataset NAME) for your own data")
    if files.kind is not None and files.kind not in KINDS:
        raise KronError(f"--kind {files.kind!r}: choose one of {', '.join(KINDS)}")
    if files.dev_fraction is not None and not 0 < files.dev_fraction < 1:
        raise KronError(f"--dev-fraction {files.dev_fraction}: choose a share between 0 and 1, e.g. 0.1")
    if files.dev is not None and files.dev_fraction is not None:
        raise KronError("--dev and --dev-fraction both set; keep the dev file, or drop it to carve a dev split")
    files = files.absolute()
    table = _table(files, "train")
    text = _text_columns(files, table.frame, table.origin)
    label_cols = _label_columns(files, table.frame, table.origin)
    values = table.frame[label_cols[0]].tolist()
    if len(label_cols) == 1:
        _check_labels_present(values, label_cols[0], table)
        _check_one_type(values, label_cols[0], table)
    kind = files.kind or infer_kind(values, len(label_cols))
    names = _label_set(kind, values, label_cols, table)
    if kind == "classification" and len(names) < 2:
        raise KronError(f"{table.origin}: column {label_cols[0]!r} holds one class only ({names[0]!r}); a classifier "
                        "needs at least two (or pass --kind regression for scores)")
    if kind == "multilabel" and len(names) < 2:
        raise KronError(f"{table.origin}: a multi-label task needs at least two labels (found "
                        f"{', '.join(names) or 'none'}); one label is a binary classification (--kind classification)")
    if label_order is not None and kind != "regression":
        names = match_teacher_labels(names, label_order, table.origin)
    metrics, primary = METRICS["binary" if kind == "classification" and len(names) == 2 else kind]
    has_dev = files.source("dev") is not None
    if not has_dev and files.dev_fraction is None:
        raise KronError(f"task {name}: no dev data; pass --dev FILE, or --dev-fraction 0.1 to hold out a share of "
                        "the training rows")
    has_test = files.source("test") is not None
    hashes = tuple((s, sha256(p)) for s in SPLITS if (p := _file_of(files, s)) is not None)
    task = OwnTask(name=name, folder=name, hub_config=name.lower(), hub_text=text, label_names=names,
                   metrics=metrics, primary=primary, eval_splits=("dev",), test_splits=("test",) if has_test else (),
                   tsv={}, kind=kind, files=files, text=text, label_cols=label_cols, hashes=hashes)
    train = task.load("train")
    if not has_dev:
        n = len(train)
        held = max(1, round(files.dev_fraction * n))
        if held >= n:
            raise KronError(f"--dev-fraction {files.dev_fraction} of {n} training rows leaves none to train on")
        rows = np.random.default_rng(files.split_seed).permutation(n)[:held]
        task = dataclasses.replace(task, dev_rows=tuple(sorted(int(r) for r in rows)))
    for split in task.splits:
        frame = task.load(split)  # every split's columns and labels checked now, before any training
        if len(frame) == 0:
            raise KronError(f"task {name}: the {split} split is empty")
    return task


def match_teacher_labels(data: tuple[str, ...], teacher: tuple[str, ...], origin: str) -> tuple[str, ...]:
    """The teacher's label order, when its labels are the data's; transformers' default names (LABEL_0 ...) stand
    for the ids 0, 1, ... of integer labels."""
    if all(re.fullmatch(r"LABEL_\d+", t) for t in teacher):
        teacher = tuple(str(i) for i in range(len(teacher)))
    if set(data) != set(teacher):
        raise KronError(f"the teacher's labels ({', '.join(teacher)}) are not the data's ({', '.join(data)}) in "
                        f"{origin}; fine-tune a teacher on these labels (kron finetune --teacher-only) or fix the data")
    return teacher


def from_definition(record: dict, where: Path) -> OwnTask:
    """An OwnTask from tasks/<name>/task.json (`OwnTask.definition()`)."""
    try:
        files = TaskFiles(**record["files"])
        kind, names = record["kind"], tuple(record["label_names"])
        metrics, primary = METRICS["binary" if kind == "classification" and len(names) == 2 else kind]
        text = tuple(record["text_columns"])
        return OwnTask(name=record["name"], folder=record["name"], hub_config=record["name"].lower(), hub_text=text,
                       label_names=names, metrics=metrics, primary=primary, eval_splits=("dev",),
                       test_splits=("test",) if files.source("test") is not None else (), tsv={}, kind=kind,
                       files=files, text=text, label_cols=tuple(record["label_columns"]),
                       dev_rows=tuple(record.get("dev_rows", ())), hashes=tuple(record.get("sha256", {}).items()))
    except (KeyError, TypeError) as e:
        raise KronError(f"{where} is not a task definition kron wrote ({e}); remove it and define the task again "
                        "with --train") from None


def differences(old: OwnTask, new: OwnTask) -> list[str]:
    """What a task defined again differs in from the definition stored in the workspace."""
    a, b = old.definition(), new.definition()
    out = [k for k in ("kind", "text_columns", "label_columns", "label_names") if a[k] != b[k]]
    out += [f"files.{k}" for k, v in a["files"].items() if b["files"].get(k) != v]
    out += [f"{s} file content" for s, h in a["sha256"].items() if b["sha256"].get(s) not in (None, h)]
    return out
