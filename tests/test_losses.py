"""Distillation losses: zero on identical inputs, hand-computed values on tiny tensors, masks, temperature,
layer mapping and the weighted registry."""

from __future__ import annotations

import math

import pytest
import torch

from kroncli.distill import (
    LOSSES,
    Captured,
    DistillLoss,
    attention_kl,
    attention_mse,
    combine,
    embedding_mse,
    embedding_nmse,
    hidden_mse,
    hidden_nmse,
    layer_map,
    logit_kd,
    logit_mse,
    mlm,
    supervised,
)

S2 = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
T2 = torch.tensor([[1.0, 0.0], [0.0, 4.0]])  # diff [[0, 2], [3, 0]] -> MSE (0 + 4 + 9 + 0) / 4 = 3.25


def _kl(p, q):
    return sum(pi * math.log(pi / qi) for pi, qi in zip(p, q))


def _softmax(z):
    e = [math.exp(x) for x in z]
    return [x / sum(e) for x in e]


# ---------------------------------------------------------------------------------------- zero / positive

def _pairs():
    torch.manual_seed(0)
    emb = torch.randn(2, 3, 4)
    layers = [torch.randn(2, 3, 4) for _ in range(2)]
    atts = [torch.randn(2, 2, 3, 3) for _ in range(2)]
    logits = torch.randn(2, 5)
    reg = torch.randn(2, 1)
    return [
        (embedding_mse, emb),
        (hidden_mse, layers),
        (attention_mse, atts),
        (lambda s, t: logit_kd(s, t, 2.0), logits),
        (logit_mse, reg),
        (embedding_nmse, emb),
        (hidden_nmse, layers),
        (attention_kl, atts),
    ]


@pytest.mark.parametrize("i", range(8))
def test_zero_for_identical_positive_otherwise(i):
    fn, x = _pairs()[i]
    clone = [y.clone() for y in x] if isinstance(x, list) else x.clone()
    assert fn(x, clone).item() == 0.0
    other = [y + 0.1 * torch.randn_like(y) for y in x] if isinstance(x, list) else x + 0.1 * torch.randn_like(x)
    assert fn(other, x).item() > 0.0


# ------------------------------------------------------------------------------------------- hand values

def test_embedding_mse_hand_value_and_mask():
    s, t = S2[None], T2[None]  # (batch 1, seq 2, hidden 2)
    assert embedding_mse(s, t).item() == pytest.approx(3.25)
    # keep token 0 only: diffs (0, 2) -> (0 + 4) / 2
    assert embedding_mse(s, t, torch.tensor([[1, 0]])).item() == pytest.approx(2.0)
    # keep token 1 only: diffs (3, 0) -> 9 / 2
    assert embedding_mse(s, t, torch.tensor([[0, 1]])).item() == pytest.approx(4.5)


def test_hidden_mse_sums_layers():
    s = [S2[None], torch.ones(1, 2, 2)]
    t = [T2[None], torch.zeros(1, 2, 2)]
    assert hidden_mse(s, t).item() == pytest.approx(3.25 + 1.0)
    assert hidden_mse(S2[None], T2[None]).item() == pytest.approx(3.25)  # a single tensor is one layer


def test_relative_losses_count_each_layer_by_its_relative_error():
    # T2's mean square is (1 + 0 + 0 + 16) / 4 = 4.25, so embedding_nmse = 3.25 / 4.25
    assert embedding_nmse(S2[None], T2[None]).item() == pytest.approx(3.25 / 4.25)
    # a layer of tiny magnitude counts as much as a large one: both students are off by half the target
    big, small = 10 * T2[None], 0.01 * T2[None]
    assert hidden_nmse([0.5 * big, 0.5 * small], [big, small]).item() == pytest.approx(0.25 + 0.25)
    assert hidden_mse([0.5 * small], [small]).item() < 1e-4 * hidden_mse([0.5 * big], [big]).item()
    # zeros score exactly 1 per layer; the mask restricts both the error and the teacher's mean square
    assert hidden_nmse([torch.zeros(1, 2, 2)] * 2, [T2[None], big]).item() == pytest.approx(2.0)
    # keep token 1 only: diffs (3, 0), target (0, 4) -> (9 / 2) / (16 / 2)
    assert embedding_nmse(S2[None], T2[None], torch.tensor([[0, 1]])).item() == pytest.approx(9 / 16)


