"""Capture, in one forward pass, the intermediate tensors that the distillation losses compare.

`Capture(model, attention="scores")(**inputs)` runs the model once and returns a `Captured` with

- ``embedding``: the embedding-layer output (``hidden_states[0]``, the input of the first layer),
- ``hidden``: every layer's output (``hidden_states[1:]``); for a narrow student (kroncli/narrow.py) both mapped into
  the teacher's width by its learned projection,
- ``attentions``: every self-attention layer's pre-softmax scores ``Q K^T * scaling`` (``scaling = 1/sqrt(d_k)``),
  shape ``(batch, heads, seq, seq)``, WITHOUT the additive attention mask; or, with ``attention="probs"``, the
  softmax probabilities (with the mask, before attention dropout); nothing with ``attention=None``,
- ``logits``: the head's logits when the model has one (``output.logits``, or ``prediction_logits`` for
  BertForPreTraining), else None,
- ``output``: the model's own output object.

Which modules are the self-attention layers, and how their scores are reached, is the model family's entry
(kroncli/families.py: `CaptureSpec`); a model the table lacks falls back to its `_can_record_outputs`.

How the attention is captured (transformers 5.x): the families' self-attention modules call
``ALL_ATTENTION_FUNCTIONS.get_interface(config._attn_implementation, eager_attention_forward)``. This module
registers one more implementation, ``"kron_capture"`` (plus its mask builder, the eager one: without a mask
builder transformers silently drops the padding mask for unknown implementations). It computes the scores once,
hands them to the recorder of the forward pass in progress, then finishes attention like the eager path (mask add,
softmax, dropout, ``@ v``), so the model output is unchanged (to float rounding vs. sdpa). The model's
``config._attn_implementation`` is switched to it only for the duration of a capturing call and restored afterwards,
so the model is left as it was; with ``attention=None`` the model's own implementation (sdpa, flash, ...) is used.
Exception: a model training with gradient checkpointing recomputes its layers during backward, after the call, and
must take the same attention path then; for it the switch stays until `Capture.close()` / the end of a
``with Capture(model) as cap:`` block.

Works for a teacher under ``torch.inference_mode()`` and for a student in training mode: captured tensors are
the very tensors of the forward graph, so gradients flow through them. (With REENTRANT gradient checkpointing the
layer forward runs under no_grad and the captured scores carry no gradient; use ``use_reentrant=False``.)
"""

from __future__ import annotations

import contextlib
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, Iterator

import torch
from torch import nn

from .. import families
from ..errors import KronError
from ..narrow import projection_of

IMPLEMENTATION = "kron_capture"
ATTENTION_KINDS = ("scores", "probs")


# ----------------------------------------------------------------------------------------------- the recorder

class _Recorder:
    """Collects one forward pass's attention tensors, by layer index."""

    def __init__(self, index: dict[nn.Module, int], kind: str):
        self.index = index
        self.kind = kind
        self.tensors: list[torch.Tensor | None] = [None] * len(index)

    def record(self, module: nn.Module, scores: torch.Tensor, probs: torch.Tensor) -> None:
        i = self.index.get(module)
        if i is None:  # an attention module we do not track (e.g. cross-attention)
            return
        if self.tensors[i] is not None:
            raise KronError(f"attention layer {i} ({type(module).__name__}) ran twice in one forward pass; "
                            "kroncli.distill.Capture expects each self-attention layer to run exactly once")
        self.tensors[i] = scores if self.kind == "scores" else probs


_ACTIVE: ContextVar[_Recorder | None] = ContextVar("kroncli_attention_recorder", default=None)


@contextlib.contextmanager
def _recording(rec: _Recorder | None) -> Iterator[None]:
    token = _ACTIVE.set(rec)
    try:
        yield
    finally:
        _ACTIVE.reset(token)


# -------------------------------------------------------------------------------- the attention implementation

