"""Nearest Kronecker product (Van Loan & Pitsianis) by rearrangement + SVD.

For W (m x n) and factor shapes A: m1 x n1, B: m2 x n2 (m = m1*m2, n = n1*n2), the rearranged matrix
R(W) has one row per block (i1, j1) holding the flattened block W[i1*m2:(i1+1)*m2, j1*n2:(j1+1)*n2].
Then ||W - sum_k A_k (x) B_k||_F = ||R(W) - sum_k vec(A_k) vec(B_k)^T||_F, so a rank-r SVD of R(W) is
the optimal r-term Kronecker fit and the discarded singular values are its exact error.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

# Above this side length of R(W) the Gram matrix stops being cheap; ARPACK (svds) takes over.
GRAM_MAX_SIDE = 512


def divisors(n: int) -> list[int]:
    """All positive divisors of n in increasing order."""
    small = [d for d in range(1, int(n**0.5) + 1) if n % d == 0]
    return sorted(set(small + [n // d for d in small]))


def rearrange(weight: torch.Tensor, m1: int, n1: int) -> torch.Tensor:
    """R(W): row (i1*n1 + j1) is the row-major flattened block (i1, j1) of size m2 x n2.

    Works on a batch of same-shaped matrices too (leading dimensions are kept).
    """
    *lead, m, n = weight.shape
    if m % m1 or n % n1:
        raise ValueError(f"factor shape {m1}x{n1} does not divide a {m}x{n} matrix")
    m2, n2 = m // m1, n // n1
    blocks = weight.reshape(*lead, m1, m2, n1, n2).transpose(-3, -2)
    return blocks.reshape(*lead, m1 * n1, m2 * n2)


def kron_sum(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Dense sum_k A_k (x) B_k from stacked factors a (r, m1, n1) and b (r, m2, n2). Tests/export only."""
    return sum(torch.kron(a[k], b[k]) for k in range(a.shape[0]))


def relative_error_from_energy(total_energy: float, kept_energy: float) -> float:
    """||W - W_hat|| / ||W|| from ||W||^2 and the sum of the kept squared singular values."""
    if total_energy <= 0:
        return 0.0
    return float(np.sqrt(max(total_energy - kept_energy, 0.0) / total_energy))


def squared_singular_values(weight: torch.Tensor, m1: int, n1: int, rank: int,
                            weight_t: torch.Tensor | None = None) -> torch.Tensor:
    """Top-`rank` squared singular values of R(W), descending (leading batch dims kept).

    Search-grade: the Gram matrix of R's shorter side in the input dtype (fp32 ranks candidates well;
    the chosen shape is refit in float64 by `nearest_kronecker`). R(W^T) for (n1, m1) is R(W) with rows
    and columns permuted, so it has the same singular values; pass `weight_t` (a contiguous W^T) and the
    rearrangement copies whichever way has the longer contiguous runs (n2 vs m2), several times faster.
    """
    m, n = weight.shape[-2:]
    if weight_t is not None and m // m1 > n // n1:
        r = rearrange(weight_t, n1, m1)
    else:
        r = rearrange(weight, m1, n1)
    if r.shape[-2] <= r.shape[-1]:
        gram = r @ r.transpose(-1, -2)
    else:
        gram = r.transpose(-1, -2) @ r
    eig = torch.linalg.eigvalsh(gram)  # ascending
    k = min(rank, eig.shape[-1])
    return eig[..., -k:].flip(-1).clamp_min(0)


@dataclass
class KroneckerFit:
    """Stacked factors a (r, m1, n1), b (r, m2, n2) and the exact relative Frobenius error."""

    a: torch.Tensor
    b: torch.Tensor
    singular_values: np.ndarray
    rel_error: float


def _top_singular_triplets(r: np.ndarray, rank: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Top-`rank` (u, s, v) of a float64 matrix with a solver chosen by its shape."""
    p, q = r.shape
    k = min(rank, p, q)
    side = min(p, q)
    if side <= GRAM_MAX_SIDE or k >= side - 1:
        if p <= q:
            evals, evecs = np.linalg.eigh(r @ r.T)
            order = np.argsort(evals)[::-1][:k]
            s = np.sqrt(np.clip(evals[order], 0, None))
            u = evecs[:, order]
            v = (r.T @ u) / np.where(s > 0, s, 1.0)
        else:
            evals, evecs = np.linalg.eigh(r.T @ r)
            order = np.argsort(evals)[::-1][:k]
            s = np.sqrt(np.clip(evals[order], 0, None))
            v = evecs[:, order]
            u = (r @ v) / np.where(s > 0, s, 1.0)
        return u, s, v
    from scipy.sparse.linalg import svds

    u, s, vt = svds(r, k=k, tol=0, random_state=0)
    order = np.argsort(s)[::-1]
    return u[:, order], s[order], vt[order].T


def nearest_kronecker(weight: torch.Tensor, m1: int, n1: int, rank: int = 1) -> KroneckerFit:
    """Best rank-`rank` sum of Kronecker products for one matrix, computed in float64."""
    m, n = weight.shape
    m2, n2 = m // m1, n // n1
    w = weight.detach().to(torch.float64)
    r = rearrange(w, m1, n1).cpu().numpy()
    u, s, v = _top_singular_triplets(r, rank)
    k = len(s)
    root = np.sqrt(s)
    a = (u * root).T.reshape(k, m1, n1)
    b = (v * root).T.reshape(k, m2, n2)
    if k < rank:  # rank exceeds what R(W) holds: pad with zero terms so the layer keeps its shape
        a = np.concatenate([a, np.zeros((rank - k, m1, n1))])
        b = np.concatenate([b, np.zeros((rank - k, m2, n2))])
    total = float((w * w).sum())
    err = relative_error_from_energy(total, float((s**2).sum()))
    return KroneckerFit(torch.from_numpy(a), torch.from_numpy(b), s, err)