def test_attention_mse_hand_value_and_pair_mask():
    s = S2[None, None]  # (batch 1, heads 1, q 2, k 2)
    t = torch.zeros_like(s)
    assert attention_mse([s], [t]).item() == pytest.approx((1 + 4 + 9 + 16) / 4)
    # token 1 padded: only the (q0, k0) pair counts
    assert attention_mse([s], [t], torch.tensor([[1, 0]])).item() == pytest.approx(1.0)
    # two heads, second head diff 2 everywhere: (1 + 4) / 2 over the one real pair x 2 heads
    s2 = torch.cat([s, torch.full_like(s, 2.0)], dim=1)
    assert attention_mse([s2], [torch.zeros_like(s2)], torch.tensor([[1, 0]])).item() == pytest.approx(2.5)
    # two layers are summed
    assert attention_mse([s, s], [t, t]).item() == pytest.approx(15.0)


def test_attention_kl_hand_value_masks_and_shift_invariance():
    # one head, two queries over two keys: KL(softmax(t) || softmax(s)) per query row, averaged
    s = torch.tensor([[[[0.0, 0.0], [1.0, 2.0]]]])
    t = torch.tensor([[[[0.0, math.log(3.0)], [0.0, 0.0]]]])
    row0 = _kl([0.25, 0.75], [0.5, 0.5])
    row1 = _kl([0.5, 0.5], _softmax([1.0, 2.0]))
    assert attention_kl([s], [t]).item() == pytest.approx((row0 + row1) / 2)
    # scores enter through the softmax only: adding a constant per query row changes nothing, unlike attention_mse
    shifted = s + torch.tensor([5.0, -3.0])[None, None, :, None]
    assert attention_kl([shifted], [t]).item() == pytest.approx((row0 + row1) / 2)
    assert attention_mse([shifted], [t]).item() > attention_mse([s], [t]).item()
    # key 1 padded: each row's softmax over key 0 alone is 1, so the KL is 0 whatever the scores;
    # query 1 is padded too, so only query 0 counts
    assert attention_kl([s], [t], torch.tensor([[1, 0]])).item() == pytest.approx(0.0, abs=1e-7)
    # layers are summed
    assert attention_kl([s, s], [t, t]).item() == pytest.approx(row0 + row1)


def test_attention_kl_matches_a_per_row_loop_and_padding_gets_no_gradient():
    torch.manual_seed(3)
    s = torch.randn(2, 3, 5, 5, requires_grad=True)
    t = torch.randn(2, 3, 5, 5)
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])
    rows = []
    for b in range(2):
        n = int(mask[b].sum())
        for h in range(3):
            for q in range(n):
                pt, ps = torch.softmax(t[b, h, q, :n], -1), torch.softmax(s[b, h, q, :n].detach(), -1)
                rows.append((pt * (pt / ps).log()).sum())
    loss = attention_kl([s], [t], mask)
    assert loss.item() == pytest.approx(torch.stack(rows).mean().item(), rel=1e-5)
    loss.backward()
    assert torch.isfinite(s.grad).all()
    assert s.grad[1, :, 3:].abs().max() == 0 and s.grad[1, :, :, 3:].abs().max() == 0
    assert s.grad[0].abs().max() > 0
    assert DistillLoss({"attention_kl": 1.0}).attention == "scores"


def test_masked_losses_ignore_padded_positions():
    torch.manual_seed(1)
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0]])
    pad = (mask == 0)
    h_s, h_t = torch.randn(2, 4, 8), torch.randn(2, 4, 8)
    a_s, a_t = torch.randn(2, 3, 4, 4), torch.randn(2, 3, 4, 4)
    ref_h = hidden_mse([h_s], [h_t], mask)
    ref_a = attention_mse([a_s], [a_t], mask)
    # garbage at padded positions changes nothing
    h_s2 = h_s.masked_fill(pad[..., None], 1e3)
    a_s2 = a_s.masked_fill(pad[:, None, :, None] | pad[:, None, None, :], -1e3)
    torch.testing.assert_close(hidden_mse([h_s2], [h_t], mask), ref_h)
    torch.testing.assert_close(attention_mse([a_s2], [a_t], mask), ref_a)
    # and equals the mean over the real part, computed by hand for example 1 (2 real tokens)
    one = attention_mse([a_s[1:2, :, :2, :2]], [a_t[1:2, :, :2, :2]])
    assert attention_mse([a_s[1:2]], [a_t[1:2]], mask[1:2]).item() == pytest.approx(one.item(), rel=1e-6)
    # an all-ones mask is the same as no mask
    torch.testing.assert_close(attention_mse([a_s], [a_t], torch.ones(2, 4)), attention_mse([a_s], [a_t]))


