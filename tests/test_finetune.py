"""kron finetune: teacher fine-tuning and stage-2 distillation on a slice of the real MRPC files."""

import json
import math
import shutil

import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

import kroncli
from kroncli.cli import app

from conftest import glue_dir, require_glue

runner = CliRunner()

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def factorized(tmp_path_factory, minilm_path):
    """MiniLM compressed 19x, nothing trained yet; tests train in `ws` or in a copy of their own (`bare`)."""
    require_glue("MRPC/train.tsv", "MRPC/dev.tsv", "WNLI/train.tsv", "STS-B/train.tsv")
    path = tmp_path_factory.mktemp("ft") / "m19"
    res = runner.invoke(app, ["factorize", minilm_path, "--ratio", "19", "-w", str(path)])
    assert res.exit_code == 0, res.output
    return path


@pytest.fixture(scope="module")
def ws(factorized, tmp_path_factory):
    """The workspace this module's tests train in, shared to save time: a test makes what it needs there when it is
    missing (with_teacher, with_wnli_student), so each runs alone or in any order."""
    path = tmp_path_factory.mktemp("ft-shared") / "m19"
    shutil.copytree(factorized, path)
    return path


@pytest.fixture
def bare(factorized, tmp_path):
    """A copy of the factorized workspace of this test's own: no teacher, no task student, whatever ran before."""
    shutil.copytree(factorized, tmp_path / "m19")
    return tmp_path / "m19"


def finetune(ws, *extra):
    return runner.invoke(app, ["finetune", "-w", str(ws), "--task", "MRPC", "--data-dir", str(glue_dir()),
                               "--limit", "96", "--batch-size", "16", "--max-seq-len", "64", "--log-every", "1",
                               "--json", *extra])


def with_teacher(ws) -> None:
    """MRPC's fine-tuned teacher in ws, trained briefly unless an earlier test left one."""
    teacher = ws / "tasks" / "mrpc" / "teacher"
    if not (teacher / "config.json").is_file():
        assert finetune(ws, "--teacher-only", "--max-steps", "2").exit_code == 0


def with_wnli_student(ws) -> None:
    """WNLI's teacher and distilled student in ws (the source of --init-from wnli), unless an earlier test left them."""
    if (ws / "tasks" / "wnli" / "student" / "config.json").is_file():
        return
    wnli = ["finetune", "-w", str(ws), "--task", "wnli", "--data-dir", str(glue_dir()), "--limit", "32",
            "--batch-size", "16", "--max-seq-len", "64", "--max-steps", "2", "--json", "--restart"]
    assert runner.invoke(app, wnli + ["--teacher-only"]).exit_code == 0
    res = runner.invoke(app, wnli + ["--lr", "5e-3"])
    assert res.exit_code == 0, res.output


def test_student_before_teacher_is_refused(bare):
    res = finetune(bare, "--max-steps", "2")
    assert res.exit_code == 2 and "--teacher-only" in res.output


def test_teacher_then_student_end_to_end(ws):
    res = finetune(ws, "--teacher-only", "--max-steps", "6", "--restart")  # --restart: another test may have trained
    assert res.exit_code == 0, res.output
    teacher = json.loads(res.stdout.strip().splitlines()[-1])
    assert teacher["model"] == "teacher" and teacher["eval"]["n"] == 408
    assert (ws / "tasks" / "mrpc" / "teacher" / "config.json").is_file()

    res = finetune(ws, "--max-steps", "6", "--lr", "5e-4", "--restart")
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert out["steps"] == 6 and out["eval"]["n"] == 408
    assert {"f1", "accuracy", "combined"} <= set(out["eval"])
    df = pd.read_csv(ws / "metrics" / "finetune-mrpc.csv")
    for col in ("embedding_mse", "attention_mse", "hidden_mse", "logit_kd", "supervised", "total"):
        assert col in df and df[col].notna().any()
    assert df.total.dropna().iloc[-1] < df.total.dropna().iloc[0]
    assert "eval_accuracy" in df

    # the task student reloads with its head and gives the logged dev score
    student = kroncli.load_student(ws / "tasks" / "mrpc" / "student")
    assert type(student).__name__ == "BertForSequenceClassification"
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(ws / "tasks" / "mrpc" / "student")
    batch = tok(["The cat sat."], ["A cat was sitting."], return_tensors="pt")
    with torch.no_grad():
        assert student(**batch).logits.shape == (1, 2)
    manifest = json.loads((ws / "manifest.json").read_text())
    assert manifest["stages"]["finetune-mrpc"]["done"] and manifest["stages"]["teacher-mrpc"]["done"]


