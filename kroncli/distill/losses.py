"""Distillation losses (KroneckerBERT, Tahaei et al. 2022; TinyBERT-style intermediate-layer distillation).

Every loss is a pure function of tensors. `LOSSES` registers them by name together with how to feed them from a
student/teacher `Captured` pair and the batch, so a recipe is just a dict of weights::

    loss = DistillLoss({"embedding_mse": 1, "attention_mse": 1, "hidden_mse": 1, "logit_kd": 1}, temperature=1.0)
    total, terms = loss(student_captured, teacher_captured, batch)

Conventions:

- Layer-wise losses (`attention_mse`, `hidden_mse`) SUM the per-layer MSE over layers, as the paper does; each
  per-layer MSE is a mean over its elements. `embedding_nmse` / `hidden_nmse` divide each MSE by the teacher
  tensor's own mean square (same positions) first, so every layer counts by its relative error.
- Masking: with a 2D ``(batch, seq)`` attention mask (1 = real token, 0 = padding), `embedding_mse` and
  `hidden_mse` average only over real tokens (x hidden), and `attention_mse` averages only over real
  query x real key pairs (x heads). Padded positions are excluded, not zeroed-and-counted, so the loss value does
  not depend on how much padding a batch has. Without a mask every position counts.
- Teacher tensors are targets: they are detached, and inference-mode tensors (a teacher run under
  ``torch.inference_mode()``) are cloned into normal tensors so autograd may save them.
- `logit_kd` is ``KL(softmax(t/T) || softmax(s/T)) * T^2``, averaged over rows (``batchmean``); logits with more
  than two dims (token-level heads) are flattened to rows, optionally selecting rows by a mask.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from .capture import Captured

Tensor = torch.Tensor


# -------------------------------------------------------------------------------------------------- helpers

def _target(t: Tensor) -> Tensor:
    """A teacher tensor as a loss target: detached, and a normal tensor if it was made under inference_mode."""
    t = t.detach()
    if t.is_inference() and not torch.is_inference_mode_enabled():
        t = t.clone()
    return t


def _up(x: Tensor) -> Tensor:
    """Half-precision tensors are upcast to float32 for the reduction; float32/float64 stay as they are."""
    return x.float() if x.is_floating_point() and x.element_size() < 4 else x


def _masked_mean_sq(diff: Tensor, weight: Tensor | None) -> Tensor:
    """Mean of diff**2, over the positions where the (broadcastable) 0/1 weight is 1."""
    sq = _up(diff).pow(2)
    if weight is None:
        return sq.mean()
    weight = weight.to(device=sq.device, dtype=sq.dtype)
    num = (sq * weight).sum()
    den = torch.broadcast_to(weight, sq.shape).sum()
    return num / den.clamp_min(1.0)


def _token_weight(mask: Tensor | None) -> Tensor | None:
    """(batch, seq) mask -> (batch, seq, 1) weight for (batch, seq, hidden) tensors."""
    return None if mask is None else mask[..., None]


def _pair_weight(mask: Tensor | None) -> Tensor | None:
    """(batch, seq) mask -> (batch, 1, seq_q, seq_k) weight: 1 where both query and key are real tokens."""
    if mask is None:
        return None
    m = mask.float()
    return m[:, None, :, None] * m[:, None, None, :]


def _layers(x: Tensor | Sequence[Tensor]) -> list[Tensor]:
    return [x] if isinstance(x, Tensor) else list(x)


def _check_pairs(s: list[Tensor], t: list[Tensor], what: str) -> None:
    if len(s) != len(t):
        raise ValueError(f"{what}: student has {len(s)} layers, teacher {len(t)}; map them with layer_map first")
    if not s:
        raise ValueError(f"{what}: no layers to compare")
    for i, (a, b) in enumerate(zip(s, t)):
        if a.shape != b.shape:
            raise ValueError(f"{what}: layer {i} shapes differ, student {tuple(a.shape)} vs teacher {tuple(b.shape)}")


# --------------------------------------------------------------------------------------------- pure losses

def embedding_mse(s: Tensor, t: Tensor, mask: Tensor | None = None) -> Tensor:
    """MSE between embedding-layer outputs (batch, seq, hidden); mask (batch, seq) keeps real tokens only."""
    _check_pairs([s], [t], "embedding_mse")
    return _masked_mean_sq(s - _target(t), _token_weight(mask))


def hidden_mse(s: Tensor | Sequence[Tensor], t: Tensor | Sequence[Tensor], mask: Tensor | None = None) -> Tensor:
    """Sum over layers of the MSE between layer outputs (batch, seq, hidden), real tokens only if masked."""
    s, t = _layers(s), _layers(t)
    _check_pairs(s, t, "hidden_mse")
    w = _token_weight(mask)
    return sum((_masked_mean_sq(a - _target(b), w) for a, b in zip(s, t)), torch.zeros((), device=s[0].device))


def _relative(diff: Tensor, target: Tensor, weight: Tensor | None) -> Tensor:
    """MSE divided by the target's own mean square (same positions): 0 is a perfect match, 1 is as far as zeros."""
    return _masked_mean_sq(diff, weight) / _masked_mean_sq(target, weight).clamp_min(1e-12)


