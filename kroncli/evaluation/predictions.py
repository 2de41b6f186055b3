"""GLUE-server submission files: WS/predictions/<TASK>.tsv, one per test split, written atomically.

Format (what gluebenchmark.com accepts): a header `index<TAB>prediction`, then one line per test example
in file order, `index` being the test file's own id column. Predictions are the task's label names as in
the task table (`Task.label_names`): `0`/`1` for CoLA, SST-2, MRPC, QQP and WNLI, `entailment` /
`not_entailment` for QNLI and RTE, `entailment` / `neutral` / `contradiction` for MNLI and AX; STS-B writes
its score clipped to [0, 5] with three decimals. File names: CoLA.tsv, SST-2.tsv, MRPC.tsv, STS-B.tsv,
QQP.tsv, MNLI-m.tsv (test_matched), MNLI-mm.tsv (test_mismatched), QNLI.tsv, RTE.tsv, WNLI.tsv, AX.tsv.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..data.glue import Task
from ..errors import KronError
from ..workspace import Workspace, atomic_write_text

PREDICTIONS_DIR = "predictions"
HEADER = "index\tprediction"
STSB_RANGE = (0.0, 5.0)
_MNLI_FILES = {"test_matched": "MNLI-m", "test_mismatched": "MNLI-mm", "dev_matched": "MNLI-m",
               "dev_mismatched": "MNLI-mm"}


def unwritable(path: Path, error: OSError) -> KronError:
    return KronError(f"cannot write {path}: {error.strerror or error}; make {path.parent} a writable folder")


def write_file(path: Path, text: str) -> None:
    """Atomic write; a folder that cannot be written is one KronError naming the file."""
    try:
        atomic_write_text(path, text)
    except OSError as e:
        raise unwritable(path, e) from None


def submission_name(task: Task, split: str) -> str:
    """The file stem the GLUE server expects for a task's split (MNLI-m / MNLI-mm for MNLI)."""
    return _MNLI_FILES[split] if task.folder == "MNLI" else task.name


def prediction_values(task: Task, logits: np.ndarray) -> list[str]:
    """Logits (n, num_labels) as the strings of the submission's `prediction` column."""
    if task.is_regression:
        return [f"{v:.3f}" for v in np.clip(logits[:, 0], *STSB_RANGE)]
    return [task.label_names[i] for i in logits.argmax(axis=1)]


def submission_text(task: Task, idx, logits: np.ndarray) -> str:
    lines = [HEADER, *(f"{int(i)}\t{p}" for i, p in zip(idx, prediction_values(task, logits)))]
    return "\n".join(lines) + "\n"


def write_submission(ws: Workspace, task: Task, split: str, idx, logits: np.ndarray) -> Path:
    """WS/predictions/<name>.tsv for one test split (replacing an older one in one rename)."""
    if len(idx) != len(logits):
        raise KronError(f"{task.name} {split}: {len(logits)} predictions for {len(idx)} examples")
    path = ws.root / PREDICTIONS_DIR / f"{submission_name(task, split)}.tsv"
    write_file(path, submission_text(task, idx, logits))
    return path
