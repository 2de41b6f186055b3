"""The options that say where an own-data task's files are and how to read them (data/own.py reads them).

Kept apart, free of pandas and torch, because the CLI derives its options from this dataclass at start-up.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import KronError


def _opt(default, help_: str):
    return field(default=default, metadata={"help": help_})


@dataclass(frozen=True)
class TaskFiles:
    """Where a task's own data lives and how to read it: `kron finetune` / `kron eval data` options and a
    recipe's task mapping (the field names are the recipe keys; the options are `--train`, `--text-columns` ...)."""

    train: str | None = _opt(None, "Own task: training data (.csv/.tsv/.jsonl/.json/.parquet, a save_to_disk "
                                   "folder; with --dataset, its split name).")
    dev: str | None = _opt(None, "Own task: dev data, scored during training (default: --dev-fraction of "
                                 "--train).")
    test: str | None = _opt(None, "Own task: test data, labelled or not.")
    dataset: str | None = _opt(None, "Own task: a `datasets` name or save_to_disk folder; --train/--dev/--test "
                                     "then name its splits (default train, validation, test).")
    dataset_config: str | None = _opt(None, "Own task: the --dataset configuration name.")
    text_columns: str | None = _opt(None, "Own task: one or two text columns, e.g. subject,body (default text, "
                                          "or sentence / sentence1,sentence2 when present).")
    label_column: str | None = _opt(None, "Own task: the label column (default label); several 0/1 columns, "
                                          "comma-separated, make a multi-label task.")
    kind: str | None = _opt(None, "Own task: classification, regression or multilabel (default: inferred from "
                                  "the labels).")
    quoting: str | None = _opt(None, "Own task: CSV/TSV quoting, minimal or none (GLUE's; default none for "
                                     ".tsv, minimal for .csv).")
    dev_fraction: float | None = _opt(None, "Own task without a dev file: the share of training rows held out "
                                            "as dev (seeded, recorded).")
    split_seed: int = _opt(0, "Own task: the seed of the --dev-fraction split.")

    @property
    def given(self) -> bool:
        return self.train is not None or self.dataset is not None

    def source(self, split: str) -> str | None:
        """Where `split` comes from: a file path, or a dataset split name (None: the split is absent)."""
        value = getattr(self, split)
        if self.dataset is not None and value is None:
            return {"train": "train", "dev": None if self.dev_fraction else "validation", "test": None}[split]
        return value

    def absolute(self) -> "TaskFiles":
        """Paths made absolute (the definition must not depend on the directory a command runs from)."""
        def fix(v):
            return str(Path(v).expanduser().resolve()) if v is not None and Path(v).expanduser().exists() else v

        if self.dataset is not None:
            return dataclasses.replace(self, dataset=fix(self.dataset))
        return dataclasses.replace(self, train=fix(self.train), dev=fix(self.dev), test=fix(self.test))


def files_from_mapping(mapping: dict, where: str) -> TaskFiles:
    """A recipe's task mapping (name plus TaskFiles keys) as TaskFiles; unknown keys are an error."""
    known = {f.name for f in dataclasses.fields(TaskFiles)}
    unknown = sorted(set(mapping) - known - {"name"})
    if unknown:
        raise KronError(f"{where}: unknown key(s) {', '.join(unknown)}; a task takes name, {', '.join(sorted(known))}")
    values = {k: (",".join(map(str, v)) if isinstance(v, list) and k in ("text_columns", "label_column") else v)
              for k, v in mapping.items() if k != "name"}
    return TaskFiles(**values)
