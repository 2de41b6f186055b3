"""Task metrics as pure functions (scikit-learn / scipy), shared by `kron finetune` and every `kron eval`.

Every score is on the 0-100 scale of the GLUE leaderboard (accuracy 84.5, not 0.845), except `mse`, which is
on the labels' own scale. Per task (the metric names and the primary one live in the task table,
kroncli.data.glue.TASKS, and for own tasks in kroncli.data.own.METRICS):

- CoLA, AX: `mcc` (Matthews corr.; 0.0 when undefined, e.g. a single class in labels or predictions);
- MRPC, QQP: `f1` (of class 1), `accuracy`, `combined` = their mean;
- STS-B: `pearson`, `spearman`, `combined` = their mean (0.0 for a constant input, where r is undefined);
- SST-2, MNLI, QNLI, RTE, WNLI: `accuracy`.

The primary metric (`primary_metric(task)`) is the task score that enters the GLUE average: `combined` for
the two-metric tasks, the only metric otherwise.

Own tasks (data/own.py): classification `accuracy`, `macro_f1`, `mcc` (binary: `f1` of class id 1 too);
regression `pearson`, `spearman`, `mse`; multi-label (a logit above 0 predicts a label) `micro_f1`,
`macro_f1`, `subset_accuracy` (every label of an example right). `per_class` gives precision, recall, F1 and
support of each class.
"""

from __future__ import annotations

import warnings
from collections import Counter
from typing import Callable

import numpy as np

from .data.glue import Task, normalize_task
from .errors import KronError

# scikit-learn and scipy are imported on first use: `import sklearn.metrics` alone costs about a second.


def _accuracy(pred: np.ndarray, gold: np.ndarray) -> float:
    return float(np.mean(pred == gold))


def _f1(pred: np.ndarray, gold: np.ndarray) -> float:
    from sklearn.metrics import f1_score

    return float(f1_score(gold, pred, pos_label=1, average="binary", zero_division=0.0))


def _mcc(pred: np.ndarray, gold: np.ndarray) -> float:
    from sklearn.metrics import matthews_corrcoef

    return float(matthews_corrcoef(gold, pred))  # 0.0 where undefined (one class only), without a warning


def _correlation(name: str) -> Callable[[np.ndarray, np.ndarray], float]:
    def metric(pred: np.ndarray, gold: np.ndarray) -> float:
        if len(pred) < 2 or np.ptp(pred) == 0 or np.ptp(gold) == 0:
            return 0.0  # undefined for a constant input; scipy would warn and return NaN
        import scipy.stats

        return float(getattr(scipy.stats, name)(pred, gold)[0])

    return metric


def _averaged_f1(average: str) -> Callable[[np.ndarray, np.ndarray], float]:
    def metric(pred: np.ndarray, gold: np.ndarray) -> float:
        from sklearn.metrics import f1_score

        return float(f1_score(gold, pred, average=average, zero_division=0.0))

    return metric


def _mse(pred: np.ndarray, gold: np.ndarray) -> float:
    from sklearn.metrics import mean_squared_error

    return float(mean_squared_error(gold, pred))


def _subset_accuracy(pred: np.ndarray, gold: np.ndarray) -> float:
    from sklearn.metrics import accuracy_score

    return float(accuracy_score(gold, pred))  # on label matrices: the share of rows with every label right


METRICS: dict[str, Callable[[np.ndarray, np.ndarray], float]] = {
    "accuracy": _accuracy, "f1": _f1, "mcc": _mcc, "pearson": _correlation("pearsonr"),
    "spearman": _correlation("spearmanr"), "macro_f1": _averaged_f1("macro"), "micro_f1": _averaged_f1("micro"),
    "mse": _mse, "subset_accuracy": _subset_accuracy,
}
UNSCALED = {"mse"}  # on the labels' scale, not 0-100


def primary_metric(task: Task | str) -> str:
    """The name of the task's headline metric (a key of compute_metrics' result)."""
    return normalize_task(task).primary


