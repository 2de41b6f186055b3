"""kroncli.metrics against values computed by hand (0-100 scale), degenerate inputs, and the majority baseline."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

from kroncli.data.glue import TASKS, normalize_task
from kroncli.errors import KronError
from kroncli.metrics import compute_metrics, majority_baseline, primary_metric


@pytest.fixture(autouse=True)
def warnings_are_errors():
    """Degenerate inputs are handled, not warned about (scipy/sklearn would warn and return NaN)."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        yield


def close(got: dict, want: dict) -> bool:
    return got.keys() == want.keys() and all(math.isclose(got[k], want[k], abs_tol=1e-9) for k in want)


@pytest.mark.parametrize("task", ["sst2", "mnli", "mnli-mm", "qnli", "rte", "wnli"])
def test_accuracy_tasks(task):
    # 3 of 4 right
    assert compute_metrics(task, [0, 1, 1, 0], [0, 1, 0, 0]) == {"accuracy": 75.0}


@pytest.mark.parametrize("task", ["mrpc", "MRPC", "qqp"])
def test_f1_accuracy_combined(task):
    # TP=2 (rows 0, 4), FP=1 (row 1), FN=1 (row 3): precision = recall = 2/3, F1 = 2/3; accuracy 3/5
    got = compute_metrics(task, [1, 1, 0, 0, 1], [1, 0, 0, 1, 1])
    assert close(got, {"f1": 200 / 3, "accuracy": 60.0, "combined": (200 / 3 + 60) / 2})


def test_f1_without_any_positive_is_zero():
    assert close(compute_metrics("mrpc", [0, 0, 0], [0, 0, 1]), {"f1": 0.0, "accuracy": 200 / 3,
                                                                 "combined": 100 / 3})


def test_matthews_corr():
    # TP=1, TN=2, FP=1, FN=0: (1*2 - 1*0) / sqrt(2 * 1 * 3 * 2) = 2 / sqrt(12)
    assert close(compute_metrics("cola", [1, 1, 0, 0], [1, 0, 0, 0]), {"mcc": 100 * 2 / math.sqrt(12)})
    assert close(compute_metrics("cola", [1, 0, 1, 0], [1, 0, 1, 0]), {"mcc": 100.0})
    assert close(compute_metrics("cola", [0, 1, 0, 1], [1, 0, 1, 0]), {"mcc": -100.0})


@pytest.mark.parametrize("pred, gold", [([1, 1, 1, 1], [1, 1, 1, 1]), ([1, 0, 1, 0], [1, 1, 1, 1]),
                                        ([1, 1, 1, 1], [1, 0, 0, 1]), ([0], [0])])
def test_matthews_corr_single_class_is_zero(pred, gold):
    assert compute_metrics("cola", pred, gold) == {"mcc": 0.0}


def test_ax_three_class_matthews_corr():
    # Gorodkin's multiclass MCC: (c*s - t.p) / sqrt((s^2 - p.p)(s^2 - t.t)) with c = 4 correct of s = 5,
    # t = gold counts per class (1, 3, 1), p = predicted counts (2, 2, 1): 11 / sqrt(16 * 14)
    pred, gold = [0, 1, 2, 0, 1], [0, 1, 2, 1, 1]
    t, p = np.array([1, 3, 1]), np.array([2, 2, 1])
    want = (4 * 5 - t @ p) / math.sqrt((25 - p @ p) * (25 - t @ t))
    assert close(compute_metrics("ax", pred, gold), {"mcc": 100 * want})


def test_pearson_spearman():
    # pred (1,2,3) vs gold (1,2,4): deviations (-1,0,1) and (-4/3,-1/3,5/3): r = 3 / (sqrt(2) * sqrt(42)/3) = 9/sqrt(84)
    # ranks are equal: Spearman 1
    r = 9 / math.sqrt(84)
    assert close(compute_metrics("stsb", [1.0, 2.0, 3.0], [1.0, 2.0, 4.0]),
                 {"pearson": 100 * r, "spearman": 100.0, "combined": (100 * r + 100) / 2})
    # (n, 1) regression output is accepted
    assert close(compute_metrics("sts-b", np.array([[3.0], [2.0], [1.0]]), [1.0, 2.0, 4.0]),
                 {"pearson": -100 * r, "spearman": -100.0, "combined": -(100 * r + 100) / 2})


