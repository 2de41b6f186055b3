"""Tokenise task frames once and batch them with dynamic padding."""

from __future__ import annotations

import pandas as pd
import torch

from .glue import Task


class EncodedSplit(torch.utils.data.Dataset):
    """Token ids per example (unpadded) and labels (float for regression, a 0/1 vector for multi-label, absent for
    test splits); `truncated`: how many inputs were longer than max_seq_len and cut to it."""

    def __init__(self, features: list[dict], labels: list | None, truncated: int = 0):
        self.features, self.labels, self.truncated = features, labels, truncated

    def __len__(self):
        return len(self.features)

    def __getitem__(self, i):
        item = dict(self.features[i])
        if self.labels is not None:
            item["labels"] = self.labels[i]
        return item


def count_truncated(a: list, b: list | None, enc, tokenizer, max_seq_len: int) -> int:
    """Inputs longer than max_seq_len: those cut to exactly that length, told apart from the ones that fit exactly
    by tokenising only them again, untruncated."""
    full = [i for i, ids in enumerate(enc["input_ids"]) if len(ids) >= max_seq_len]
    if not full:
        return 0
    again = tokenizer([a[i] for i in full], [b[i] for i in full] if b is not None else None, truncation=False)
    return sum(len(ids) > max_seq_len for ids in again["input_ids"])


def encode(task: Task, frame: pd.DataFrame, tokenizer, max_seq_len: int) -> EncodedSplit:
    a = frame["text_a"].tolist()
    b = frame["text_b"].tolist() if task.is_pair else None
    enc = tokenizer(a, b, truncation=True, max_length=max_seq_len)
    keys = [k for k in ("input_ids", "token_type_ids", "attention_mask") if k in enc]
    features = [{k: enc[k][i] for k in keys} for i in range(len(a))]
    labels = None
    if task.is_multilabel:
        if frame["label"].map(lambda v: hasattr(v, "__len__")).any():
            labels = [[float(x) for x in v] for v in frame["label"]]
    elif frame["label"].notna().any():  # unlabelled rows (augmented copies) keep NaN / -100: no gold label
        col = frame["label"] if task.is_regression else frame["label"].fillna(-100)
        labels = col.astype(float if task.is_regression else int).tolist()
    return EncodedSplit(features, labels, count_truncated(a, b, enc, tokenizer, max_seq_len))


class Collate:
    """Pad a list of examples to the longest one; labels become a long or (`float_labels`: regression, multi-label)
    float tensor."""

    def __init__(self, tokenizer, float_labels: bool):
        self.tokenizer, self.regression = tokenizer, float_labels

    def __call__(self, rows: list[dict]) -> dict:
        labels = [r["labels"] for r in rows] if "labels" in rows[0] else None
        batch = dict(self.tokenizer.pad([{k: v for k, v in r.items() if k != "labels"} for r in rows],
                                        return_tensors="pt"))
        if labels is not None:
            batch["labels"] = torch.tensor(labels, dtype=torch.float32 if self.regression else torch.long)
        return batch
