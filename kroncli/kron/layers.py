"""Kronecker-factored drop-in replacements for nn.Linear and nn.Embedding.

Row-major convention (PyTorch): kron(A, B)[i1*m2 + i2, j1*n2 + j2] = A[i1, j1] * B[i2, j2], so for x
with n = n1*n2 features, X = x.view(n1, n2) and (A (x) B) x = vec(A @ X @ B^T). The dense A (x) B is
never built in forward; both contractions are flat GEMMs over all tokens at once.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .nearest import nearest_kronecker


def kron_linear_macs(m1: int, n1: int, m2: int, n2: int, rank: int) -> int:
    """Multiply-adds per input vector of the cheaper contraction order."""
    return rank * min(n1 * n2 * m2 + n1 * m2 * m1, n2 * n1 * m1 + n2 * m1 * m2)


def choose_order(m1: int, n1: int, m2: int, n2: int) -> str:
    """Contraction plan for a shape, from side-by-side timings on a 2-core CPU (benchmarks/).

    Contract the side with fewer multiply-adds first. The second product is a broadcast batched matmul
    (no copies) when its per-token matrices are wide (>= 16 columns); otherwise both products are flat
    GEMMs over all tokens joined by one transpose copy: a batched product of thin matrices is ~10x slower.
    """
    a_side = n2 * n1 * m1 + n2 * m1 * m2
    b_side = n1 * n2 * m2 + n1 * m2 * m1
    if a_side < b_side:
        return "a_bmm" if n2 >= 16 else "a_flat"
    return "b_bmm" if m2 >= 16 else "b_flat"


class KroneckerLinear(nn.Module):
    """y = sum_k (A_k (x) B_k) x + b, with A (rank, m1, n1) and B (rank, m2, n2)."""

    def __init__(self, m1: int, n1: int, m2: int, n2: int, rank: int = 1, bias: bool = True,
                 dtype: torch.dtype | None = None, device: torch.device | str | None = None):
        super().__init__()
        kw = {"dtype": dtype, "device": device}
        self.m1, self.n1, self.m2, self.n2, self.rank = m1, n1, m2, n2, rank
        self.in_features, self.out_features = n1 * n2, m1 * m2
        self.a = nn.Parameter(torch.empty(rank, m1, n1, **kw))
        self.b = nn.Parameter(torch.empty(rank, m2, n2, **kw))
        self.bias = nn.Parameter(torch.zeros(m1 * m2, **kw)) if bias else None
        self.order = choose_order(m1, n1, m2, n2)
        nn.init.normal_(self.a, std=(1.0 / (rank * n1)) ** 0.5)
        nn.init.normal_(self.b, std=(1.0 / n2) ** 0.5)

    @classmethod
    def from_linear(cls, linear: nn.Linear, shape: tuple[int, int], rank: int = 1) -> "KroneckerLinear":
        """Nearest-Kronecker initialisation from a dense layer; `shape` is A's (m1, n1)."""
        m1, n1 = shape
        out_f, in_f = linear.weight.shape
        if out_f % m1 or in_f % n1:
            raise ValueError(f"A shape {m1}x{n1} does not divide the {out_f}x{in_f} weight")
        fit = nearest_kronecker(linear.weight, m1, n1, rank)
        w = linear.weight
        layer = cls(m1, n1, out_f // m1, in_f // n1, rank, bias=linear.bias is not None,
                    dtype=w.dtype, device=w.device)
        return _fitted(layer, fit, linear)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lead = x.shape[:-1]
        r, m1, n1, m2, n2 = self.rank, self.m1, self.n1, self.m2, self.n2
        x3 = x.reshape(-1, n1, n2)
        tokens = x3.shape[0]
        if self.order.startswith("b"):
            # Z = X B_k^T for every k in one GEMM: (T*n1, n2) @ (n2, r*m2)
            z = (x3.reshape(-1, n2) @ self.b.reshape(r * m2, n2).t()).view(tokens, n1, r, m2)
            if self.order == "b_bmm":  # y = [A_1 .. A_r] @ [Z_1; ..; Z_r], broadcast over tokens
                z = z.transpose(1, 2).reshape(tokens, r * n1, m2)
                y = self.a.transpose(0, 1).reshape(m1, r * n1) @ z
            else:  # (T*m2, r*n1) @ (r*n1, m1), then back to (T, m1, m2)
                z = z.permute(0, 3, 2, 1).reshape(tokens * m2, r * n1)
                y = (z @ self.a.permute(0, 2, 1).reshape(r * n1, m1)).view(tokens, m2, m1).transpose(1, 2)
        else:
            if self.order == "a_bmm":  # Z = A_k X for every k, broadcast over tokens: (T, r*m1, n2)
                z = (self.a.reshape(r * m1, n1) @ x3).view(tokens, r, m1, n2)
            else:  # (T*n2, n1) @ (n1, r*m1)
                z = x3.transpose(1, 2).reshape(-1, n1) @ self.a.permute(2, 0, 1).reshape(n1, r * m1)
                z = z.view(tokens, n2, r, m1).permute(0, 2, 3, 1)  # (T, r, m1, n2) as in a_bmm
            # sum_k Z_k B_k^T: (T*m1, r*n2) @ (r*n2, m2)
            z = z.permute(0, 2, 1, 3).reshape(tokens * m1, r * n2) if r > 1 or self.order == "a_flat" \
                else z.reshape(tokens * m1, n2)
            y = (z @ self.b.permute(0, 2, 1).reshape(r * n2, m2)).view(tokens, m1, m2)
        y = y.reshape(*lead, m1 * m2)
        return y + self.bias if self.bias is not None else y

    def dense_weight(self) -> torch.Tensor:
        """The materialised sum_k A_k (x) B_k (for export and checks, never used in forward)."""
        return torch.einsum("kac,kbd->abcd", self.a, self.b).reshape(self.out_features, self.in_features)

    def extra_repr(self) -> str:
        return (f"in={self.in_features}, out={self.out_features}, A={self.m1}x{self.n1}, "
                f"B={self.m2}x{self.n2}, rank={self.rank}, order={self.order}, bias={self.bias is not None}")


