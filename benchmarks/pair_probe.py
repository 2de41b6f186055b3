"""Pair probe: how much of a sentence-pair task each layer of a model can answer before any task training.

Every STS-B pair goes through the model the way a GLUE head sees it, as one cross-encoder input
`[CLS] A [SEP] B [SEP]`. For each layer (0 = the embedding output) two frozen features are taken, the
`[CLS]` vector and the mean over real tokens, and a ridge regression (alpha chosen by cross-validation on the
training pairs) is fitted on training pairs and scored on dev (Pearson x 100). Nothing in the model is trained.

Why: `zero_shot_sts.py` reads each sentence alone, so it cannot see whether a student learned the
cross-sentence interactions (a token of B attending to its match in A) that pair tasks need. This probe does,
and it separates "stage 1 did not transfer it" from "stage 2 could not use it". Teacher and students are
scored side by side in one run.

    python benchmarks/pair_probe.py runs/m19 --threads 2
    python benchmarks/pair_probe.py runs/m19 runs/m19_kl --train 3000

Arguments are workspaces (their stage-1 student), student folders or plain transformers folders. GLUE comes
from --data-dir, else $KRON_GLUE_DIR, else ../shared/glue.
"""

from __future__ import annotations

import argparse
import csv
import os
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from scipy.stats import pearsonr
from sklearn.linear_model import RidgeCV

from zero_shot_sts import load_any


def layer_features(model, tokenizer, pairs: pd.DataFrame, batch_size: int = 64) -> np.ndarray:
    """(pairs, layers + 1, 2, hidden): the [CLS] vector and the token mean of every layer's output."""
    body = getattr(model, "base_model", model)
    out = []
    for i in range(0, len(pairs), batch_size):
        chunk = pairs.iloc[i:i + batch_size]
        batch = tokenizer(chunk.sentence1.tolist(), chunk.sentence2.tolist(), padding=True, truncation=True,
                          max_length=128, return_tensors="pt")
        with torch.inference_mode():
            states = body(**batch, output_hidden_states=True).hidden_states
        mask = batch["attention_mask"][..., None].float()
        out.append(torch.stack([torch.stack([h[:, 0], (h * mask).sum(1) / mask.sum(1)], 1) for h in states], 1))
    return torch.cat(out).float().numpy()


def probe(train: np.ndarray, y_train: np.ndarray, dev: np.ndarray, y_dev: np.ndarray) -> np.ndarray:
    """Dev Pearson x 100 of a ridge fit per (layer, feature); (layers + 1, 2)."""
    scores = np.full(train.shape[1:3], np.nan)
    for layer in range(train.shape[1]):
        for kind in range(2):
            x_train, x_dev = train[:, layer, kind], dev[:, layer, kind]
            if np.ptp(x_train, axis=0).max() == 0:  # a constant feature (the embedding [CLS]) predicts nothing
                continue
            fit = RidgeCV(alphas=np.logspace(-3, 3, 13)).fit(x_train, y_train)
            scores[layer, kind] = 100 * pearsonr(fit.predict(x_dev), y_dev)[0]
    return scores


def main() -> None:
    from transformers import AutoTokenizer

    from kroncli import sources

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("students", nargs="*", help="workspaces or student folders")
    ap.add_argument("--teacher", default=None, help="teacher (default: the offline all-MiniLM-L6-v2)")
    ap.add_argument("--data-dir", default=os.environ.get("KRON_GLUE_DIR", "../shared/glue"))
    ap.add_argument("--train", type=int, default=3000, help="training pairs for the ridge fit (first N)")
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    folder = Path(args.data_dir) / "STS-B"
    if not (folder / "train.tsv").is_file() or not (folder / "dev.tsv").is_file():
        raise SystemExit(f"no {folder}/train.tsv and dev.tsv; pass --data-dir with GLUE's STS-B folder "
                         "(or set KRON_GLUE_DIR)")
    read = lambda f: pd.read_csv(folder / f, sep="\t", quoting=csv.QUOTE_NONE, keep_default_na=False)  # noqa: E731
    train, dev = read("train.tsv").iloc[: args.train], read("dev.tsv")
    source = sources.resolve(args.teacher)
    teacher, _ = sources.load_model(source)
    tokenizer = AutoTokenizer.from_pretrained(source.path)
    rows = []
    for name, model in [(f"teacher ({source.requested})", teacher), *((p, None) for p in args.students)]:
        t0 = time.perf_counter()
        model = (model if model is not None else load_any(name)).eval()
        scores = probe(layer_features(model, tokenizer, train), train.score.to_numpy(),
                       layer_features(model, tokenizer, dev), dev.score.to_numpy())
        for layer, (cls, mean) in enumerate(scores):
            rows.append({"model": name, "layer": layer, "cls": cls, "mean": mean})
        print(f"{name}: {time.perf_counter() - t0:.0f} s", flush=True)
    table = pd.DataFrame(rows).pivot(index="layer", columns="model", values=["mean", "cls"])
    print(f"STS-B dev Pearson of a ridge probe on frozen cross-encoder features, {len(train)} training pairs, "
          f"{len(dev)} dev pairs, {torch.get_num_threads()} threads")
    print(table.to_string(float_format=lambda v: f"{v:.1f}"))


if __name__ == "__main__":
    main()
