"""Stage-2 rehearsal: stage-1 text rides along with task batches and keeps the student near the teacher on it."""

import json
import shutil

import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from kroncli.cli import app
from kroncli.data.corpus import load_corpus
from kroncli.data.rehearsal import REHEARSAL_KEY, Rehearsal, RehearsalCollate
from kroncli.stages.distill import PackedCollate

from conftest import glue_dir, one_line_error, require_glue, tiny_config

runner = CliRunner()
SEP = 102
WORDS = "the a cat dog sat ran on under mat tree big small red blue house river sings reads writes".split()


def test_each_example_brings_k_blocks_fixed_by_index_and_seed():
    corpus = torch.arange(10).repeat_interleave(4).view(10, 4)  # row r is [r, r, r, r]
    task = [{"input_ids": [101, i, 102]} for i in range(7)]
    data = Rehearsal(task, corpus, k=3, seed=0)
    assert len(data) == 7
    example, rows = data[2]
    assert example == task[2] and len(rows) == 3
    first = [r[0].item() for i in range(len(data)) for r in data[i][1]]
    assert sorted(first[:10]) == list(range(10)) and first[:10] != list(range(10))  # a permutation, shuffled
    assert first[10:20] == first[:10]  # the permutation wraps: every row once before any repeats
    again = Rehearsal(task, corpus, k=3, seed=0)
    assert [r[0].item() for r in again[2][1]] == [r[0].item() for r in rows]
    other = Rehearsal(task, corpus, k=3, seed=1)
    assert [r[0].item() for i in range(4) for r in other[i][1]] != first[:12]
    with pytest.raises(ValueError, match=">= 1"):
        Rehearsal(task, corpus, k=0)
    with pytest.raises(ValueError, match="empty"):
        Rehearsal(task, corpus[:0], k=1)


def test_collate_keeps_the_task_batch_and_adds_packed_blocks():
    corpus = torch.tensor([[101, 5, SEP, 6, SEP], [101, 7, 8, SEP, SEP]])
    task = [{"input_ids": [101, 9, SEP], "labels": 1}, {"input_ids": [101, 9, 9, SEP], "labels": 0}]

    def task_collate(rows):
        width = max(len(r["input_ids"]) for r in rows)
        return {"input_ids": torch.tensor([r["input_ids"] + [0] * (width - len(r["input_ids"])) for r in rows]),
                "labels": torch.tensor([r["labels"] for r in rows])}

    collate = RehearsalCollate(task_collate, PackedCollate(SEP))
    batch = collate([Rehearsal(task, corpus, k=2)[i] for i in range(2)])
    assert batch["input_ids"].shape == (2, 4) and batch["labels"].tolist() == [1, 0]
    general = batch[REHEARSAL_KEY]
    assert general["input_ids"].shape == (4, 5)
    assert general["attention_mask"].all()
    assert general["token_type_ids"][general["input_ids"][:, 1] == 5].tolist() == [[0, 0, 0, 1, 1]] * 2


# ------------------------------------------------------------------------------------ stage 2 with rehearsal

