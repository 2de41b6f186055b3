"""GLUE: one task table, name normalisation and a split loader shared by `kron finetune` and `kron eval glue`.

`load_split(task, split)` returns a DataFrame with columns

- `text_a`: the first sentence (str);
- `text_b`: the second sentence, or None in every row for single-sentence tasks (CoLA, SST-2);
- `label`: the integer class id (an index into `task.label_names`), a float for STS-B, NaN on test splits;
- `idx`: the 0-based row number (as nyu-mll/glue's `idx`); on test splits the file's index/id column, which
  GLUE submission files must repeat.

Sources, in order: the original GLUE layout `DIR/<folder>/<split>.tsv`; a `datasets.DatasetDict` saved with
`save_to_disk` at `DIR/<hub config>` (e.g. `DIR/stsb`); the hub (`nyu-mll/glue`), only when online. DIR is
`data_dir`, else `$KRON_GLUE_DIR`, else `../shared/glue` when it exists. A DIR named explicitly (argument or
environment variable) never falls back to the hub: a missing file there is an error that names it.

TSV files are read with quoting disabled (the sentences contain unbalanced `"`), in UTF-8 with an optional
BOM (MRPC), every field as a string; each line must have exactly the header's number of tab-separated fields.
Any malformed line, missing column or unknown label is a KronError naming the file and the 1-based line:
rows are never skipped or merged.

Task names: `normalize_task` accepts any case, with or without `-`/`_` (CoLA, cola, STS-B, stsb, sst-2,
"diagnostic" for AX ...). `mnli-m`/`mnli_matched` and `mnli-mm`/`mnli_mismatched` are MNLI restricted to the
matched or mismatched dev/test split (named `MNLI-m` / `MNLI-mm`, as the GLUE submission files are); plain
`mnli` evaluates both.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from ..errors import KronError, first_line

HUB_DATASET = "nyu-mll/glue"
ENV_DIR = "KRON_GLUE_DIR"
DATA_DIR_HINT = f"pass --data-dir DIR (original GLUE layout) or set {ENV_DIR}"
COLUMNS = ["text_a", "text_b", "label", "idx"]


@dataclass(frozen=True)
class TsvSpec:
    """Where one split sits in the original GLUE layout and which columns to take (by header name)."""

    file: str  # inside the task folder
    text: tuple[str, ...]  # one or two sentence columns
    label: str | None  # None: an unlabelled (test) split
    idx: str | None  # the row-id column (test splits); None: the 0-based row number
    names: tuple[str, ...] | None = None  # column names of a file WITHOUT a header line; None: has a header


@dataclass(frozen=True)
class Task:
    """One GLUE task: names, labels, metrics, and where its data lives (TSV layout and hub)."""

    name: str  # canonical, as on the GLUE leaderboard / submission files
    folder: str  # folder in the original GLUE layout
    hub_config: str  # datasets.load_dataset("nyu-mll/glue", hub_config)
    hub_text: tuple[str, ...]  # text columns of the hub dataset
    label_names: tuple[str, ...]  # label values as written in the TSV / submission files, by integer id;
    # empty for regression (STS-B)
    metrics: tuple[str, ...]  # names understood by kroncli.metrics
    primary: str  # the task score entering the GLUE average
    eval_splits: tuple[str, ...]
    test_splits: tuple[str, ...]
    tsv: dict[str, TsvSpec]  # split -> layout
    aliases: tuple[str, ...] = ()
    # what each class id means, as `datasets`' glue features name it, where the files write only "0"/"1";
    # empty: label_names are the names already (MNLI, QNLI, RTE, AX) or there are none (STS-B)
    class_names: tuple[str, ...] = ()

    @property
    def num_labels(self) -> int:
        return len(self.label_names) or 1

    @property
    def names(self) -> tuple[str, ...]:
        """The name of each class id: what a model's config.json (id2label) and `kron predict` show."""
        return self.class_names or self.label_names

    @property
    def is_regression(self) -> bool:
        return not self.label_names

    @property
    def is_multilabel(self) -> bool:
        """Several labels per example (an own task's kind; no GLUE task is)."""
        return False

    @property
    def float_labels(self) -> bool:
        """Labels are floats (a score, or a 0/1 vector), not class ids."""
        return self.is_regression or self.is_multilabel

    @property
    def is_pair(self) -> bool:
        return len(self.hub_text) == 2

    @property
    def splits(self) -> tuple[str, ...]:
        return tuple(self.tsv)