def test_logit_kd_hand_value():
    s = torch.tensor([[0.0, 0.0], [1.0, 2.0]])
    t = torch.tensor([[math.log(3.0), 0.0], [1.0, 2.0]])
    # row 0: KL([3/4, 1/4] || [1/2, 1/2]); row 1 identical -> 0; batchmean over 2 rows
    expected = (0.75 * math.log(1.5) + 0.25 * math.log(0.5)) / 2
    assert logit_kd(s, t, 1.0).item() == pytest.approx(expected, rel=1e-6)


def test_logit_kd_temperature_scaling():
    s = torch.tensor([[0.5, -1.0, 2.0]])
    t = torch.tensor([[1.5, 0.0, -0.5]])
    for temp in (1.0, 2.0, 4.0):
        p_t = _softmax([x / temp for x in t[0].tolist()])
        p_s = _softmax([x / temp for x in s[0].tolist()])
        assert logit_kd(s, t, temp).item() == pytest.approx(_kl(p_t, p_s) * temp**2, rel=1e-5)
    # T^2 keeps the gradient scale: as T -> inf, T^2 KL -> sum((d - mean d)^2) / (2C), d = t - s
    d = (t - s)[0]
    limit = ((d - d.mean()) ** 2).sum().item() / (2 * 3)
    assert logit_kd(s.double(), t.double(), 1000.0).item() == pytest.approx(limit, rel=1e-3)
    with pytest.raises(ValueError):
        logit_kd(s, t, 0.0)


def test_logit_kd_row_mask_for_token_logits():
    torch.manual_seed(2)
    s, t = torch.randn(2, 3, 5), torch.randn(2, 3, 5)
    mask = torch.tensor([[1, 1, 0], [1, 0, 0]])
    rows = mask.reshape(-1).bool()
    expected = logit_kd(s.reshape(-1, 5)[rows], t.reshape(-1, 5)[rows], 2.0)
    torch.testing.assert_close(logit_kd(s, t, 2.0, mask), expected)


def test_logit_mse_supervised_mlm_hand_values():
    assert logit_mse(torch.tensor([[1.0], [3.0]]), torch.tensor([[0.0], [1.0]])).item() == pytest.approx(2.5)
    # classification: uniform logits -> ln 2
    assert supervised(torch.zeros(1, 2), torch.tensor([0])).item() == pytest.approx(math.log(2))
    # regression (one output): MSE
    assert supervised(torch.tensor([[1.0], [3.0]]), torch.tensor([0.0, 1.0])).item() == pytest.approx(2.5)
    # mlm: only position 1 counts; softmax([ln3, 0])[1] = 1/4 -> ln 4
    logits = torch.tensor([[[5.0, -5.0], [math.log(3.0), 0.0]]])
    assert mlm(logits, torch.tensor([[-100, 1]])).item() == pytest.approx(math.log(4), rel=1e-6)
    # nothing masked: zero, still differentiable
    x = logits.clone().requires_grad_()
    loss = mlm(x, torch.full((1, 2), -100))
    assert loss.item() == 0.0
    loss.backward()


# -------------------------------------------------------------------------------------------- layer map

def test_layer_map_values():
    assert layer_map(2, 2) == [0, 1]
    assert layer_map(12, 12) == list(range(12))
    assert layer_map(4, 12) == [2, 5, 8, 11]
    assert layer_map(6, 12) == [1, 3, 5, 7, 9, 11]
    assert layer_map(1, 6) == [5]
    assert layer_map(5, 12) == [1, 3, 6, 8, 11]  # not divisible: floored, last maps to last
    with pytest.raises(ValueError):
        layer_map(4, 2)


# ---------------------------------------------------------------------------------------------- combine

def _captured(seed: int, layers: int = 2, logits_classes: int = 3, kind: str | None = "scores") -> Captured:
    g = torch.Generator().manual_seed(seed)
    return Captured(
        embedding=torch.randn(2, 3, 4, generator=g),
        hidden=[torch.randn(2, 3, 4, generator=g) for _ in range(layers)],
        attentions=[torch.randn(2, 2, 3, 3, generator=g) for _ in range(layers)] if kind else [],
        logits=torch.randn(2, logits_classes, generator=g),
        attention_kind=kind,
        attention_mask=torch.tensor([[1, 1, 0], [1, 1, 1]]),
    )


