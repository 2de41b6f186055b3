"""Factor-shape search: enumerate candidate Kronecker shapes per matrix, score them, fit a global budget.

Every matrix gets a list of candidates (A shape m1 x n1, rank r) with their parameters, multiply-adds and
nearest-Kronecker error; a Lagrangian multiple-choice knapsack then picks one candidate per matrix so the
whole model meets a parameter budget while the summed cost (lost energy fraction, optionally plus a
multiply-add term) is smallest.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from typing import Callable, Iterable

import torch

from .layers import kron_linear_macs
from .nearest import divisors, squared_singular_values
from .presets import PRESETS

# A candidate above this per-matrix compression keeps almost nothing of a trained matrix; the search
# skips them unless the requested ratio needs them (the cap grows with the ratio, see `layer_ratio_cap`).
DEFAULT_LAYER_RATIO_CAP = 64.0
SPEED_WEIGHT = 1.0  # --objective speed: cost += SPEED_WEIGHT * (Kronecker MACs / dense MACs)


@dataclass
class Target:
    """One matrix to factor: a Linear weight (out x in) or an Embedding table (V x d)."""

    name: str
    kind: str  # "linear" | "embedding"
    layer_type: str
    weight: torch.Tensor = field(repr=False)

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.weight.shape)


@dataclass
class Choice:
    """A factor shape for one matrix; rank 0 means the matrix stays dense."""

    name: str
    kind: str
    layer_type: str
    m: int
    n: int
    m1: int
    n1: int
    rank: int
    params: int
    dense_params: int
    macs: int
    rel_error: float

    @property
    def m2(self) -> int:
        return self.m // self.m1

    @property
    def n2(self) -> int:
        return self.n // self.n1

    def row(self) -> dict:
        d = asdict(self)
        d.update(m2=self.m2, n2=self.n2)
        return d


def candidate_shapes(target: Target, max_rank: int, ratio_cap: float = math.inf,
                     min_side: int = 1, min_embedding_dim: int = 1,
                     embedding_rank: int = 0) -> list[tuple[int, int, int]]:
    """(m1, n1, rank) candidates: every divisor pair for a Linear, every f | d (m2 = 1) for an embedding.

    Shapes compressing the matrix more than `ratio_cap` are dropped, and so are candidates that save
    nothing over the dense matrix. `min_side` > 1 drops Linear shapes with a factor side shorter than it:
    an A of one column (n1 = 1) makes A (x) B m1 scaled copies of B's rows, a structured low-rank matrix of
    rank <= min(m1, n1) * min(m2, n2); such shapes often win on reconstruction error yet learn less in
    distillation than balanced ones with the same parameters. `min_embedding_dim` keeps an embedding's A
    at least that wide: every token's row is a_i (x) b with one shared b, so d/f is the dimension of the
    subspace all token embeddings live in. `embedding_rank` K > 0 fixes an embedding to K terms of
    A (V x 1) (x) B (1 x d): a V x K table times a shared K x d matrix, whose nearest-Kronecker init is the
    truncated SVD of the table, so its K-dimensional token subspace is learned instead of built from one
    shared b (the only candidate then; `min_embedding_dim` does not apply).
    """
    m, n = target.shape
    dense = m * n
    if target.kind == "embedding" and embedding_rank:
        one = m + n
        return [(m, 1, embedding_rank)] if embedding_rank * one < dense and \
            dense / (embedding_rank * one) <= ratio_cap else []
    if target.kind == "embedding":
        pairs = [(m, n // f) for f in divisors(n) if n // f >= min_embedding_dim]
    else:
        pairs = [(m1, n1) for m1 in divisors(m) for n1 in divisors(n)
                 if min(m1, n1, m // m1, n // n1) >= min_side]
    out = []
    for m1, n1 in pairs:
        one = m1 * n1 + (m // m1) * (n // n1)
        if one >= dense or dense / one > ratio_cap:
            continue
        out += [(m1, n1, r) for r in range(1, max_rank + 1) if r * one < dense]
    return out


def lowrank_shapes(target: Target, ratio_cap: float = math.inf, embedding_rank: int = 0) -> list[tuple[int, int, int]]:
    """(m, 1, r) candidates for `--method lowrank`: W ~ U V with rank r, the Kronecker shape (m x 1) (x) (1 x n), so
    its error is the truncated SVD's and the search and allocation below apply unchanged. Ranks that save nothing
    or compress the matrix more than `ratio_cap` are dropped; `embedding_rank` K fixes an embedding's rank."""
    m, n = target.shape
    if target.kind == "embedding" and embedding_rank:
        ranks = [embedding_rank]
    else:
        ranks = range(1, min(m, n) + 1)
    return [(m, 1, r) for r in ranks if r * (m + n) < m * n and m * n / (r * (m + n)) <= ratio_cap]