def _tsv(text: tuple[str, ...], label: str, *, test_idx: str = "index",
         labelled: tuple[str, ...] = ("train", "dev"), tests: tuple[str, ...] = ("test",),
         names: tuple[str, ...] | None = None) -> dict[str, TsvSpec]:
    """The common shape: labelled splits share one layout; test files have a header, an id and no label."""
    specs = {s: TsvSpec(f"{s}.tsv", text, label, None, names) for s in labelled}
    specs.update({s: TsvSpec(f"{s}.tsv", text, None, test_idx) for s in tests})
    return specs


BINARY = ("0", "1")
NLI3 = ("entailment", "neutral", "contradiction")
NLI2 = ("entailment", "not_entailment")
ACC = dict(metrics=("accuracy",), primary="accuracy")
F1_ACC = dict(metrics=("f1", "accuracy", "combined"), primary="combined")
DEV = dict(eval_splits=("dev",), test_splits=("test",))

TASKS: dict[str, Task] = {t.name: t for t in [
    Task("CoLA", "CoLA", "cola", ("sentence",), BINARY, ("mcc",), "mcc", **DEV,
         tsv=_tsv(("sentence",), "label", names=("source", "label", "orig_label", "sentence")),
         class_names=("unacceptable", "acceptable")),
    Task("SST-2", "SST-2", "sst2", ("sentence",), BINARY, **ACC, **DEV, tsv=_tsv(("sentence",), "label"),
         class_names=("negative", "positive")),
    Task("MRPC", "MRPC", "mrpc", ("sentence1", "sentence2"), BINARY, **F1_ACC, **DEV,
         tsv=_tsv(("#1 String", "#2 String"), "Quality"), class_names=("not_equivalent", "equivalent")),
    Task("STS-B", "STS-B", "stsb", ("sentence1", "sentence2"), (), ("pearson", "spearman", "combined"), "combined",
         **DEV, tsv=_tsv(("sentence1", "sentence2"), "score")),
    Task("QQP", "QQP", "qqp", ("question1", "question2"), BINARY, **F1_ACC, **DEV,
         tsv=_tsv(("question1", "question2"), "is_duplicate", test_idx="id"),
         class_names=("not_duplicate", "duplicate")),
    Task("MNLI", "MNLI", "mnli", ("premise", "hypothesis"), NLI3, **ACC,
         eval_splits=("dev_matched", "dev_mismatched"), test_splits=("test_matched", "test_mismatched"),
         tsv=_tsv(("sentence1", "sentence2"), "gold_label", labelled=("train", "dev_matched", "dev_mismatched"),
                  tests=("test_matched", "test_mismatched"))),
    Task("QNLI", "QNLI", "qnli", ("question", "sentence"), NLI2, **ACC, **DEV,
         tsv=_tsv(("question", "sentence"), "label")),
    Task("RTE", "RTE", "rte", ("sentence1", "sentence2"), NLI2, **ACC, **DEV,
         tsv=_tsv(("sentence1", "sentence2"), "label")),
    Task("WNLI", "WNLI", "wnli", ("sentence1", "sentence2"), BINARY, **ACC, **DEV,
         tsv=_tsv(("sentence1", "sentence2"), "label"), class_names=("not_entailment", "entailment")),
    # The diagnostic set: test only, MNLI's labels (predicted by an MNLI model), scored by the 3-class
    # Matthews corr. (R3). download_glue_data.py writes it to diagnostic/diagnostic.tsv.
    Task("AX", "diagnostic", "ax", ("premise", "hypothesis"), NLI3, ("mcc",), "mcc", eval_splits=(),
         test_splits=("test",), tsv={"test": TsvSpec("diagnostic.tsv", ("sentence1", "sentence2"), None, "index")},
         aliases=("diagnostic",)),
]}

# MNLI restricted to one of its two dev/test pairs (GLUE submission names MNLI-m.tsv / MNLI-mm.tsv).
VARIANTS: dict[str, Task] = {
    v.name: v for v in [
        dataclasses.replace(TASKS["MNLI"], name="MNLI-m", eval_splits=("dev_matched",), test_splits=("test_matched",),
                            aliases=("mnli-matched",)),
        dataclasses.replace(TASKS["MNLI"], name="MNLI-mm", eval_splits=("dev_mismatched",),
                            test_splits=("test_mismatched",), aliases=("mnli-mismatched",)),
    ]
}


def _squash(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower())


_BY_KEY: dict[str, Task] = {_squash(key): t for t in TASKS.values() for key in (t.name, t.hub_config, *t.aliases)}
_BY_KEY.update({_squash(key): v for v in VARIANTS.values() for key in (v.name, *v.aliases)})


