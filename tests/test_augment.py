"""Stage-2 augmentation: teacher-neighbour word swaps, unlabelled copies, and a supervised loss that skips them."""

import math
import random

import pandas as pd
import pytest
import torch

from kroncli.data.augment import Augmenter
from kroncli.data.encode import encode
from kroncli.data.glue import normalize_task
from kroncli.distill.losses import supervised


class Tok:
    """The slice of a tokenizer the augmenter uses."""

    def __init__(self, vocab):
        self.vocab = vocab
        self.inv = {i: t for t, i in vocab.items()}
        self.all_special_ids = [vocab["[CLS]"]]
        self.mask_token = "[MASK]"

    def get_vocab(self):
        return dict(self.vocab)

    def convert_ids_to_tokens(self, i):
        return self.inv[i]


VOCAB = {"[CLS]": 0, "cat": 1, "dog": 2, "car": 3, "##s": 4, "a": 5, "sat": 6, "truck": 7, "12": 8}


def augmenter(k=1, p=1.0, seed=0, **rules):
    emb = torch.zeros(len(VOCAB), 3)
    emb[VOCAB["cat"]] = torch.tensor([1.0, 0.1, 0.0])
    emb[VOCAB["dog"]] = torch.tensor([1.0, 0.2, 0.0])  # cat's nearest
    emb[VOCAB["car"]] = torch.tensor([0.0, 1.0, 0.1])
    emb[VOCAB["truck"]] = torch.tensor([0.0, 1.0, 0.2])  # car's nearest
    emb[VOCAB["sat"]] = torch.tensor([0.0, 0.0, 1.0])
    emb[VOCAB["##s"]] = torch.tensor([1.0, 0.15, 0.0])  # nearer to cat than dog is, but a word piece
    emb[VOCAB["[CLS]"]] = torch.tensor([1.0, 0.1, 0.0])  # identical to cat, but special
    emb[VOCAB["a"]] = torch.tensor([1.0, 0.1, 0.01])  # one letter: never a candidate
    return Augmenter(emb, Tok(VOCAB), k=k, p=p, seed=seed, **rules)


def test_neighbours_are_nearest_whole_words_by_cosine():
    a = augmenter(k=2)
    assert a.neighbours(VOCAB["cat"]) == [VOCAB["dog"], VOCAB["car"]]
    assert a.neighbours(VOCAB["car"])[0] == VOCAB["truck"]
    assert VOCAB["cat"] not in a.neighbours(VOCAB["cat"])


def test_variant_swaps_words_and_keeps_punctuation_case_and_other_tokens():
    a = augmenter(k=1, p=1.0)
    assert a.variant("The Cat sat, (car) 12!", random.Random(0)) == "The Dog truck, (truck) 12!"  # sat -> truck: its nearest
    assert augmenter(p=1e-9).variant("cat car", random.Random(0)) == "cat car"


def test_expand_adds_unlabelled_copies_deterministically():
    task = normalize_task("mrpc")
    frame = pd.DataFrame({"text_a": ["cat sat", "car"], "text_b": ["dog", "truck sat"], "label": [1, 0],
                          "idx": [0, 1]})
    out = augmenter(k=2, p=0.5, seed=3).expand(frame, task.is_regression, copies=3)
    assert len(out) == 8 and out.iloc[:2].equals(frame)
    assert (out.label.iloc[2:] == -100).all() and list(out.idx) == [0, 1] * 4
    again = augmenter(k=2, p=0.5, seed=3).expand(frame, task.is_regression, copies=3)
    assert out.equals(again)
    assert augmenter().expand(frame, False, 0) is frame
    with pytest.raises(ValueError):
        augmenter().expand(frame, False, -1)
    stsb = augmenter().expand(frame.assign(label=[4.5, 1.0]), True, 1)
    assert stsb.label.iloc[2:].isna().all()


def test_masking_replaces_whole_words_and_keeps_punctuation():
    a = augmenter(p=0.0, p_mask=1.0)
    assert a.variant("The cat, (sat) 12!", random.Random(0)) == "[MASK] [MASK], ([MASK]) [MASK]!"
    half = augmenter(p=0.0, p_mask=0.5)
    words = " ".join(["cat"] * 2000)
    masked = half.variant(words, random.Random(1)).split().count("[MASK]")
    assert 900 < masked < 1100  # each word independently, at the given rate
    mixed = augmenter(k=1, p=0.5, p_mask=0.5).variant(words, random.Random(2)).split()
    assert set(mixed) == {"[MASK]", "dog"}  # the two rules share each word's draw: no word kept


def test_ngram_sampling_keeps_one_contiguous_shorter_span():
    a = augmenter(p=0.0, p_ngram=1.0, max_ngram=3)
    text = "one two three four five six seven"
    rng = random.Random(0)
    lengths = set()
    for _ in range(200):
        cut = a.variant(text, rng)
        assert cut in text and 1 <= len(cut.split()) <= 3
        lengths.add(len(cut.split()))
    assert lengths == {1, 2, 3}
    assert a.variant("single", rng) == "single"  # nothing shorter to keep
    never = augmenter(p=1e-9, p_ngram=1e-9).variant(text, random.Random(0))
    assert never == text


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="all 0"):
        augmenter(p=0.0)
    with pytest.raises(ValueError, match="swap probability"):
        augmenter(p=1.5)
    with pytest.raises(ValueError, match="sum to more than 1"):
        augmenter(p=0.6, p_mask=0.5)
    with pytest.raises(ValueError, match="n-gram"):
        augmenter(p_ngram=-0.1)
    with pytest.raises(ValueError, match="longest"):
        augmenter(p_ngram=0.5, max_ngram=0)
    with pytest.raises(ValueError, match="neighbours"):
        augmenter(k=0)


def test_supervised_skips_rows_without_a_gold_label():
    logits = torch.tensor([[2.0, -1.0], [0.5, 0.3], [-1.0, 1.0]], requires_grad=True)
    labels = torch.tensor([0, -100, 1])
    expected = torch.nn.functional.cross_entropy(logits[[0, 2]], labels[[0, 2]])
    assert torch.allclose(supervised(logits, labels), expected)
    none = supervised(logits, torch.tensor([-100, -100, -100]))
    assert none.detach().item() == 0.0 and none.requires_grad
    reg = torch.tensor([[1.0], [2.0], [3.0]], requires_grad=True)
    target = torch.tensor([1.5, float("nan"), 2.0])
    assert math.isclose(supervised(reg, target).item(), (0.25 + 1.0) / 2)
    assert supervised(reg, torch.full((3,), float("nan"))).item() == 0.0


class PairTok:
    def __call__(self, a, b=None, truncation=True, max_length=8):
        return {"input_ids": [[1, 2]] * len(a), "attention_mask": [[1, 1]] * len(a)}


def test_encode_keeps_labels_when_only_some_rows_have_one():
    stsb, mrpc = normalize_task("stsb"), normalize_task("mrpc")
    frame = pd.DataFrame({"text_a": ["x", "y"], "text_b": ["z", "w"], "label": [3.0, float("nan")], "idx": [0, 1]})
    labels = encode(stsb, frame, PairTok(), 8).labels
    assert labels[0] == 3.0 and math.isnan(labels[1])
    assert encode(mrpc, frame.assign(label=[1, -100]), PairTok(), 8).labels == [1, -100]
    assert encode(mrpc, frame.assign(label=[None, None]), PairTok(), 8).labels is None  # a test split