def test_student_steps_planned_from_a_time_budget(ws):
    from kroncli.train import steps_for_budget

    with_teacher(ws)
    res = finetune(ws, "--max-minutes", "0.05", "--max-steps", "3", "--restart")
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert out["seconds_per_step"] > 0
    assert out["total_steps"] == out["steps"] == min(3, steps_for_budget(3.0, out["seconds_per_step"]))


def test_augmented_student_trains_on_teacher_labelled_copies(ws):
    with_teacher(ws)
    rules = ("--augment-mask", "0.1", "--augment-ngram", "0.25")
    res = finetune(ws, "--max-steps", "3", "--augment", "2", "--limit", "40", *rules, "--restart")
    assert res.exit_code == 0, res.output
    again = finetune(ws, "--max-steps", "3", "--augment", "2", "--limit", "40", *rules)  # checkpoints exist now
    assert again.exit_code == 2 and "--resume" in again.output and "--restart" in again.output
    info = json.loads((ws / "manifest.json").read_text())["stages"]["finetune-mrpc"]
    assert info["augment"] == 2 and info["train_examples"] == 40 * 3
    assert info["augment_rules"] == {"swap": 0.4, "mask": 0.1, "ngram": 0.25}
    df = pd.read_csv(ws / "metrics" / "finetune-mrpc.csv")
    assert df.supervised.dropna().map(math.isfinite).all()
    assert df.step.max() == 3  # --restart dropped the earlier run's rows
    # checkpoints deleted by hand: a start from scratch still drops the old rows, no step is logged twice
    shutil.rmtree(ws / "checkpoints" / "finetune-mrpc")
    res = finetune(ws, "--max-steps", "2", "--limit", "40")
    assert res.exit_code == 0, res.output
    df = pd.read_csv(ws / "metrics" / "finetune-mrpc.csv")
    assert df.step.max() == 2 and not df[df.supervised.notna()].step.duplicated().any()
    # the sequence length it was trained at is recorded for kron eval / kron export to default to
    assert json.loads((ws / "tasks" / "mrpc" / "student" / "kron.json").read_text())["max_seq_len"] == 64
    # and a resume on other data is refused, naming what changed
    res = finetune(ws, "--max-steps", "4", "--limit", "40", "--max-seq-len", "32", "--resume")
    assert res.exit_code == 2 and "other data (max_seq_len 64 -> 32)" in res.output, res.output


def test_shallow_student_matches_the_teacher_layers_it_was_cut_from(ws, tmp_path, minilm_path, monkeypatch):
    import kroncli.stages.finetune as stage

    with_teacher(ws)
    shallow = tmp_path / "m19x3"
    res = runner.invoke(app, ["factorize", minilm_path, "--ratio", "19", "--layers", "1,3,5", "-w", str(shallow)])
    assert res.exit_code == 0, res.output
    shutil.copytree(ws / "tasks" / "mrpc" / "teacher", shallow / "tasks" / "mrpc" / "teacher")
    maps = []
    real = stage.DistillLoss
    monkeypatch.setattr(stage, "DistillLoss", lambda *a, **kw: maps.append(kw.get("layer_map")) or real(*a, **kw))
    res = finetune(shallow, "--max-steps", "2")
    assert res.exit_code == 0, res.output
    assert maps == [[1, 3, 5]]  # from kron.json; the 6-layer task teacher needs no --layer-map
    student = kroncli.load_student(shallow / "tasks" / "mrpc" / "student")
    assert student.config.num_hidden_layers == 3 and len(student.bert.encoder.layer) == 3