def _multilabel_arrays(task: Task, predictions, labels) -> tuple[np.ndarray, np.ndarray]:
    """0/1 matrices (n, labels): a prediction is a 0/1 matrix already, or logits (a label where the logit > 0)."""
    pred = np.asarray(predictions, dtype=float)
    gold = np.stack([np.asarray(v, dtype=float) for v in labels]) if len(labels) else np.zeros((0, task.num_labels))
    if pred.shape != gold.shape or pred.ndim != 2 or pred.shape[1] != task.num_labels:
        raise ValueError(f"{task.name}: predictions {pred.shape} and labels {gold.shape} do not match "
                         f"({task.num_labels} labels)")
    if len(gold) == 0:
        raise KronError(f"{task.name}: nothing to score (no examples)")
    if not np.isin(pred, (0.0, 1.0)).all():
        pred = pred > 0
    return pred.astype(np.int64), gold.astype(np.int64)


def _as_arrays(task: Task, predictions, labels) -> tuple[np.ndarray, np.ndarray]:
    if task.is_multilabel:
        return _multilabel_arrays(task, predictions, labels)
    pred = np.asarray(predictions, dtype=float)
    gold = np.asarray(labels, dtype=float)
    if task.is_regression:
        if pred.ndim == 2 and pred.shape[1] == 1:
            pred = pred[:, 0]
    elif pred.ndim == 2:  # scores / logits, one column per class
        if pred.shape[1] != task.num_labels:
            raise ValueError(f"{task.name}: predictions have {pred.shape[1]} columns, expected {task.num_labels}")
        pred = pred.argmax(axis=1)
    if pred.ndim != 1 or gold.ndim != 1 or len(pred) != len(gold):
        raise ValueError(f"{task.name}: predictions {pred.shape} and labels {gold.shape} do not match")
    if len(gold) == 0:
        raise KronError(f"{task.name}: nothing to score (no examples)")
    if np.isnan(gold).any():
        raise KronError(f"{task.name}: labels are missing (a test split?); score a dev split instead")
    if not task.is_regression:
        pred, gold = pred.astype(np.int64), gold.astype(np.int64)
    return pred, gold


def compute_metrics(task: Task | str, predictions, labels) -> dict[str, float]:
    """{metric: score on 0-100} for the task's metrics (see the module docstring).

    predictions: class ids, or an (n, num_labels) array of scores/logits (arg-maxed); STS-B: floats, shape (n,)
    or (n, 1). labels: class ids (floats for STS-B), as in load_split's `label` column.
    """
    task = normalize_task(task)
    pred, gold = _as_arrays(task, predictions, labels)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the undefined cases are handled above, as documented
        scores = {name: (1.0 if name in UNSCALED else 100.0) * METRICS[name](pred, gold)
                  for name in task.metrics if name != "combined"}
    if "combined" in task.metrics:
        scores["combined"] = float(np.mean(list(scores.values())))
    return scores


def per_class(task: Task | str, predictions, labels) -> dict[str, dict[str, float]]:
    """{class name: precision, recall, f1 (0-100) and support} of a classifier (multi-label: of each label)."""
    from sklearn.metrics import precision_recall_fscore_support

    task = normalize_task(task)
    if task.is_regression:
        return {}
    pred, gold = _as_arrays(task, predictions, labels)
    ids = list(range(task.num_labels))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        p, r, f, n = precision_recall_fscore_support(gold, pred, labels=None if task.is_multilabel else ids,
                                                     zero_division=0.0)
    return {name: {"precision": 100.0 * float(p[i]), "recall": 100.0 * float(r[i]), "f1": 100.0 * float(f[i]),
                   "support": int(n[i])} for i, name in enumerate(task.names)}


def majority_baseline(task: Task | str, train_labels, eval_labels) -> dict[str, float]:
    """compute_metrics of always predicting the most common training label (the mean score for STS-B; for a
    multi-label task each label's more common value).

    Ties go to the smallest label id. The floor for "gain over the majority baseline retained".
    """
    task = normalize_task(task)
    if task.is_multilabel:
        train = np.stack([np.asarray(v, dtype=float) for v in train_labels])
        constant = (train.mean(axis=0) > 0.5).astype(float)
        return compute_metrics(task, np.tile(constant, (len(eval_labels), 1)), list(eval_labels))
    train = np.asarray(train_labels, dtype=float)
    if len(train) == 0 or np.isnan(train).any():
        raise KronError(f"{task.name}: the majority baseline needs labelled training examples")
    if task.is_regression:
        constant = float(train.mean())
    else:
        counts = Counter(train.astype(np.int64).tolist())
        constant = min(counts, key=lambda label: (-counts[label], label))
    return compute_metrics(task, np.full(len(eval_labels), constant), eval_labels)
