"""Rehearsal for stage 2: general text riding along with every task batch.

Distilling a small student on a few thousand labelled pairs distorts the features stage 1 built (measured
in docs/lab/runs.md: the student's zero-shot STS-B falls from 63 to 25 after MRPC stage 2). Rehearsal keeps
them: each task example brings `k` blocks of stage-1 text, on which the student keeps matching the teacher's
intermediate layers. The blocks an example brings depend only on its index and the seed, so a resumed run
sees the same batches.

    data = Rehearsal(task_set, corpus_ids, k=1, seed=0)
    collate = RehearsalCollate(Collate(tokenizer, regression), PackedCollate(tokenizer.sep_token_id))
    batch = collate([data[0], data[1]])   # the task batch, plus batch["rehearsal"]: 2 packed blocks
"""

from __future__ import annotations

import torch

REHEARSAL_KEY = "rehearsal"


class Rehearsal(torch.utils.data.Dataset):
    """Task example i, paired with corpus rows perm[(i*k + j) % N] for j < k (a fixed permutation)."""

    def __init__(self, task_set, corpus_ids: torch.Tensor, k: int, seed: int = 0):
        if k < 1:
            raise ValueError(f"rehearsal blocks per example must be >= 1, got {k}")
        if corpus_ids.shape[0] == 0:
            raise ValueError("the rehearsal corpus is empty")
        self.task_set, self.ids, self.k = task_set, corpus_ids, k
        self.order = torch.randperm(corpus_ids.shape[0], generator=torch.Generator().manual_seed(seed))

    def __len__(self):
        return len(self.task_set)

    def __getitem__(self, i):
        n = self.ids.shape[0]
        rows = [self.ids[self.order[(i * self.k + j) % n]] for j in range(self.k)]
        return self.task_set[i], rows


class RehearsalCollate:
    """The task collate on the task examples; the packed collate on their blocks, under batch["rehearsal"]."""

    def __init__(self, task_collate, packed_collate):
        self.task_collate, self.packed_collate = task_collate, packed_collate

    def __call__(self, items: list[tuple]) -> dict:
        batch = self.task_collate([example for example, _ in items])
        batch[REHEARSAL_KEY] = self.packed_collate([row for _, rows in items for row in rows])
        return batch
