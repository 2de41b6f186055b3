"""Find the matrices to factor in a Hugging Face model and swap them for Kronecker modules.

Targets are module names matched with `re.fullmatch` (by default the model family's, kroncli/families.py); the
swap is a `setattr` on the parent module and the replacement class comes from the family table's module types
(nn.Linear and transformers' Conv1D become KroneckerLinear, nn.Embedding KroneckerEmbedding). Heads (classifier,
QA, pooler) stay dense.
"""

from __future__ import annotations

import re
from types import SimpleNamespace
from typing import Iterable

from torch import nn

from . import families
from .errors import KronError
from .kron.layers import KroneckerEmbedding, KroneckerTiedDecoder, factored_linear
from .kron.search import Choice, Target

# What `--targets` defaults to: the model family's embeddings, Q/K/V/O and FFN (kroncli/families.py). A label,
# not a regex: the pattern itself is the family's.
DEFAULT_TARGETS = "the model family's default targets"


def _compile(pattern: str | None, flag: str) -> re.Pattern | None:
    if not pattern:
        return None
    try:
        return re.compile(pattern)
    except re.error as e:
        raise KronError(f"{flag} {pattern!r} is not a valid regular expression: {e}") from None


def find_targets(model: nn.Module, targets: str | None = None, exclude: str | None = None) -> list[Target]:
    """Every factorable module whose name fully matches `targets` (default: the model family's) and not `exclude`.

    The family table (kroncli/families.py) says which names are which layer type and which module types count;
    with `--targets` a model the table lacks is factored too, from any nn.Linear / Conv1D / nn.Embedding."""
    family = families.find(model) if targets else families.family_of(model)
    inc = _compile(targets or family.targets(), "--targets")
    exc = _compile(exclude, "--exclude")
    kinds = family.module_kinds if family else families.MODULE_KINDS
    found, seen = [], []
    for name, module in model.named_modules():
        kind = families.module_kind(module, kinds)
        if kind is None:
            continue
        seen.append(name)
        if inc.fullmatch(name) and not (exc and exc.fullmatch(name)):
            found.append(Target(name, kind.kind, family.layer_type(name) if family else "other",
                                kind.matrix(module)))
    if not found:
        listing = ", ".join(seen[:12]) + (f", ... ({len(seen)} in all)" if len(seen) > 12 else "")
        what = f"the {family.name} family's default targets" if not targets else f"--targets {targets!r}"
        names = "/".join(k.cls.rsplit(".", 1)[1] for k in kinds)
        raise KronError(f"no layer of {type(model).__name__} matches {what}"
                        f"{' minus --exclude' if exclude else ''}; {names} modules found: "
                        f"{listing or 'none'}. Pass --targets REGEX matching some of them")
    return found


def count_params(model: nn.Module) -> int:
    """Unique parameters (tied weights counted once)."""
    return sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())


def _swap(model: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, attr = name.rpartition(".")
    setattr(model.get_submodule(parent_name) if parent_name else model, attr, new)


def _as_linear(module: nn.Module):
    """The module as an out x in linear map (a Conv1D stores its weight in x out)."""
    kind = families.module_kind(module)
    if kind is None or kind.weight == "out_in":
        return module
    return SimpleNamespace(weight=kind.matrix(module), bias=module.bias)


def _tied_output(model: nn.Module, emb: nn.Embedding) -> nn.Linear | None:
    out = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if isinstance(out, nn.Linear) and out.weight is emb.weight:
        return out
    return None


def apply_choices(model: nn.Module, choices: Iterable[Choice], init: bool = True,
                  on_layer=None) -> nn.Module:
    """Replace each chosen module in place (nearest-Kronecker init from its weights when `init`)."""
    for c in choices:
        if c.rank == 0:
            continue
        module = model.get_submodule(c.name)
        if c.kind == "embedding":
            tied = _tied_output(model, module)
            if init:
                new = KroneckerEmbedding.from_embedding(module, c.n2, c.rank)
            else:
                new = KroneckerEmbedding(c.m, c.n, c.n2, c.rank, padding_idx=module.padding_idx,
                                         dtype=module.weight.dtype)
            _swap(model, c.name, new)
            if tied is not None:
                model.set_output_embeddings(KroneckerTiedDecoder(new, tied.bias))
        else:
            new = factored_linear(_as_linear(module), c.m1, c.n1, c.rank, init)
            _swap(model, c.name, new)
        if init:
            c.rel_error = new.init_rel_error  # the exact float64 error replaces the search estimate
        if on_layer:
            on_layer(c)
    return model


def keep_layers(model: nn.Module, layers: list[int]) -> None:
    """Cut the model's transformer stack down to `layers` (teacher layer indices, in order), in place.

    Why: a shallower student (TinyBERT's uniform choice, e.g. layers 1,3,5 of 6) spends the same parameter
    budget on fewer, larger matrices and runs proportionally faster. The kept layers keep their weights (the
    factorization starts from them); the config's layer count (the family's attribute) follows.
    """
    attr = families.num_layers_attr(model.config)
    total = getattr(model.config, attr, None)
    if total is None:
        raise KronError(f"{type(model).__name__} has no {attr} in its config; cannot drop layers")
    if not layers or list(layers) != sorted(set(layers)) or not all(0 <= i < total for i in layers):
        raise KronError(f"layers {','.join(map(str, layers))}: give increasing, distinct teacher layer indices "
                        f"from 0 to {total - 1}, e.g. {','.join(str(i) for i in range(1, total, 2))} (--layers, or "
                        "factorize.layers in a recipe)")
    stacks = [(name, m) for name, m in model.named_modules() if isinstance(m, nn.ModuleList) and len(m) == total]
    if len(stacks) != 1:
        raise KronError(f"cannot find the layer stack of {type(model).__name__} ({len(stacks)} candidates); "
                        "--layers needs one ModuleList holding every layer")
    name, stack = stacks[0]
    parent = model.get_submodule(name.rsplit(".", 1)[0]) if "." in name else model
    kept = nn.ModuleList(stack[i] for i in layers)
    for new_index, layer in enumerate(kept):
        for sub in layer.modules():  # transformers numbers layers for caches; keep it consistent
            if isinstance(getattr(sub, "layer_idx", None), int):
                sub.layer_idx = new_index
    setattr(parent, name.rsplit(".", 1)[-1], kept)
    setattr(model.config, attr, len(layers))
