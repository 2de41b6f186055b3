"""`kron eval ood`: a model fine-tuned on task T scored on another labelled set, beside its T dev score.

Data (`--data`): a .tsv/.txt file (tab-separated, header line, quoting off as in GLUE), a .csv file, a .json
file (a list of records) or .jsonl (one record a line); a folder written by `datasets` save_to_disk; or a
`datasets` name (`hans`, `NAME:CONFIG`), only when the hub is reachable. The text columns default to the
task's own (e.g. premise,hypothesis for MNLI, or the GLUE TSV's sentence1,sentence2); the label column to
`label`. A `datasets` ClassLabel column is read as its names.

Labels: `--label-map VALUE=LABEL,...` maps every label value of the data to one of the model's labels, by
name (`entailment`) or id (`0`). Without it, the values must be the task's own label names or ids. A value
left unmapped is an error naming it. `--collapse LABEL=LABEL,...` maps the model's predictions before
scoring: a 3-class MNLI model on 2-class HANS is `--label-map entailment=entailment,
non-entailment=contradiction --collapse neutral=contradiction` (neutral and contradiction both count as
non-entailment). STS-B (regression) takes numeric labels and neither option.

Result per model: the task's metrics (accuracy always included for classifiers) on the data, the same on
the task's dev split (MNLI: matched; MNLI-mm: mismatched; scored on the model's own labels, never
collapsed), and the robustness gap = ood - dev of accuracy (STS-B: of the primary metric). Rows in
metrics/eval.csv: the dev rows, the ood rows with split `ood:<file name>` (`ood:<name>/<split>` for a
datasets name), and `<metric>_gap` under the ood split.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np
import pandas as pd

from ..data.files import read_source
from ..data.glue import Task, load_split, normalize_task
from ..errors import KronError
from ..metrics import compute_metrics
from ..workspace import Workspace
from .glue_eval import (Evaluation, append_eval_rows, check_labels, check_options, load_task_model, model_task,
                        predict, require_workspace, score_logits, select_models)

SHOW = 5  # unmapped label values named in an error


@dataclass
class OodOptions:
    task: Task  # parsed at the CLI edge
    data: str
    label_map: str | None = None  # "VALUE=LABEL,..." data label value -> model label (name or id)
    collapse: str | None = None  # "LABEL=LABEL,..." model prediction -> model label, before scoring
    text_columns: str | None = None  # "a,b"; default: the task's own column names
    label_column: str = "label"
    data_split: str = "validation"  # for a datasets name or a saved DatasetDict
    model: str | None = None  # student | teacher; None: both where present
    data_dir: str | None = None  # GLUE folder for the dev score
    dev: bool = True  # also score the task's dev split and report the gap
    batch_size: int = 64
    max_seq_len: int | None = None


# --------------------------------------------------------------------------------------------------- labels

def _value(v) -> str:
    """A label cell as text: 1.0 -> "1", strings stripped."""
    if isinstance(v, float) and math.isfinite(v) and v.is_integer():
        return str(int(v))
    if isinstance(v, (bool, np.bool_)):
        return str(v).lower()
    return "" if v is None else str(v).strip()


def label_id(task: Task, value: str, option: str) -> int:
    """A model label given by name (case-insensitive) or id, checked against the model's label count."""
    names = task.label_names
    lowered = [n.lower() for n in names]
    if value.lower() in lowered:
        return lowered.index(value.lower())
    listing = ", ".join(f"{i}={n}" for i, n in enumerate(names))
    try:
        i = int(value)
    except ValueError:
        raise KronError(f"{option}: {value!r} is not a {task.name} label; the model's labels are {listing}") \
            from None
    if not 0 <= i < task.num_labels:
        raise KronError(f"{option}: label id {i} is out of range; the {task.name} model has {task.num_labels} "
                        f"labels ({listing})")
    return i


