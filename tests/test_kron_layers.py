"""Kronecker modules against torch.kron on random shapes, every contraction plan, ranks and bias."""

import itertools

import pytest
import torch
from torch import nn

from kroncli.kron.layers import KroneckerEmbedding, KroneckerLinear, KroneckerTiedDecoder, choose_order
from kroncli.kron.nearest import kron_sum

SHAPES = [(3, 4, 5, 2), (4, 2, 3, 6), (2, 8, 4, 3), (1, 1, 5, 7), (6, 5, 1, 1), (2, 16, 20, 17), (17, 3, 2, 16)]
ORDERS = ["a_flat", "a_bmm", "b_flat", "b_bmm"]


@pytest.mark.parametrize("shape,rank,order", list(itertools.product(SHAPES, [1, 2, 3], ORDERS)))
def test_linear_forward_matches_torch_kron(shape, rank, order):
    torch.manual_seed(hash((shape, rank)) % 1000)
    m1, n1, m2, n2 = shape
    layer = KroneckerLinear(m1, n1, m2, n2, rank).double()
    nn.init.normal_(layer.bias)
    layer.order = order
    x = torch.randn(5, 3, n1 * n2, dtype=torch.float64)
    expected = x @ kron_sum(layer.a, layer.b).T + layer.bias
    torch.testing.assert_close(layer(x), expected, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(layer.dense_weight(), kron_sum(layer.a, layer.b))


def test_linear_without_bias_and_single_vector():
    layer = KroneckerLinear(3, 2, 4, 5, rank=2, bias=False).double()
    x = torch.randn(10, dtype=torch.float64)
    torch.testing.assert_close(layer(x), kron_sum(layer.a, layer.b) @ x)


def test_linear_gradients_match_dense_kron():
    torch.manual_seed(0)
    layer = KroneckerLinear(4, 3, 2, 5, rank=2).double()
    x = torch.randn(7, 15, dtype=torch.float64)
    layer(x).pow(2).sum().backward()
    ga, gb = layer.a.grad.clone(), layer.b.grad.clone()
    a, b = layer.a.detach().clone().requires_grad_(), layer.b.detach().clone().requires_grad_()
    (x @ kron_sum(a, b).T + layer.bias.detach()).pow(2).sum().backward()
    torch.testing.assert_close(ga, a.grad)
    torch.testing.assert_close(gb, b.grad)


def test_order_rule_prefers_cheaper_side():
    assert choose_order(384, 384, 2, 2) == "b_flat"  # attention A 384x384 (x) B 2x2
    assert choose_order(8, 2, 384, 384) == "b_bmm"  # FFN-in A 8x2 (x) B 384x384
    assert choose_order(2, 16, 384, 192) == "a_bmm"  # FFN-out of KroneckerBERT21


def test_from_linear_error_is_measured_error():
    torch.manual_seed(1)
    dense = nn.Linear(12, 20).double()
    layer = KroneckerLinear.from_linear(dense, (4, 3), rank=2)
    w_hat = kron_sum(layer.a, layer.b)
    measured = ((dense.weight - w_hat).norm() / dense.weight.norm()).item()
    assert layer.init_rel_error == pytest.approx(measured, rel=1e-9)
    torch.testing.assert_close(layer.bias, dense.bias)
    x = torch.randn(3, 12, dtype=torch.float64)
    torch.testing.assert_close(layer(x), x @ w_hat.T + dense.bias)


def test_from_linear_rejects_non_dividing_shape():
    with pytest.raises(ValueError, match="does not divide"):
        KroneckerLinear.from_linear(nn.Linear(12, 20), (3, 5))


@pytest.mark.parametrize("rank", [1, 2])
def test_embedding_rows_are_kron_of_factors(rank):
    torch.manual_seed(2)
    emb = nn.Embedding(50, 12, padding_idx=0).double()
    kemb = KroneckerEmbedding.from_embedding(emb, f=4, rank=rank)
    ids = torch.tensor([[0, 3, 49], [7, 7, 1]])
    a = kemb.a.view(50, rank, 3)
    for i in (0, 3, 49, 7):
        row = sum(torch.kron(a[i, k].view(1, 3), kemb.b[k].view(1, 4)).flatten() for k in range(rank))
        torch.testing.assert_close(kemb(torch.tensor(i)), row)
    torch.testing.assert_close(kemb(ids), kemb.dense_weight()[ids])
    measured = ((emb.weight - kemb.dense_weight()).norm() / emb.weight.norm()).item()
    assert kemb.init_rel_error == pytest.approx(measured, rel=1e-9)


def test_embedding_padding_row_gets_no_gradient():
    kemb = KroneckerEmbedding(10, 8, f=4, padding_idx=0)
    kemb(torch.tensor([0, 0, 5])).sum().backward()
    assert kemb.a.grad[0].abs().sum() == 0
    assert kemb.a.grad[5].abs().sum() > 0


def test_tied_decoder_equals_dense_projection():
    torch.manual_seed(3)
    kemb = KroneckerEmbedding(30, 12, f=3, rank=2).double()
    bias = nn.Parameter(torch.randn(30, dtype=torch.float64))
    dec = KroneckerTiedDecoder(kemb, bias)
    h = torch.randn(2, 5, 12, dtype=torch.float64)
    torch.testing.assert_close(dec(h), h @ kemb.dense_weight().T + bias)
    assert list(dec.parameters()) == [bias]  # the table stays owned by the embedding
