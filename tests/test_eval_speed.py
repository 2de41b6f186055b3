"""kron eval speed on a tiny random-init workspace: rows, parameter counts, speed.csv, one-line errors.

No timing asserts: which model is faster depends on the machine.
"""

import json

import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from kroncli.cli import app

runner = CliRunner()

FAST = ["--seq-len", "16", "--repeats", "3", "--warmup", "1"]


def run(*args):
    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    path = tmp_path_factory.mktemp("speed") / "tiny4"
    res = run("factorize", "--random-init", "tiny", "--ratio", "4", "-w", path)
    assert res.exit_code == 0, res.output
    return path


def speed(ws, *args):
    return run("eval", "speed", "-w", ws, *args)


def last_json(res) -> dict:
    return json.loads(res.stdout.strip().splitlines()[-1])


def test_rows_for_both_models_and_batches_and_csv_appends(ws):
    from kroncli import sources
    from kroncli.stages.common import teacher_source
    from kroncli.student import load_student
    from kroncli.surgery import count_params
    from kroncli.workspace import Workspace

    res = speed(ws, "--batch", "1,2", *FAST, "--device", "cpu", "--json")
    assert res.exit_code == 0, res.output
    out = last_json(res)
    rows = out["results"]
    assert {(r["model"], r["batch"]) for r in rows} == {(m, b) for m in ("teacher", "student") for b in (1, 2)}
    assert len(rows) == 4 and all(r["device"] == "cpu" and r["seq_len"] == 16 for r in rows)
    for r in rows:
        assert r["latency_ms"] > 0 and r["throughput_seq_s"] > 0 and r["speedup"] > 0
        assert r["tokens_s"] == pytest.approx(r["throughput_seq_s"] * 16)
        assert r["peak_mem_mb"] is not None and r["peak_mem_mb"] > 0
        assert r["threads"] >= 1
    teacher_rows = [r for r in rows if r["model"] == "teacher"]
    assert all(r["speedup"] == pytest.approx(1.0) for r in teacher_rows)
    for b in (1, 2):
        t, s = (next(r for r in rows if r["model"] == m and r["batch"] == b) for m in ("teacher", "student"))
        assert s["speedup"] == pytest.approx(t["latency_ms"] / s["latency_ms"])

    student_params = count_params(load_student(ws))
    teacher_params = count_params(sources.load_model(teacher_source(Workspace(ws)))[0])
    by_model = {r["model"]: r for r in rows}
    assert by_model["student"]["params"] == student_params == out["models"]["student"]["params"]
    assert by_model["teacher"]["params"] == teacher_params == out["models"]["teacher"]["params"]
    assert out["compression"]["params"] == pytest.approx(teacher_params / student_params)
    # student: bytes of its safetensors; random-init teacher: its fp32 tensors
    assert out["models"]["student"]["size_bytes"] == (ws / "student" / "model.safetensors").stat().st_size
    assert out["models"]["teacher"]["size_bytes"] >= 4 * teacher_params
    assert out["compression"]["disk"] > 1
    assert "cpu" in out["method"]["memory"]

    csv = ws / "metrics" / "speed.csv"
    df = pd.read_csv(csv)
    assert list(df.columns) == ["timestamp", "model", "device", "batch", "seq_len", "latency_ms",
                                "throughput_seq_s", "tokens_s", "speedup", "params", "size_mb", "peak_mem_mb",
                                "threads"]
    assert len(df) == 4 and (df.latency_ms > 0).all()

    res = speed(ws, "--batch", "2", *FAST, "--device", "cpu", "--threads", "1")
    assert res.exit_code == 0, res.output
    assert "speed-up" in res.output and "student" in res.output
    df = pd.read_csv(csv)
    assert len(df) == 6
    assert list(df.threads.iloc[-2:]) == [1, 1] and set(df.model.iloc[-2:]) == {"teacher", "student"}
    assert torch.get_num_threads() >= 1


@pytest.mark.parametrize("args, needle", [
    (["--batch", "1,x"], "--batch"),
    (["--batch", "0"], "--batch"),
    (["--batch", "1,,2"], "--batch"),
    (["--batch", ""], "--batch"),
    (["--seq-len", "129"], "max_position_embeddings"),
    (["--model", "mrpc"], "task student"),
    (["--model", "nosuchtask"], "task student"),
    (["--device", "tpu"], "--device"),
    (["--repeats", "0"], "--repeats"),
])
def test_bad_inputs_give_one_line_errors(ws, args, needle):
    res = speed(ws, *args)
    assert res.exit_code == 2, res.output
    assert needle in res.output
    assert "Traceback" not in res.output
    assert len([ln for ln in res.output.splitlines() if ln.strip()]) == 1


def test_workspace_without_student(tmp_path):
    (tmp_path / "empty").mkdir()
    for path in (tmp_path / "empty", tmp_path / "missing"):
        res = speed(path, "--batch", "1")
        assert res.exit_code == 2, res.output
        assert "Traceback" not in res.output
        assert len([ln for ln in res.output.splitlines() if ln.strip()]) == 1


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_cuda_without_gpu(ws):
    res = speed(ws, "--batch", "1", "--device", "cuda")
    assert res.exit_code == 2 and "GPU" in res.output
    assert len([ln for ln in res.output.splitlines() if ln.strip()]) == 1


def test_task_models(ws, tmp_path):
    """--model <task> times tasks/<task>/student against tasks/<task>/teacher (its safetensors on disk)."""
    import shutil

    from kroncli import sources
    from kroncli.stages.common import teacher_source
    from kroncli.workspace import Workspace

    task_ws = tmp_path / "ws"
    shutil.copytree(ws, task_ws, ignore=shutil.ignore_patterns("metrics"))
    shutil.copytree(ws / "student", task_ws / "tasks" / "mrpc" / "student")
    teacher, _ = sources.load_model(teacher_source(Workspace(ws)))
    teacher.save_pretrained(task_ws / "tasks" / "mrpc" / "teacher")
    res = speed(task_ws, "--model", "MRPC", "--batch", "1", "--seq-len", "8", "--repeats", "1", "--warmup", "0",
                "--device", "cpu", "--json")
    assert res.exit_code == 0, res.output
    out = last_json(res)
    assert {r["model"] for r in out["results"]} == {"mrpc/student", "mrpc/teacher"}
    weights = task_ws / "tasks" / "mrpc" / "teacher" / "model.safetensors"
    assert out["models"]["teacher"]["size_bytes"] == weights.stat().st_size
    assert len(pd.read_csv(task_ws / "metrics" / "speed.csv")) == 2
