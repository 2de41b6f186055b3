"""kron eval speed on a tiny random-init workspace: rows, parameter counts, speed.csv, one-line errors.

No timing asserts: which model is faster depends on the machine.
"""

import json

import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from kroncli.cli import app

from conftest import own_copy, require_module

runner = CliRunner()

FAST = ["--seq-len", "16", "--repeats", "3", "--warmup", "1"]


def run(*args):
    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def factorized(tmp_path_factory):
    path = tmp_path_factory.mktemp("speed") / "tiny4"
    res = run("factorize", "--random-init", "tiny", "--ratio", "4", "-w", path)
    assert res.exit_code == 0, res.output
    return path


@pytest.fixture
def ws(factorized, tmp_path):
    """The factorized workspace, each test's own copy: speed.csv holds only the rows that test appended."""
    return own_copy(factorized, tmp_path)


class FixedLoad:
    """Contention's stand-in: other processes took `share` of the CPUs, whatever the machine is doing."""

    def __init__(self, share: float):
        self.share = share

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.other, self.measured = self.share, True
        return False


@pytest.fixture
def cpus_at(monkeypatch):
    """cpus_at(share): every timing of kron eval speed sees that share of the CPUs taken by other processes."""
    from kroncli.evaluation import speed as speed_module

    return lambda share: monkeypatch.setattr(speed_module, "Contention", lambda: FixedLoad(share))


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
        assert r["peak_mem_mib"] is not None and r["peak_mem_mib"] > 0
        assert r["threads"] >= 1
        assert 0.0 <= r["other_load"] <= 1.0
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
                                "throughput_seq_s", "tokens_s", "speedup", "params", "size_mib", "peak_mem_mib",
                                "threads", "other_load"]
    assert len(df) == 4 and (df.latency_ms > 0).all()

    res = speed(ws, "--batch", "2", *FAST, "--device", "cpu", "--threads", "1")
    assert res.exit_code == 0, res.output
    assert "speed-up" in res.output and "student" in res.output
    df = pd.read_csv(csv)
    assert len(df) == 6
    assert list(df.threads.iloc[-2:]) == [1, 1] and set(df.model.iloc[-2:]) == {"teacher", "student"}
    assert torch.get_num_threads() >= 1


def test_timing_under_load_warns_in_table_and_json(ws, cpus_at):
    """Other processes took 36% of the CPUs while batch 2 timed: every row records it, the table marks the
    speed-ups and the JSON warns; at 4% nothing is said."""
    cpus_at(0.36)
    res = speed(ws, "--batch", "2", *FAST, "--device", "cpu", "--json")
    assert res.exit_code == 0, res.output
    out = last_json(res)
    assert [r["other_load"] for r in out["results"]] == [0.36, 0.36] and out["other_load"] == 0.36
    assert len(out["warnings"]) == 1 and "cpu batch 2: other processes used 36% of the CPUs" in out["warnings"][0]
    assert "*" in res.stderr and "more than 10% of the CPUs" in res.stderr
    assert (pd.read_csv(ws / "metrics" / "speed.csv").other_load.iloc[-2:] == 0.36).all()
    cpus_at(0.04)
    out = last_json(speed(ws, "--batch", "2", *FAST, "--device", "cpu", "--json"))
    assert out["warnings"] == [] and out["other_load"] == 0.04


def test_contention_share_is_bounded_by_the_whole_machine():
    """More busy ticks than the interval's ticks of all CPUs (sampling, rounding) is still at most the machine."""
    from kroncli.machine import other_share

    assert other_share(busy=300, own=0, total=200) == 1.0
    assert other_share(busy=50, own=80, total=200) == 0.0
    assert other_share(busy=150, own=50, total=400) == 0.25
    assert other_share(busy=0, own=0, total=0) == 0.0


