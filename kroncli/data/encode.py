"""Tokenise GLUE frames once and batch them with dynamic padding."""

from __future__ import annotations

import pandas as pd
import torch

from .glue import Task


class EncodedSplit(torch.utils.data.Dataset):
    """Token ids per example (unpadded) and labels (float for regression, absent for test splits)."""

    def __init__(self, features: list[dict], labels: list | None):
        self.features, self.labels = features, labels

    def __len__(self):
        return len(self.features)

    def __getitem__(self, i):
        item = dict(self.features[i])
        if self.labels is not None:
            item["labels"] = self.labels[i]
        return item


def encode(task: Task, frame: pd.DataFrame, tokenizer, max_seq_len: int) -> EncodedSplit:
    a = frame["text_a"].tolist()
    b = frame["text_b"].tolist() if task.is_pair else None
    enc = tokenizer(a, b, truncation=True, max_length=max_seq_len)
    keys = [k for k in ("input_ids", "token_type_ids", "attention_mask") if k in enc]
    features = [{k: enc[k][i] for k in keys} for i in range(len(a))]
    labels = None
    if frame["label"].notna().any():  # unlabelled rows (augmented copies) keep NaN / -100: no gold label
        col = frame["label"] if task.is_regression else frame["label"].fillna(-100)
        labels = col.astype(float if task.is_regression else int).tolist()
    return EncodedSplit(features, labels)


class Collate:
    """Pad a list of examples to the longest one; labels become a long or float tensor."""

    def __init__(self, tokenizer, regression: bool):
        self.tokenizer, self.regression = tokenizer, regression

    def __call__(self, rows: list[dict]) -> dict:
        labels = [r["labels"] for r in rows] if "labels" in rows[0] else None
        batch = dict(self.tokenizer.pad([{k: v for k, v in r.items() if k != "labels"} for r in rows],
                                        return_tensors="pt"))
        if labels is not None:
            batch["labels"] = torch.tensor(labels, dtype=torch.float32 if self.regression else torch.long)
        return batch