def embedding_nmse(s: Tensor, t: Tensor, mask: Tensor | None = None) -> Tensor:
    """`embedding_mse` divided by the teacher embedding output's mean square (a relative error)."""
    _check_pairs([s], [t], "embedding_nmse")
    t = _target(t)
    return _relative(s - t, t, _token_weight(mask))


def hidden_nmse(s: Tensor | Sequence[Tensor], t: Tensor | Sequence[Tensor], mask: Tensor | None = None) -> Tensor:
    """Sum over layers of each layer's MSE divided by the teacher layer's mean square.

    Why: `hidden_mse` weighs layers by their magnitude. all-MiniLM-L6-v2's last layer has a mean square of 0.10
    against 0.32-0.45 for the others, so its error is 8% of the summed loss and a 19x student reproduces only 20% of it
    (docs/lab/runs.md, run 14), although it is the layer every task head reads. Relative errors count each layer
    the same.
    """
    s, t = _layers(s), _layers(t)
    _check_pairs(s, t, "hidden_nmse")
    w = _token_weight(mask)
    return sum((_relative(a - b, b, w) for a, b in zip(s, map(_target, t))), torch.zeros((), device=s[0].device))


def attention_mse(s: Tensor | Sequence[Tensor], t: Tensor | Sequence[Tensor], mask: Tensor | None = None) -> Tensor:
    """Sum over layers of the MSE between attention maps (batch, heads, seq, seq).

    With a (batch, seq) mask, each layer's MSE averages only over real-query x real-key pairs (and heads).
    """
    s, t = _layers(s), _layers(t)
    _check_pairs(s, t, "attention_mse")
    w = _pair_weight(mask)
    return sum((_masked_mean_sq(a - _target(b), w) for a, b in zip(s, t)), torch.zeros((), device=s[0].device))


