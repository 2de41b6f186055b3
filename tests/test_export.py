"""kron export (ONNX, int8, transformers folders) and kron predict on a tiny MRPC workspace built without training.

The task student is a tiny BERT (hidden 32, 2 layers, the MiniLM tokenizer) whose every attention/FFN matrix
and the word embeddings are Kronecker-factored with mixed shapes and ranks (all four contraction plans of
KroneckerLinear), nearest-Kronecker initialised from a random teacher with a centred classifier head
(conftest.make_student, the kron_task_ws fixture).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from kroncli.cli import app

from conftest import PAIRS, one_line_error, require_module

require_module("onnxruntime", 'pip install -c constraints.txt -e ".[export]"')
require_module("onnx", 'pip install -c constraints.txt -e ".[export]"')

runner = CliRunner()


@pytest.fixture(scope="module")
def tok(minilm_tok):
    return minilm_tok


@pytest.fixture(scope="module")
def ws(kron_task_ws):
    return kron_task_ws


@pytest.fixture(scope="module")
def student(ws):
    import kroncli

    return kroncli.load_student(ws / "tasks" / "mrpc" / "student").eval()


@pytest.fixture(scope="module")
def glue(tmp_path_factory):
    root = tmp_path_factory.mktemp("glue")
    lines = ["Quality\t#1 ID\t#2 ID\t#1 String\t#2 String"] + [
        "\t".join([str(i % 2), str(i), str(i + 50), a, b]) for i, (a, b) in enumerate(PAIRS * 3)]
    (root / "MRPC").mkdir()
    (root / "MRPC" / "dev.tsv").write_text("\n".join(lines) + "\n")
    return root


def torch_logits(model, tok, pairs) -> np.ndarray:
    a, b = zip(*pairs)
    enc = tok(list(a), list(b), truncation=True, max_length=128, padding=True, return_tensors="pt")
    with torch.no_grad():
        return model(**enc).logits.numpy()


def export(ws, out, *args):
    res = runner.invoke(app, ["export", "-w", str(ws), "--task", "mrpc", "--out", str(out), *map(str, args), "--json"])
    assert res.exit_code == 0, res.output
    return json.loads(res.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def onnx_dir(ws, tmp_path_factory):
    out = tmp_path_factory.mktemp("deploy") / "mrpc-onnx"
    return out, export(ws, out, "--format", "onnx")


def predict(*args, input=None) -> list[dict]:
    res = runner.invoke(app, ["predict", *map(str, args)], input=input)
    assert res.exit_code == 0, res.output
    return [json.loads(line) for line in res.stdout.splitlines() if line.strip()]


def expected_rows(logits: np.ndarray) -> list[dict]:
    p = torch.softmax(torch.from_numpy(logits), dim=-1).numpy()
    return [{"label": str(int(row.argmax())), "label_id": int(row.argmax()), "score": float(row.max())} for row in p]


def assert_rows(rows, want, tol=1e-4):
    assert [r["label"] for r in rows] == [w["label"] for w in want]
    assert [r["label_id"] for r in rows] == [w["label_id"] for w in want]
    assert [r["score"] for r in rows] == pytest.approx([w["score"] for w in want], abs=tol)


# ----------------------------------------------------------------------------------------------------- ONNX

def test_onnx_export_parity_and_dynamic_axes(onnx_dir, student, tok):
    import onnxruntime as ort

    out, res = onnx_dir
    assert res["parity"]["max_abs_diff"] < res["parity"]["tolerance"] == 1e-4
    assert {"model.onnx", "kron_export.json", "tokenizer.json"} <= set(res["files"])
    meta = json.loads((out / "kron_export.json").read_text())
    assert meta["task"] == "MRPC" and meta["is_pair"] and meta["label_names"] == ["0", "1"]
    assert meta["format"] == "onnx" and meta["max_seq_len"] == 128
    sess = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    for pairs in (PAIRS, PAIRS[2:3], PAIRS[:1] * 7):  # other batch sizes and lengths than the trace
        a, b = zip(*pairs)
        enc = tok(list(a), list(b), padding=True, return_tensors="np")
        got = sess.run(["logits"], {i.name: enc[i.name].astype(np.int64) for i in sess.get_inputs()})[0]
        np.testing.assert_allclose(got, torch_logits(student, tok, pairs), atol=1e-4)


def test_onnx_graph_keeps_the_factors(onnx_dir, student):
    from kroncli.export.onnx_export import initializer_shapes
    from kroncli.kron.layers import KroneckerEmbedding, KroneckerLinear

    shapes = initializer_shapes(onnx_dir[0] / "model.onnx")
    dense_linear = [tuple(m.weight.shape) for m in student.modules() if isinstance(m, torch.nn.Linear)]
    factored = {(m.out_features, m.in_features) for m in student.modules() if isinstance(m, KroneckerLinear)}
    factored |= {(m.num_embeddings, m.embedding_dim) for m in student.modules() if isinstance(m, KroneckerEmbedding)}
    assert len(factored) >= 3
    for s in factored:  # only the dense layers left (pooler, classifier) may have a factored layer's shape
        allowed = sum(d in (s, s[::-1]) for d in dense_linear)
        assert sum(x in (s, s[::-1]) for x in shapes) <= allowed, s
    params = sum(p.numel() for p in student.parameters())
    assert sum(int(np.prod(x)) for x in shapes) <= params * 1.02 + 1000


# --------------------------------------------------------------------------------------------------- predict

def test_predict_arguments_and_stdin(onnx_dir, student, tok):
    out, _ = onnx_dir
    want = expected_rows(torch_logits(student, tok, PAIRS))
    rows = predict(out, *PAIRS[0])
    assert_rows(rows, want[:1])
    assert set(rows[0]) == {"label", "label_id", "score", "scores"}
    assert rows[0]["scores"][rows[0]["label"]] == rows[0]["score"]
    assert sum(rows[0]["scores"].values()) == pytest.approx(1)
    stdin = "\n".join("\t".join(p) for p in PAIRS) + "\n\n"  # a trailing blank line is ignored
    assert_rows(predict(out, "--batch-size", 2, input=stdin), want)
    # the fast entry point (no typer app) gives the same, without importing torch or transformers
    code = ("import sys; from kroncli.predict import main; rc = main(sys.argv[1:]); "
            "print(json.dumps([m in sys.modules for m in ('torch', 'transformers')]), file=sys.stderr); sys.exit(rc)")
    proc = subprocess.run([sys.executable, "-c", "import json; " + code, str(out), *PAIRS[1]], capture_output=True,
                          text=True, timeout=600)  # a hang guard only
    assert proc.returncode == 0, proc.stderr
    assert_rows([json.loads(proc.stdout)], want[1:2])
    assert json.loads(proc.stderr.strip().splitlines()[-1]) == [False, False]


def test_task_models_name_their_classes():
    """kron finetune's config.json names each class id as `datasets` does (MRPC: not_equivalent / equivalent)."""
    from transformers import BertConfig

    from kroncli.data.glue import TASKS, normalize_task
    from kroncli.stages.finetune import _task_config

    cfg = _task_config(BertConfig(), normalize_task("mrpc"))
    assert cfg.id2label == {0: "not_equivalent", 1: "equivalent"} and cfg.label2id["equivalent"] == 1
    names = {t.name: t.names for t in TASKS.values()}
    assert names["CoLA"] == ("unacceptable", "acceptable") and names["SST-2"] == ("negative", "positive")
    assert names["QQP"] == ("not_duplicate", "duplicate") and names["WNLI"] == ("not_entailment", "entailment")
    assert names["RTE"] == names["QNLI"] == ("entailment", "not_entailment") and names["STS-B"] == ()
    assert TASKS["MRPC"].label_names == ("0", "1")  # the files and GLUE submissions keep their ids


