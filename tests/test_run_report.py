"""Recipes, kron run (end to end, killed and resumed), kron report in every format, plots, the lock."""

import json
import os
import signal
import subprocess
import sys
from io import StringIO
from pathlib import Path

import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from kroncli.cli import app
from kroncli.errors import KronError
from kroncli.recipes import load_recipe
from kroncli.workspace import Workspace

from conftest import glue_dir, require_glue

runner = CliRunner()


def write_recipe(path: Path, **sections) -> Path:
    path.write_text(yaml.safe_dump(sections))
    return path


def test_recipe_defaults_file_and_override_precedence(tmp_path):
    r = load_recipe(write_recipe(tmp_path / "r.yaml", teacher="x", distill={"max_steps": 50, "lr": "1e-3"}),
                    ["distill.max_steps=7", "finetune.tasks=[mrpc, stsb]"])
    assert r.teacher == "x"
    assert r.distill.max_steps == 7  # command line beats the file
    assert r.distill.lr == pytest.approx(1e-3)  # file beats the default (and "1e-3" is read as a number)
    assert r.distill.batch_size == 32  # default
    assert r.finetune.tasks == ["mrpc", "stsb"]


@pytest.mark.parametrize("content,needle", [
    ({"distill": {"max_stepz": 3}}, "unknown recipe key distill.max_stepz"),
    ({"teacherz": "x"}, "unknown recipe key teacherz"),
    ({"distill": {"batch_size": "big"}}, "distill.batch_size: expected int"),
    ({"finetune": {"lr_per_task": [1, 2]}}, "finetune.lr_per_task: expected a mapping"),
])
def test_recipe_errors_name_the_key(tmp_path, content, needle):
    with pytest.raises(KronError, match=needle.replace(".", r"\.")):
        load_recipe(write_recipe(tmp_path / "r.yaml", **content))


def test_per_task_values_match_any_spelling_of_the_task():
    from kroncli.data.glue import normalize_task as t
    from kroncli.run import per_task

    assert per_task({"sts-b": 5, "cola": 20}, t("stsb"), 0) == 5
    assert per_task({"STSB": 5}, t("sts-b"), 0) == 5
    assert per_task({"cola": 20}, t("mrpc"), 3) == 3


def test_recipe_weights_adjust_each_tasks_defaults_and_skip_logit_kd_on_regression():
    from kroncli.data.glue import normalize_task
    from kroncli.run import recipe_task_weights

    adjust = {"attention_mse": 0.02, "logit_kd": 5.0}
    assert recipe_task_weights(normalize_task("cola"), adjust) == {
        "embedding_mse": 1.0, "attention_mse": 0.02, "hidden_mse": 1.0, "logit_kd": 5.0, "supervised": 1.0}
    assert recipe_task_weights(normalize_task("sts-b"), adjust) == {
        "embedding_mse": 1.0, "attention_mse": 0.02, "hidden_mse": 1.0, "logit_mse": 1.0, "supervised": 1.0}
    assert recipe_task_weights(normalize_task("stsb"), {"logit_mse": 2.0})["logit_mse"] == 2.0


def test_weights_per_task_go_on_top_of_the_recipes_weights():
    from kroncli.data.glue import normalize_task
    from kroncli.run import task_weights

    f = load_recipe(Path(__file__).resolve().parents[1] / "recipes" / "minilm-19x-mrpc.yaml", [
        "finetune.weights={attention_mse: 0.02, logit_kd: 5}",
        "finetune.weights_per_task={STS-B: {logit_mse: 5}, cola: {attention_mse: 0.1}}"]).finetune
    assert task_weights(f, normalize_task("stsb")) == {"embedding_mse": 1.0, "attention_mse": 0.02,
                                                       "hidden_mse": 1.0, "logit_mse": 5.0, "supervised": 1.0}
    assert task_weights(f, normalize_task("mrpc")) == {"embedding_mse": 1.0, "attention_mse": 0.02,
                                                       "hidden_mse": 1.0, "logit_kd": 5.0, "supervised": 1.0}
    cola = task_weights(f, normalize_task("CoLA"))
    assert cola["attention_mse"] == 0.1 and cola["logit_kd"] == 5.0
    f.weights, f.weights_per_task = None, {}
    assert task_weights(f, normalize_task("mrpc")) is None  # the task's own defaults