@pytest.mark.parametrize("args, needle", [(("--augment", "-1"), "--augment"),
                                          (("--augment", "2", "--augment-p", "1.5"), "--augment-p"),
                                          (("--augment", "2", "--augment-ngram", "-0.5"), "--augment-ngram"),
                                          (("--augment", "2", "--augment-mask", "0.7"), "sum to more than 1"),
                                          (("--augment", "2", "--teacher-only"), "--teacher-only")])
def test_bad_augment_options(ws, args, needle):
    res = finetune(ws, "--max-steps", "1", *args)
    assert res.exit_code == 2 and needle in res.output and "Traceback" not in res.output


@pytest.mark.parametrize("args, needle", [(("--max-steps", "-3"), "--max-steps -3 must be at least 1"),
                                          (("--limit", "-5"), "--limit -5 must be at least 1"),
                                          (("--batch-size", "0"), "--batch-size 0 must be at least 1"),
                                          (("--lr", "-1"), "--lr -1 must be above 0"),
                                          (("--task", "squad", "--doc-stride", "0"), "--doc-stride 0 must be at least 1")])
def test_training_numbers_that_plan_no_training_are_refused(ws, args, needle):
    before = (ws / "manifest.json").read_text()
    res = finetune(ws, "--max-steps", "1", *args)
    assert res.exit_code == 2 and needle in res.output and "Traceback" not in res.output, res.output
    assert (ws / "manifest.json").read_text() == before


def test_unknown_task(ws):
    res = runner.invoke(app, ["finetune", "-w", str(ws), "--task", "sst3"])
    assert res.exit_code == 2 and "sst3" in res.output and "Traceback" not in res.output


def test_teacher_fine_tuning_is_repeatable_with_its_seed(ws):
    """The classifier head is drawn before the loop seeds its RNG: --seed must cover it too."""
    from safetensors.torch import load_file

    weights = []
    for _ in range(2):
        res = finetune(ws, "--teacher-only", "--max-steps", "2", "--seed", "7", "--restart")
        assert res.exit_code == 0, res.output
        weights.append(load_file(ws / "tasks" / "mrpc" / "teacher" / "model.safetensors"))
    for name in weights[0]:
        assert torch.equal(weights[0][name], weights[1][name]), name


def test_init_from_starts_the_student_from_another_tasks_student(ws, bare):
    """Intermediate-task transfer: MRPC's student starts from WNLI's distilled student (embeddings and encoder), its
    head from MRPC's teacher; without WNLI's student, or naming the task itself, it is a one-line error."""
    from safetensors.torch import load_file

    res = finetune(bare, "--max-steps", "1", "--init-from", "wnli")
    assert res.exit_code == 2 and "no distilled WNLI student" in res.output and "--task wnli" in res.output
    res = finetune(bare, "--max-steps", "1", "--init-from", "mrpc")
    assert res.exit_code == 2 and "is the task being trained" in res.output
    res = finetune(bare, "--max-steps", "1", "--init-from", "sst3")
    assert res.exit_code == 2 and "sst3" in res.output and "Traceback" not in res.output
    res = finetune(bare, "--teacher-only", "--max-steps", "1", "--init-from", "wnli")
    assert res.exit_code == 2 and "--init-from" in res.output

    with_wnli_student(ws)
    with_teacher(ws)
    # one step at a negligible learning rate: the MRPC student is where it started
    res = finetune(ws, "--max-steps", "1", "--lr", "1e-12", "--init-from", "wnli", "--restart")
    assert res.exit_code == 0, res.output
    mrpc = load_file(ws / "tasks" / "mrpc" / "student" / "model.safetensors")
    source = load_file(ws / "tasks" / "wnli" / "student" / "model.safetensors")
    general = load_file(ws / "student" / "model.safetensors")
    encoder = [k for k in mrpc if k.startswith(("bert.embeddings.", "bert.encoder."))]
    assert encoder and all(torch.allclose(mrpc[k], source[k], atol=1e-6) for k in encoder)
    assert any(not torch.allclose(mrpc[k], general[k.removeprefix("bert.")], atol=1e-4) for k in encoder)
    assert not torch.equal(mrpc["classifier.weight"], source["classifier.weight"])  # MRPC's head, not WNLI's
    info = json.loads((ws / "manifest.json").read_text())["stages"]["finetune-mrpc"]
    assert info["init_from"] == "WNLI"
    # a checkpoint made from one start does not resume from another
    res = finetune(ws, "--max-steps", "2", "--save-every", "1", "--init-from", "wnli", "--restart")
    assert res.exit_code == 0, res.output
    shutil.rmtree(ws / "checkpoints" / "finetune-mrpc" / "step_2")
    res = finetune(ws, "--max-steps", "2", "--resume")
    assert res.exit_code == 2 and "different student" in res.output