@pytest.mark.parametrize("pred, gold", [([2.5, 2.5, 2.5], [1.0, 2.0, 4.0]), ([1.0, 2.0, 3.0], [3.0, 3.0, 3.0]),
                                        ([1.0], [2.0])])
def test_correlation_of_a_constant_is_zero_not_nan(pred, gold):
    assert compute_metrics("stsb", pred, gold) == {"pearson": 0.0, "spearman": 0.0, "combined": 0.0}


def test_logits_are_argmaxed():
    logits = np.array([[2.0, 0.1, 0.3], [0.0, 1.0, -1.0], [0.1, 0.2, 0.3], [5.0, 0.0, 0.0]])  # -> 0, 1, 2, 0
    assert compute_metrics("mnli", logits, [0, 1, 2, 1]) == {"accuracy": 75.0}
    with pytest.raises(ValueError, match="3 columns, expected 2"):
        compute_metrics("rte", logits, [0, 1, 1, 0])


def test_bad_inputs():
    with pytest.raises(ValueError, match="do not match"):
        compute_metrics("sst2", [0, 1], [0, 1, 1])
    with pytest.raises(KronError, match="no examples"):
        compute_metrics("sst2", [], [])
    with pytest.raises(KronError, match="labels are missing"):
        compute_metrics("sst2", [0, 1], [math.nan, math.nan])
    with pytest.raises(KronError, match="unknown GLUE task 'squad'"):
        compute_metrics("squad", [0], [0])


def test_primary_metric_is_a_key_of_the_result():
    assert {name: primary_metric(name) for name in TASKS} == {
        "CoLA": "mcc", "SST-2": "accuracy", "MRPC": "combined", "STS-B": "combined", "QQP": "combined",
        "MNLI": "accuracy", "QNLI": "accuracy", "RTE": "accuracy", "WNLI": "accuracy", "AX": "mcc"}
    assert primary_metric("sts-b") == primary_metric(normalize_task("STS-B")) == "combined"
    for task in TASKS.values():
        preds = [0.5, 1.5, 2.5] if task.is_regression else [0, 1, 1]
        assert primary_metric(task) in compute_metrics(task, preds, [0.0, 1.0, 2.0] if task.is_regression
                                                       else [0, 1, 0])


def test_majority_baseline():
    # most common training label 1 -> predict 1 everywhere on eval (1, 0, 1, 1)
    assert majority_baseline("sst2", [0, 1, 1, 1], [1, 0, 1, 1]) == {"accuracy": 75.0}
    # MRPC: TP=3, FP=1, FN=0 -> F1 = 6/7
    assert close(majority_baseline("mrpc", [0, 1, 1, 1], [1, 0, 1, 1]),
                 {"f1": 600 / 7, "accuracy": 75.0, "combined": (600 / 7 + 75) / 2})
    # constant predictions: Matthews corr. 0
    assert majority_baseline("cola", [0, 1, 1], [1, 0, 1, 1]) == {"mcc": 0.0}
    # MNLI: class 2 wins; a tie (0 vs 1) would go to the smaller id
    assert majority_baseline("mnli", [2, 2, 0, 1], [2, 0, 2, 1]) == {"accuracy": 50.0}
    assert close(majority_baseline("rte", [1, 0, 1, 0], [0, 0, 1]), {"accuracy": 200 / 3})  # tie -> 0
    # STS-B predicts the training mean: constant -> correlations 0
    assert majority_baseline("stsb", [1.0, 2.0, 4.5], [0.0, 5.0, 2.0]) == {"pearson": 0.0, "spearman": 0.0,
                                                                           "combined": 0.0}
    with pytest.raises(KronError, match="labelled training"):
        majority_baseline("sst2", [math.nan], [1])