class LowRankLinear(KroneckerLinear):
    """y = U (V x) + b, the rank-r truncated SVD of a dense layer, computed as two products.

    It is the Kronecker layer of shape A (m x 1) (x) B (1 x n) with r terms: A_k (x) B_k = u_k v_k^T. Keeping
    those factors (a = U^T as (r, m, 1), b = V as (r, 1, n)) means the checkpoint, the export template, densify and
    every isinstance check treat it as the KroneckerLinear it is; only the forward differs: x V^T, then U.
    """

    def __init__(self, out_features: int, in_features: int, rank: int = 1, bias: bool = True,
                 dtype: torch.dtype | None = None, device: torch.device | str | None = None):
        super().__init__(out_features, 1, 1, in_features, rank, bias, dtype, device)
        self.order = "lowrank"

    @classmethod
    def from_linear(cls, linear: nn.Linear, rank: int = 1) -> "LowRankLinear":
        """Truncated-SVD initialisation (the nearest Kronecker sum of this shape is the SVD of W itself)."""
        w = linear.weight
        fit = nearest_kronecker(w, w.shape[0], 1, rank)  # a: (r, m, 1) = U sqrt(s), b: (r, 1, n) = sqrt(s) V
        layer = cls(w.shape[0], w.shape[1], rank, bias=linear.bias is not None, dtype=w.dtype, device=w.device)
        return _fitted(layer, fit, linear)

    @property
    def u(self) -> torch.Tensor:
        """U, out x rank."""
        return self.a.view(self.rank, self.m1).t()

    @property
    def v(self) -> torch.Tensor:
        """V, rank x in."""
        return self.b.view(self.rank, self.n2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(F.linear(x, self.v), self.u, self.bias)

    def extra_repr(self) -> str:
        return f"in={self.in_features}, out={self.out_features}, rank={self.rank}, bias={self.bias is not None}"


def is_low_rank(m1: int, n1: int, m2: int, n2: int) -> bool:
    """(m x 1) (x) (1 x n): a sum of outer products, which `LowRankLinear` runs as two GEMMs."""
    return n1 == 1 and m2 == 1


def factored_linear(linear, m1: int, n1: int, rank: int, init: bool = True) -> KroneckerLinear:
    """The factored module for one dense layer and A shape (m1, n1): initialised from it, or empty (`init=False`,
    weights loaded next)."""
    out_f, in_f = linear.weight.shape
    m2, n2 = out_f // m1, in_f // n1
    bias, dtype = linear.bias is not None, linear.weight.dtype
    if is_low_rank(m1, n1, m2, n2):
        return LowRankLinear.from_linear(linear, rank) if init else LowRankLinear(out_f, in_f, rank, bias, dtype)
    if init:
        return KroneckerLinear.from_linear(linear, (m1, n1), rank)
    return KroneckerLinear(m1, n1, m2, n2, rank, bias=bias, dtype=dtype)


class KroneckerEmbedding(nn.Module):
    """Row i = sum_k A[i, k] (x) B[k]: A a V x (rank*d/f) table, B (rank, f) shared by all tokens.

    The paper's form (m2 = 1): no vocabulary padding, O(rank*d) per lookup, and `padding_idx` rows get
    no gradient exactly as in nn.Embedding (F.embedding handles it).
    """

    def __init__(self, num_embeddings: int, embedding_dim: int, f: int, rank: int = 1,
                 padding_idx: int | None = None, dtype: torch.dtype | None = None,
                 device: torch.device | str | None = None):
        super().__init__()
        if embedding_dim % f:
            raise ValueError(f"f={f} does not divide embedding dim {embedding_dim}")
        kw = {"dtype": dtype, "device": device}
        self.num_embeddings, self.embedding_dim, self.f, self.rank = num_embeddings, embedding_dim, f, rank
        self.padding_idx = padding_idx
        self.a = nn.Parameter(torch.randn(num_embeddings, rank * (embedding_dim // f), **kw))
        self.b = nn.Parameter(torch.randn(rank, f, **kw) / rank**0.5)

    @classmethod
    def from_embedding(cls, emb: nn.Embedding, f: int, rank: int = 1) -> "KroneckerEmbedding":
        v, d = emb.weight.shape
        fit = nearest_kronecker(emb.weight, v, d // f, rank)  # A: V x d/f, B: 1 x f
        layer = cls(v, d, f, rank, padding_idx=emb.padding_idx, dtype=emb.weight.dtype,
                    device=emb.weight.device)
        with torch.no_grad():
            layer.a.copy_(fit.a.permute(1, 0, 2).reshape(v, rank * (d // f)))
            layer.b.copy_(fit.b.reshape(rank, f))
        layer.init_rel_error = fit.rel_error
        return layer

    @property
    def weight(self) -> torch.Tensor:
        """Dense table, built on demand for code that insists on `.weight` (export, tying)."""
        return self.dense_weight()

    def dense_weight(self) -> torch.Tensor:
        a = self.a.view(self.num_embeddings, self.rank, self.embedding_dim // self.f)
        return torch.einsum("vkp,kq->vpq", a, self.b).reshape(self.num_embeddings, self.embedding_dim)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        rows = F.embedding(ids, self.a, padding_idx=self.padding_idx)
        rows = rows.view(*ids.shape, self.rank, self.embedding_dim // self.f)
        if self.rank == 1:
            out = rows.squeeze(-2).unsqueeze(-1) * self.b[0]
        else:
            out = torch.einsum("...kp,kq->...pq", rows, self.b)
        return out.reshape(*ids.shape, self.embedding_dim)

    def extra_repr(self) -> str:
        return (f"{self.num_embeddings}, {self.embedding_dim}, A={self.num_embeddings}x"
                f"{self.rank * self.embedding_dim // self.f}, B={self.rank}x{self.f}, "
                f"padding_idx={self.padding_idx}")


class KroneckerTiedDecoder(nn.Module):
    """Output projection tied to a KroneckerEmbedding: logits = h E^T + bias without building E.

    h (.., d) -> H (.., d/f, f); E_v = A_v (x) B  =>  logits_v = sum_k A[v,k] . (H B_k^T).
    """

    def __init__(self, embedding: KroneckerEmbedding, bias: nn.Parameter | None):
        super().__init__()
        self.embedding = [embedding]  # a list keeps it out of this module's parameters (it is tied)
        self.bias = bias  # the same Parameter as the head's own bias, as the dense decoder had it

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        emb = self.embedding[0]
        h = hidden.reshape(*hidden.shape[:-1], emb.embedding_dim // emb.f, emb.f)
        proj = torch.einsum("...pq,kq->...kp", h, emb.b).reshape(*hidden.shape[:-1], -1)
        logits = proj @ emb.a.t()
        return logits + self.bias if self.bias is not None else logits


def _fitted(layer, fit, linear: nn.Linear):
    """`layer` holding the nearest-Kronecker factors `fit` of `linear` (and its bias), with the fit's error kept."""
    with torch.no_grad():
        layer.a.copy_(fit.a)
        layer.b.copy_(fit.b)
        if linear.bias is not None:
            layer.bias.copy_(linear.bias)
    layer.init_rel_error = fit.rel_error
    return layer