def test_init_from_scores_apart_the_dev_examples_the_source_task_trained_on(ws, tmp_path):
    """A source task whose training set holds some of the target's dev inputs (as STS-B holds 48 of MRPC's): the
    start has seen them, so the stage also scores student and teacher on the rest and records both."""
    import csv

    with_wnli_student(ws)
    with_teacher(ws)
    data = tmp_path / "glue"
    (data / "WNLI").mkdir(parents=True)
    shutil.copytree(glue_dir() / "MRPC", data / "MRPC")
    with open(glue_dir() / "MRPC" / "dev.tsv", encoding="utf-8-sig", newline="") as f:
        dev = list(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE))[1:]
    wnli = (glue_dir() / "WNLI" / "train.tsv").read_text(encoding="utf-8")
    planted = [(dev[i][3], dev[i][4]) for i in range(4)] + [(dev[4][4], dev[4][3])]  # the last pair swapped
    extra = "".join(f"{9000 + i}\t{a}\t{b}\t0\n" for i, (a, b) in enumerate(planted))
    (data / "WNLI" / "train.tsv").write_text(wnli.rstrip("\n") + "\n" + extra, encoding="utf-8")

    args = ["finetune", "-w", str(ws), "--task", "mrpc", "--data-dir", str(data), "--limit", "32",
            "--batch-size", "16", "--max-seq-len", "64", "--max-steps", "1", "--lr", "1e-12", "--init-from", "wnli",
            "--restart"]
    res = runner.invoke(app, args + ["--json"])
    assert res.exit_code == 0, res.output
    assert "5 of the 408 dev examples are in WNLI's training set" in res.stderr
    out = json.loads(res.stdout.strip().splitlines()[-1])
    unseen = out["eval_unseen"]
    assert unseen["excluded"] == {"dev": 5} and unseen["seen_in"] == "WNLI"
    assert unseen["student"]["n"] == unseen["teacher"]["n"] == 403
    assert 0 <= unseen["student"]["accuracy"] <= 100 and 0 <= unseen["teacher"]["accuracy"] <= 100
    info = json.loads((ws / "manifest.json").read_text())["stages"]["finetune-mrpc"]
    assert info["eval_unseen"] == unseen
    res = runner.invoke(app, args)
    assert res.exit_code == 0 and "without the 5 dev examples in WNLI's training set: student" in res.stderr

    # the real files: WNLI's training set holds none of MRPC's dev pairs, so nothing is scored apart
    res = runner.invoke(app, [*args, "--data-dir", str(glue_dir()), "--json"])  # the last --data-dir counts
    assert res.exit_code == 0, res.output
    assert "eval_unseen" not in json.loads(res.stdout.strip().splitlines()[-1])
    assert "eval_unseen" not in json.loads((ws / "manifest.json").read_text())["stages"]["finetune-mrpc"]