def find_task(name: str | Task) -> Task | None:
    """The Task for any usual spelling (case and `-`/`_` ignored), or None for a name that is no GLUE task."""
    return name if isinstance(name, Task) else _BY_KEY.get(_squash(str(name)))


def normalize_task(name: str | Task) -> Task:
    """The Task for any usual spelling (case and `-`/`_` ignored); KronError listing the valid names."""
    task = find_task(name)
    if task is None:
        raise KronError(f"unknown GLUE task {name!r}; choose one of {', '.join([*TASKS, *VARIANTS])}")
    return task


def default_data_dir() -> Path | None:
    """`$KRON_GLUE_DIR` if set (even when missing: load_split then says so), else `../shared/glue` if it exists."""
    env = os.environ.get(ENV_DIR)
    if env:
        return Path(env).expanduser()
    shared = Path.cwd().parent / "shared" / "glue"
    return shared if shared.is_dir() else None


def _split_name(task: Task, split: str) -> str:
    split = {"validation": "dev", "validation_matched": "dev_matched",
             "validation_mismatched": "dev_mismatched"}.get(split, split)
    if split not in task.tsv:
        raise KronError(f"{task.name} has no split {split!r}; choose one of {', '.join(task.splits)}")
    return split


def _parse_label(task: Task, value: str, where: str) -> int | float:
    value = value.strip()
    if task.is_regression:
        try:
            score = float(value)
        except ValueError:
            score = math.nan
        if not math.isfinite(score):
            raise KronError(f"{where}: {task.name} score {value!r} is not a number; fix or remove the line")
        return score
    try:
        return task.label_names.index(value)
    except ValueError:
        raise KronError(f"{where}: unknown {task.name} label {value!r}; expected one of "
                        f"{', '.join(task.label_names)}") from None


def _parse_idx(value: str, where: str) -> int:
    try:
        return int(value.strip())
    except ValueError:
        raise KronError(f"{where}: row id {value!r} is not an integer; fix or remove the line") from None


def _frame(task: Task, text_a: list, text_b: list | None, labels: list, idx: list) -> pd.DataFrame:
    if labels:
        label = pd.Series(labels, dtype="float64" if task.is_regression else "int64")
    else:  # an unlabelled (test) split
        label = pd.Series([math.nan] * len(idx), dtype="float64")
    return pd.DataFrame({
        "text_a": pd.Series(text_a, dtype=object),
        "text_b": pd.Series(text_b if text_b is not None else [None] * len(text_a), dtype=object),
        "label": label,
        "idx": pd.Series(idx, dtype="int64"),
    }, columns=COLUMNS)


def read_tsv(task: Task | str, split: str, path: str | Path) -> pd.DataFrame:
    """One split from a file in the original GLUE layout (see the module docstring for the checks)."""
    task = normalize_task(task)
    spec = task.tsv[_split_name(task, split)]
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as e:
        raise KronError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start}); re-save the file as UTF-8") from None
    lines = text.split("\n")  # not splitlines(): sentences may hold \x0b, \x1c or U+2028
    if lines and lines[-1] == "":
        lines.pop()
    lines = [line[:-1] if line.endswith("\r") else line for line in lines]
    wanted = [*spec.text, *[c for c in (spec.label, spec.idx) if c]]
    if spec.names is None:
        if not lines:
            raise KronError(f"{path}: empty file; expected a header line and rows (original GLUE layout)")
        names, first = lines[0].split("\t"), 2
        missing = [c for c in wanted if c not in names]
        if missing:
            raise KronError(f"{path}:1: header lacks column(s) {', '.join(map(repr, missing))} (has: "
                            f"{', '.join(names)}); is this the {task.name} {split} file?")
    else:
        names, first = list(spec.names), 1
    rows = lines[first - 1:]
    if not rows:
        raise KronError(f"{path}: no data rows; the {task.name} {split} split is empty")
    col = {c: names.index(c) for c in wanted}
    texts: list[list[str]] = [[] for _ in spec.text]
    labels: list = []
    idx: list[int] = []
    for number, line in enumerate(rows, start=first):
        fields = line.split("\t")
        where = f"{path}:{number}"
        if len(fields) != len(names):
            raise KronError(f"{where}: {len(fields)} tab-separated fields, expected {len(names)} "
                            f"({', '.join(names)}); fix or remove the line")
        for out, c in zip(texts, spec.text):
            out.append(fields[col[c]])
        if spec.label:
            labels.append(_parse_label(task, fields[col[spec.label]], where))
        idx.append(_parse_idx(fields[col[spec.idx]], where) if spec.idx else number - first)
    return _frame(task, texts[0], texts[1] if len(texts) > 1 else None, labels, idx)


