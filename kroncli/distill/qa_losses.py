"""Span-head (question answering) distillation losses, registered beside the others in `losses.LOSSES`.

`losses` imports this module last, so the registry names them without a stage being imported:
`qa_logit_kd` (the mean of the start and the end logit KD, softmax over positions, padding excluded) and
`qa_supervised` (the mean cross-entropy of the gold start and end token).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .capture import Captured
from .losses import _mask, _target, logit_kd, register_loss

MASKED = -1e4  # logit given to padded positions before a softmax over positions


def _masked(logits: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    logits = logits.float()
    if mask is None:
        return logits
    return logits.masked_fill(mask.to(logits.device)[:, : logits.shape[-1]] == 0, MASKED)


def qa_logit_kd(s_start, s_end, t_start, t_end, temperature: float = 1.0, mask=None) -> torch.Tensor:
    """Mean of the start and end logit KD (softmax over positions; padded positions masked out)."""
    return 0.5 * (logit_kd(_masked(s_start, mask), _masked(_target(t_start), mask), temperature)
                  + logit_kd(_masked(s_end, mask), _masked(_target(t_end), mask), temperature))


def qa_span_loss(start_logits, end_logits, start_positions, end_positions, mask=None) -> torch.Tensor:
    """Mean cross-entropy of the gold start and end token (padded positions masked out)."""
    n = start_logits.shape[-1]
    sp = start_positions.long().to(start_logits.device).clamp(0, n - 1)
    ep = end_positions.long().to(start_logits.device).clamp(0, n - 1)
    return 0.5 * (F.cross_entropy(_masked(start_logits, mask), sp) + F.cross_entropy(_masked(end_logits, mask), ep))


def _span_logits(c: Captured, name: str) -> tuple[torch.Tensor, torch.Tensor]:
    out = c.output
    start, end = getattr(out, "start_logits", None), getattr(out, "end_logits", None)
    if start is None or end is None:
        raise ValueError(f"{name} needs a question-answering head (start_logits / end_logits)")
    return start, end


def _apply_qa_kd(s, t, batch, dl):
    (ss, se), (ts, te) = _span_logits(s, "qa_logit_kd"), _span_logits(t, "qa_logit_kd")
    return qa_logit_kd(ss, se, ts, te, dl.temperature, _mask(s, batch) if dl.mask_padding else None)


def _apply_qa_supervised(s, t, batch, dl):
    ss, se = _span_logits(s, "qa_supervised")
    if batch.get("start_positions") is None or batch.get("end_positions") is None:
        raise ValueError("qa_supervised needs batch['start_positions'] and batch['end_positions']")
    return qa_span_loss(ss, se, batch["start_positions"], batch["end_positions"],
                        _mask(s, batch) if dl.mask_padding else None)


register_loss("qa_logit_kd", qa_logit_kd, _apply_qa_kd)
register_loss("qa_supervised", qa_span_loss, _apply_qa_supervised, uses_teacher=False)
