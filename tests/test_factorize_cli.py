"""kron factorize end to end through the CLI: JSON output, workspace, reload, and every bad input."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

import kroncli
from kroncli.cli import app
from kroncli.kron.layers import KroneckerEmbedding, KroneckerLinear

runner = CliRunner()


def run(*args):
    return runner.invoke(app, [str(a) for a in args])


def test_factorize_json_workspace_and_reload(tiny_bert_dir, tmp_path):
    ws = tmp_path / "ws"
    res = run("factorize", tiny_bert_dir, "--ratio", 3, "--workspace", ws, "--json")
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert out["compression"] >= 3
    assert out["student_params"] * 3 <= out["teacher_params"]
    assert out["workspace"] == str(ws)
    assert 0 < out["rel_error_mean"] < 1.5
    csv = pd.read_csv(ws / "metrics" / "factorize.csv")
    assert list(csv.columns[:12]) == ["name", "layer_type", "kind", "m", "n", "m1", "n1", "m2", "n2", "rank",
                                      "params", "dense_params"]
    assert len(csv) == 1 + 2 * 6  # word embedding + 6 matrices per layer
    assert (csv.m == csv.m1 * csv.m2).all() and (csv.n == csv.n1 * csv.n2).all()
    manifest = json.loads((ws / "manifest.json").read_text())
    assert manifest["stages"]["factorize"]["done"] is True
    assert manifest["teacher"]["kind"] == "local"
    assert "torch" in manifest["versions"]

    student = kroncli.load_student(ws)
    assert isinstance(student.bert.embeddings.word_embeddings, KroneckerEmbedding) or \
        csv[csv.kind == "embedding"]["rank"].item() == 0
    assert any(isinstance(m, KroneckerLinear) for m in student.modules())
    assert sum(p.numel() for p in student.parameters()) == out["student_params"]
    ids = torch.randint(0, 120, (2, 9))
    again = kroncli.load_student(ws / "student")
    assert torch.equal(student(input_ids=ids).logits, again(input_ids=ids).logits)


def test_reload_is_bit_identical_to_the_model_that_was_saved(tiny_bert_dir, tmp_path):
    from kroncli.factorize import FactorizeOptions, factorize, write_workspace
    from kroncli.workspace import Workspace

    result, model, tok = factorize(FactorizeOptions(model=str(tiny_bert_dir), ratio=4, max_rank=2))
    ws = Workspace(tmp_path / "w")
    ws.prepare_new(False)
    write_workspace(ws, result, model, tok, {}, ["test"], False)
    ids = torch.randint(0, 120, (3, 11))
    mask = torch.ones_like(ids)
    mask[0, 7:] = 0
    with torch.no_grad():
        before = model(input_ids=ids, attention_mask=mask).logits
        after = kroncli.load_student(ws.root)(input_ids=ids, attention_mask=mask).logits
    assert torch.equal(before, after)


def test_plan_writes_nothing_and_presets_print(tiny_bert_dir, tmp_path):
    ws = tmp_path / "never"
    res = run("factorize", tiny_bert_dir, "--ratio", 4, "--plan", "--workspace", ws, "--json")
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout.strip().splitlines()[-1])["plan"] is True
    assert not ws.exists()


def test_existing_workspace_needs_force(tiny_bert_dir, tmp_path):
    ws = tmp_path / "ws"
    assert run("factorize", tiny_bert_dir, "--ratio", 2, "-w", ws).exit_code == 0
    before = (ws / "student" / "model.safetensors").read_bytes()
    res = run("factorize", tiny_bert_dir, "--ratio", 3, "-w", ws)
    assert res.exit_code != 0 and "--force" in res.output
    assert (ws / "student" / "model.safetensors").read_bytes() == before  # nothing lost
    res = run("factorize", tiny_bert_dir, "--ratio", 3, "-w", ws, "--force", "--json")
    assert res.exit_code == 0
    assert json.loads(res.stdout.strip().splitlines()[-1])["compression"] >= 3


@pytest.mark.parametrize("args,needle", [
    (["--ratio", "0.5"], "below 1"),
    (["--ratio", "1000"], "largest ratio possible"),
    (["--max-params", "10"], "largest ratio possible"),
    (["--preset", "nope"], "unknown --preset"),
    (["--ratio", "3", "--preset", "kroneckerbert8"], "choose one of"),
    (["--objective", "fast"], "unknown --objective"),
    (["--targets", "(("], "not a valid regular expression"),
    (["--targets", "nothing.*"], "Linear/Embedding modules found"),
    (["--random-init", "gpt9"], "unknown --random-init"),
    (["--min-side", "0"], "--min-side"),
    (["--min-embedding-dim", "0"], "--min-embedding-dim"),
    (["--embedding-rank", "-1"], "--embedding-rank"),
    (["--embedding-rank", "4", "--preset", "kroneckerbert8"], "--embedding-rank"),
])
def test_bad_inputs_give_one_line_errors(tiny_bert_dir, tmp_path, args, needle):
    res = run("factorize", tiny_bert_dir, "-w", tmp_path / "ws", *args)
    assert res.exit_code == 2, res.output
    assert needle in res.output
    assert "Traceback" not in res.output
    assert len([ln for ln in res.output.splitlines() if ln.strip()]) <= 2  # one message (may wrap once)
    assert not (tmp_path / "ws").exists()  # the failed command leaves no empty workspace behind


def test_missing_model_and_offline_hub_name(tmp_path):
    res = run("factorize", tmp_path / "no-such-dir" / "x", "-w", tmp_path / "ws")
    assert res.exit_code == 2 and "model folder" in res.output and "does not exist" in res.output, res.output
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}
    proc = subprocess.run([sys.executable, "-m", "kroncli", "factorize", "bert-base-uncased", "-w",
                           str(tmp_path / "ws2")], capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 2
    assert "offline" in proc.stderr and "local folder" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "ws2").exists()


def test_folder_without_config_is_rejected(tmp_path):
    (tmp_path / "empty").mkdir()
    res = run("factorize", tmp_path / "empty", "-w", tmp_path / "ws")
    assert res.exit_code == 2 and "config.json" in res.output


def test_load_student_on_a_folder_without_student(tmp_path):
    from kroncli.errors import KronError

    with pytest.raises(KronError, match="kron factorize"):
        kroncli.load_student(tmp_path)


def test_exclude_keeps_layers_dense(tiny_bert_dir, tmp_path):
    ws = tmp_path / "ws"
    res = run("factorize", tiny_bert_dir, "--ratio", 1.3, "-w", ws, "--exclude", r".*word_embeddings|.*layer\.1\..*")
    assert res.exit_code == 0, res.output
    csv = pd.read_csv(ws / "metrics" / "factorize.csv")
    assert set(csv.name) == {n for n in csv.name if ".layer.0." in n}
    assert not any(isinstance(m, KroneckerEmbedding) for m in kroncli.load_student(ws).modules())


def test_shape_rules_and_extra_targets(tiny_bert_dir, tmp_path):
    """--min-side/--min-embedding-dim hold for every chosen shape; --targets can add the position table and
    the pooler, which then reload as Kronecker modules."""
    ws = tmp_path / "ws"
    targets = r".*embeddings\.(word|position)_embeddings|.*attention\.self\.(query|key|value)|" \
              r".*attention\.output\.dense|.*intermediate\.dense|.*layer\.\d+\.output\.dense|.*pooler\.dense"
    res = run("factorize", tiny_bert_dir, "--ratio", 3, "-w", ws, "--min-side", 2, "--min-embedding-dim", 4,
              "--targets", targets, "--json")
    assert res.exit_code == 0, res.output
    csv = pd.read_csv(ws / "metrics" / "factorize.csv")
    lin = csv[(csv.kind == "linear") & (csv["rank"] > 0)]
    assert len(lin) and (lin[["m1", "n1", "m2", "n2"]].min(axis=1) >= 2).all()
    emb = csv[(csv.kind == "embedding") & (csv["rank"] > 0)]
    assert (emb.n1 >= 4).all()
    assert any(n.endswith("position_embeddings") for n in csv.name) and any("pooler" in n for n in csv.name)
    student = kroncli.load_student(ws)
    assert json.loads(res.stdout.strip().splitlines()[-1])["compression"] >= 3
    mods = dict(student.named_modules())
    assert any(n.endswith("pooler.dense") and isinstance(m, KroneckerLinear) for n, m in mods.items()) or \
        not (csv.name.str.contains("pooler") & (csv["rank"] > 0)).any()


def test_embedding_rank_student_reloads_and_matches_its_svd(tiny_bert_dir, tmp_path):
    """--embedding-rank K: the word table becomes a V x K table times a K x d matrix whose product is the
    teacher table's rank-K truncated SVD, and the student reloads with the same outputs."""
    from transformers import AutoModel

    ws = tmp_path / "ws"
    res = run("factorize", tiny_bert_dir, "--ratio", 3, "-w", ws, "--embedding-rank", 4, "--json")
    assert res.exit_code == 0, res.output
    csv = pd.read_csv(ws / "metrics" / "factorize.csv")
    word = csv[csv.name.str.endswith("word_embeddings")].iloc[0]
    assert (word.n1, word.m2, word.n2, word["rank"]) == (1, 1, word.n, 4)
    student = kroncli.load_student(ws)
    emb = student.get_input_embeddings()
    assert isinstance(emb, KroneckerEmbedding) and tuple(emb.a.shape) == (word.m, 4)
    table = AutoModel.from_pretrained(tiny_bert_dir).get_input_embeddings().weight.detach().double()
    u, s, vh = torch.linalg.svd(table, full_matrices=False)
    best = (u[:, :4] * s[:4]) @ vh[:4]
    assert torch.allclose(emb.dense_weight().detach().double(), best, atol=1e-4)
    ids = torch.tensor([[2, 7, 1, 9]])
    with torch.no_grad():
        assert torch.equal(student(input_ids=ids)[0], kroncli.load_student(ws)(input_ids=ids)[0])


@pytest.mark.integration
def test_real_minilm_at_19x(minilm_path, tmp_path):
    """The README's main job: the real all-MiniLM-L6-v2 compressed 19x, run as a subprocess."""
    ws = tmp_path / "m19"
    proc = subprocess.run([sys.executable, "-m", "kroncli", "factorize", "all-MiniLM-L6-v2", "--ratio", "19",
                           "--workspace", str(ws), "--json"], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["teacher_params"] == 22_713_216
    assert out["compression"] >= 19
    from transformers import AutoModel, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(ws / "student")
    batch = tok(["a cat sat on the mat", "kron makes BERT small"], padding=True, return_tensors="pt")
    student = kroncli.load_student(ws)
    with torch.no_grad():
        h = student(**batch).last_hidden_state
        again = kroncli.load_student(ws)(**batch).last_hidden_state
        teacher = AutoModel.from_pretrained(minilm_path)(**batch).last_hidden_state
    assert torch.equal(h, again)
    assert h.shape == teacher.shape and torch.isfinite(h).all()
    assert sum(p.numel() for p in student.parameters()) == out["student_params"]