def test_predict_prints_the_label_name_and_its_id(ws, onnx_dir, student, tok, tmp_path):
    """A task student whose config names its classes (as kron finetune writes them): kron export records the
    names, kron predict prints the name and the id. An export whose config had only ids keeps printing the id."""
    named = tmp_path / "ws"
    shutil.copytree(ws, named)
    config = named / "tasks" / "mrpc" / "student" / "config.json"
    cfg = json.loads(config.read_text())
    cfg["id2label"] = {"0": "not_equivalent", "1": "equivalent"}
    cfg["label2id"] = {"not_equivalent": 0, "equivalent": 1}
    config.write_text(json.dumps(cfg))
    out = tmp_path / "named-hf"
    export(named, out, "--format", "hf")
    assert json.loads((out / "kron_export.json").read_text())["label_names"] == ["not_equivalent", "equivalent"]
    want = expected_rows(torch_logits(student, tok, PAIRS))
    rows = predict(out, input="\n".join("\t".join(p) for p in PAIRS) + "\n")
    assert [r["label_id"] for r in rows] == [w["label_id"] for w in want]
    assert [r["label"] for r in rows] == [("not_equivalent", "equivalent")[w["label_id"]] for w in want]
    old = predict(onnx_dir[0], input="\n".join("\t".join(p) for p in PAIRS) + "\n")  # its config: ids only
    assert [r["label"] for r in old] == [str(r["label_id"]) for r in old] == [w["label"] for w in want]


