"""`kron factorize --method kronecker|lowrank|narrow`: one budget, one workspace contract, one pipeline."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from torch import nn
from typer.testing import CliRunner

import kroncli
from conftest import PAIRS, glue_dir, one_line_error, require_glue, require_module
from kroncli.cli import app
from kroncli.factorize import FactorizeOptions, factorize
from kroncli.kron.layers import KroneckerLinear, LowRankLinear

runner = CliRunner()
METHODS = ("kronecker", "lowrank", "narrow")


def run(*args):
    return runner.invoke(app, [str(a) for a in args])


# ------------------------------------------------------------------------------------------------ LowRankLinear

def test_low_rank_linear_is_the_truncated_svd_run_as_two_products():
    torch.manual_seed(0)
    dense = nn.Linear(20, 12)
    layer = LowRankLinear.from_linear(dense, rank=4)
    u, s, vh = torch.linalg.svd(dense.weight.detach().double())
    best = (u[:, :4] * s[:4]) @ vh[:4]
    assert layer.u.shape == (12, 4) and layer.v.shape == (4, 20)
    torch.testing.assert_close(layer.dense_weight().double(), best, atol=1e-5, rtol=0)
    torch.testing.assert_close((layer.u @ layer.v).double(), best, atol=1e-5, rtol=0)
    assert layer.init_rel_error == pytest.approx(float((s[4:] ** 2).sum() / (s ** 2).sum()) ** 0.5, rel=1e-6)
    x = torch.randn(3, 5, 20)
    layer.dense_weight = None  # forward must not build the dense matrix
    torch.testing.assert_close(layer(x), x @ best.float().T + dense.bias, atol=1e-5, rtol=0)
    del layer.dense_weight
    # the same factors in the Kronecker layout (A: m x 1, B: 1 x n) compute the same map
    kron = KroneckerLinear(12, 1, 1, 20, rank=4)
    kron.load_state_dict(layer.state_dict())
    torch.testing.assert_close(kron(x), layer(x), atol=1e-5, rtol=0)


# --------------------------------------------------------------------------------------------------- budgets

@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("layers", [None, [1]])
def test_every_method_meets_the_budget_and_keeps_the_layers_asked(tiny_teacher, method, layers):
    result, student, _ = factorize(FactorizeOptions(model=str(tiny_teacher), ratio=3, method=method, layers=layers))
    budget = result.teacher_params / 3
    params = sum(p.numel() for p in student.parameters())
    assert params == result.student_params <= budget
    if method == "lowrank":  # a rank is a fine step: the budget is spent, not just undercut
        assert params >= 0.95 * budget
    if method == "narrow":  # the widest that fits: one more dimension per head does not
        from kroncli import narrow

        w = narrow.widths_of(student.config)
        assert narrow.count_at(student, narrow.scaled(w, w.hidden + w.heads)) > budget
    assert student.config.num_hidden_layers == (1 if layers else 2)
    assert result.summary(None)["method"] == method


def test_lowrank_factors_every_target_as_u_times_v(tiny_bert_dir):
    """A 120-token vocabulary: the embedding does not take the whole budget, every matrix gets a rank."""
    result, student, _ = factorize(FactorizeOptions(model=str(tiny_bert_dir), ratio=3, method="lowrank"))
    linear = [c for c in result.choices if c.kind == "linear"]
    assert linear and all(c.m1 == c.m and c.n1 == 1 and c.rank >= 1 for c in linear)
    for c in linear:
        layer = student.get_submodule(c.name)
        assert type(layer) is LowRankLinear and layer.rank == c.rank
    emb = next(c for c in result.choices if c.kind == "embedding")
    assert emb.n2 == emb.n  # V x r table times r x d: the embedding's truncated SVD


def test_narrow_at_full_width_is_the_teacher(tiny_teacher):
    """Nothing cut, nothing changed: the same hidden states, and the projection starts as the identity."""
    from transformers import BertModel

    from kroncli import narrow

    result, student, _ = factorize(FactorizeOptions(model=str(tiny_teacher), ratio=1, method="narrow"))
    teacher = BertModel.from_pretrained(tiny_teacher).eval()
    ids = torch.randint(0, 30522, (2, 7))
    with torch.no_grad():
        torch.testing.assert_close(student(input_ids=ids).last_hidden_state, teacher(input_ids=ids).last_hidden_state)
    assert torch.equal(result.projection.hidden.weight, torch.eye(32))
    assert narrow.widths_of(student.config) == narrow.widths_of(teacher.config)


def test_narrow_keeps_the_dimensions_and_neurons_the_teacher_uses_most(tiny_teacher):
    from transformers import BertModel

    from kroncli import narrow

    teacher = BertModel.from_pretrained(tiny_teacher).eval()
    with torch.no_grad():  # hidden dims 3 and 17 and FFN neuron 40 of layer 0 carry most of the weight
        for p in teacher.parameters():
            if p.shape[-1] == 32:
                p[..., [3, 17]] *= 50
        teacher.encoder.layer[0].intermediate.dense.weight[40] *= 50
    widths = narrow.Widths(8, 4, 16)
    keep = narrow.keep_indices(teacher, widths)
    assert {3, 17} <= set(keep["hidden"].tolist()) and len(keep["hidden"]) == 8
    assert 40 in keep[("ffn", 0)].tolist() and len(keep[("ffn", 0)]) == 16
    assert len(keep[("qk", 1)]) == 8  # 2 of 8 coordinates in each of the 4 heads
    assert [int(i) // 8 for i in keep[("qk", 1)]] == [0, 0, 1, 1, 2, 2, 3, 3]
    student, projection, _, record = narrow.build(teacher, widths)
    assert student.config.hidden_size == 8 and student.config.num_attention_heads == 4  # heads match one by one
    assert record["hidden_kept"] == keep["hidden"].tolist()
    # the projection puts student dimension j back at teacher dimension hidden_kept[j]
    assert projection.hidden.weight.shape == (32, 8)
    assert torch.equal(projection.hidden.weight.argmax(0), keep["hidden"])


def test_a_checkpoint_of_one_narrow_width_does_not_resume_another(tiny_teacher, tmp_path):
    from kroncli.stages.common import shapes_fingerprint

    prints = []
    for width in (8, 16):
        ws = tmp_path / f"w{width}"
        assert run("factorize", tiny_teacher, "--method", "narrow", "--width", width, "-w", ws).exit_code == 0
        prints.append(shapes_fingerprint(ws / "student"))
    assert prints[0] != prints[1]


# ------------------------------------------------------------------------------------ the pipeline, per method

@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    path = tmp_path_factory.mktemp("text") / "a.txt"
    path.write_text("\n".join(f"a cat sat on mat number {j} while the dog barked" for j in range(80)) + "\n")
    return path


@pytest.mark.parametrize("method", ["lowrank", "narrow"])
def test_distill_finetune_export_and_reload_round_trip(tiny_teacher, corpus, tmp_path, method):
    require_glue("MRPC/train.tsv", "MRPC/dev.tsv")
    require_module("onnxruntime", 'pip install -c constraints.txt -e ".[export]"')
    ws = tmp_path / "ws"
    res = run("factorize", tiny_teacher, "--ratio", 3, "--method", method, "--layers", "0,1", "-w", ws)
    assert res.exit_code == 0, res.output
    assert json.loads((ws / "student" / "kron.json").read_text())["method"] == method
    assert json.loads((ws / "manifest.json").read_text())["stages"]["factorize"]["args"]["method"] == method
    res = run("distill", "-w", ws, "--corpus", corpus, "--max-steps", 2, "--batch-size", 4, "--max-seq-len", 32)
    assert res.exit_code == 0, res.output
    terms = json.loads((ws / "manifest.json").read_text())["stages"]["distill"]["terms"]
    assert {"embedding_mse", "attention_mse", "hidden_mse"} <= set(terms)  # attention matched head by head
    common = ["-w", ws, "--task", "mrpc", "--data-dir", glue_dir(), "--limit", 8, "--batch-size", 4,
              "--max-seq-len", 32]
    assert run("finetune", *common, "--teacher-only", "--max-steps", 1).exit_code == 0
    res = run("finetune", *common, "--max-steps", 2)
    assert res.exit_code == 0, res.output
    task_student = ws / "tasks" / "mrpc" / "student"
    assert (task_student / "projection.safetensors").is_file() == (method == "narrow")
    student = kroncli.load_student(task_student)
    assert not hasattr(student.base_model, "kron_projection")  # the deployable model is the student alone

    onnx = tmp_path / "onnx"
    res = run("export", "-w", ws, "--task", "mrpc", "--format", "onnx", "--quantize", "int8", "--eval-limit", 8,
              "--data-dir", glue_dir(), "--out", onnx, "--json")
    assert res.exit_code == 0, res.output
    hf = tmp_path / "hf"
    assert run("export", "-w", ws, "--task", "mrpc", "--format", "hf", "--out", hf).exit_code == 0
    reload = ("import json, sys, torch\nfrom transformers import AutoModelForSequenceClassification, AutoTokenizer\n"
              "m = AutoModelForSequenceClassification.from_pretrained(sys.argv[1], trust_remote_code=True).eval()\n"
              "t = AutoTokenizer.from_pretrained(sys.argv[1], trust_remote_code=True)\n"
              "a, b = zip(*json.loads(sys.argv[2]))\n"
              "with torch.no_grad(): print(json.dumps(m(**t(list(a), list(b), padding=True, "
              "return_tensors='pt')).logits.tolist()))")
    proc = subprocess.run([sys.executable, "-c", reload, str(hf), json.dumps(PAIRS)], capture_output=True, text=True,
                          timeout=600, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(task_student)
    a, b = zip(*PAIRS)
    with torch.no_grad():
        want = student(**tok(list(a), list(b), padding=True, return_tensors="pt")).logits
    np.testing.assert_allclose(np.array(json.loads(proc.stdout.strip().splitlines()[-1])), want.numpy(), atol=1e-5)

    res = run("eval", "speed", "-w", ws, "--model", "mrpc", "--batch", 1, "--seq-len", 16, "--repeats", 1,
              "--warmup", 0, "--onnx", onnx, "--json")
    assert res.exit_code == 0, res.output
    speed = json.loads(res.stdout.strip().splitlines()[-1])
    assert speed["models"]["student"]["params"] == sum(p.numel() for p in student.parameters())
    assert {r["model"] for r in speed["results"]} >= {"mrpc/student", "mrpc/teacher"} and speed["exports"]


# ------------------------------------------------------------------------------------------------ bad input

@pytest.mark.parametrize("args,needles", [
    (["--method", "pruned"], ["unknown --method 'pruned'", "kronecker, lowrank, narrow"]),
    (["--method", "lowrank", "--ratio", "2000"], ["cannot be met with --method lowrank", "largest ratio possible"]),
    (["--method", "narrow", "--ratio", "2000"], ["cannot be met with --method narrow", "largest ratio possible"]),
    (["--method", "narrow", "--width", "30"], ["--width 30 does not divide into the teacher's 4 attention heads",
                                               "e.g. 28"]),
    (["--method", "narrow", "--width", "8", "--max-params", "1000"], ["cannot be met with --width 8"]),
    (["--method", "lowrank", "--width", "8"], ["--width", "--method narrow"]),
    (["--method", "lowrank", "--preset", "kroneckerbert8"], ["--preset does not apply to --method lowrank"]),
    *[(["--method", m, "--layers", "0,2"], ["layers 0,2", "from 0 to 1"]) for m in METHODS],
])
def test_bad_input_is_one_line_and_writes_no_workspace(tiny_teacher, tmp_path, args, needles):
    ws = tmp_path / "ws"
    one_line_error(run("factorize", tiny_teacher, "-w", ws, *args), *needles)
    assert not ws.exists()