def capture_attention_forward(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float | None = None,
    dropout: float = 0.0,
    **kwargs: Any,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Eager attention that also hands the raw scaled scores (and the probabilities) to the active recorder.

    Same signature and return value as transformers' ``eager_attention_forward``: ``(attn_output of shape
    (batch, seq, heads, head_dim), attention probabilities after dropout)``. The softmax runs in float32 and is
    cast back (identical for float32 models, more stable in half precision).
    """
    if kwargs.get("softcap") is not None:
        raise KronError("kron_capture attention does not support `softcap`")
    if scaling is None:
        scaling = query.size(-1) ** -0.5
    groups = getattr(module, "num_key_value_groups", 1)
    if groups > 1:  # grouped-query attention: expand key/value heads like the eager path
        key = key.repeat_interleave(groups, dim=1)
        value = value.repeat_interleave(groups, dim=1)

    scores = torch.matmul(query, key.transpose(-1, -2)) * scaling
    weights = scores
    if attention_mask is not None:
        mask = attention_mask[..., : key.shape[-2]]
        if mask.dtype == torch.bool:  # True = attend (sdpa convention)
            weights = weights.masked_fill(~mask, torch.finfo(weights.dtype).min)
        else:  # additive float mask (eager convention: 0 or dtype min)
            weights = weights + mask
    probs = nn.functional.softmax(weights, dim=-1, dtype=torch.float32).to(query.dtype)

    rec = _ACTIVE.get()
    if rec is not None:
        rec.record(module, scores, probs)

    dropped = nn.functional.dropout(probs, p=dropout, training=module.training)
    attn_output = torch.matmul(dropped, value).transpose(1, 2).contiguous()
    return attn_output, dropped


def _register() -> None:
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, eager_mask

    AttentionInterface.register(IMPLEMENTATION, capture_attention_forward)
    AttentionMaskInterface.register(IMPLEMENTATION, eager_mask)


_register()


# ------------------------------------------------------------------------------------------------ the result

@dataclass
class Captured:
    """What one forward pass of `Capture` returns. Lists are ordered by layer."""

    embedding: torch.Tensor
    hidden: list[torch.Tensor]
    attentions: list[torch.Tensor] = field(default_factory=list)
    logits: torch.Tensor | None = None
    output: Any = None
    attention_kind: str | None = None
    attention_mask: torch.Tensor | None = None  # the 2D (batch, seq) input mask, when one was given
    causal: bool = False  # a decoder's: a query attends only to keys at or before it (the losses honour it)

    @property
    def num_layers(self) -> int:
        return len(self.hidden)


# ------------------------------------------------------------------------------------------------ the wrapper

def _attention_targets(model: nn.Module) -> tuple[tuple[type, ...], tuple[str, ...]]:
    """Self-attention classes/class names declared by the model's `_can_record_outputs["attentions"]`."""
    classes: list[type] = []
    names: list[str] = []
    subs = [m for m in model.modules() if hasattr(type(m), "_can_record_outputs")]
    for sub in subs:
        spec = (getattr(type(sub), "_can_record_outputs", None) or {}).get("attentions")
        specs = spec if isinstance(spec, (list, tuple)) else [spec]
        for s in specs:
            if isinstance(s, type):
                classes.append(s)
            elif isinstance(s, str):
                names.append(s)
            elif s is not None:  # an OutputRecorder
                if getattr(s, "target_class", None) is not None:
                    classes.append(s.target_class)
                if getattr(s, "class_name", None):
                    names.append(s.class_name)
    return tuple(classes), tuple(names)


def attention_modules(model: nn.Module) -> list[nn.Module]:
    """The model's self-attention modules, in layer order: those its family's entry names (kroncli/families.py),
    else those the model declares in `_can_record_outputs`."""
    family = families.find(getattr(model, "config", None))
    if family is not None:
        return family.attention_modules(model)
    classes, names = _attention_targets(model)
    if classes or names:
        found = [m for m in model.modules()
                 if (classes and isinstance(m, classes)) or any(type(m).__name__.endswith(n) for n in names)]
    else:
        found = [m for m in model.modules() if type(m).__name__.endswith("SelfAttention")]
    return found


