"""Pair probe: how much of a GLUE task each layer of a model can answer before any task training.

Every example goes through the model the way a GLUE head sees it, as one cross-encoder input
`[CLS] A [SEP] B [SEP]` (single-sentence tasks: `[CLS] A [SEP]`). For each layer (0 = the embedding output)
two frozen features are taken, the `[CLS]` vector and the mean over real tokens, and a linear read-out is
fitted on training examples and scored on dev with the task's headline metric: a ridge regression for
STS-B (Pearson x 100), a logistic regression for the classification tasks (MRPC: accuracy/F1 mean, CoLA:
MCC, ...), its regularisation chosen by cross-validation on the training examples. Nothing in the model is
trained.

Why: `zero_shot_sts.py` reads each sentence alone, so it cannot see whether a student learned the
cross-sentence interactions (a token of B attending to its match in A) that pair tasks need. This probe does,
and it separates "stage 1 did not transfer it" from "stage 2 could not use it". Teacher and students are
scored side by side in one run.

    python benchmarks/pair_probe.py runs/m19 --threads 2
    python benchmarks/pair_probe.py runs/m19 runs/m19_kl --train 3000
    python benchmarks/pair_probe.py runs/m19 --task mrpc

Arguments are workspaces (their stage-1 student), student folders or plain transformers folders. GLUE comes
from --data-dir, else $KRON_GLUE_DIR, else ../shared/glue.
"""

from __future__ import annotations

import argparse
import os
import time
import warnings

import numpy as np
import pandas as pd
import torch
from scipy.stats import pearsonr
from sklearn.linear_model import LogisticRegressionCV, RidgeCV
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from kroncli.metrics import compute_metrics, majority_baseline
from zero_shot_sts import load_any


def layer_features(model, tokenizer, frame: pd.DataFrame, batch_size: int = 64) -> np.ndarray:
    """(examples, layers + 1, 2, hidden): the [CLS] vector and the token mean of every layer's output."""
    body = getattr(model, "base_model", model)
    out = []
    for i in range(0, len(frame), batch_size):
        chunk = frame.iloc[i:i + batch_size]
        second = chunk.text_b.tolist() if chunk.text_b.notna().all() else None
        batch = tokenizer(chunk.text_a.tolist(), second, padding=True, truncation=True,
                          max_length=128, return_tensors="pt")
        with torch.inference_mode():
            states = body(**batch, output_hidden_states=True).hidden_states
        mask = batch["attention_mask"][..., None].float()
        out.append(torch.stack([torch.stack([h[:, 0], (h * mask).sum(1) / mask.sum(1)], 1) for h in states], 1))
    return torch.cat(out).float().numpy()


def readout(task, x_train: np.ndarray, y_train: np.ndarray, x_dev: np.ndarray, y_dev: np.ndarray) -> float:
    """The task's headline dev score of a linear read-out fitted on the training features."""
    if task.is_regression:
        fit = RidgeCV(alphas=np.logspace(-3, 3, 13)).fit(x_train, y_train)
        return 100 * pearsonr(fit.predict(x_dev), y_dev)[0]
    fit = make_pipeline(StandardScaler(), LogisticRegressionCV(Cs=np.logspace(-3, 1, 5), max_iter=2000))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # scikit-learn's notices of changing defaults
        fit.fit(x_train, y_train)
    return compute_metrics(task, fit.predict(x_dev), y_dev)[task.primary]


def probe(task, train: np.ndarray, y_train: np.ndarray, dev: np.ndarray, y_dev: np.ndarray) -> np.ndarray:
    """Dev score of a linear read-out per (layer, feature); (layers + 1, 2)."""
    scores = np.full(train.shape[1:3], np.nan)
    for layer in range(train.shape[1]):
        for kind in range(2):
            x_train, x_dev = train[:, layer, kind], dev[:, layer, kind]
            if np.ptp(x_train, axis=0).max() == 0:  # a constant feature (the embedding [CLS]) predicts nothing
                continue
            scores[layer, kind] = readout(task, x_train, y_train, x_dev, y_dev)
    return scores


def main() -> None:
    from transformers import AutoTokenizer

    from kroncli import sources
    from kroncli.data.glue import load_split, normalize_task
    from kroncli.errors import KronError

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("students", nargs="*", help="workspaces or student folders")
    ap.add_argument("--teacher", default=None, help="teacher (default: the offline all-MiniLM-L6-v2)")
    ap.add_argument("--data-dir", default=os.environ.get("KRON_GLUE_DIR", "../shared/glue"))
    ap.add_argument("--task", default="sts-b", help="GLUE task (sts-b, mrpc, cola, rte, qnli, ...)")
    ap.add_argument("--train", type=int, default=3000, help="training examples for the read-out (first N)")
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        task = normalize_task(args.task)
        train = load_split(task, "train", args.data_dir).iloc[: args.train]
        dev = load_split(task, task.eval_splits[0], args.data_dir)
    except KronError as e:
        raise SystemExit(f"error: {e}")
    source = sources.resolve(args.teacher)
    teacher, _ = sources.load_model(source)
    tokenizer = AutoTokenizer.from_pretrained(source.path)
    rows = []
    for name, model in [(f"teacher ({source.requested})", teacher), *((p, None) for p in args.students)]:
        t0 = time.perf_counter()
        model = (model if model is not None else load_any(name)).eval()
        scores = probe(task, layer_features(model, tokenizer, train), train.label.to_numpy(),
                       layer_features(model, tokenizer, dev), dev.label.to_numpy())
        for layer, (cls, mean) in enumerate(scores):
            rows.append({"model": name, "layer": layer, "cls": cls, "mean": mean})
        print(f"{name}: {time.perf_counter() - t0:.0f} s", flush=True)
    table = pd.DataFrame(rows).pivot(index="layer", columns="model", values=["mean", "cls"])
    metric = "Pearson" if task.is_regression else task.primary
    print(f"{task.name} dev {metric} of a linear probe on frozen cross-encoder features, {len(train)} training "
          f"examples, {len(dev)} dev examples, {torch.get_num_threads()} threads")
    print(table.to_string(float_format=lambda v: f"{v:.1f}"))
    if not task.is_regression:
        floor = majority_baseline(task, train.label.to_numpy(), dev.label.to_numpy())[task.primary]
        print(f"majority class on dev: {floor:.1f}")


if __name__ == "__main__":
    main()