def test_combine_weighted_sum_and_floats():
    s, t = _captured(0), _captured(1)
    batch = {"labels": torch.tensor([0, 2]), "attention_mask": s.attention_mask}
    weights = {"embedding_mse": 1.0, "attention_mse": 0.5, "hidden_mse": 2.0, "logit_kd": 1.0, "supervised": 0.1}
    total, terms = combine(weights, s, t, batch, temperature=2.0)
    m = batch["attention_mask"]
    expected = {
        "embedding_mse": embedding_mse(s.embedding, t.embedding, m),
        "attention_mse": attention_mse(s.attentions, t.attentions, m),
        "hidden_mse": hidden_mse(s.hidden, t.hidden, m),
        "logit_kd": logit_kd(s.logits, t.logits, 2.0),
        "supervised": supervised(s.logits, batch["labels"]),
    }
    for name, value in expected.items():
        assert isinstance(terms[name], float)
        assert terms[name] == pytest.approx(value.item(), rel=1e-6)
    assert total.item() == pytest.approx(sum(weights[k] * v.item() for k, v in expected.items()), rel=1e-6)
    assert terms["total"] == pytest.approx(total.item())
    # identical student/teacher: every distillation term is exactly zero
    total0, terms0 = combine({k: 1.0 for k in ("embedding_mse", "attention_mse", "hidden_mse", "logit_kd")},
                             s, _captured(0))
    assert total0.item() == 0.0 and all(v == 0.0 for v in terms0.values())


def test_zero_weight_terms_are_not_computed():
    s, t = _captured(0, kind=None), _captured(1, kind=None)  # no attentions captured
    loss = DistillLoss({"attention_mse": 0.0, "hidden_mse": 1.0})
    assert loss.attention is None
    total, terms = loss(s, t)
    assert set(terms) == {"hidden_mse", "total"}
    with pytest.raises(ValueError, match="attention"):
        DistillLoss({"attention_mse": 1.0})(s, t)


def test_unknown_name_lists_known_and_other_validation():
    with pytest.raises(ValueError) as e:
        DistillLoss({"hidden_mse": 1.0, "bogus": 1.0})
    for name in LOSSES:
        assert name in str(e.value)
    with pytest.raises(ValueError):
        DistillLoss({"hidden_mse": 0.0})
    with pytest.raises(ValueError):
        DistillLoss({"hidden_mse": float("nan")})


def test_layer_map_applied_for_shallower_student():
    s, t = _captured(0, layers=2), _captured(1, layers=4)
    m = s.attention_mask
    _, terms = combine({"hidden_mse": 1.0, "attention_mse": 1.0}, s, t)
    assert terms["hidden_mse"] == pytest.approx(hidden_mse(s.hidden, [t.hidden[1], t.hidden[3]], m).item())
    assert terms["attention_mse"] == pytest.approx(
        attention_mse(s.attentions, [t.attentions[1], t.attentions[3]], m).item())
    _, terms = combine({"hidden_mse": 1.0}, s, t, layer_map=[0, 2])
    assert terms["hidden_mse"] == pytest.approx(hidden_mse(s.hidden, [t.hidden[0], t.hidden[2]], m).item())
    with pytest.raises(ValueError):
        combine({"hidden_mse": 1.0}, s, t, layer_map=[0, 9])


def test_teacher_free_terms_and_needs_teacher():
    s = _captured(0)
    loss = DistillLoss({"supervised": 1.0})
    assert not loss.needs_teacher
    total, _ = loss(s, None, {"labels": torch.tensor([1, 0])})
    assert total.item() > 0
    assert DistillLoss({"logit_kd": 1.0}).needs_teacher
    with pytest.raises(ValueError):
        DistillLoss({"logit_kd": 1.0})(s, None)


def test_inference_mode_teacher_tensors_backprop():
    s = _captured(0)
    for x in [s.embedding, *s.hidden, *s.attentions, s.logits]:
        x.requires_grad_()
    with torch.inference_mode():
        t = _captured(1)
        t = Captured(embedding=t.embedding * 1, hidden=[h * 1 for h in t.hidden],
                     attentions=[a * 1 for a in t.attentions], logits=t.logits * 1, attention_kind="scores")
    assert t.embedding.is_inference()
    total, _ = combine({"embedding_mse": 1, "attention_mse": 1, "hidden_mse": 1, "logit_kd": 1, "logit_mse": 1},
                       s, t)
    total.backward()
    assert s.embedding.grad is not None and s.attentions[0].grad is not None and s.logits.grad is not None