def parse_pairs(spec: str, option: str, example: str) -> list[tuple[str, str]]:
    pairs = []
    for item in spec.split(","):
        if not item.strip():
            continue
        key, sep, value = item.partition("=")
        if not sep or not key.strip() or not value.strip():
            raise KronError(f"{option} {item!r} is not VALUE=LABEL; e.g. {option} {example}")
        pairs.append((key.strip(), value.strip()))
    if not pairs:
        raise KronError(f"{option} is empty; e.g. {option} {example}")
    return pairs


def label_mapping(task: Task, spec: str | None) -> dict[str, int]:
    """Data label value -> model label id: --label-map, else the task's own names and ids."""
    if spec is None:
        return {**{n: i for i, n in enumerate(task.label_names)}, **{str(i): i for i in range(task.num_labels)}}
    return {k: label_id(task, v, "--label-map") for k, v in
            parse_pairs(spec, "--label-map", "entailment=0,non-entailment=1")}


def collapse_table(task: Task, spec: str | None) -> np.ndarray:
    """Prediction id -> scored id (identity unless --collapse)."""
    table = np.arange(task.num_labels)
    for src, dst in parse_pairs(spec, "--collapse", "neutral=contradiction") if spec else []:
        table[label_id(task, src, "--collapse")] = label_id(task, dst, "--collapse")
    return table


def _gold(task: Task, values: list, mapping: dict[str, int] | None, origin: str, spec: str | None) -> list:
    if task.is_regression:
        out = []
        for v in values:
            try:
                out.append(float(v))
            except (TypeError, ValueError):
                out.append(math.nan)
            if not math.isfinite(out[-1]):
                raise KronError(f"{origin}: {task.name} label {v!r} is not a number (a regression task needs "
                                f"numeric scores)")
        return out
    texts = [_value(v) for v in values]
    unmapped = sorted({t for t in texts if t not in mapping})
    if unmapped:
        shown = ", ".join(map(repr, unmapped[:SHOW])) + (f" (+{len(unmapped) - SHOW} more)" if len(unmapped) > SHOW
                                                         else "")
        rows = sum(t not in mapping for t in texts)
        if spec is not None:
            raise KronError(f"--label-map leaves label value(s) {shown} of {origin} unmapped ({rows} rows); add "
                            f"e.g. {unmapped[0]}=LABEL to --label-map")
        raise KronError(f"{origin}: label value(s) {shown} are not {task.name} labels "
                        f"({', '.join(task.label_names)}); pass --label-map VALUE=LABEL,... (e.g. "
                        f"--label-map {unmapped[0]}={task.label_names[0]})")
    return [mapping[t] for t in texts]


def _text_columns(task: Task, frame: pd.DataFrame, spec: str | None, origin: str) -> list[str]:
    if spec:
        cols = [c.strip() for c in spec.split(",") if c.strip()]
        candidates = [cols]
    else:
        glue_cols = list(next(s.text for s in task.tsv.values() if s.label))
        candidates = [list(task.hub_text), glue_cols]
    for cols in candidates:
        if all(c in frame.columns for c in cols):
            break
    else:
        missing = [c for c in candidates[0] if c not in frame.columns]
        raise KronError(f"{origin} has no column(s) {', '.join(map(repr, missing))} (has: "
                        f"{', '.join(map(str, frame.columns))}); pass --text-columns A,B")
    want = 2 if task.is_pair else 1
    if len(cols) != want:
        raise KronError(f"--text-columns {','.join(cols)}: {task.name} takes "
                        f"{'sentence pairs: name two columns' if want == 2 else 'one sentence: name one column'}")
    return cols


def to_frame(task: Task, frame: pd.DataFrame, opts: OodOptions, mapping: dict[str, int] | None,
             origin: str) -> pd.DataFrame:
    """The data as a load_split-style frame (text_a, text_b, label, idx), labels as model ids."""
    cols = _text_columns(task, frame, opts.text_columns, origin)
    if opts.label_column not in frame.columns:
        raise KronError(f"{origin} has no label column {opts.label_column!r} (has: "
                        f"{', '.join(map(str, frame.columns))}); pass --label-column NAME")
    gold = _gold(task, frame[opts.label_column].tolist(), mapping, origin, opts.label_map)
    text = [["" if v is None or (isinstance(v, float) and math.isnan(v)) else str(v) for v in frame[c].tolist()]
            for c in cols]
    return pd.DataFrame({"text_a": text[0], "text_b": text[1] if len(text) > 1 else [None] * len(frame),
                         "label": gold, "idx": range(len(frame))})