def test_recipe_that_does_not_parse(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("teacher: [unclosed\n")
    res = runner.invoke(app, ["run", str(bad), "-w", str(tmp_path / "ws")])
    assert res.exit_code == 2 and "does not parse" in res.output


def test_shipped_recipes_parse():
    for f in sorted((Path(__file__).resolve().parents[1] / "recipes").glob("*.yaml")):
        load_recipe(f)


@pytest.mark.parametrize("extra", [[], ["--dry-run"]])
def test_impossible_ratio_fails_before_any_stage(tmp_path, minilm_path, extra):
    rec = write_recipe(tmp_path / "r.yaml", teacher=minilm_path, factorize={"ratio": 5000})
    res = runner.invoke(app, ["run", str(rec), "-w", str(tmp_path / "ws"), *extra])
    assert res.exit_code == 2 and "largest ratio possible" in res.output
    assert not (tmp_path / "ws" / "manifest.json").exists()


def test_missing_model_or_data_fails_before_any_stage(tmp_path):
    rec = write_recipe(tmp_path / "r.yaml", teacher=str(tmp_path / "nope"))
    res = runner.invoke(app, ["run", str(rec), "-w", str(tmp_path / "ws")])
    assert res.exit_code == 2 and "model folder" in res.output and "does not exist" in res.output, res.output
    rec = write_recipe(tmp_path / "r2.yaml", random_init="tiny", data_dir=str(tmp_path / "noglue"),
                       finetune={"tasks": ["mrpc"]})
    res = runner.invoke(app, ["run", str(rec), "-w", str(tmp_path / "ws2")])
    assert res.exit_code == 2 and "MRPC" in res.output
    assert not (tmp_path / "ws2" / "manifest.json").exists()
    rec = write_recipe(tmp_path / "r3.yaml", random_init="tiny", finetune={"tasks": ["mrpc"], "augment": -1})
    res = runner.invoke(app, ["run", str(rec), "-w", str(tmp_path / "ws3")])
    assert res.exit_code == 2 and "--augment -1" in res.output
    assert not (tmp_path / "ws3" / "manifest.json").exists()
    rec = write_recipe(tmp_path / "r5.yaml", random_init="tiny",
                       finetune={"tasks": ["mrpc"], "augment": 2, "augment_mask": 0.9})
    res = runner.invoke(app, ["run", str(rec), "-w", str(tmp_path / "ws5")])
    assert res.exit_code == 2 and "sum to more than 1" in res.output, res.output
    assert not (tmp_path / "ws5" / "manifest.json").exists()
    text = tmp_path / "text.txt"
    text.write_text("some words to distil on\n")
    for i, (section, needle) in enumerate([
            ({"distill": {"corpus": [str(text)], "max_minutes": 0}}, "recipe key distill.max_minutes 0 must be above 0"),
            ({"distill": {"corpus": [str(text)], "mixed_precision": "fp8"}}, "recipe key distill.mixed_precision 'fp8'"),
            ({"finetune": {"tasks": ["mrpc"], "mixed_precision": "half"}}, "recipe key finetune.mixed_precision 'half'"),
            ({"finetune": {"tasks": ["mrpc"], "max_minutes": -1}}, "recipe key finetune.max_minutes -1 must be above 0"),
            ({"distill": {"corpus": [str(text)], "batch_size": 0}}, "recipe key distill.batch_size 0 must be at least 1"),
            ({"finetune": {"tasks": ["mrpc"], "lr_per_task": {"mrpc": -1}}},
             "recipe key finetune.lr_per_task.mrpc -1 must be above 0")]):
        rec = write_recipe(tmp_path / f"t{i}.yaml", random_init="tiny", **section)
        res = runner.invoke(app, ["run", str(rec), "-w", str(tmp_path / f"t{i}")])
        assert res.exit_code == 2 and needle in res.output, res.output
        assert not (tmp_path / f"t{i}" / "manifest.json").exists()
    for i, (per_task, needle) in enumerate([({"colaa": 3}, "finetune.augment_per_task: unknown task 'colaa'"),
                                            ({"cola": -2}, "--augment -2")]):
        rec = write_recipe(tmp_path / f"p{i}.yaml", random_init="tiny",
                           finetune={"tasks": ["mrpc"], "augment_per_task": per_task})
        res = runner.invoke(app, ["run", str(rec), "-w", str(tmp_path / f"p{i}")])
        assert res.exit_code == 2 and needle in res.output, res.output
        assert not (tmp_path / f"p{i}").exists()
    rec = write_recipe(tmp_path / "r4.yaml", random_init="tiny",
                       finetune={"tasks": ["mrpc"], "rehearse": 1, "rehearse_corpus": [str(tmp_path / "none.txt")]})
    res = runner.invoke(app, ["run", str(rec), "-w", str(tmp_path / "ws4")])
    assert res.exit_code == 2 and "none.txt" in res.output
    assert not (tmp_path / "ws4" / "manifest.json").exists()


@pytest.mark.parametrize("section,needle", [
    ({"finetune": {"tasks": ["mrpc"], "weights": {"logit_kdd": 5}}},
     "recipe key finetune.weights: unknown loss name(s) ['logit_kdd']"),
    ({"finetune": {"tasks": ["mrpc"], "weights": {"embedding_mse": 0, "attention_mse": 0, "hidden_mse": 0,
                                                   "logit_kd": 0, "supervised": 0}}},
     "recipe key finetune.weights: all loss weights are zero"),
    ({"finetune": {"tasks": ["mrpc"], "temperature": 0}}, "temperature 0.0 must be > 0"),
    ({"finetune": {"tasks": ["mrpc"], "weights_per_task": {"mrpc": {"hiden_mse": 1}}}},
     "recipe key finetune.weights_per_task.mrpc: unknown loss name(s) ['hiden_mse']"),
    ({"finetune": {"tasks": ["mrpc"], "weights_per_task": {"mrcp": {"hidden_mse": 1}}}},
     "recipe key finetune.weights_per_task: unknown task 'mrcp'"),
    ({"distill": {"weights": {"logit_kd": 1}}}, "recipe key distill.weights: stage 1 has no loss 'logit_kd'"),
    ({"distill": {"weights": {"embedding_mse": 0, "attention_mse": 0, "hidden_mse": 0}}},
     "recipe key distill.weights: all stage-1 loss weights are zero"),
])
def test_bad_loss_weights_fail_before_any_stage(tmp_path, section, needle):
    """A misspelt stage-2 loss used to surface after factorize and stage 1 had run (hours on a real recipe)."""
    text = tmp_path / "text.txt"
    text.write_text("some words to distil on\n")
    section.setdefault("distill", {})["corpus"] = [str(text)]
    rec = write_recipe(tmp_path / "r.yaml", random_init="tiny", data_dir=str(glue_dir()), **section)
    for extra in ([], ["--dry-run"]):
        res = runner.invoke(app, ["run", str(rec), "-w", str(tmp_path / "ws"), *extra])
        assert res.exit_code == 2 and needle in res.output, res.output
        assert not (tmp_path / "ws").exists()


def test_data_dir_option_moves_the_recipes_glue_sentences(tmp_path):
    """`kron run --data-dir D` (issue 5's example): GLUE tasks and the recipe's stage-1 sentences from its own GLUE
    folder both come from D; other corpus files and corpora given with --set stay as they are."""
    old, new = tmp_path / "old_glue", tmp_path / "new_glue"
    for task in ("MRPC", "CoLA"):
        (new / task).mkdir(parents=True)
        (new / task / "train.tsv").write_text("x\n")
    (new / "MRPC" / "dev.tsv").write_text("x\n")
    other = tmp_path / "other.txt"
    other.write_text("other text\n")
    rec = write_recipe(tmp_path / "r.yaml", random_init="tiny", data_dir=str(old), finetune={"tasks": ["mrpc"]},
                       distill={"corpus": [str(other), str(old / "CoLA" / "train.tsv"), f"{old}/MRPC/train.tsv"]})
    res = runner.invoke(app, ["run", str(rec), "-w", str(tmp_path / "ws"), "--until", "distill"])
    assert res.exit_code == 2 and str(old / "CoLA" / "train.tsv") in res.output  # the recipe as written
    assert not (tmp_path / "ws").exists()
    res = runner.invoke(app, ["run", str(rec), "-w", str(tmp_path / "ws"), "--data-dir", str(new),
                              "--until", "distill", "--dry-run", "--json"])
    assert res.exit_code == 0, res.output
    config = json.loads(res.stdout.strip().splitlines()[-1])["config"]
    assert config["data_dir"] == str(new)
    assert config["distill"]["corpus"] == [str(other), str(new / "CoLA" / "train.tsv"), str(new / "MRPC" / "train.tsv")]
    r = load_recipe(rec, [f"data_dir={new}", f"distill.corpus=[{old}/CoLA/train.tsv]"])
    assert r.distill.corpus == [f"{old}/CoLA/train.tsv"]  # a corpus given on the command line is taken as given
    assert load_recipe(rec, ["data_dir=../x", f"data_dir={old}"]).distill.corpus[1] == str(old / "CoLA" / "train.tsv")


def test_plans_that_cannot_run_are_refused_before_any_stage(tmp_path):
    rec = write_recipe(tmp_path / "r.yaml", random_init="tiny", finetune={"tasks": ["mrpc"]},
                       eval={"glue": ["mrpc", "cola"], "speed": False})
    res = runner.invoke(app, ["run", str(rec), "-w", str(tmp_path / "w"), "--dry-run"])
    assert res.exit_code == 2 and "recipe key eval.glue: cola is not among finetune.tasks" in res.output, res.output
    res = runner.invoke(app, ["run", str(rec), "-w", str(tmp_path / "w"), "--until", "factorize", "--only", "factorize"])
    assert res.exit_code == 2 and "ask for two plans" in res.output
    assert not (tmp_path / "w").exists()


def test_only_the_planned_stages_data_is_required(tmp_path):
    """`--until factorize` needs no corpus or GLUE data; the whole plan still fails before any stage without them."""
    rec = write_recipe(tmp_path / "r.yaml", random_init="tiny", data_dir=str(tmp_path / "noglue"),
                       distill={"corpus": [str(tmp_path / "missing.txt")]}, finetune={"tasks": ["mrpc"]},
                       eval={"speed": False})
    res = runner.invoke(app, ["run", str(rec), "-w", str(tmp_path / "full")])
    assert res.exit_code == 2 and "missing.txt" in res.output and not (tmp_path / "full" / "manifest.json").exists()
    res = runner.invoke(app, ["run", str(rec), "-w", str(tmp_path / "distill"), "--until", "distill"])
    assert res.exit_code == 2 and "missing.txt" in res.output  # distill reads the corpus
    res = runner.invoke(app, ["run", str(rec), "-w", str(tmp_path / "f"), "--until", "factorize", "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout.strip().splitlines()[-1])["stages"][0]["stage"] == "factorize"
    assert (tmp_path / "f" / "student" / "kron.json").is_file()
    res = runner.invoke(app, ["run", str(rec), "-w", str(tmp_path / "f"), "--only", "teacher-mrpc"])
    assert res.exit_code == 2 and "data_dir" in res.output and "--data-dir DIR" in res.output  # it needs its data
    rec = write_recipe(tmp_path / "r2.yaml", random_init="tiny", data_dir=str(tmp_path / "noglue"),
                       distill={"corpus": [str(tmp_path / "noglue" / "CoLA" / "train.tsv")]})
    res = runner.invoke(app, ["run", str(rec), "-w", str(tmp_path / "g")])
    assert res.exit_code == 2 and "recipe key distill.corpus" in res.output and "--data-dir DIR" in res.output


def test_dry_run_plans_without_the_teacher_or_the_corpus(tmp_path, monkeypatch):
    """Offline, a teacher that is not cached: the plan still prints every stage with its settings, and marks what
    each stage needs (the teacher, the corpus) instead of failing on the first; the real run fails on it."""
    from kroncli import sources

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(sources, "_hub_cached", lambda name: None)
    monkeypatch.chdir(tmp_path)  # the recipe's corpus/ is not here
    rec = Path(__file__).resolve().parents[1] / "recipes" / "kroneckerbert21.yaml"
    res = runner.invoke(app, ["run", str(rec), "-w", "kb21", "--data-dir", str(tmp_path / "noglue"), "--dry-run",
                              "--json"])
    assert res.exit_code == 0, res.output
    plan = json.loads(res.stdout.strip().splitlines()[-1])
    rows = {r["stage"]: r for r in plan["stages"]}
    assert list(rows)[:2] == ["factorize", "distill"] and {"finetune-rte", "eval-glue", "eval-speed"} <= set(rows)
    assert "cannot download 'bert-base-uncased'" in rows["factorize"]["needs"][0]
    assert rows["factorize"]["settings"] == {"teacher": "bert-base-uncased", "factorize.preset": "kroneckerbert21"}
    assert rows["distill"]["needs"][0] == "the teacher bert-base-uncased (see factorize)"
    assert "corpus" in rows["distill"]["needs"][1] and "does not exist" in rows["distill"]["needs"][1]
    assert rows["distill"]["settings"]["distill.max_seq_len"] == 512
    assert rows["distill"]["settings"]["distill.weights"] == {"mlm": 1.0}
    assert rows["finetune-rte"]["settings"]["finetune.lr (rte)"] == 5e-5  # Table 8
    assert any("noglue is not a directory" in n for n in rows["teacher-mnli"]["needs"])  # the first task's stage
    assert "the GLUE folder (see teacher-mnli)" in rows["finetune-rte"]["needs"]
    assert rows["eval-speed"]["needs"] == [] and not plan["ready"] and not (tmp_path / "kb21").exists()
    assert "not ready" in res.stderr
    res = runner.invoke(app, ["run", str(rec), "-w", "kb21"])
    assert res.exit_code == 2 and "cannot download 'bert-base-uncased'" in res.output
    assert not (tmp_path / "kb21").exists()


def test_dry_run_table_cuts_no_setting(tmp_path, minilm_path):
    """A long setting (MiniLM's targets regex) folds onto further lines instead of ending in "…"."""
    rec = Path(__file__).resolve().parents[1] / "recipes" / "minilm-19x-mrpc.yaml"
    res = runner.invoke(app, ["run", str(rec), "-w", str(tmp_path / "m19"), "--set", f"teacher={minilm_path}",
                              "--dry-run"])
    assert res.exit_code == 0, res.output
    assert "…" not in res.stdout and "embedding_rank=16" in res.stdout


def tiny_recipe(tmp_path, teacher, steps=30):
    require_glue("MRPC/train.tsv", "MRPC/dev.tsv")
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(f"sentence number {i} about a cat and a dog" for i in range(400)))
    return write_recipe(
        tmp_path / "tiny.yaml", teacher=str(teacher), data_dir=str(glue_dir()),
        factorize={"ratio": 5},
        distill={"corpus": [str(corpus)], "max_steps": steps, "batch_size": 8, "max_seq_len": 32, "save_every": 5},
        finetune={"tasks": ["mrpc"], "max_steps": 3, "batch_size": 8, "max_seq_len": 32, "limit": 48},
        eval={"glue": ["mrpc"], "speed_batch": [1], "speed_seq_len": 16, "speed_repeats": 2})


def test_run_end_to_end_then_report(tmp_path, tiny_teacher):
    rec = tiny_recipe(tmp_path, tiny_teacher, steps=6)
    ws = tmp_path / "ws"
    res = runner.invoke(app, ["run", str(rec), "-w", str(ws), "--dry-run", "--json"])
    assert res.exit_code == 0
    plan = json.loads(res.stdout.strip().splitlines()[-1])
    assert [s["stage"] for s in plan["stages"]] == ["factorize", "distill", "teacher-mrpc", "finetune-mrpc",
                                                    "eval-glue", "eval-speed"]
    assert {s["state"] for s in plan["stages"]} == {"pending"}
    # time budgets from the command line: each training stage is timed, and the recipe's step counts cap the plan
    res = runner.invoke(app, ["run", str(rec), "-w", str(ws), "--json", "--set", "distill.max_minutes=10",
                              "--set", "finetune.max_minutes=10"])
    assert res.exit_code == 0, res.output
    manifest = json.loads((ws / "manifest.json").read_text())
    assert set(manifest["stages"]) >= {"factorize", "distill", "teacher-mrpc", "finetune-mrpc", "eval-glue",
                                       "eval-speed"}
    for name, steps in (("distill", 6), ("teacher-mrpc", 3), ("finetune-mrpc", 3)):
        entry = manifest["stages"][name]
        assert entry["seconds_per_step"] > 0 and entry["total_steps"] == entry["steps"] == steps, (name, entry)
    # the majority-class floor, from the whole MRPC training set (the recipe's limit of 48 examples aside), in the
    # manifest (stage 2) and in eval.csv (kron eval glue)
    from kroncli.data.glue import load_split
    from kroncli.metrics import compute_metrics

    train, dev = (load_split("mrpc", split, glue_dir()) for split in ("train", "dev"))
    want = compute_metrics("mrpc", [train.label.value_counts().idxmax()] * len(dev), dev.label)
    assert manifest["stages"]["finetune-mrpc"]["majority"] == pytest.approx(want)
    evals = pd.read_csv(ws / "metrics" / "eval.csv")
    assert evals[evals.model == "majority"].set_index("metric")["value"].to_dict() == pytest.approx(want)
    # a second run skips everything (the time budgets were not what the stages learned)
    res = runner.invoke(app, ["run", str(rec), "-w", str(ws), "--json"])
    assert {s["status"] for s in json.loads(res.stdout.strip().splitlines()[-1])["stages"]} == {"skipped"}
    # a done training stage asked for with other settings stops the run, before any stage; the record stays
    before = (ws / "manifest.json").read_text()
    for setting, needle in (("factorize.ratio=8", "factorize.ratio: 5.0 -> 8.0"),
                            ("teacher=bert-base-uncased", "teacher: "),
                            ("distill.lr=0.05", "distill.lr: 0.0001 -> 0.05"),
                            ("finetune.lr_per_task={mrpc: 0.002}", "finetune.lr (mrpc): 0.0001 -> 0.002")):
        res = runner.invoke(app, ["run", str(rec), "-w", str(ws), "--set", setting])
        assert res.exit_code == 2 and "is done with other settings" in res.output and needle in res.output, res.output
    assert (ws / "manifest.json").read_text() == before
    # an evaluation asked for with other settings runs again
    res = runner.invoke(app, ["run", str(rec), "-w", str(ws), "--json", "--set", "eval.speed_batch=[2]"])
    assert res.exit_code == 0, res.output
    statuses = {s["stage"]: s["status"] for s in json.loads(res.stdout.strip().splitlines()[-1])["stages"]}
    assert statuses.pop("eval-speed") == "done" and set(statuses.values()) == {"skipped"}, statuses
    assert "[eval-speed] settings changed, running again" in res.output and "[distill] done, skipped" in res.output

    # report in every format, parsed back
    for fmt in ("csv", "json", "markdown"):
        res = runner.invoke(app, ["report", str(ws), "--format", fmt])
        assert res.exit_code == 0, res.output
        if fmt == "csv":
            df = pd.read_csv(StringIO(res.stdout))
        elif fmt == "json":
            df = pd.DataFrame(json.loads(res.stdout))
        else:
            lines = [ln for ln in res.stdout.splitlines() if ln.startswith("|")]
            header = [c.strip() for c in lines[0].strip("|").split("|")]
            df = pd.DataFrame([[c.strip() for c in ln.strip("|").split("|")] for ln in lines[2:]], columns=header)
        assert list(df["model"]) == ["student", "teacher"]
        assert "MRPC" in df.columns and "compression" in df.columns and "gain_retention" in df.columns
        assert float(df["compression"].iloc[0]) >= 5
    res = runner.invoke(app, ["report", str(ws), "--plot", str(tmp_path / "plots"), "--paper"])
    assert res.exit_code == 0, res.output
    for name in ("score_vs_compression", "training_curves", "layer_error", "latency_vs_batch"):
        png = tmp_path / "plots" / f"{name}.png"
        assert png.is_file() and png.stat().st_size > 1000 and png.read_bytes()[:4] == b"\x89PNG"


def test_run_on_a_workspace_factorized_by_hand_checks_its_ratio(tmp_path, tiny_teacher):
    rec = tiny_recipe(tmp_path, tiny_teacher)  # ratio 5
    ws = tmp_path / "by-hand"
    assert runner.invoke(app, ["factorize", str(tiny_teacher), "--ratio", "4", "-w", str(ws)]).exit_code == 0
    res = runner.invoke(app, ["run", str(rec), "-w", str(ws)])
    assert res.exit_code == 2 and "factorize.ratio: 4.0 -> 5.0" in res.output, res.output
    # the dry run shows the plan with the difference marked, instead of the error
    res = runner.invoke(app, ["run", str(rec), "-w", str(ws), "--dry-run", "--json"])
    assert res.exit_code == 0, res.output
    plan = json.loads(res.stdout.strip().splitlines()[-1])
    first = plan["stages"][0]
    assert first["stage"] == "factorize" and first["state"] == "done"
    assert first["differs"] == "factorize.ratio: 4.0 -> 5.0"
    assert "a run stops here" in first["needs"][0] and not plan["ready"]
    assert [s["differs"] for s in plan["stages"][1:]] == [None] * (len(plan["stages"]) - 1)
    assert "done (differs)" in res.stderr
    res = runner.invoke(app, ["run", str(rec), "-w", str(ws), "--dry-run", "--json", "--set", "factorize.ratio=4"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout.strip().splitlines()[-1])["stages"][0]["state"] == "done"


def test_a_run_that_failed_in_a_later_stage_still_holds_its_done_stages_to_their_settings(tmp_path, tiny_teacher,
                                                                                          monkeypatch):
    from kroncli import run as run_module

    def broken(*args):
        raise KronError("teacher stage failed")

    rec = tiny_recipe(tmp_path, tiny_teacher, steps=3)
    ws = tmp_path / "ws"
    monkeypatch.setitem(run_module.RUNNERS, "teacher", broken)
    res = runner.invoke(app, ["run", str(rec), "-w", str(ws)])
    assert res.exit_code == 2 and "teacher stage failed" in res.output
    monkeypatch.undo()
    res = runner.invoke(app, ["run", str(rec), "-w", str(ws), "--set", "distill.lr=0.05"])
    assert res.exit_code == 2 and "stage distill" in res.output and "distill.lr" in res.output, res.output


def test_report_shows_missing_pieces_as_empty_cells(tmp_path, tiny_teacher):
    ws = tmp_path / "only-factorized"
    assert runner.invoke(app, ["factorize", str(tiny_teacher), "--ratio", "4", "-w", str(ws)]).exit_code == 0
    res = runner.invoke(app, ["report", str(ws), "--format", "csv"])
    assert res.exit_code == 0
    df = pd.read_csv(StringIO(res.stdout))
    assert len(df) == 1 and df["compression"].iloc[0] >= 4
    res = runner.invoke(app, ["report", str(ws), "--paper"])  # the rich table, piped: no column cut to "…"
    assert res.exit_code == 0 and "…" not in res.stdout
    assert all(name in res.stdout for name in ("workspace", "compression", "teacher_params", "KroneckerBERT21"))
    res = runner.invoke(app, ["report", str(tmp_path / "nothing"), "--format", "csv"])
    assert res.exit_code == 2 and "not a kron workspace" in res.output
    # runs/* over a stray file and a damaged manifest: both skipped with a word, the workspace reported once
    (tmp_path / "stray.txt").write_text("x")
    (tmp_path / "damaged").mkdir()
    (tmp_path / "damaged" / "manifest.json").write_text('{"stages": ')
    res = runner.invoke(app, ["report", str(ws), str(ws) + "/", str(tmp_path / "stray.txt"), str(tmp_path / "damaged"),
                              "--format", "csv", "--paper"])
    assert res.exit_code == 0, res.output
    assert "skipped:" in res.stderr and "stray.txt" in res.stderr and "not valid JSON" in res.stderr
    df = pd.read_csv(StringIO(res.stdout))
    assert list(df.workspace).count("only-factorized") == 1
    assert str(df.params.dtype) == "int64" or df.params.dropna().map(float.is_integer).all()
    assert ".0," not in res.stdout.splitlines()[1]  # parameter counts print as whole numbers beside the paper's rows
    res = runner.invoke(app, ["report", str(ws), "--plot", str(tmp_path / "stray.txt")])
    assert res.exit_code == 2 and "is a file" in res.output and "only-factorized" not in res.stdout


def test_killed_run_resumes_and_finishes(tmp_path, tiny_teacher):
    """SIGKILL in the middle of stage 1, then the same command again finishes with nothing lost. The process kills
    itself right after step 10's checkpoint (KRON_TEST_SIGNAL_AT), so no test polls against the clock."""
    rec = tiny_recipe(tmp_path, tiny_teacher, steps=400)
    ws = tmp_path / "ws"
    cmd = [sys.executable, "-m", "kroncli", "run", str(rec), "-w", str(ws)]
    proc = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=900,  # a hang guard
                          env={**os.environ, "KRON_TEST_SIGNAL_AT": "10:KILL"})
    assert proc.returncode == -signal.SIGKILL
    ckpts = ws / "checkpoints" / "distill"
    assert (ws / ".lock").exists()  # a stale lock: its holder is dead
    steps = sorted(int(p.name.split("_")[1]) for p in ckpts.iterdir() if p.name.startswith("step_"))
    assert steps[-1] == 10
    res = runner.invoke(app, ["run", str(rec), "-w", str(ws), "--dry-run", "--json"])
    states = {s["stage"]: s["state"] for s in json.loads(res.stdout.strip().splitlines()[-1])["stages"]}
    assert states["factorize"] == "done" and states["distill"] == "resume"
    res = runner.invoke(app, ["run", str(rec), "-w", str(ws), "--set", "distill.lr=0.05", "--until", "factorize"])
    assert res.exit_code == 2 and "half done" in res.output and "distill.lr" in res.output, res.output
    res = runner.invoke(app, ["run", str(rec), "-w", str(ws), "--set", "distill.max_steps=" + str(steps[-1] + 5),
                              "--until", "distill", "--json"])
    assert res.exit_code == 0, res.output
    df = pd.read_csv(ws / "metrics" / "distill.csv")
    assert df.step.max() == steps[-1] + 5 and df.step.is_unique


def test_second_process_is_refused_by_the_lock(tmp_path):
    ws = Workspace(tmp_path / "ws")
    with ws.lock():
        other = subprocess.run([sys.executable, "-c", (
            "from kroncli.workspace import Workspace\n"
            f"with Workspace({str(ws.root)!r}).lock(): pass")], capture_output=True, text=True)
        assert other.returncode != 0 and "in use by process" in other.stderr
        assert str(os.getpid()) in other.stderr
    assert not (ws.root / ".lock").exists()
    with ws.lock():  # taken again after release
        pass


def test_report_in_100_columns_cuts_no_number(tmp_path):
    """Two workspaces with a dozen figures each do not fit 100 columns: the table is turned on its side, no cell
    ends in "…" and every number is there in full; a table that fits stays one row per model."""
    import io

    from rich.console import Console

    from kroncli.evaluation.glue_eval import append_eval_rows
    from kroncli.report import build_table, cell, print_table

    paths = []
    for name, params in (("minilm-19x-glue-tour", 1192417), ("minilm-8x-second-workspace", 2841003)):
        ws = Workspace(tmp_path / name)
        ws.root.mkdir()
        ws.record_stage("factorize", {"student_params": params, "compression": 22713216 / params},
                        top={"teacher": {"params": 22713216}})
        append_eval_rows(ws, [{"model": model, "task": task, "split": "dev", "metric": metric, "value": value,
                               "timestamp": "2026-11-27T00:00:00"}
                              for task, metric, values in (("MRPC", "combined", (80.61, 83.17)),
                                                           ("STS-B", "combined", (81.31, 85.12)),
                                                           ("RTE", "accuracy", (55.23, 61.01)),
                                                           ("CoLA", "mcc", (12.47, 30.93)))
                              for model, value in zip(("student", "teacher"), values)])
        pd.DataFrame([{"model": "student", "batch": b, "seq_len": 128, "speedup": sp}
                      for b, sp in ((1, 3.1), (8, 3.35), (32, 2.87))]).to_csv(ws.metrics_dir / "speed.csv", index=False)
        paths.append(str(ws.root))
    df = build_table(paths)
    numbers = {cell(v) for col in df.columns if col not in ("workspace", "model") for v in df[col]} - {""}
    assert len(numbers) >= 20
    for width in (100, 60):
        console = Console(width=width, record=True, file=io.StringIO())
        print_table(df, console)
        text = console.export_text()
        assert "…" not in text and max(map(len, text.splitlines())) <= width
        assert all(n in text for n in numbers), sorted(n for n in numbers if n not in text)
    console = Console(width=1000, record=True, file=io.StringIO())
    print_table(df, console)
    header = console.export_text().splitlines()[2]
    assert "workspace" in header and "params" in header and "MRPC" in header  # wide enough: a row per model


def test_run_ends_with_the_scores_table(tmp_path, tiny_teacher, monkeypatch):
    """A plan with an evaluation ends with the workspace's report table (and its records in the JSON)."""
    from kroncli import run as run_module
    from kroncli.evaluation.glue_eval import append_eval_rows

    def stage(recipe, ws, st, *args):
        if st.kind == "factorize":
            ws.record_stage("factorize", {"student_params": 1192417, "compression": 19.05},
                            top={"teacher": {"params": 22713216}})
        if st.kind == "eval-glue":
            append_eval_rows(ws, [{"model": model, "task": "MRPC", "split": "dev", "metric": "combined",
                                   "value": value, "timestamp": "2026-11-27T00:00:00"}
                                  for model, value in (("student", 80.61), ("teacher", 83.17))])
        return {}

    for kind in list(run_module.RUNNERS):
        monkeypatch.setitem(run_module.RUNNERS, kind, stage)
    rec, ws = tiny_recipe(tmp_path, tiny_teacher), tmp_path / "ws"
    res = runner.invoke(app, ["run", str(rec), "-w", str(ws)])
    assert res.exit_code == 0, res.output
    assert "kron report" in res.stdout and "80.61" in res.stdout and "83.17" in res.stdout and "1192417" in res.stdout
    res = runner.invoke(app, ["run", str(rec), "-w", str(ws), "--json"])
    report = json.loads(res.stdout.strip().splitlines()[-1])["report"]
    assert [(r["model"], r["MRPC"]) for r in report] == [("student", 80.61), ("teacher", 83.17)]
    res = runner.invoke(app, ["run", str(rec), "-w", str(ws), "--until", "distill", "--json"])  # no eval: no table
    assert "report" not in json.loads(res.stdout.strip().splitlines()[-1]) and "kron report" not in res.output


def test_report_falls_back_to_the_scores_stage_2_logged(tmp_path):
    """A task trained but never run through `kron eval glue` still shows its end-of-training dev score."""
    from kroncli.report import build_table
    from kroncli.workspace import Workspace

    ws = Workspace(tmp_path / "w")
    ws.root.mkdir()
    ws.record_stage("factorize", {"student_params": 1000, "compression": 20.0}, top={"teacher": {"params": 20000}})
    floor = {"accuracy": 68.0, "f1": 72.0, "combined": 70.0}
    ws.record_stage("teacher-mrpc", {"task": "MRPC", "eval": {"accuracy": 80.0, "f1": 86.0, "combined": 83.0},
                                     "majority": floor})
    ws.record_stage("finetune-mrpc", {"task": "MRPC", "eval": {"accuracy": 70.0, "f1": 78.0, "combined": 74.0},
                                      "majority": floor})
    ws.record_stage("finetune-cola", {"task": "CoLA", "eval": {"mcc": 12.5}, "majority": {"mcc": 0.0}})
    df = build_table([str(ws.root)]).set_index("model")
    assert df.loc["student", "MRPC"] == 74.0 and df.loc["teacher", "MRPC"] == 83.0
    assert df.loc["student", "CoLA"] == 12.5 and pd.isna(df.loc["teacher", "CoLA"])
    assert df.loc["student", "retention"] == pytest.approx(74.0 / 83.0)
    # CoLA has no teacher score, so only MRPC counts: (74 - 70) / (83 - 70)
    assert df.loc["student", "gain_retention"] == pytest.approx(4.0 / 13.0)


def test_report_shows_the_scores_on_dev_examples_the_start_never_saw(tmp_path):
    """MRPC's student started from STS-B's: the report adds both models' scores on the dev pairs outside STS-B's
    training set (`eval_unseen`) as a column of their own, out of the averages."""
    from kroncli.report import build_table, render
    from kroncli.workspace import Workspace

    ws = Workspace(tmp_path / "w")
    ws.root.mkdir()
    ws.record_stage("factorize", {"student_params": 1000, "compression": 20.0}, top={"teacher": {"params": 20000}})
    ws.record_stage("teacher-mrpc", {"task": "MRPC", "eval": {"accuracy": 80.0, "f1": 86.0, "combined": 83.0}})
    ws.record_stage("finetune-mrpc", {"task": "MRPC", "eval": {"accuracy": 76.0, "f1": 84.0, "combined": 80.0},
                                      "init_from": "STS-B",
                                      "eval_unseen": {"student": {"accuracy": 75.0, "combined": 79.0, "n": 360},
                                                      "teacher": {"accuracy": 81.0, "combined": 84.5, "n": 360},
                                                      "excluded": {"dev": 48}, "seen_in": "STS-B"}})
    df = build_table([str(ws.root)]).set_index("model")
    assert df.loc["student", "MRPC unseen"] == 79.0 and df.loc["teacher", "MRPC unseen"] == 84.5
    assert df.loc["student", "glue_avg"] == 80.0 and df.loc["student", "retention"] == pytest.approx(80.0 / 83.0)
    assert "MRPC unseen" in render(df.reset_index(), "markdown").splitlines()[0]


def test_report_gain_over_the_majority_floor_from_eval_rows(tmp_path):
    """`kron eval glue`'s rows (model "majority" beside student and teacher): the share of the teacher's gain over
    the floor the student keeps, averaged over the tasks all three were scored on; a teacher at or below the floor
    leaves the cell empty."""
    from kroncli.evaluation.glue_eval import append_eval_rows
    from kroncli.report import build_table
    from kroncli.workspace import Workspace

    ws = Workspace(tmp_path / "w")
    ws.root.mkdir()
    ws.record_stage("factorize", {"student_params": 1000, "compression": 20.0}, top={"teacher": {"params": 20000}})
    scores = {("STS-B", "combined"): {"student": 80.0, "teacher": 85.0, "majority": 0.0},
              ("CoLA", "mcc"): {"student": 15.0, "teacher": 30.0, "majority": 0.0},
              ("RTE", "accuracy"): {"student": 55.0, "majority": 52.7}}
    append_eval_rows(ws, [{"model": model, "task": task, "split": "dev", "metric": metric, "value": value,
                           "timestamp": "2026-11-27T00:00:00"}
                          for (task, metric), by_model in scores.items() for model, value in by_model.items()])
    df = build_table([str(ws.root)]).set_index("model")
    assert df.loc["student", "gain_retention"] == pytest.approx((95.0 / 2) / (115.0 / 2))
    assert df.loc["student", "retention"] == pytest.approx(95.0 / 115.0)
    assert "majority" not in df.index
    append_eval_rows(ws, [{"model": "majority", "task": "STS-B", "split": "dev", "metric": "combined", "value": 90.0,
                           "timestamp": "2026-11-27T00:00:01"},
                          {"model": "majority", "task": "CoLA", "split": "dev", "metric": "mcc", "value": 40.0,
                           "timestamp": "2026-11-27T00:00:01"}])
    assert pd.isna(build_table([str(ws.root)]).set_index("model").loc["student", "gain_retention"])


@pytest.mark.parametrize("init_from, needle", [({"mrpc": "mrpc"}, "cannot start from its own student"),
                                               ({"mrpc": "cola"}, "COLA is not among the stages this run trains"),
                                               ({"mrpc": "wnli", "wnli": "mrpc"}, "MRPC -> WNLI -> MRPC is a cycle"),
                                               ({"mrpc": "sst3"}, "recipe key finetune.init_from.mrpc")])
def test_init_from_that_cannot_run_is_refused_before_any_stage(tmp_path, init_from, needle):
    rec = write_recipe(tmp_path / "r.yaml", random_init="tiny", finetune={"tasks": ["mrpc", "wnli"],
                                                                          "init_from": init_from},
                       eval={"speed": False})
    res = runner.invoke(app, ["run", str(rec), "-w", str(tmp_path / "w"), "--dry-run"])
    assert res.exit_code == 2 and needle.lower() in res.output.lower() and "Traceback" not in res.output, res.output


@pytest.mark.parametrize("extra, needle", [({"mrpc": ["cola"]}, "finetune.unlabelled_from.mrpc: --unlabelled-from "
                                                              "cola: CoLA has single sentences"),
                                           ({"mrpc": ["mrpc"]}, "is the task being trained"),
                                           ({"mrpc": ["sst3"]}, "recipe key finetune.unlabelled_from"),
                                           ({"sst3": ["mrpc"]}, "recipe key finetune.unlabelled_from"),
                                           ({"mrpc": ["rte"]}, "no RTE train data")])
def test_unlabelled_from_that_cannot_run_is_refused_before_any_stage(tmp_path, extra, needle):
    rec = write_recipe(tmp_path / "r.yaml", random_init="tiny", data_dir=str(glue_dir()),
                       finetune={"tasks": ["mrpc"], "unlabelled_from": extra}, eval={"speed": False})
    res = runner.invoke(app, ["run", str(rec), "-w", str(tmp_path / "w")])
    assert res.exit_code == 2 and needle.lower() in res.output.lower() and "Traceback" not in res.output, res.output
    assert not (tmp_path / "w" / "manifest.json").exists()


def test_init_from_runs_the_source_task_first_and_is_a_recorded_setting(tmp_path, tiny_teacher):
    """Also `unlabelled_from`: MRPC's student trains on WNLI's inputs too, recorded and compared like the others."""
    rec = tiny_recipe(tmp_path, tiny_teacher, steps=3)
    recipe = yaml.safe_load(rec.read_text())
    recipe["finetune"].update(tasks=["mrpc", "wnli"], init_from={"MRPC": "wnli"}, unlabelled_from={"mrpc": ["wnli"]})
    recipe["eval"] = {"glue": [], "speed": False}
    write_recipe(rec, **recipe)
    ws = tmp_path / "ws"
    res = runner.invoke(app, ["run", str(rec), "-w", str(ws), "--dry-run", "--json"])
    assert res.exit_code == 0, res.output
    order = [s["stage"] for s in json.loads(res.stdout.strip().splitlines()[-1])["stages"]]
    assert order == ["factorize", "distill", "teacher-wnli", "finetune-wnli", "teacher-mrpc", "finetune-mrpc"]
    res = runner.invoke(app, ["run", str(rec), "-w", str(ws), "--json"])
    assert res.exit_code == 0, res.output
    stages = json.loads((ws / "manifest.json").read_text())["stages"]
    assert stages["finetune-mrpc"]["init_from"] == "WNLI" and "init_from" not in stages["finetune-wnli"]
    assert stages["finetune-mrpc"]["unlabelled_from"] == ["WNLI"] and stages["finetune-mrpc"]["unlabelled_examples"] > 0
    assert "unlabelled_from" not in stages["finetune-wnli"]
    res = runner.invoke(app, ["run", str(rec), "-w", str(ws), "--set", "finetune.init_from={}"])
    assert res.exit_code == 2 and "finetune.init_from (mrpc): 'WNLI' -> None" in res.output, res.output
    res = runner.invoke(app, ["run", str(rec), "-w", str(ws), "--set", "finetune.unlabelled_from={}"])
    assert res.exit_code == 2 and "finetune.unlabelled_from (mrpc): ['WNLI'] -> None" in res.output, res.output
