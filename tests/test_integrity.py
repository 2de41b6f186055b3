"""Data lost or damaged (issue 25, points 1-4): whole metrics rows, reads before writes, interrupted folder swaps,
and damaged workspace files as one line naming the file and the way back."""

import json
import os
import shutil
import subprocess
import sys
from io import StringIO
from pathlib import Path

import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from kroncli.cli import app

from conftest import glue_dir, one_line_error, tiny_config

runner = CliRunner()


def require_glue(*files: str) -> Path:
    """The GLUE folder (KRON_GLUE_DIR), which must hold `files`."""
    root = glue_dir()
    assert all((root / f).is_file() for f in files), f"GLUE files {files} not in {root} (set KRON_GLUE_DIR)"
    return root


def truncate(path, keep: float = 0.5) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


def error_line(res, *needles) -> str:
    """A failure with exit 2 whose output ends in its one `error:` line (progress lines may come before it)."""
    lines = [line for line in res.output.splitlines() if line.strip()]
    assert res.exit_code == 2 and "Traceback" not in res.output, res.output
    assert [line for line in lines if line.startswith("error:")] == lines[-1:], res.output
    for needle in needles:
        assert needle in lines[-1], lines[-1]
    return lines[-1]


def dead_pid() -> int:
    """The PID of a process that has ended (a killed kron's, as far as its leftovers can tell)."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


@pytest.fixture
def task_ws(kron_task_ws, tmp_path):
    """A writable copy of the tiny MRPC workspace (task student and teacher), with a manifest."""
    ws = tmp_path / "ws"
    shutil.copytree(kron_task_ws, ws)
    (ws / "manifest.json").write_text(json.dumps({"stages": {}}))
    return ws


def eval_glue(ws, *extra):
    return runner.invoke(app, ["eval", "glue", "-w", str(ws), "--task", "mrpc", "--data-dir",
                               str(require_glue("MRPC/dev.tsv")), *extra])


# --------------------------------------------------------------------------------------------- metrics CSVs

EVAL_HEADER = "workspace,model,task,split,metric,value,n,seconds,timestamp\n"
EVAL_ROW = "ws,student,MRPC,dev,combined,70.0,408,1.0,2024-01-01T00:00:00+00:00\n"


def test_a_torn_last_row_is_cut_before_the_next_append(task_ws):
    csv = task_ws / "metrics" / "eval.csv"
    csv.parent.mkdir()
    csv.write_text(EVAL_HEADER + EVAL_ROW + EVAL_ROW[:30])  # a full disk stopped the last append mid-row
    res = eval_glue(task_ws, "--model", "student")
    assert res.exit_code == 0, res.output
    assert "warning:" in res.stderr and "cut short" in res.stderr and str(csv) in res.stderr
    rows = pd.read_csv(csv)  # every row whole: the new ones did not join the torn one
    assert list(rows.columns) == EVAL_HEADER.strip().split(",")
    assert rows.iloc[0]["value"] == 70.0 and len(rows) > 2 and set(rows.model) == {"student", "majority"}
    assert rows["timestamp"].notna().all() and rows["value"].notna().all()
    again = eval_glue(task_ws, "--model", "student")
    assert again.exit_code == 0 and "warning" not in again.stderr, again.output


def test_a_damaged_metrics_csv_is_one_line_naming_it(task_ws):
    csv = task_ws / "metrics" / "eval.csv"
    csv.parent.mkdir()
    csv.write_text(EVAL_HEADER + EVAL_ROW + EVAL_ROW.strip() + ",extra,fields\n" + EVAL_ROW)
    line = one_line_error(eval_glue(task_ws), str(csv), "is damaged", "mv ")
    assert "Expected 9 fields" in line
    # kron report warns and reads the rows it can
    res = runner.invoke(app, ["report", str(task_ws), "--format", "csv"])
    assert res.exit_code == 0, res.output
    assert "warning:" in res.stderr and "1 row(s)" in res.stderr
    assert float(pd.read_csv(StringIO(res.stdout))["MRPC"].iloc[0]) == 70.0


def test_a_failed_append_leaves_whole_rows(tmp_path, monkeypatch):
    import errno

    from kroncli import metrics_csv

    csv = tmp_path / "log.csv"
    metrics_csv.append(csv, [{"step": 1, "loss": 0.5}])
    before = csv.read_bytes()
    real = os.write

    def full_disk(fd, data):  # half the row fits, then the disk is full
        if len(data) > 4:
            return real(fd, bytes(data[: len(data) // 2]))
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "write", full_disk)
    with pytest.raises(OSError):
        metrics_csv.append(csv, [{"step": 2, "loss": 0.25}])
    assert csv.read_bytes() == before


def test_an_eval_stage_run_again_replaces_the_rows_of_its_interrupted_run(task_ws, monkeypatch):
    from kroncli import run
    from kroncli.evaluation import glue_eval
    from kroncli.recipes import load_recipe
    from kroncli.workspace import Workspace

    recipe_file = task_ws.parent / "r.yaml"
    recipe_file.write_text(f"teacher: x\ndata_dir: {require_glue('MRPC/dev.tsv')}\neval:\n  glue: [mrpc]\n")
    recipe, stage = load_recipe(recipe_file), run.Stage("eval-glue", "eval-glue")
    real, calls = glue_eval.append_eval_rows, []

    def killed_after_the_first_rows(ws, rows):
        calls.append(len(rows))
        path = real(ws, rows)
        if len(calls) == 1:
            raise KeyboardInterrupt  # the run is stopped with the student's rows written
        return path

    monkeypatch.setattr(glue_eval, "append_eval_rows", killed_after_the_first_rows)
    with pytest.raises(KeyboardInterrupt):
        run.execute(recipe, Workspace(task_ws), [stage], False, print, [])
    first = pd.read_csv(task_ws / "metrics" / "eval.csv")
    assert len(first) == calls[0] and set(first.model) == {"student"}
    logged = []
    run.execute(recipe, Workspace(task_ws), [stage], False, logged.append, [])
    rows = pd.read_csv(task_ws / "metrics" / "eval.csv")
    assert not rows.duplicated(["model", "task", "split", "metric"]).any(), rows
    assert {"student", "teacher", "majority"} <= set(rows.model)
    assert any("interrupted run" in line for line in logged)
    assert json.loads((task_ws / "manifest.json").read_text())["stages"]["eval-glue"]["done"]


# ------------------------------------------------------------------------------- a tiny factorized workspace


@pytest.fixture(scope="module")
def distilled(tmp_path_factory, tiny_teacher):
    """kron factorize, then 4 distillation steps with checkpoints at 2 and 4; copy it before writing into it."""
    ws = tmp_path_factory.mktemp("distilled") / "ws"
    corpus = ws.parent / "corpus.txt"
    corpus.write_text("\n".join(f"sentence number {i} about a cat and a dog" for i in range(200)) + "\n")
    assert runner.invoke(app, ["factorize", str(tiny_teacher), "--ratio", "5", "-w", str(ws)]).exit_code == 0
    res = distill(ws, "--max-steps", "4")
    assert res.exit_code == 0, res.output
    return ws


def distill(ws, *extra):
    return runner.invoke(app, ["distill", "-w", str(ws), "--corpus", str(ws.parent / "corpus.txt"), "--batch-size", "8",
                               "--max-seq-len", "32", "--save-every", "2", "--log-every", "1", *extra])


@pytest.fixture
def ws(distilled, tmp_path):
    copy = tmp_path / "ws"
    shutil.copytree(distilled, copy)
    shutil.copy(distilled.parent / "corpus.txt", tmp_path / "corpus.txt")
    return copy


def test_resume_falls_back_to_the_newest_intact_checkpoint(ws):
    ckpts = ws / "checkpoints" / "distill"
    truncate(ckpts / "step_4" / "model.safetensors")
    res = distill(ws, "--max-steps", "4", "--resume")
    assert res.exit_code == 0, res.output
    assert "step_4 is damaged" in res.stderr and f"resuming from {ckpts / 'step_2'} instead" in res.stderr
    assert sorted(p.name for p in ckpts.iterdir()) == ["step_2", "step_4"]  # step 4 trained and saved anew
    from kroncli.train import checkpoint_problem

    assert checkpoint_problem(ckpts / "step_4") is None
    assert list(pd.read_csv(ws / "metrics" / "distill.csv").step) == [1, 2, 3, 4]


def test_a_damaged_corpus_cache_is_made_anew(ws):
    before = set((ws / "cache").glob("corpus-*.pt"))
    assert distill(ws, "--max-steps", "4", "--resume").exit_code == 0  # nothing to train; this corpus path cached
    cache, = set((ws / "cache").glob("corpus-*.pt")) - before
    truncate(cache)
    res = distill(ws, "--max-steps", "4", "--resume")
    assert res.exit_code == 0, res.output
    assert f"warning: {cache} is damaged" in res.stderr and "tokenising the corpus again" in res.stderr
    assert torch.load(cache).shape[1] == 32


@pytest.mark.parametrize("damage, needles", [
    (lambda c: truncate(c / "step_4" / "meta.json"), ["step_4", "meta.json: not valid JSON", "--restart"]),
    (lambda c: truncate(c / "step_4" / "optimizer.bin"), ["step_4", "optimizer.bin", "--restart"]),
    (lambda c: (c / "step_4" / "custom_checkpoint_0.pkl").unlink(), ["custom_checkpoint_0.pkl is missing"]),
])
def test_a_damaged_only_checkpoint_is_one_line(ws, damage, needles):
    ckpts = ws / "checkpoints" / "distill"
    shutil.rmtree(ckpts / "step_2")
    damage(ckpts)
    error_line(distill(ws, "--max-steps", "6", "--resume"), *needles)


@pytest.mark.parametrize("error", ["unexpected pos", "safetensors"])
def test_a_checkpoint_save_on_a_full_disk_removes_its_partial_folder(ws, monkeypatch, error):
    from accelerate import Accelerator
    from safetensors import SafetensorError

    def full_disk(self, output_dir=None, **kw):
        Path(output_dir).mkdir(parents=True, exist_ok=True)
        (Path(output_dir) / "model.safetensors").write_bytes(b"\0" * 1000)  # what was written before it filled
        if error == "unexpected pos":
            raise RuntimeError("[enforce fail at inline_container.cc:664] . unexpected pos 4416 vs 4304")
        raise SafetensorError("Error while serializing: IoError(Os { code: 28, kind: StorageFull })")

    monkeypatch.setattr(Accelerator, "save_state", full_disk)
    line = error_line(distill(ws, "--max-steps", "2", "--restart"), "could not write checkpoint at step 2")
    assert ("unexpected pos" in line) if error == "unexpected pos" else ("StorageFull" in line)
    assert [p.name for p in (ws / "checkpoints" / "distill").iterdir()] == []


def test_a_truncated_manifest_stops_finetune_before_it_writes(ws, tiny_teacher):
    from transformers import AutoTokenizer, BertForSequenceClassification

    glue = require_glue("MRPC/train.tsv", "MRPC/dev.tsv")
    teacher = ws / "tasks" / "mrpc" / "teacher"
    BertForSequenceClassification(tiny_config(vocab_size=30522, num_labels=2)).save_pretrained(teacher)
    AutoTokenizer.from_pretrained(tiny_teacher).save_pretrained(teacher)
    student = ws / "tasks" / "mrpc" / "student"
    shutil.copytree(ws / "student", student)
    before = {p.name: p.read_bytes() for p in student.iterdir()}
    truncate(ws / "manifest.json")
    res = runner.invoke(app, ["finetune", "-w", str(ws), "--task", "mrpc", "--data-dir", str(glue), "--limit", "16",
                              "--max-steps", "1", "--batch-size", "8", "--max-seq-len", "32"])
    one_line_error(res, str(ws / "manifest.json"), "is damaged")
    assert {p.name: p.read_bytes() for p in student.iterdir()} == before
    assert not (ws / "checkpoints" / "finetune-mrpc").exists() and not (ws / "metrics" / "finetune-mrpc.csv").exists()


# ------------------------------------------------------------------------------------- interrupted swaps


def test_a_swap_killed_between_its_renames_is_finished_on_the_next_open(task_ws, capsys):
    from kroncli import load_student

    folder, pid = task_ws / "tasks" / "mrpc", dead_pid()
    new = folder / f".student.{pid}.abcd1234.tmp"
    shutil.copytree(folder / "student", new)
    (new / "kron.json").write_text((new / "kron.json").read_text().replace('"MRPC"', '"MRPC" '))  # the new one
    (folder / "student").rename(folder / f".student.old-{pid}")
    live = task_ws / "metrics" / f".eval.csv.{os.getpid()}.x1y2z3w4.tmp"  # a running process's
    orphan = task_ws / "metrics" / f".eval.csv.{pid}.q1w2e3r4.tmp"
    live.parent.mkdir()
    live.write_text("x")
    orphan.write_text("x")
    model = load_student(folder / "student")
    assert model is not None and '"MRPC" ' in (folder / "student" / "kron.json").read_text()
    assert sorted(p.name for p in folder.iterdir()) == ["student", "teacher"]
    err = capsys.readouterr().err
    assert "warning:" in err and str(folder / "student") in err and f"process {pid}" in err
    from kroncli.workspace import Workspace

    Workspace(task_ws)
    assert live.exists() and not orphan.exists()


def test_a_swap_without_its_new_folder_is_rolled_back(task_ws, capsys):
    from kroncli.workspace import Workspace

    pid = dead_pid()
    (task_ws / "tasks" / "mrpc" / "student").rename(task_ws / "tasks" / "mrpc" / f".student.old-{pid}")
    (task_ws / "tasks" / "mrpc" / f".student.{pid}.abcd1234.tmp").mkdir()  # a save killed while it wrote
    (task_ws / "tasks" / "mrpc" / f".student.{pid}.efgh5678.tmp").mkdir()
    Workspace(task_ws)
    assert sorted(p.name for p in (task_ws / "tasks" / "mrpc").iterdir()) == ["student", "teacher"]
    assert (task_ws / "tasks" / "mrpc" / "student" / "model.safetensors").is_file()
    assert "put the previous one back" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------ damaged files


@pytest.mark.parametrize("name, needles", [
    ("model.safetensors", ["tasks/mrpc/student/model.safetensors is damaged (incomplete metadata",
                           "kron finetune --workspace"]),
    ("kron.json", ["tasks/mrpc/student/kron.json is damaged (not valid JSON", "--task mrpc"]),
    ("config.json", ["tasks/mrpc/student/config.json is damaged (not valid JSON"]),
])
def test_a_damaged_task_student_is_one_line_naming_it(task_ws, tmp_path, name, needles):
    truncate(task_ws / "tasks" / "mrpc" / "student" / name)
    one_line_error(eval_glue(task_ws, "--model", "student"), *needles)
    one_line_error(runner.invoke(app, ["export", "-w", str(task_ws), "--task", "mrpc", "--format", "hf", "--out",
                                       str(tmp_path / "out")]), needles[0])
    assert not (tmp_path / "out").exists()


def test_a_damaged_teacher_is_one_line_naming_it(task_ws):
    truncate(task_ws / "tasks" / "mrpc" / "teacher" / "model.safetensors")
    one_line_error(eval_glue(task_ws, "--model", "teacher"), "tasks/mrpc/teacher/model.safetensors is damaged",
                   "--teacher-only")


def test_a_damaged_general_student_names_the_factorize_that_made_it(ws):
    truncate(ws / "student" / "model.safetensors")
    for res in (distill(ws, "--max-steps", "6", "--resume"),
                runner.invoke(app, ["eval", "speed", "-w", str(ws), "--batch", "1", "--repeats", "1"])):
        line = one_line_error(res, "student/model.safetensors is damaged", "kron factorize")
        assert str(ws) in line and line.endswith("--force (its distillation is lost)")
    truncate(ws / "student" / "kron.json")
    one_line_error(distill(ws, "--max-steps", "6", "--resume"), "student/kron.json is damaged")


def test_a_damaged_model_folder_given_as_teacher_is_one_line(tiny_teacher, tmp_path):
    broken = tmp_path / "teacher"
    shutil.copytree(tiny_teacher, broken)
    truncate(broken / "model.safetensors")
    one_line_error(runner.invoke(app, ["factorize", str(broken), "--ratio", "5", "-w", str(tmp_path / "ws")]),
                   f"{broken / 'model.safetensors'} is damaged", "intact copy")
    assert not (tmp_path / "ws").exists()