def planted_stsb(tmp_path) -> tuple:
    """A GLUE folder: MRPC as it is, and an STS-B training set of 6 real rows plus 3 of MRPC's dev pairs and 1
    of its training pairs (the last dev pair in swapped order)."""
    import csv

    require_glue("MRPC/train.tsv", "MRPC/dev.tsv", "STS-B/train.tsv")
    data = tmp_path / "glue"
    (data / "STS-B").mkdir(parents=True)
    shutil.copytree(glue_dir() / "MRPC", data / "MRPC")

    def rows(path):
        with open(path, encoding="utf-8-sig", newline="") as f:
            return list(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE))

    dev, train = rows(glue_dir() / "MRPC" / "dev.tsv")[1:], rows(glue_dir() / "MRPC" / "train.tsv")[1:]
    stsb = rows(glue_dir() / "STS-B" / "train.tsv")
    planted = [(dev[0][3], dev[0][4]), (dev[1][3], dev[1][4]), (dev[2][4], dev[2][3]), (train[0][3], train[0][4])]
    lines = [stsb[0], *stsb[1:7]] + [stsb[1][:7] + [a, b, "2.5"] for a, b in planted]
    (data / "STS-B" / "train.tsv").write_text("".join("\t".join(r) + "\n" for r in lines), encoding="utf-8")
    return data, planted


def test_unlabelled_rows_drop_the_tasks_own_inputs(tmp_path):
    from kroncli.data.glue import load_split, normalize_task
    from kroncli.data.overlap import seen_mask
    from kroncli.stages.finetune import FinetuneOptions, unlabelled_rows

    data, planted = planted_stsb(tmp_path)
    mrpc, stsb = normalize_task("mrpc"), normalize_task("stsb")
    rows, dropped = unlabelled_rows(mrpc, FinetuneOptions(task=mrpc, data_dir=str(data), unlabelled_from=[stsb]))
    assert dropped == {"STS-B": 4} and len(rows) == 6
    twice = FinetuneOptions(task=mrpc, data_dir=str(data), unlabelled_from=[stsb, normalize_task("STS-B")])
    assert len(unlabelled_rows(normalize_task("mrpc"), twice)[0]) == 6  # a source named twice counts once
    assert (rows["label"] == -100).all() and rows["text_b"].notna().all()
    assert rows["text_a"].tolist() == load_split("stsb", "train", data)["text_a"].iloc[:6].tolist()
    for split in ("train", "dev"):
        assert not seen_mask(rows, load_split("mrpc", split, data)).any()
    rows, _ = unlabelled_rows(stsb, FinetuneOptions(task=stsb, data_dir=str(glue_dir()), unlabelled_from=[mrpc],
                                                    limit=10))
    assert len(rows) <= 10 and rows["label"].isna().all()  # a regression task's missing target is NaN


def test_unlabelled_from_trains_on_another_tasks_inputs(ws, tmp_path):
    """MRPC's student with STS-B's inputs added: 6 unlabelled rows join the 32 labelled ones, the 4 already in MRPC
    are dropped, the manifest records it; a source of another input form, the task itself, or the teacher stage is a
    one-line error."""
    with_teacher(ws)
    data, _ = planted_stsb(tmp_path)
    args = ["finetune", "-w", str(ws), "--task", "mrpc", "--data-dir", str(data), "--limit", "32", "--batch-size",
            "16", "--max-seq-len", "64", "--max-steps", "1", "--json"]
    res = runner.invoke(app, args + ["--unlabelled-from", "stsb", "--restart"])
    assert res.exit_code == 0, res.output
    assert "6 unlabelled training inputs of STS-B added" in res.stderr and "4 of STS-B dropped" in res.stderr
    info = json.loads((ws / "manifest.json").read_text())["stages"]["finetune-mrpc"]
    assert info["unlabelled_from"] == ["STS-B"] and info["unlabelled_examples"] == 6
    assert info["train_examples"] == 38
    for bad, why in (("cola", "single sentences"), ("mrpc", "is the task being trained"), ("sst3", "sst3"),
                     ("ax", "AX has no training set")):
        res = runner.invoke(app, args + ["--unlabelled-from", bad])
        assert res.exit_code == 2 and why in res.output and "Traceback" not in res.output, res.output
    res = runner.invoke(app, args + ["--unlabelled-from", "stsb", "--teacher-only"])
    assert res.exit_code == 2 and "--unlabelled-from" in res.output