def test_predict_regression_row():
    from kroncli.predict import format_row

    assert format_row([2.5], {"is_regression": True}) == {"score": 2.5}
    row = format_row([0.0, 2.0, 0.0], {"label_names": ["entailment", "neutral", "contradiction"]})
    assert row["label"] == "neutral" and row["label_id"] == 1
    assert row["score"] == pytest.approx(np.exp(2) / (np.exp(2) + 2))


# --------------------------------------------------------------------------------------------------- int8

def test_int8_export_sizes_and_accuracy(ws, glue, tmp_path, student, tok):
    out = tmp_path / "int8"
    res = export(ws, out, "--quantize", "int8", "--data-dir", glue)
    b = res["bytes"]
    assert 0 < b["int8_bytes"] < b["fp32_bytes"] and b["size_ratio"] > 1.5
    acc = res["accuracy"]
    assert acc["n"] == 15 and acc["split"] == "dev"
    assert set(acc["fp32"]) == {"f1", "accuracy", "combined"}
    assert acc["delta"]["accuracy"] == pytest.approx(acc["int8"]["accuracy"] - acc["fp32"]["accuracy"])
    assert not (out / "model.fp32.onnx").exists()
    assert json.loads((out / "kron_export.json").read_text())["quantize"] == "int8"
    rows = predict(out, *PAIRS[0])
    assert rows[0]["label"] in ("0", "1") and 0.5 <= rows[0]["score"] <= 1
    # --eval-limit, and no data at all: skipped with a note
    res = export(ws, tmp_path / "lim", "--quantize", "int8", "--data-dir", glue, "--eval-limit", 4)
    assert res["accuracy"]["n"] == 4
    res = export(ws, tmp_path / "skip", "--quantize", "int8", "--eval-limit", 0)
    assert "skipped" in res["accuracy"]


# ---------------------------------------------------------------------------------------- transformers folders

RELOAD = textwrap.dedent("""
    import json, sys, torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    path, pairs = sys.argv[1], json.loads(sys.argv[2])
    model = AutoModelForSequenceClassification.from_pretrained(path, trust_remote_code=True).eval()
    tok = AutoTokenizer.from_pretrained(path, trust_remote_code=True)
    a, b = zip(*pairs)
    with torch.no_grad():
        logits = model(**tok(list(a), list(b), padding=True, return_tensors="pt")).logits
    kinds = sorted({type(m).__name__ for m in model.modules() if type(m).__name__.startswith("Kronecker")})
    print(json.dumps({"logits": logits.tolist(), "cls": type(model).__name__, "kinds": kinds,
                      "kroncli": any(m.startswith("kroncli") for m in sys.modules)}))
""")