def _hub_split(split: str) -> str:
    return split.replace("dev", "validation")


def _from_datasets(task: Task, split: str, dataset, origin: str) -> pd.DataFrame:
    """A `datasets.Dataset` of nyu-mll/glue (labels -1 on test splits) as the loader's frame."""
    missing = [c for c in (*task.hub_text, "label", "idx") if c not in dataset.column_names]
    if missing:
        raise KronError(f"{origin} lacks column(s) {', '.join(missing)} (has: {', '.join(dataset.column_names)}); "
                        f"expected nyu-mll/glue {task.hub_config}")
    if len(dataset) == 0:
        raise KronError(f"{origin}: the {task.name} {split} split is empty")
    data = dataset.to_dict()
    labels = data["label"]
    if task.tsv[split].label is None:
        labels = []
    elif any(v == -1 for v in labels):
        raise KronError(f"{origin}: {task.name} {split} has rows without a label (-1)")
    texts = [data[c] for c in task.hub_text]
    return _frame(task, texts[0], texts[1] if len(texts) > 1 else None, labels, data["idx"])


def _load_saved(task: Task, split: str, folder: Path) -> pd.DataFrame:
    datasets = _import_datasets(f"{folder} holds a saved dataset")
    saved = datasets.load_from_disk(str(folder))
    if not isinstance(saved, datasets.DatasetDict):
        raise KronError(f"{folder} holds one Dataset; save the whole DatasetDict of nyu-mll/glue {task.hub_config} "
                        f"there (load_dataset(...).save_to_disk)")
    hub_split = _hub_split(split)
    if hub_split not in saved:
        raise KronError(f"{folder} has no split {hub_split!r} (has: {', '.join(saved)})")
    return _from_datasets(task, split, saved[hub_split], f"{folder}[{hub_split}]")


def _import_datasets(why: str):
    try:
        import datasets
    except ImportError:
        raise KronError(f"{why} but the `datasets` package is missing; pip install datasets, or "
                        f"{DATA_DIR_HINT}") from None
    return datasets


def _online() -> bool:
    if any(os.environ.get(v, "").lower() in {"1", "true", "yes", "on"}
           for v in ("HF_DATASETS_OFFLINE", "HF_HUB_OFFLINE")):
        return False
    from ..sources import _hub_reachable  # one socket check, 3 s, instead of datasets' retries

    return _hub_reachable(timeout=3.0)


def _load_hub(task: Task, split: str, expected: str) -> pd.DataFrame:
    if not _online():
        raise KronError(f"no local {task.name} data{expected} and the Hugging Face hub is unreachable (offline); "
                        f"{DATA_DIR_HINT}")
    datasets = _import_datasets(f"{task.name} must come from the hub")
    hub_split = _hub_split(split)
    try:
        dataset = datasets.load_dataset(HUB_DATASET, task.hub_config, split=hub_split)
    except Exception as e:  # network, cache or hub errors: one line, and where to put local files instead
        first = first_line(e)
        raise KronError(f"could not load {HUB_DATASET} {task.hub_config} {hub_split} from the hub ({first}); "
                        f"{DATA_DIR_HINT}") from None
    return _from_datasets(task, split, dataset, f"{HUB_DATASET} {task.hub_config} {hub_split}")


def load_split(task: Task | str, split: str, data_dir: str | Path | None = None) -> pd.DataFrame:
    """A GLUE split as a DataFrame (text_a, text_b, label, idx); see the module docstring for sources. A task on
    the user's own files (data/own.py) reads them itself."""
    task = normalize_task(task)
    if hasattr(task, "load"):
        return task.load(split)
    split = _split_name(task, split)
    origin = "--data-dir" if data_dir is not None else ENV_DIR if os.environ.get(ENV_DIR) else None
    root = Path(data_dir).expanduser() if data_dir is not None else default_data_dir()
    expected = ""
    if root is not None:
        if origin and not root.is_dir():
            raise KronError(f"{origin} {root} is not a directory; point it at the folder holding "
                            f"{task.folder}/{task.tsv[split].file}")
        tsv = root / task.folder / task.tsv[split].file
        if tsv.is_file():
            return read_tsv(task, split, tsv)
        saved = root / task.hub_config
        if saved.is_dir():
            return _load_saved(task, split, saved)
        if origin:
            raise KronError(f"{origin} {root} has no {task.name} {split} data: expected {tsv} in the original GLUE "
                            f"layout, or a DatasetDict saved with save_to_disk in {saved}")
        expected = f" (expected {tsv}, or a saved DatasetDict in {saved})"
    return _load_hub(task, split, expected)
