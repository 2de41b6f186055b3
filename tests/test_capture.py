"""One-pass capture of embeddings, attention scores, hidden states and logits from tiny BERT-family models."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn
from transformers import (
    BertConfig,
    BertForSequenceClassification,
    BertModel,
    DistilBertConfig,
    DistilBertForSequenceClassification,
)

from kroncli.distill import Capture, DistillLoss
from kroncli.errors import KronError
from kroncli.kron.layers import KroneckerLinear


def bert_config(**kw) -> BertConfig:
    base = dict(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
                max_position_embeddings=64, num_labels=3)
    base.update(kw)
    return BertConfig(**base)


@pytest.fixture(scope="module")
def bert() -> BertForSequenceClassification:
    torch.manual_seed(0)
    return BertForSequenceClassification(bert_config()).eval()


@pytest.fixture(scope="module")
def batch() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(5, 100, (3, 7), generator=g)
    mask = torch.ones_like(ids)
    mask[1, 5:] = 0
    mask[2, 3:] = 0
    ids = ids.masked_fill(mask == 0, 0)
    return {"input_ids": ids, "attention_mask": mask}


def manual_scores(self_attn: nn.Module, h: torch.Tensor, q_name="query", k_name="key") -> torch.Tensor:
    b, n, _ = h.shape
    heads = self_attn.config.num_attention_heads if hasattr(self_attn.config, "num_attention_heads") \
        else self_attn.n_heads
    q = getattr(self_attn, q_name)(h).view(b, n, heads, -1).transpose(1, 2)
    k = getattr(self_attn, k_name)(h).view(b, n, heads, -1).transpose(1, 2)
    return q @ k.transpose(-1, -2) / (q.shape[-1] ** 0.5)


def test_shapes_and_manual_scores(bert, batch):
    with torch.no_grad():
        cap = Capture(bert, attention="scores")(**batch)
    assert cap.embedding.shape == (3, 7, 32)
    assert len(cap.hidden) == 2 and all(h.shape == (3, 7, 32) for h in cap.hidden)
    assert len(cap.attentions) == 2 and all(a.shape == (3, 4, 7, 7) for a in cap.attentions)
    assert cap.logits.shape == (3, 3) and cap.attention_kind == "scores"
    with torch.no_grad():
        torch.testing.assert_close(cap.embedding, bert.bert.embeddings(input_ids=batch["input_ids"]))
        inputs = [cap.embedding, *cap.hidden[:-1]]
        for i, layer in enumerate(bert.bert.encoder.layer):
            expected = manual_scores(layer.attention.self, inputs[i])
            # raw scores: no mask added, so padded key columns hold ordinary finite values
            torch.testing.assert_close(cap.attentions[i], expected, rtol=1e-5, atol=1e-6)
    assert torch.isfinite(torch.stack(cap.attentions)).all()


def test_outputs_identical_to_default_sdpa(bert, batch):
    assert bert.config._attn_implementation == "sdpa"
    with torch.no_grad():
        ref = bert(**batch, output_hidden_states=True)
        cap = Capture(bert, attention="scores")(**batch)
    assert bert.config._attn_implementation == "sdpa"  # restored after the call
    torch.testing.assert_close(cap.logits, ref.logits, rtol=0, atol=1e-6)
    for got, want in zip([cap.embedding, *cap.hidden], ref.hidden_states):
        torch.testing.assert_close(got, want, rtol=0, atol=1e-6)
    assert len(ref.hidden_states) == 3


def test_probs_match_eager_output_attentions(bert, batch):
    eager = copy.deepcopy(bert)
    eager.set_attn_implementation("eager")
    with torch.no_grad():
        ref = eager(**batch, output_attentions=True)
        cap = Capture(bert, attention="probs")(**batch)
        scores = Capture(bert, attention="scores")(**batch).attentions
    assert cap.attention_kind == "probs"
    pad = (batch["attention_mask"] == 0)[:, None, None, :]
    for got, want, s in zip(cap.attentions, ref.attentions, scores):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(got, s.masked_fill(pad, float("-inf")).softmax(-1), rtol=1e-5, atol=1e-6)
        assert got.masked_select(pad.expand_as(got)).abs().max() < 1e-6  # padded keys get no weight


def test_padding_matches_unpadded_run(bert, batch):
    c = Capture(bert)
    with torch.no_grad():
        padded = c(**batch)
        for row in (1, 2):
            n = int(batch["attention_mask"][row].sum())
            alone = c(input_ids=batch["input_ids"][row:row + 1, :n])
            torch.testing.assert_close(padded.logits[row:row + 1], alone.logits, rtol=1e-5, atol=1e-5)
            for a, b in zip(padded.attentions, alone.attentions):
                torch.testing.assert_close(a[row:row + 1, :, :n, :n], b, rtol=1e-5, atol=1e-5)
            for a, b in zip(padded.hidden, alone.hidden):
                torch.testing.assert_close(a[row:row + 1, :n], b, rtol=1e-5, atol=1e-5)


def test_one_forward_pass(bert, batch):
    calls = {"model": 0, "embeddings": 0, "layers": 0, "attn": 0}
    hooks = [
        bert.register_forward_pre_hook(lambda *a: calls.__setitem__("model", calls["model"] + 1)),
        bert.bert.embeddings.register_forward_hook(lambda *a: calls.__setitem__("embeddings", calls["embeddings"] + 1)),
    ]
    for layer in bert.bert.encoder.layer:
        hooks.append(layer.register_forward_hook(lambda *a: calls.__setitem__("layers", calls["layers"] + 1)))
        hooks.append(layer.attention.self.register_forward_hook(
            lambda *a: calls.__setitem__("attn", calls["attn"] + 1)))
    try:
        with torch.no_grad():
            Capture(bert, attention="scores")(**batch)
    finally:
        for h in hooks:
            h.remove()
    assert calls == {"model": 1, "embeddings": 1, "layers": 2, "attn": 2}


def test_teacher_inference_mode_student_training_gradients(bert, batch):
    teacher = bert
    student = copy.deepcopy(bert).train()
    for layer in student.bert.encoder.layer:  # a Kronecker student: factor query and key
        sa = layer.attention.self
        sa.query = KroneckerLinear.from_linear(sa.query, (4, 4), 2)
        sa.key = KroneckerLinear.from_linear(sa.key, (8, 2), 1)
    loss = DistillLoss({"embedding_mse": 1, "attention_mse": 1, "hidden_mse": 1, "logit_kd": 1, "supervised": 1})
    with torch.inference_mode():
        t = Capture(teacher, attention=loss.attention)(**batch)
    assert t.attentions[0].is_inference()
    s = Capture(student, attention=loss.attention)(**batch)
    assert all(a.requires_grad for a in s.attentions)
    total, terms = loss(s, t, {**batch, "labels": torch.tensor([0, 1, 2])})
    assert terms["attention_mse"] > 0
    total.backward()
    for layer in student.bert.encoder.layer:
        assert layer.attention.self.query.a.grad.abs().sum() > 0
        assert layer.attention.self.key.b.grad.abs().sum() > 0
    # the attention term alone reaches the key factors of the first layer
    student.zero_grad()
    s = Capture(student)(**batch)
    s.attentions[0].sum().backward()
    assert student.bert.encoder.layer[0].attention.self.key.a.grad.abs().sum() > 0
    assert student.config._attn_implementation == "sdpa"


def test_identical_student_gives_zero_loss(bert, batch):
    with torch.no_grad():
        a = Capture(bert)(**batch)
        b = Capture(copy.deepcopy(bert))(**batch)
    total, terms = DistillLoss({"embedding_mse": 1, "attention_mse": 1, "hidden_mse": 1, "logit_kd": 1})(a, b)
    assert total.item() == 0.0


def test_no_attention_capture_and_base_model(batch):
    torch.manual_seed(0)
    base = BertModel(bert_config()).eval()
    with torch.no_grad():
        cap = Capture(base, attention=None)(**batch)
        ref = base(**batch)
        scored = Capture(base)(**batch)
    assert cap.attentions == [] and cap.attention_kind is None and cap.logits is None
    torch.testing.assert_close(cap.hidden[-1], ref.last_hidden_state)
    assert len(scored.attentions) == 2 and scored.logits is None


def test_distilbert(batch):
    torch.manual_seed(0)
    cfg = DistilBertConfig(vocab_size=100, dim=32, n_layers=2, n_heads=4, hidden_dim=64, max_position_embeddings=64,
                           num_labels=2)
    model = DistilBertForSequenceClassification(cfg).eval()
    with torch.no_grad():
        ref = model(**batch)
        cap = Capture(model)(**batch)
        torch.testing.assert_close(cap.logits, ref.logits, rtol=0, atol=1e-6)
        inputs = [cap.embedding, *cap.hidden[:-1]]
        for i, block in enumerate(model.distilbert.transformer.layer):
            torch.testing.assert_close(cap.attentions[i], manual_scores(block.attention, inputs[i], "q_lin", "k_lin"),
                                       rtol=1e-5, atol=1e-6)
    assert model.config._attn_implementation == "sdpa"


def test_unsupported_model_and_bad_kind(bert):
    with pytest.raises(KronError, match="attention=None"):
        Capture(nn.Linear(2, 2))
    with pytest.raises(ValueError):
        Capture(bert, attention="weights")


def test_gradient_checkpointing_same_gradients(batch):
    torch.manual_seed(0)
    cfg = bert_config(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    teacher = BertForSequenceClassification(cfg).eval()
    loss = DistillLoss({"attention_mse": 1, "hidden_mse": 1, "logit_kd": 1})
    with torch.inference_mode():
        t = Capture(teacher)(**batch)
    torch.manual_seed(1)
    plain = BertForSequenceClassification(cfg).train()
    ckpt = copy.deepcopy(plain)
    ckpt.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    loss(Capture(plain)(**batch), t)[0].backward()
    with Capture(ckpt) as cap:
        loss(cap(**batch), t)[0].backward()  # layers recompute during backward, with the same attention
    assert ckpt.config._attn_implementation == "sdpa"  # restored on exit
    for (name, a), b in zip(plain.named_parameters(), ckpt.parameters()):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-5, atol=1e-7, msg=name)