def test_old_speed_csv_columns_are_renamed_on_append(ws, tmp_path):
    """A speed.csv of an older version (size_mb / peak_mem_mb, MiB all along) keeps one column per figure."""
    import shutil

    old = tmp_path / "old"
    shutil.copytree(ws, old, ignore=shutil.ignore_patterns("metrics"))
    (old / "metrics").mkdir()
    (old / "metrics" / "speed.csv").write_text(
        "timestamp,model,device,batch,seq_len,latency_ms,throughput_seq_s,tokens_s,speedup,params,size_mb,"
        "peak_mem_mb,threads\n2024-01-01T00:00:00,student,cpu,1,16,1.0,1000.0,16000.0,2.0,100,0.5,12.5,2\n")
    res = speed(old, "--batch", "1", *FAST, "--device", "cpu")
    assert res.exit_code == 0, res.output
    df = pd.read_csv(old / "metrics" / "speed.csv")
    assert "size_mb" not in df and "peak_mem_mb" not in df and len(df) == 3
    assert df.size_mib.iloc[0] == 0.5 and df.peak_mem_mib.iloc[0] == 12.5 and df.size_mib.notna().all()
    assert "size MiB" in res.output and "peak MiB" in res.output and " MB" not in res.output


@pytest.mark.parametrize("args, needle", [
    (["--batch", "1,x"], "--batch"),
    (["--batch", "0"], "--batch"),
    (["--batch", "1,,2"], "--batch"),
    (["--batch", ""], "--batch"),
    (["--seq-len", "129"], "max_position_embeddings"),
    (["--model", "mrpc"], "task student"),
    (["--model", "nosuchtask"], "not a task of this workspace"),
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


def test_cuda_without_gpu(ws, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # the same on a machine with a GPU
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


# ------------------------------------------------------------------------------------------ exported ONNX rows

ONNX_LABELS = ("kronecker-onnx-fp32", "kronecker-onnx-int8", "dense-onnx-fp32")


@pytest.fixture(scope="module")
def exported(kron_task_ws, tmp_path_factory):
    """A copy of the tiny MRPC workspace (Kronecker task student + dense teacher) and its ONNX exports: fp32,
    int8 and --dense fp32, written by kron export."""
    import shutil

    require_module("onnxruntime", 'pip install -c constraints.txt -e ".[export]"')
    require_module("onnx", 'pip install -c constraints.txt -e ".[export]"')
    root = tmp_path_factory.mktemp("speed-onnx")
    ws = root / "ws"
    shutil.copytree(kron_task_ws, ws)
    outs = {}
    for label, args in zip(ONNX_LABELS, ([], ["--quantize", "int8", "--eval-limit", "0"], ["--dense"])):
        outs[label] = root / label
        res = run("export", "-w", ws, "--task", "mrpc", "--format", "onnx", "--out", outs[label], *args)
        assert res.exit_code == 0, res.output
    return ws, outs


def test_onnx_exports_timed_beside_teacher_and_student(exported, cpus_at):
    ws, outs = exported
    cpus_at(0.0)
    folders = [a for label in ONNX_LABELS for a in ("--onnx", outs[label])]
    res = speed(ws, "--model", "mrpc", "--batch", "1,2", *FAST, "--device", "cpu", "--threads", "1", *folders,
                "--onnx", outs["kronecker-onnx-fp32"], "--json")  # a repeated folder is timed once
    assert res.exit_code == 0, res.output
    out = last_json(res)
    rows = out["results"]
    models = ("mrpc/teacher", "mrpc/student") + ONNX_LABELS
    assert [(r["model"], r["batch"]) for r in rows] == [(m, b) for b in (1, 2) for m in models]
    for r in rows:
        assert r["device"] == "cpu" and r["seq_len"] == 16 and r["threads"] == 1
        assert r["latency_ms"] > 0 and r["throughput_seq_s"] > 0 and r["peak_mem_mib"] > 0
        assert r["throughput_seq_s"] == pytest.approx(r["batch"] * 1e3 / r["latency_ms"])
        teacher = next(t for t in rows if t["model"] == "mrpc/teacher" and t["batch"] == r["batch"])
        assert r["speedup"] == pytest.approx(teacher["latency_ms"] / r["latency_ms"])
    onnx_rows = [r for r in rows if r["role"] == "onnx"]
    assert {r["model"]: r["export"] for r in onnx_rows} == {label: str(outs[label]) for label in ONNX_LABELS}
    exports = {e["label"]: e for e in out["exports"]}
    assert list(exports) == list(ONNX_LABELS)
    for label, e in exports.items():
        assert e["size_bytes"] == (outs[label] / "model.onnx").stat().st_size
        assert e["task"] == "MRPC" and e["kronecker"] == label.startswith("kronecker")
    assert exports["kronecker-onnx-int8"]["size_bytes"] < exports["kronecker-onnx-fp32"]["size_bytes"]
    assert exports["kronecker-onnx-fp32"]["params"] < exports["dense-onnx-fp32"]["params"]
    assert exports["kronecker-onnx-fp32"]["params"] <= out["models"]["student"]["params"] * 1.02 + 1000
    assert "intra_op_num_threads 1" in out["method"]["onnx"] and "exports" in out["method"]["latency"]
    assert out["warnings"] == []

    df = pd.read_csv(ws / "metrics" / "speed.csv")
    assert list(df.columns)[:13] == ["timestamp", "model", "device", "batch", "seq_len", "latency_ms",
                                     "throughput_seq_s", "tokens_s", "speedup", "params", "size_mib",
                                     "peak_mem_mib", "threads"]
    assert len(df) == 10 and set(df.model) == set(models) and (df.latency_ms > 0).all()
    onnx_csv = df[df.model == "kronecker-onnx-int8"]
    assert list(onnx_csv.size_mib) == pytest.approx([exports["kronecker-onnx-int8"]["size_mib"]] * 2)

    # kron report reads the file with the ONNX rows in it (its speed-up columns are the general student's:
    # none here, the rows are mrpc/...)
    from kroncli.report import workspace_rows

    (ws / "manifest.json").write_text(json.dumps({"stages": {}}))
    report = workspace_rows(ws)
    assert report[0]["model"] == "student" and not any(k.startswith("speedup") for k in report[0])


def test_onnx_rows_beside_the_general_student_warn(exported, tmp_path, cpus_at):
    """An export of a task student next to the general models: timed, with a warning naming --model."""
    ws, outs = exported
    cpus_at(0.0)
    general = tmp_path / "general"
    res = run("factorize", "--random-init", "tiny", "--ratio", "4", "-w", general)
    assert res.exit_code == 0, res.output
    res = speed(general, "--batch", "1", "--seq-len", "8", "--repeats", "1", "--warmup", "0", "--device", "cpu",
                "--onnx", outs["kronecker-onnx-int8"], "--json")
    assert res.exit_code == 0, res.output
    out = last_json(res)
    assert [r["model"] for r in out["results"]] == ["teacher", "student", "kronecker-onnx-int8"]
    assert len(out["warnings"]) == 1 and "--model mrpc" in out["warnings"][0]


def test_bad_onnx_folders_are_one_line_errors(exported, tmp_path):
    ws, outs = exported
    hf = tmp_path / "hf"
    hf.mkdir()
    (hf / "kron_export.json").write_text(json.dumps({"export_format_version": 1, "format": "hf"}))
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "kron_export.json").write_text((outs["kronecker-onnx-fp32"] / "kron_export.json").read_text())
    (broken / "model.onnx").write_bytes(b"not an onnx graph")
    empty = tmp_path / "empty"
    empty.mkdir()
    for folder, needle in ((empty, "is not an ONNX export"), (tmp_path / "missing", "no such folder"),
                           (hf, "--format hf export, not ONNX"), (broken, "model.onnx")):
        res = speed(ws, "--model", "mrpc", "--batch", "1", *FAST, "--device", "cpu",
                    "--onnx", outs["kronecker-onnx-fp32"], "--onnx", folder)
        assert res.exit_code == 2, res.output
        lines = [ln for ln in res.output.splitlines() if ln.strip()]
        assert len(lines) == 1 and lines[0].startswith("error: --onnx"), res.output
        assert str(folder) in lines[0] and needle in lines[0] and "kron export --format onnx" in lines[0]
