"""Nearest Kronecker product: convention, exactness, and error = measured Frobenius error."""

import numpy as np
import pytest
import torch

from kroncli.kron.nearest import divisors, kron_sum, nearest_kronecker, rearrange, squared_singular_values


def test_rearrange_rows_are_flattened_blocks():
    w = torch.arange(6 * 8, dtype=torch.float64).view(6, 8)
    r = rearrange(w, 3, 2)  # blocks of 2x4
    assert r.shape == (6, 8)
    for i1 in range(3):
        for j1 in range(2):
            block = w[i1 * 2:(i1 + 1) * 2, j1 * 4:(j1 + 1) * 4]
            torch.testing.assert_close(r[i1 * 2 + j1], block.flatten())


def test_divisors():
    assert divisors(12) == [1, 2, 3, 4, 6, 12]
    assert divisors(1) == [1]


@pytest.mark.parametrize("m1,n1,rank", [(4, 5, 1), (4, 5, 2), (2, 10, 3), (24, 1, 1), (1, 30, 2)])
def test_error_equals_measured(m1, n1, rank):
    torch.manual_seed(0)
    w = torch.randn(24, 30, dtype=torch.float64)
    fit = nearest_kronecker(w, m1, n1, rank)
    measured = ((w - kron_sum(fit.a, fit.b)).norm() / w.norm()).item()
    assert fit.rel_error == pytest.approx(measured, rel=1e-10)
    assert fit.a.shape == (rank, m1, n1) and fit.b.shape == (rank, 24 // m1, 30 // n1)


def test_exact_kronecker_is_recovered():
    torch.manual_seed(1)
    a, b = torch.randn(4, 5, dtype=torch.float64), torch.randn(6, 3, dtype=torch.float64)
    w = torch.kron(a, b)
    fit = nearest_kronecker(w, 4, 5, 1)
    torch.testing.assert_close(kron_sum(fit.a, fit.b), w, rtol=1e-12, atol=1e-12)
    assert fit.rel_error < 1e-7  # sqrt of a float64 energy difference


def test_sum_of_two_kroneckers_is_exact_at_rank_two():
    torch.manual_seed(2)
    w = torch.kron(torch.randn(3, 3), torch.randn(4, 2)) + torch.kron(torch.randn(3, 3), torch.randn(4, 2))
    w = w.double()
    assert nearest_kronecker(w, 3, 3, 1).rel_error > 0.05
    assert nearest_kronecker(w, 3, 3, 2).rel_error < 1e-6


def test_large_side_uses_iterative_solver_and_stays_exact():
    torch.manual_seed(3)
    w = torch.randn(1024, 1024, dtype=torch.float64)  # R is 1024 x 1024: ARPACK path
    fit = nearest_kronecker(w, 32, 32, 2)
    s = np.linalg.svd(rearrange(w, 32, 32).numpy(), compute_uv=False)
    np.testing.assert_allclose(fit.singular_values, s[:2], rtol=1e-9)
    measured = ((w - kron_sum(fit.a, fit.b)).norm() / w.norm()).item()
    assert fit.rel_error == pytest.approx(measured, rel=1e-9)


def test_search_grade_values_match_numpy_in_both_orientations():
    torch.manual_seed(4)
    w = torch.randn(48, 36)
    for m1, n1 in [(4, 3), (16, 2), (2, 12), (48, 1), (1, 36)]:
        ref = np.linalg.svd(rearrange(w.double(), m1, n1).numpy(), compute_uv=False)[:3] ** 2
        for wt in (None, w.t().contiguous()):
            got = squared_singular_values(w, m1, n1, 3, wt).double().numpy()
            np.testing.assert_allclose(got, ref[:len(got)], rtol=1e-4)