@pytest.fixture(scope="module")
def general_ws(tmp_path_factory, minilm_path):
    """Factorized tiny BERT (MiniLM's vocabulary), stage 1 on a small corpus, an MRPC teacher: ready for stage 2."""
    require_glue("MRPC/train.tsv")
    from transformers import AutoTokenizer, BertModel

    root = tmp_path_factory.mktemp("rehearse")
    torch.manual_seed(0)
    teacher = root / "teacher"
    BertModel(tiny_config(vocab_size=30522, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
              ).save_pretrained(teacher)
    AutoTokenizer.from_pretrained(minilm_path).save_pretrained(teacher)
    g = torch.Generator().manual_seed(0)
    corpus = root / "text.txt"
    corpus.write_text("\n".join(" ".join(WORDS[i] for i in torch.randint(0, len(WORDS), (12,), generator=g))
                                for _ in range(200)) + "\n")
    ws = root / "ws"
    for args in (["factorize", str(teacher), "--ratio", "5", "-w", str(ws)],
                 ["distill", "-w", str(ws), "--corpus", str(corpus), "--max-steps", "4", "--batch-size", "8",
                  "--max-seq-len", "32"],
                 ["finetune", "-w", str(ws), "--task", "mrpc", "--data-dir", str(glue_dir()), "--teacher-only",
                  "--max-steps", "2", "--limit", "16", "--batch-size", "8", "--max-seq-len", "32"]):
        res = runner.invoke(app, args)
        assert res.exit_code == 0, res.output
    return ws


def student(ws, *extra):
    return runner.invoke(app, ["finetune", "-w", str(ws), "--task", "mrpc", "--data-dir", str(glue_dir()),
                               "--max-steps", "25", "--limit", "32", "--batch-size", "8", "--max-seq-len", "32",
                               "--lr", "1e-2", "--log-every", "1", "--json", *extra])


def drift(ws) -> float:
    """Hidden-state MSE of the task student against the task teacher on the stage-1 blocks."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    import kroncli
    from kroncli.distill.capture import Capture
    from kroncli.distill.losses import DistillLoss

    task = ws / "tasks" / "mrpc"
    tok = AutoTokenizer.from_pretrained(task / "student")
    record = json.loads((ws / "manifest.json").read_text())["stages"]["distill"]
    ids = load_corpus(record["corpus"], tok, record["max_seq_len"], ws / "cache", record["pairs"])
    batch = PackedCollate(tok.sep_token_id)(list(ids))
    s = kroncli.load_student(task / "student").eval()
    t = AutoModelForSequenceClassification.from_pretrained(task / "teacher").eval()
    with torch.no_grad():
        total, _ = DistillLoss({"hidden_mse": 1.0})(Capture(s, attention=None)(**batch),
                                                    Capture(t, attention=None)(**batch), batch)
    return float(total)


def test_rehearsal_keeps_the_student_closer_to_the_teacher_on_general_text(general_ws, tmp_path):
    plain, rehearsed = tmp_path / "plain", tmp_path / "rehearsed"
    shutil.copytree(general_ws, plain)
    shutil.copytree(general_ws, rehearsed)
    assert student(plain).exit_code == 0
    res = student(rehearsed, "--rehearse", "2", "--rehearse-weight", "5")
    assert res.exit_code == 0, res.output
    info = json.loads((rehearsed / "manifest.json").read_text())["stages"]["finetune-mrpc"]
    assert info["rehearse"] == 2
    df = pd.read_csv(rehearsed / "metrics" / "finetune-mrpc.csv")
    terms = df.rehearsal.dropna()
    assert (terms > 0).all() and len(terms) == 25 and terms.iloc[-1] < terms.iloc[0]
    assert "rehearsal" not in pd.read_csv(plain / "metrics" / "finetune-mrpc.csv")
    assert drift(rehearsed) < 0.8 * drift(plain)


def test_rehearsal_without_a_corpus_or_with_bad_settings(general_ws, tmp_path):
    ws = tmp_path / "ws"
    shutil.copytree(general_ws, ws)
    manifest = json.loads((ws / "manifest.json").read_text())
    del manifest["stages"]["distill"]
    (ws / "manifest.json").write_text(json.dumps(manifest))
    one_line_error(student(ws, "--rehearse", "1"), "--rehearse-corpus")
    one_line_error(student(ws, "--rehearse", "-1"), "--rehearse")
    one_line_error(student(ws, "--rehearse", "1", "--rehearse-weight", "0"), "--rehearse-weight")
    one_line_error(student(ws, "--rehearse", "1", "--weight", "embedding_mse=0", "--weight", "attention_mse=0",
                           "--weight", "hidden_mse=0"), "intermediate")
    one_line_error(student(ws, "--rehearse", "1", "--teacher-only"), "--teacher-only")
    assert not (ws / "tasks" / "mrpc" / "student").exists()


def test_rehearsal_under_torchrun_matches_one_process(general_ws, tmp_path):
    """Two student forwards per step (task batch, then general text) before one backward: DDP must still
    average the right gradients. 2 gloo processes x batch 4 == 1 process x batch 8, step by step."""
    import os
    import subprocess
    import sys

    one, two = tmp_path / "one", tmp_path / "two"
    shutil.copytree(general_ws, one)
    shutil.copytree(general_ws, two)
    common = ["--task", "mrpc", "--data-dir", str(glue_dir()), "--max-steps", "4", "--limit", "32",
              "--max-seq-len", "32", "--lr", "1e-3", "--log-every", "1", "--rehearse", "1"]
    res = runner.invoke(app, ["finetune", "-w", str(one), "--batch-size", "8", *common])
    assert res.exit_code == 0, res.output
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                           "--master_port", "29537", "-m", "kroncli", "finetune", "-w", str(two),
                           "--batch-size", "4", *common], capture_output=True, text=True,
                          env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    a, b = (pd.read_csv(w / "metrics" / "finetune-mrpc.csv").dropna(subset=["total"]) for w in (one, two))
    assert len(a) == len(b) == 4
    for x, y in zip(a.total, b.total):
        assert y == pytest.approx(x, rel=1e-3)