class Capture:
    """Wrap a transformers model so that one call returns the tensors distillation needs.

    ``attention``: ``"scores"`` (pre-softmax ``QK^T/sqrt(d_k)``, the KroneckerBERT/TinyBERT target), ``"probs"``
    (softmax probabilities) or ``None`` (no attention capture, the model keeps its own attention implementation).
    Usable as a context manager; `close()` matters only for gradient checkpointing (see the module docstring).
    """

    def __init__(self, model: nn.Module, attention: str | None = "scores", runner: nn.Module | None = None):
        """`runner` is what gets called, when it is a wrapper of `model` (DistributedDataParallel)."""
        self.runner = runner
        if attention is not None and attention not in ATTENTION_KINDS:
            raise ValueError(f"attention must be one of {ATTENTION_KINDS} or None, not {attention!r}")
        self.model = model
        self.attention = attention
        self._index: dict[nn.Module, int] = {}
        self._configs: list[Any] = []
        self._pinned: dict[int, tuple[Any, Any]] | None = None
        if attention is not None:
            self._prepare()

    def _prepare(self) -> None:
        model = self.model
        name = type(model).__name__
        family = families.find(getattr(model, "config", None))
        if family is not None and family.capture.hook != "interface":
            raise KronError(f"the {family.name} family's attention is reached by {family.capture.hook!r}, which this "
                            "kron does not capture; use attention=None")
        can_set = getattr(type(model), "_can_set_attn_implementation", None)
        if can_set is None or not can_set():
            raise KronError(f"{name} does not dispatch attention through transformers' AttentionInterface, so "
                            "its attention scores cannot be captured; use attention=None (hidden-state and logit "
                            "losses only)")
        modules = attention_modules(model)
        if not modules:
            raise KronError(f"found no self-attention module in {name}; use attention=None")
        self._index = {m: i for i, m in enumerate(modules)}
        configs: dict[int, Any] = {}
        for m in [model, *model.modules()]:
            cfg = getattr(m, "config", None)
            if cfg is not None and hasattr(cfg, "_attn_implementation_internal"):
                configs[id(cfg)] = cfg
        self._configs = list(configs.values())

    def _checkpointing(self) -> bool:
        """Gradient checkpointing on and active: backward will re-run layers, outside this call."""
        return self.model.training and torch.is_grad_enabled() and any(
            getattr(m, "gradient_checkpointing", False) is True for m in self.model.modules())

    @contextlib.contextmanager
    def _switched(self) -> Iterator[None]:
        """Use kron_capture attention for this call; restore the model's own implementation afterwards.

        Exception: with gradient checkpointing, backward recomputes each layer after this call returns, and the
        recomputation must take the same attention path; the switch then stays until `close()` (or the end of a
        ``with Capture(...)`` block). Both paths compute the same attention, only speed differs.
        """
        if self._pinned is not None:  # already switched for good
            yield
            return
        saved = {id(cfg): (cfg, cfg._attn_implementation_internal) for cfg in self._configs}
        pin = self._checkpointing()
        try:
            for cfg in self._configs:
                cfg._attn_implementation_internal = IMPLEMENTATION
            yield
        finally:
            if pin:
                self._pinned = saved
            else:
                for cfg, value in saved.values():
                    cfg._attn_implementation_internal = value

    def close(self) -> None:
        """Give the model back its own attention implementation (only needed after gradient checkpointing)."""
        if self._pinned is not None:
            for cfg, value in self._pinned.values():
                cfg._attn_implementation_internal = value
            self._pinned = None

    def __enter__(self) -> "Capture":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    @property
    def num_attention_layers(self) -> int:
        return len(self._index)

    def __call__(self, **inputs: Any) -> Captured:
        """Run the model once on ``inputs`` (what you would pass to ``model(**inputs)``)."""
        inputs = {k: v for k, v in inputs.items() if k not in ("output_hidden_states", "return_dict")}
        rec = _Recorder(self._index, self.attention) if self.attention is not None else None
        switch = self._switched() if rec is not None else contextlib.nullcontext()
        with switch, _recording(rec):
            out = (self.runner or self.model)(**inputs, output_hidden_states=True, return_dict=True)

        hidden_states = getattr(out, "hidden_states", None)
        if not hidden_states:
            raise KronError(f"{type(self.model).__name__} returned no hidden_states for output_hidden_states=True")
        attentions: list[torch.Tensor] = []
        if rec is not None:
            missing = [i for i, t in enumerate(rec.tensors) if t is None]
            if missing:
                raise KronError(f"attention capture got nothing from layer(s) {missing} of "
                                f"{type(self.model).__name__}: those layers do not call transformers' "
                                "AttentionInterface; use attention=None")
            attentions = list(rec.tensors)  # type: ignore[arg-type]
        logits = getattr(out, "logits", None)
        if logits is None:
            logits = getattr(out, "prediction_logits", None)
        embedding, hidden = hidden_states[0], list(hidden_states[1:])
        projection = projection_of(self.model)
        if projection is not None:  # a narrow student: its states in the teacher's width (TinyBERT's W_e, W_h)
            embedding, hidden = projection.embedding(embedding), [projection.hidden(h) for h in hidden]
        return Captured(
            embedding=embedding,
            hidden=hidden,
            attentions=attentions,
            logits=logits,
            output=out,
            attention_kind=self.attention,
            attention_mask=inputs.get("attention_mask"),
            causal=bool(getattr(families.find(getattr(self.model, "config", None)), "is_decoder", False)),
        )