def _attention_kl_layer(s: Tensor, t: Tensor, mask: Tensor | None) -> Tensor:
    """One layer's KL(teacher || student) between attention distributions, from pre-softmax scores."""
    s, t = _up(s), _up(_target(t))
    if mask is None:
        return F.kl_div(F.log_softmax(s, -1), F.log_softmax(t, -1), reduction="sum", log_target=True) / (
            s.numel() // s.shape[-1])
    keys = mask.to(device=s.device).bool()[:, None, None, :]  # (batch, 1, 1, seq_k): padded keys get no weight
    floor = torch.finfo(s.dtype).min
    log_ps = F.log_softmax(s.masked_fill(~keys, floor), -1)
    log_pt = F.log_softmax(t.masked_fill(~keys, floor), -1)
    kl = torch.where(keys, log_pt.exp() * (log_pt - log_ps), torch.zeros((), dtype=s.dtype, device=s.device))
    queries = mask.to(device=s.device, dtype=s.dtype)[:, None, :]  # (batch, 1, seq_q)
    rows = kl.sum(-1) * queries  # (batch, heads, seq_q)
    return rows.sum() / (queries.sum() * s.shape[1]).clamp_min(1.0)


def attention_kl(s: Tensor | Sequence[Tensor], t: Tensor | Sequence[Tensor], mask: Tensor | None = None) -> Tensor:
    """Sum over layers of KL(teacher || student) between the attention distributions (MiniLM's attention transfer).

    Inputs are pre-softmax scores (batch, heads, seq, seq), as `Capture` records them. With a (batch, seq) mask the
    padded keys are removed from both softmaxes and the KL averages over real queries (x heads).

    Why: `attention_mse` on raw scores is dominated by the largest scores (those on [CLS] and [SEP]), which the
    softmax saturates anyway; the KL weighs each score by the attention it actually produces, e.g. a token of
    sentence B attending to its match in sentence A.
    """
    s, t = _layers(s), _layers(t)
    _check_pairs(s, t, "attention_kl")
    return sum((_attention_kl_layer(a, b, mask) for a, b in zip(s, t)), torch.zeros((), device=s[0].device))


def _rows(logits: Tensor, mask: Tensor | None) -> Tensor:
    logits = logits.reshape(-1, logits.shape[-1]) if logits.dim() != 2 else logits
    if mask is not None:
        logits = logits[mask.reshape(-1).bool()]
    return logits


def logit_kd(s: Tensor, t: Tensor, temperature: float = 1.0, mask: Tensor | None = None) -> Tensor:
    """KL(softmax(t/T) || softmax(s/T)) * T^2, summed over classes and averaged over rows (batchmean).

    Logits of shape (..., classes) are flattened to rows; ``mask`` (the leading shape, e.g. (batch, seq) for a
    token-level head) keeps only the rows where it is nonzero.
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if s.shape != t.shape:
        raise ValueError(f"logit_kd: student logits {tuple(s.shape)} vs teacher {tuple(t.shape)}")
    s_rows, t_rows = _rows(_up(s), mask), _rows(_up(_target(t)), mask)
    if s_rows.shape[0] == 0:
        return s.sum() * 0.0
    log_ps = F.log_softmax(s_rows / temperature, dim=-1)
    log_pt = F.log_softmax(t_rows / temperature, dim=-1)
    kl = F.kl_div(log_ps, log_pt, reduction="sum", log_target=True) / s_rows.shape[0]
    return kl * temperature**2


def logit_mse(s: Tensor, t: Tensor, mask: Tensor | None = None) -> Tensor:
    """MSE between logits, e.g. the single regression output of an STS-B head."""
    if s.shape != t.shape:
        raise ValueError(f"logit_mse: student logits {tuple(s.shape)} vs teacher {tuple(t.shape)}")
    return _masked_mean_sq(_rows(s, mask) - _rows(_target(t), mask), None)


def supervised(logits: Tensor, labels: Tensor) -> Tensor:
    """The task loss on gold labels: cross-entropy, MSE when there is one output, or binary cross-entropy per label
    when the labels are 0/1 vectors shaped as the logits (multi-label; what transformers' multi_label_classification
    uses).

    Rows without a gold label (-100 for classes, NaN for a regression target: augmented copies) are skipped;
    a batch with none gives a zero that keeps the graph.
    """
    if labels.dim() == 2 and labels.shape == logits.shape and logits.shape[-1] > 1:
        return F.binary_cross_entropy_with_logits(_up(logits), labels.to(device=logits.device,
                                                                         dtype=_up(logits).dtype))
    if logits.shape[-1] == 1:
        target = labels.reshape(-1).to(device=logits.device, dtype=_up(logits).dtype)
        keep = ~torch.isnan(target)
        if not bool(keep.any()):
            return logits.sum() * 0.0
        return F.mse_loss(_up(logits).reshape(-1)[keep], target[keep])
    target = labels.reshape(-1).long().to(logits.device)
    if not bool((target != -100).any()):
        return logits.sum() * 0.0
    return F.cross_entropy(_up(logits).reshape(-1, logits.shape[-1]), target, ignore_index=-100)


def mlm(logits: Tensor, labels: Tensor) -> Tensor:
    """Masked-LM cross-entropy over positions whose label is not -100 (zero, with a graph, if there are none)."""
    labels = labels.reshape(-1).long().to(logits.device)
    flat = _up(logits).reshape(-1, logits.shape[-1])
    if not bool((labels != -100).any()):
        return flat.sum() * 0.0
    return F.cross_entropy(flat, labels, ignore_index=-100)


def layer_map(student_layers: int, teacher_layers: int) -> list[int]:
    """Teacher layer for each student layer: uniform TinyBERT mapping j = (i+1)*T/S - 1 (floored).

    Identity when the depths are equal; the last student layer always maps to the last teacher layer.
    """
    if student_layers < 1 or teacher_layers < 1:
        raise ValueError(f"layer counts must be >= 1, got student {student_layers}, teacher {teacher_layers}")
    if student_layers > teacher_layers:
        raise ValueError(f"student ({student_layers} layers) is deeper than the teacher ({teacher_layers}); "
                         "pass an explicit layer map")
    return [(i + 1) * teacher_layers // student_layers - 1 for i in range(student_layers)]


def fit_layer_map(given: Sequence[int] | None, student_layers: int, teacher_layers: int) -> list[int]:
    """The teacher layer of each student layer: `given`, or the default `layer_map`; a ValueError when the map does
    not name one teacher layer per student layer."""
    idx = list(given) if given is not None else layer_map(student_layers, teacher_layers)
    if len(idx) != student_layers or any(not 0 <= j < teacher_layers for j in idx):
        raise ValueError(f"layer map {idx} does not fit {student_layers} student / {teacher_layers} teacher "
                         "layers")
    return idx


# ------------------------------------------------------------------------------------------------ registry

@dataclass(frozen=True)
class LossTerm:
    """A registered loss: the pure function and how to feed it from (student, teacher, batch)."""

    name: str
    fn: Callable[..., Tensor]
    apply: Callable[[Captured, Captured | None, Mapping[str, Any], "DistillLoss"], Tensor]
    uses_teacher: bool = True
    uses_attention: bool = False


LOSSES: dict[str, LossTerm] = {}


def register_loss(name: str, fn: Callable[..., Tensor], apply: Callable[..., Tensor], *,
                  uses_teacher: bool = True, uses_attention: bool = False) -> LossTerm:
    """Add (or replace) a named loss term; `apply(s, t, batch, distill_loss) -> scalar tensor`."""
    term = LossTerm(name, fn, apply, uses_teacher, uses_attention)
    LOSSES[name] = term
    return term


def _mask(s: Captured, batch: Mapping[str, Any]) -> Tensor | None:
    mask = batch.get("attention_mask") if batch is not None else None
    return mask if mask is not None else s.attention_mask


def _need_logits(s: Captured, t: Captured | None, name: str) -> None:
    if s.logits is None or (t is not None and t.logits is None):
        raise ValueError(f"{name} needs logits, but the model has no head (use a *For* class)")


def _labels(batch: Mapping[str, Any], name: str) -> Tensor:
    labels = batch.get("labels") if batch is not None else None
    if labels is None:
        raise ValueError(f"{name} needs batch['labels']")
    return labels


def _embedding_term(fn):
    """How an embedding-output loss (`embedding_mse`, `embedding_nmse`) is fed from a Captured pair."""
    def apply(s, t, batch, dl):
        return fn(s.embedding, t.embedding, _mask(s, batch) if dl.mask_padding else None)
    return apply


def _attention_term(fn, scores_only: bool = False):
    """How a per-layer attention loss (`attention_mse`, `attention_kl`) is fed, through the layer map.
    `scores_only`: the loss applies its own softmax, so captured probabilities would be wrong input."""
    name = fn.__name__

    def apply(s, t, batch, dl):
        if not s.attentions or not t.attentions:
            raise ValueError(f"{name} needs captured attentions: use Capture(model, attention='scores') for "
                             "both student and teacher")
        if s.attention_kind != t.attention_kind:
            raise ValueError(f"{name}: student captured {s.attention_kind}, teacher {t.attention_kind}")
        if scores_only and s.attention_kind != "scores":
            raise ValueError(f"{name} needs pre-softmax scores: use Capture(model, attention='scores')")
        idx = dl.teacher_layers(len(s.attentions), len(t.attentions))
        return fn(s.attentions, [t.attentions[j] for j in idx], _mask(s, batch) if dl.mask_padding else None)
    return apply


def _hidden_term(fn):
    """How a per-layer hidden-state loss (`hidden_mse`, `hidden_nmse`) is fed, through the layer map."""
    def apply(s, t, batch, dl):
        idx = dl.teacher_layers(len(s.hidden), len(t.hidden))
        return fn(s.hidden, [t.hidden[j] for j in idx], _mask(s, batch) if dl.mask_padding else None)
    return apply


def _logit_rows_mask(s: Captured, batch, dl) -> Tensor | None:
    # token-level logits (batch, seq, classes): skip padded positions
    if s.logits is not None and s.logits.dim() == 3 and dl.mask_padding:
        return _mask(s, batch)
    return None


def _apply_logit_kd(s, t, batch, dl):
    _need_logits(s, t, "logit_kd")
    return logit_kd(s.logits, t.logits, dl.temperature, _logit_rows_mask(s, batch, dl))


def _apply_logit_mse(s, t, batch, dl):
    _need_logits(s, t, "logit_mse")
    return logit_mse(s.logits, t.logits, _logit_rows_mask(s, batch, dl))


def _apply_supervised(s, t, batch, dl):
    _need_logits(s, None, "supervised")
    return supervised(s.logits, _labels(batch, "supervised"))


def _apply_mlm(s, t, batch, dl):
    _need_logits(s, None, "mlm")
    return mlm(s.logits, _labels(batch, "mlm"))


register_loss("embedding_mse", embedding_mse, _embedding_term(embedding_mse))
register_loss("attention_mse", attention_mse, _attention_term(attention_mse), uses_attention=True)
register_loss("attention_kl", attention_kl, _attention_term(attention_kl, scores_only=True), uses_attention=True)
register_loss("hidden_mse", hidden_mse, _hidden_term(hidden_mse))
register_loss("embedding_nmse", embedding_nmse, _embedding_term(embedding_nmse))
register_loss("hidden_nmse", hidden_nmse, _hidden_term(hidden_nmse))
register_loss("logit_kd", logit_kd, _apply_logit_kd)
register_loss("logit_mse", logit_mse, _apply_logit_mse)
register_loss("supervised", supervised, _apply_supervised, uses_teacher=False)
register_loss("mlm", mlm, _apply_mlm, uses_teacher=False)

# Teacher-vs-student terms on inner tensors, with no head involved: what stage 1 and rehearsal may use.
INTERMEDIATE_LOSSES = ("embedding_mse", "attention_mse", "hidden_mse", "embedding_nmse", "hidden_nmse",
                       "attention_kl")


# ------------------------------------------------------------------------------------------------ combine

def check_weights(weights: Mapping[str, float]) -> None:
    """Known loss names, finite weights, at least one nonzero; a ValueError says which is wrong."""
    unknown = sorted(set(weights) - set(LOSSES))
    if unknown:
        raise ValueError(f"unknown loss name(s) {unknown}; known: {sorted(LOSSES)}")
    for name, w in weights.items():
        if not isinstance(w, (int, float)) or isinstance(w, bool) or not math.isfinite(w):
            raise ValueError(f"weight of {name!r} must be a finite number, got {w!r}")
        if w < 0:  # a negative weight maximises its term: the student learns away from the teacher
            raise ValueError(f"weight of {name!r} is negative ({w:g}); weights are >= 0, and 0 drops the term")
    if not any(weights.values()):
        raise ValueError(f"all loss weights are zero; give at least one of {sorted(LOSSES)} a weight")


def check_temperature(temperature: float) -> None:
    """A positive, finite logit temperature (NaN would train until the loss is NaN; inf flattens every target)."""
    if not (math.isfinite(temperature) and temperature > 0):
        raise ValueError(f"temperature {temperature} must be > 0 and finite")


class DistillLoss:
    """A weighted sum of registered losses.

    ``weights``: loss name -> weight; zero-weight terms are skipped (not computed). ``layer_map``: teacher layer
    index for each student layer (default: `layer_map(S, T)`, the identity for equal depths). ``mask_padding``:
    use the batch's attention mask (or the one captured with the inputs) to exclude padding.

    Calling it returns ``(total, terms)``: the weighted sum as a tensor (backward on it), and a dict of floats for
    logging with each computed term's UNWEIGHTED value plus ``"total"``.
    """

    def __init__(self, weights: Mapping[str, float], *, temperature: float = 1.0,
                 layer_map: Sequence[int] | None = None, mask_padding: bool = True):
        check_weights(weights)
        self.weights = {k: float(v) for k, v in weights.items() if v != 0}
        check_temperature(temperature)
        self.temperature = float(temperature)
        self.layer_map = list(layer_map) if layer_map is not None else None
        self.mask_padding = mask_padding

    @property
    def needs_teacher(self) -> bool:
        """False when only teacher-free terms (supervised, mlm) are weighted: skip the teacher forward."""
        return any(LOSSES[n].uses_teacher for n in self.weights)

    @property
    def attention(self) -> str | None:
        """What to pass as `Capture(model, attention=...)`: "scores" when an attention term is weighted."""
        return "scores" if any(LOSSES[n].uses_attention for n in self.weights) else None

    def teacher_layers(self, student_layers: int, teacher_layers: int) -> list[int]:
        return fit_layer_map(self.layer_map, student_layers, teacher_layers)

    def __call__(self, s: Captured, t: Captured | None, batch: Mapping[str, Any] | None = None
                 ) -> tuple[Tensor, dict[str, float]]:
        batch = batch if batch is not None else {}
        if t is None and self.needs_teacher:
            raise ValueError(f"terms {[n for n in self.weights if LOSSES[n].uses_teacher]} need teacher outputs")
        total: Tensor | None = None
        terms: dict[str, float] = {}
        for name, w in self.weights.items():
            value = LOSSES[name].apply(s, t, batch, self)
            terms[name] = float(value.detach())
            total = value * w if total is None else total + value * w
        terms["total"] = float(total.detach())
        return total, terms


def combine(weights: Mapping[str, float], s: Captured, t: Captured | None, batch: Mapping[str, Any] | None = None,
            **options: Any) -> tuple[Tensor, dict[str, float]]:
    """One-shot `DistillLoss(weights, **options)(s, t, batch)`."""
    return DistillLoss(weights, **options)(s, t, batch)


from . import qa_losses  # noqa: E402,F401  (the span-head terms register themselves here, after register_loss)