# ------------------------------------------------------------------------------------------------- evaluate

def _metrics(task: Task, logits: np.ndarray, gold, collapse: np.ndarray | None = None) -> dict[str, float]:
    """The task's metrics, plus accuracy for every classifier; predictions through `collapse` when given."""
    if task.is_regression:
        return score_logits(task, logits, gold)
    preds = logits.argmax(axis=1)
    if collapse is not None:
        preds = collapse[preds]
    metrics = compute_metrics(task, preds, gold)
    metrics.setdefault("accuracy", 100.0 * float(np.mean(preds == np.asarray(gold))))
    return metrics


def evaluate_ood(ws: Workspace, opts: OodOptions, progress: Callable | None = None) -> dict:
    """Each model on the data (and its task dev split); rows to metrics/eval.csv; the gaps."""
    require_workspace(ws)
    check_options(opts.model, opts.batch_size)
    asked = normalize_task(opts.task)
    if not asked.eval_splits:
        raise KronError(f"{asked.name} is a test-only diagnostic; pass the task the model was fine-tuned on "
                        f"(e.g. --task mnli)")
    task = model_task(asked)
    models = select_models(ws, task, opts.model)
    for m in models:
        check_labels(ws, task, m)
    if task.is_regression and (opts.label_map or opts.collapse):
        raise KronError(f"{task.name} is a regression task: --label-map and --collapse apply to classifiers")
    mapping = None if task.is_regression else label_mapping(task, opts.label_map)
    collapse = None if task.is_regression else collapse_table(task, opts.collapse)
    table, name = read_source(opts.data, opts.data_split)
    raw = table.frame
    frame = to_frame(task, raw, opts, mapping, opts.data)
    split = f"ood:{name}"
    dev_split, dev = asked.eval_splits[0], None
    if opts.dev:
        try:
            dev = load_split(task, dev_split, opts.data_dir)
        except KronError as e:
            raise KronError(f"{e}; or pass --no-dev to skip the dev score and the gap") from None
    gap_metric = task.primary if task.is_regression else "accuracy"
    results, gaps = [], []
    for which in models:
        tm = load_task_model(ws, task, which, opts.max_seq_len)
        logits, seconds = predict(tm, task, frame, opts.batch_size, progress, f"{task.name} {which} {split}")
        ood = Evaluation(task.name, which, split, len(frame), seconds, primary=gap_metric,
                         metrics=_metrics(task, logits, frame["label"], collapse))
        evals, extra = [ood], []
        if dev is not None:
            d_logits, d_seconds = predict(tm, task, dev, opts.batch_size, progress, f"{task.name} {which} {dev_split}")
            d_ev = Evaluation(task.name, which, dev_split, len(dev), d_seconds, primary=gap_metric,
                              metrics=_metrics(task, d_logits, dev["label"]))
            gap = ood.metrics[gap_metric] - d_ev.metrics[gap_metric]
            gaps.append({"model": which, "metric": gap_metric, "dev_split": dev_split,
                         "dev": d_ev.metrics[gap_metric], "ood": ood.metrics[gap_metric], "gap": gap})
            evals = [d_ev, ood]
            extra = [Evaluation(task.name, which, split, len(frame), seconds, metrics={f"{gap_metric}_gap": gap})]
        csv_path = append_eval_rows(ws, [row for ev in evals + extra for row in ev.rows(ws)])
        results += evals
        del tm
    return {"workspace": str(ws.root), "task": task.name, "data": opts.data, "split": split, "n": len(frame),
            "label_map": None if mapping is None else {k: task.label_names[v] for k, v in mapping.items()},
            "collapse": None if collapse is None else {task.label_names[i]: task.label_names[int(j)]
                                                       for i, j in enumerate(collapse) if i != j},
            "results": [r.as_dict() for r in results], "gaps": gaps, "eval_csv": str(csv_path)}
