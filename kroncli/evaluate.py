"""Run a sequence-classification model over an encoded split and score it with the task's metrics."""

from __future__ import annotations

import time
from typing import Callable

import numpy as np
import torch

from .data.encode import Collate, EncodedSplit
from .data.glue import Task
from .metrics import compute_metrics


@torch.no_grad()
def predict_logits(model, data: EncodedSplit, tokenizer, float_labels: bool, batch_size: int = 64,
                   on_batch: Callable[[int], None] | None = None) -> np.ndarray:
    """Logits of every example, in order; `on_batch(n)` after each batch of n examples (a progress bar)."""
    model.eval()
    device = next(model.parameters()).device
    loader = torch.utils.data.DataLoader(data, batch_size=batch_size, shuffle=False,
                                         collate_fn=Collate(tokenizer, float_labels))
    out = []
    for batch in loader:
        batch.pop("labels", None)
        out.append(model(**{k: v.to(device) for k, v in batch.items()}).logits.float().cpu())
        if on_batch is not None:
            on_batch(out[-1].shape[0])
    return torch.cat(out).numpy()


def score(model, task: Task, data: EncodedSplit, tokenizer, batch_size: int = 64) -> dict:
    """Metrics (0-100), example count and examples/s on a labelled split."""
    t0 = time.perf_counter()
    logits = predict_logits(model, data, tokenizer, task.float_labels, batch_size)
    seconds = time.perf_counter() - t0
    preds = logits[:, 0] if task.is_regression else logits
    result = compute_metrics(task, preds, np.asarray(data.labels))
    return {**result, "n": len(data), "seconds": seconds, "examples_per_s": len(data) / max(seconds, 1e-9)}