def test_hf_folder_reloads_in_a_fresh_process(ws, tmp_path, student, tok):
    out = tmp_path / "hf"
    res = export(ws, out, "--format", "hf")
    assert {"modeling_kron.py", "configuration_kron.py", "config.json", "kron_export.json"} <= set(res["files"])
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["auto_map"]["AutoModelForSequenceClassification"] == "modeling_kron.KronBertForSequenceClassification"
    assert len(cfg["kron_layers"]) == res["kron_layers"] == 13
    proc = subprocess.run([sys.executable, "-c", RELOAD, str(out), json.dumps(PAIRS)], capture_output=True,
                          text=True, timeout=600, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    assert got["cls"] == "KronBertForSequenceClassification" and not got["kroncli"]
    assert got["kinds"] == ["KroneckerEmbedding", "KroneckerLinear"]
    np.testing.assert_allclose(np.array(got["logits"]), torch_logits(student, tok, PAIRS), atol=1e-5)
    assert_rows(predict(out, *PAIRS[3]), expected_rows(torch_logits(student, tok, PAIRS[3:4])))


def test_hf_dense_checkpoint(ws, tmp_path, student, tok):
    from transformers import AutoModelForSequenceClassification, BertForSequenceClassification

    out = tmp_path / "dense"
    res = export(ws, out, "--format", "hf", "--dense")
    assert res["dense_vs_kron_max_abs_diff"] < 1e-4
    assert not (out / "modeling_kron.py").exists()
    model = AutoModelForSequenceClassification.from_pretrained(out).eval()
    assert type(model) is BertForSequenceClassification
    assert model.bert.encoder.layer[0].attention.self.query.weight.shape == (32, 32)
    np.testing.assert_allclose(torch_logits(model, tok, PAIRS), torch_logits(student, tok, PAIRS), atol=1e-4)


# ------------------------------------------------------------------------------------------------ bad inputs

def test_bad_inputs_are_one_line_errors(ws, onnx_dir, tmp_path):
    out, _ = onnx_dir

    def exp(*args):
        return runner.invoke(app, ["export", "-w", str(ws), *map(str, args)])

    one_line_error(exp("--task", "rte", "--out", tmp_path / "x"), f"kron finetune --workspace {ws} --task rte")
    one_line_error(exp("--task", "mrpc", "--format", "tflite", "--out", tmp_path / "x"), "unknown --format 'tflite'")
    one_line_error(exp("--task", "mrpc", "--out", out), "exists", "--force")
    one_line_error(exp("--task", "mrpc", "--format", "hf", "--quantize", "int8", "--out", tmp_path / "x"),
                   "--format onnx")
    one_line_error(exp("--task", "mrpc", "--quantize", "int4", "--out", tmp_path / "x"), "int8")
    one_line_error(runner.invoke(app, ["export", "-w", str(tmp_path / "nope"), "--task", "mrpc", "--out",
                                       str(tmp_path / "x")]), "does not exist")
    # an MRPC student copied under tasks/cola (both have two labels) is not exported or scored as CoLA
    moved = tmp_path / "moved"
    shutil.copytree(ws / "tasks" / "mrpc", moved / "tasks" / "cola")
    for res in (runner.invoke(app, ["export", "-w", str(moved), "--task", "cola", "--out", str(tmp_path / "x")]),
                runner.invoke(app, ["eval", "glue", "-w", str(moved), "--task", "cola", "--model", "student"])):
        one_line_error(res, "was fine-tuned on MRPC, not CoLA")
    assert not (tmp_path / "x").exists()

    def pred(*args, input=None):
        return runner.invoke(app, ["predict", *map(str, args)], input=input)

    one_line_error(pred(out, "only one sentence"), "MRPC takes two sentences", "got 1")
    one_line_error(pred(out, input="a\tb\nno tab here\n"), "stdin line 2", "MRPC takes two sentences")
    one_line_error(pred(out, input="a\tb\tc\n"), "stdin line 1")
    one_line_error(pred(tmp_path), "not a kron export")
    one_line_error(pred(ws, "a", "b"), "is a kron workspace, not an export", f"--out {ws.name}-TASK")
    one_line_error(pred(out, "--threads", "0", "a", "b"), "--threads 0 must be at least 1")
    one_line_error(pred(out, input=b"\xff\xfe not utf-8\tb\n"), "stdin line 1 is not valid UTF-8")
    # a damaged export: no tokenizer vocabulary (every word would be [UNK]), a model file that is not ONNX
    broken = tmp_path / "broken"
    shutil.copytree(out, broken)
    (broken / "model.onnx").write_text("junk")
    one_line_error(pred(broken, "a", "b"), "cannot load", "re-run kron export")
    (broken / "tokenizer.json").unlink()
    one_line_error(pred(broken, "a", "b"), "no tokenizer vocabulary")
    # --force never replaces the workspace being exported, nor a folder inside or above it
    for target in (ws, ws / "tasks" / "mrpc", ws.parent):
        one_line_error(exp("--task", "mrpc", "--out", target, "--force"), "write the export to a folder of its own")
    assert (ws / "tasks" / "mrpc" / "student").is_dir()
    one_line_error(pred(tmp_path / "missing"), "not a folder")


def test_force_overwrites(ws, tmp_path):
    out = tmp_path / "again"
    export(ws, out, "--format", "hf", "--dense")
    res = export(ws, out, "--format", "onnx", "--force")
    assert "model.onnx" in res["files"] and not (out / "model.safetensors").exists()