def method_shapes(method: str, target: Target, max_rank: int, ratio_cap: float = math.inf, min_side: int = 1,
                  min_embedding_dim: int = 1, embedding_rank: int = 0) -> list[tuple[int, int, int]]:
    """The candidates of one matrix under a factorization method ("kronecker" or "lowrank")."""
    if method == "lowrank":
        return lowrank_shapes(target, ratio_cap, embedding_rank)
    return candidate_shapes(target, max_rank, ratio_cap, min_side, min_embedding_dim, embedding_rank)


def layer_macs(kind: str, m: int, n: int, m1: int, n1: int, rank: int) -> int:
    """Multiply-adds per token (a lookup costs rank*d for an embedding)."""
    if rank == 0:
        return m * n if kind == "linear" else n
    if kind == "embedding":
        return rank * n
    return kron_linear_macs(m1, n1, m // m1, n // n1, rank)


def _dense_choice(t: Target) -> Choice:
    m, n = t.shape
    return Choice(t.name, t.kind, t.layer_type, m, n, 1, 1, 0, m * n, m * n,
                  layer_macs(t.kind, m, n, 1, 1, 0), 0.0)


def score_candidates(targets: list[Target], max_rank: int = 1, ratio_cap: float = DEFAULT_LAYER_RATIO_CAP,
                     progress: Callable[[int], None] | None = None, min_side: int = 1,
                     min_embedding_dim: int = 1, embedding_rank: int = 0,
                     method: str = "kronecker") -> dict[str, list[Choice]]:
    """All candidates of every target with search-grade errors (fp32 Gram of the rearranged matrix).

    One matrix at a time so that it stays in cache while all its candidate rearrangements are copied.
    """
    result: dict[str, list[Choice]] = {}
    shapes_of: dict[tuple, list] = {}
    for t in targets:
        m, n = t.shape
        key = (t.kind, m, n)
        if key not in shapes_of:
            shapes_of[key] = method_shapes(method, t, max_rank, ratio_cap, min_side, min_embedding_dim,
                                           embedding_rank)
        ranks: dict[tuple[int, int], list[int]] = defaultdict(list)
        for m1, n1, r in shapes_of[key]:
            ranks[(m1, n1)].append(r)
        out = [_dense_choice(t)]
        with torch.no_grad():
            w = t.weight.detach().float()
            w_t = w.t().contiguous()
            energy = float(w.double().pow(2).sum()) or 1e-30
            for (m1, n1), rs in ranks.items():
                kept = squared_singular_values(w, m1, n1, max(rs), w_t).double().cumsum(-1).tolist()
                one = m1 * n1 + (m // m1) * (n // n1)
                for r in rs:
                    lost = max(1 - kept[min(r, len(kept)) - 1] / energy, 0.0)
                    out.append(Choice(t.name, t.kind, t.layer_type, m, n, m1, n1, r, r * one, m * n,
                                      layer_macs(t.kind, m, n, m1, n1, r), math.sqrt(lost)))
        result[t.name] = out
        if progress:
            progress(1)
    return result


def estimate_error(target: Target, m1: int, n1: int, rank: int) -> float:
    """Search-grade relative error of one shape (what --plan shows)."""
    with torch.no_grad():
        w = target.weight.detach().float()
        kept = float(squared_singular_values(w, m1, n1, rank, w.t().contiguous()).double().sum())
        energy = float(w.double().pow(2).sum()) or 1e-30
    return math.sqrt(max(1 - kept / energy, 0.0))


def smallest_params(target: Target, ratio_cap: float = math.inf, min_side: int = 1,
                    min_embedding_dim: int = 1, embedding_rank: int = 0, method: str = "kronecker") -> int:
    """Fewest parameters any candidate of `target` under the cap needs (the dense size if none)."""
    m, n = target.shape
    shapes = method_shapes(method, target, 1, ratio_cap, min_side, min_embedding_dim, embedding_rank)
    return min([r * (a * b + (m // a) * (n // b)) for a, b, r in shapes], default=m * n)


def _cost(c: Choice, objective: str) -> float:
    """Lost energy of the matrix weighted by its size (in units of 1e6 dense parameters).

    Weighting by size makes the search spend parameters where most of the model's weights are; unweighted,
    it starves the large FFN matrices (every trained matrix keeps little at high compression, and the
    small ones gain error fastest per parameter).
    """
    cost = c.dense_params / 1e6 * c.rel_error ** 2
    if objective == "speed":
        cost += SPEED_WEIGHT * c.dense_params / 1e6 * c.macs / layer_macs(c.kind, c.m, c.n, 1, 1, 0)
    return cost


def min_params(cands: dict[str, list[Choice]]) -> int:
    return sum(min(c.params for c in cs) for cs in cands.values())


def allocate(cands: dict[str, list[Choice]], budget: int, objective: str = "error") -> list[Choice]:
    """Pick one candidate per matrix with total params <= budget, minimising the summed cost.

    Lagrangian relaxation (bisection on the price of a parameter) followed by a greedy fill of the
    leftover budget with the best cost reduction per extra parameter.
    """
    if budget < min_params(cands):
        raise ValueError("budget below the smallest possible factorisation")
    names = list(cands)
    costs = {k: [(_cost(c, objective), c) for c in cs] for k, cs in cands.items()}

    def pick(lam: float) -> dict[str, Choice]:
        return {k: min(costs[k], key=lambda cc: (cc[0] + lam * cc[1].params, cc[1].params))[1] for k in names}

    lo, hi = 0.0, 1.0
    while sum(c.params for c in pick(hi).values()) > budget:
        hi *= 4
        if hi > 1e30:
            break
    for _ in range(100):
        mid = math.sqrt(lo * hi) if lo > 0 else hi / 1e6
        if sum(c.params for c in pick(mid).values()) > budget:
            lo = mid
        else:
            hi = mid
        if lo > 0 and hi / lo < 1 + 1e-9:
            break
    chosen = pick(hi)
    slack = budget - sum(c.params for c in chosen.values())
    while True:
        best = None
        for k in names:
            cur = chosen[k]
            cur_cost = _cost(cur, objective)
            for cost, c in costs[k]:
                extra = c.params - cur.params
                if cost < cur_cost - 1e-12 and extra <= slack:
                    gain = (cur_cost - cost) / max(extra, 1)
                    if best is None or gain > best[0]:
                        best = (gain, k, c)
        if best is None:
            break
        _, k, c = best
        slack -= c.params - chosen[k].params
        chosen[k] = c
    return [chosen[k] for k in names]


def preset_choices(targets: Iterable[Target], preset: str, rank: int = 1) -> list[tuple[Target, int, int]]:
    """(target, m1, n1) for every target under a paper preset; raises ValueError on a misfit."""
    spec = PRESETS[preset]
    out = []
    for t in targets:
        group = "attention" if t.layer_type.startswith("attn") else t.layer_type
        if group not in spec:
            raise ValueError(f"preset {preset} has no shape for {t.name} ({t.layer_type})")
        how, val = spec[group]
        m, n = t.shape
        if how == "f":
            m1, n1 = m, (n // val if n % val == 0 else 0)
        elif how == "B":
            m1, n1 = (m // val[0], n // val[1]) if m % val[0] == 0 and n % val[1] == 0 else (0, 0)
        else:
            m1, n1 = val
        if not m1 or not n1 or m % m1 or n % n1:
            raise ValueError(f"preset {preset} shape {how}={val} does not divide {t.name} ({m}x{n})")
        out.append((t, m1, n1))
    return out
