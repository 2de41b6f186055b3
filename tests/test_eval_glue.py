"""kron eval glue / kron eval ood on a tiny workspace built without training (random task heads).

The workspace holds what `kron finetune` would write: tasks/mrpc/{teacher,student}, tasks/sts-b/{teacher,student}
(regression), tasks/rte/student (no teacher) and tasks/mnli/teacher (3 classes, no student); every model is a
tiny BERT with the MiniLM tokenizer. Scores are checked against compute_metrics on the models' own logits,
computed here with one plain forward pass per split.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

import kroncli
from kroncli.cli import app
from kroncli.data.glue import load_split
from kroncli.evaluation.glue_eval import EVAL_COLUMNS
from kroncli.metrics import compute_metrics

from conftest import glue_dir, one_line_error, require_glue, tiny_config

runner = CliRunner()
T = "\t"

# Sentences with the quote characters that break default CSV parsing.
SENTENCES = ['He said "hi.', '"Quoted" at the start.', "It doesn't fit.", 'A ""doubled"" quote.',
             "The cat sat on the mat.", "A dog barked at the mailman.", '"Unbalanced', "Plain words here.",
             "Stocks fell 3% on Monday.", 'She called it "the witness".']


def pairs(n: int, shift: int = 3) -> list[tuple[str, str]]:
    return [(SENTENCES[i % len(SENTENCES)], SENTENCES[(i + shift) % len(SENTENCES)]) for i in range(n)]


def write(path, lines: list[str], bom: bool = False) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(("\ufeff" if bom else "") + "\n".join(lines) + "\n", encoding="utf-8")


def write_glue(root) -> None:
    """Small dev/test files of MRPC, STS-B, RTE, MNLI and AX in the original GLUE layout."""
    mrpc = "Quality\t#1 ID\t#2 ID\t#1 String\t#2 String"
    write(root / "MRPC" / "dev.tsv", [mrpc] + [T.join([str(i % 2), str(100 + i), str(200 + i), a, b])
                                              for i, (a, b) in enumerate(pairs(7))], bom=True)
    write(root / "MRPC" / "test.tsv", ["index\t#1 ID\t#2 ID\t#1 String\t#2 String"] +
          [T.join([str(10 + i), "1", "2", a, b]) for i, (a, b) in enumerate(pairs(6, 5))])
    write(root / "STS-B" / "dev.tsv", ["index\tgenre\tsentence1\tsentence2\tscore"] +
          [T.join([str(i), "main", a, b, f"{(i * 0.7) % 5:.2f}"]) for i, (a, b) in enumerate(pairs(6))])
    write(root / "STS-B" / "test.tsv", ["index\tgenre\tsentence1\tsentence2"] +
          [T.join([str(i), "main", a, b]) for i, (a, b) in enumerate(pairs(5, 1))])
    nli2 = ("entailment", "not_entailment")
    write(root / "RTE" / "dev.tsv", ["index\tsentence1\tsentence2\tlabel"] +
          [T.join([str(i), a, b, nli2[i % 2]]) for i, (a, b) in enumerate(pairs(5))])
    write(root / "RTE" / "test.tsv", ["index\tsentence1\tsentence2"] +
          [T.join([str(i), a, b]) for i, (a, b) in enumerate(pairs(4, 2))])
    nli3 = ("entailment", "neutral", "contradiction")
    for split, n in (("dev_matched", 6), ("dev_mismatched", 5)):
        write(root / "MNLI" / f"{split}.tsv", ["index\tgenre\tsentence1\tsentence2\tgold_label"] +
              [T.join([str(i), "fiction", a, b, nli3[i % 3]]) for i, (a, b) in enumerate(pairs(n, 4))])
    for split, n in (("test_matched", 3), ("test_mismatched", 4)):
        write(root / "MNLI" / f"{split}.tsv", ["index\tsentence1\tsentence2"] +
              [T.join([str(i), a, b]) for i, (a, b) in enumerate(pairs(n))])
    write(root / "diagnostic" / "diagnostic.tsv", ["index\tsentence1\tsentence2"] +
          [T.join([str(i), a, b]) for i, (a, b) in enumerate(pairs(5, 6))])


def centre_head(model, tokenizer):
    """Scale and centre the classifier on SENTENCES: varied predictions, not one class for every input."""
    a, b = zip(*pairs(len(SENTENCES)))
    with torch.no_grad():
        pooled = model.bert(**tokenizer(list(a), list(b), padding=True, return_tensors="pt")).pooler_output
        head = model.classifier
        head.weight.mul_(2.0 / (pooled @ head.weight.T).std(dim=0, keepdim=True).T)
        head.bias.copy_(-(pooled @ head.weight.T).mean(dim=0) + (2.5 if model.num_labels == 1 else 0.0))
    return model


def save_tiny(path, num_labels: int, tokenizer, seed: int, label_names=()) -> None:
    """A tiny BertForSequenceClassification task model with a centred random head."""
    from transformers import BertForSequenceClassification

    torch.manual_seed(seed)
    config = tiny_config(vocab_size=30522, max_position_embeddings=128, num_labels=num_labels)
    if label_names:
        config.id2label = dict(enumerate(label_names))
        config.label2id = {n: i for i, n in enumerate(label_names)}
    if num_labels == 1:
        config.problem_type = "regression"
    model = centre_head(BertForSequenceClassification(config).eval(), tokenizer)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)


def save_kron_student(teacher, path, tokenizer) -> None:
    from kroncli.factorize import FactorizeOptions, factorize
    from kroncli.student import save_student

    result, model, _ = factorize(FactorizeOptions(model=str(teacher), ratio=3))
    save_student(centre_head(model, tokenizer), result.choices, path, tokenizer, extra={"task": path.parent.name})


@pytest.fixture(scope="module")
def tok(minilm_path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(minilm_path)


@pytest.fixture(scope="module")
def ws(tmp_path_factory, tok):
    root = tmp_path_factory.mktemp("eval") / "ws"
    tasks = root / "tasks"
    save_tiny(tasks / "mrpc" / "teacher", 2, tok, 1, ("0", "1"))
    save_kron_student(tasks / "mrpc" / "teacher", tasks / "mrpc" / "student", tok)
    save_tiny(tasks / "sts-b" / "teacher", 1, tok, 2)
    save_kron_student(tasks / "sts-b" / "teacher", tasks / "sts-b" / "student", tok)
    rte_teacher = root.parent / "rte-teacher"  # the RTE teacher is not in the workspace
    save_tiny(rte_teacher, 2, tok, 3, ("entailment", "not_entailment"))
    save_kron_student(rte_teacher, tasks / "rte" / "student", tok)
    save_tiny(tasks / "mnli" / "teacher", 3, tok, 4, ("entailment", "neutral", "contradiction"))
    return root


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("glue")
    write_glue(root)
    return root


def run(*args, env=None):
    return runner.invoke(app, ["eval", *map(str, args)], env=env)


def ok_json(res) -> dict:
    assert res.exit_code == 0, res.output
    return json.loads(res.stdout.strip().splitlines()[-1])


def load(ws, task: str, which: str):
    from transformers import AutoModelForSequenceClassification

    path = ws / "tasks" / task / which
    model = kroncli.load_student(path) if which == "student" else \
        AutoModelForSequenceClassification.from_pretrained(path)
    return model.eval()


def own_logits(model, tok, frame: pd.DataFrame) -> np.ndarray:
    """One plain padded forward pass over the whole frame."""
    b = frame["text_b"].tolist() if frame["text_b"].notna().all() else None
    batch = tok(frame["text_a"].tolist(), b, truncation=True, max_length=128, padding=True, return_tensors="pt")
    with torch.no_grad():
        return model(**batch).logits.numpy()


def eval_csv(ws) -> pd.DataFrame:
    return pd.read_csv(ws / "metrics" / "eval.csv", keep_default_na=False)


# ------------------------------------------------------------------------------------------------ eval glue

def test_glue_dev_scores_json_and_csv(ws, data, tok):
    before = len(eval_csv(ws)) if (ws / "metrics" / "eval.csv").exists() else 0
    out = ok_json(run("glue", "-w", ws, "--task", "mrpc", "--data-dir", data, "--json"))
    assert [(r["task"], r["model"], r["split"]) for r in out["results"]] == [("MRPC", "student", "dev"),
                                                                              ("MRPC", "teacher", "dev")]
    frame = load_split("mrpc", "dev", data)
    for r in out["results"]:
        assert r["n"] == 7 and r["primary"] == "combined" and r["examples_per_s"] > 0
        want = compute_metrics("mrpc", own_logits(load(ws, "mrpc", r["model"]), tok, frame), frame["label"])
        assert r["metrics"] == pytest.approx(want)
    df = eval_csv(ws)
    assert list(df.columns) == EVAL_COLUMNS
    new = df.iloc[before:]
    assert len(new) == 6 and set(new.metric) == {"f1", "accuracy", "combined"}
    assert set(new.model) == {"student", "teacher"} and set(new.task) == {"MRPC"} and set(new.split) == {"dev"}
    assert (new.n == 7).all() and (new.workspace == str(ws)).all() and new.timestamp.str.len().gt(0).all()
    row = new[(new.model == "teacher") & (new.metric == "f1")].value.item()
    assert row == pytest.approx(out["results"][1]["metrics"]["f1"])
    assert out["eval_csv"] == str(ws / "metrics" / "eval.csv")


def test_glue_all_table_and_skipped(ws, data):
    res = run("glue", "-w", ws, "--task", "all", "--data-dir", data)
    assert res.exit_code == 0, res.output
    for word in ("task", "model", "split", "metric", "score", "examples/s", "dev_mismatched", "pearson"):
        assert word in res.output
    assert "skipped CoLA" in res.output and "skipped QNLI" in res.output
    out = ok_json(run("glue", "-w", ws, "--task", "all", "--data-dir", data, "--json"))
    done = {(r["task"], r["model"], r["split"]) for r in out["results"]}
    assert done == {("MRPC", "student", "dev"), ("MRPC", "teacher", "dev"), ("STS-B", "student", "dev"),
                    ("STS-B", "teacher", "dev"), ("RTE", "student", "dev"), ("MNLI", "teacher", "dev_matched"),
                    ("MNLI", "teacher", "dev_mismatched")}
    assert {s["task"] for s in out["skipped"]} == {"CoLA", "SST-2", "QQP", "QNLI", "WNLI"}
    # a comma list and an MNLI variant
    out = ok_json(run("glue", "-w", ws, "--task", "rte,mnli-mm", "--data-dir", data, "--json"))
    assert [(r["task"], r["split"], r["n"]) for r in out["results"]] == [("RTE", "dev", 5),
                                                                         ("MNLI", "dev_mismatched", 5)]


def test_progress_advances_once_per_batch(ws, data):
    """The bar moves after every batch (7 examples in batches of 2: 2, 2, 2, 1), not once per 8 batches."""
    import contextlib

    from kroncli.data.glue import normalize_task
    from kroncli.evaluation.glue_eval import load_task_model, predict
    from kroncli.workspace import Workspace

    task = normalize_task("mrpc")
    calls, totals = [], []

    @contextlib.contextmanager
    def progress(description, total):
        totals.append(total)
        yield calls.append

    logits, _ = predict(load_task_model(Workspace(ws), task, "student"), task, load_split(task, "dev", data), 2,
                        progress)
    assert totals == [7] and calls == [2, 2, 2, 1] and logits.shape == (7, 2)


@pytest.mark.integration
def test_glue_real_mrpc_dev_and_test(ws, tok):
    require_glue("MRPC/dev.tsv", "MRPC/test.tsv", "MRPC/train.tsv")
    out = ok_json(run("glue", "-w", ws, "--task", "mrpc", "--model", "student", "--data-dir", glue_dir(), "--json"))
    r, floor = out["results"]
    assert r["n"] == 408
    frame = load_split("mrpc", "dev", glue_dir())
    logits = own_logits(load(ws, "mrpc", "student"), tok, frame)
    assert len(set(logits.argmax(axis=1))) == 2  # the fixture's heads do not predict one class for all
    assert r["metrics"] == pytest.approx(compute_metrics("mrpc", logits, frame["label"]))
    # with the training split there, the majority-class floor: MRPC's training set is 67.4% paraphrases, and
    # always answering "paraphrase" scores 279 / 408 on dev
    assert (floor["model"], floor["split"], floor["n"], floor["examples_per_s"]) == ("majority", "dev", 408, None)
    assert floor["metrics"]["accuracy"] == pytest.approx(100 * 279 / 408)
    assert floor["metrics"] == pytest.approx(compute_metrics("mrpc", np.ones(408, dtype=int), frame["label"]))
    rows = eval_csv(ws)
    assert rows[rows.model == "majority"].groupby("metric").value.last().to_dict() == pytest.approx(floor["metrics"])

    out = ok_json(run("glue", "-w", ws, "--task", "mrpc", "--split", "test", "--predict", "--data-dir", glue_dir(),
                      "--json"))
    sub = pd.read_csv(ws / "predictions" / "MRPC.tsv", sep="\t", quoting=3, dtype=str)
    assert list(sub.columns) == ["index", "prediction"] and len(sub) == 1725 == out["results"][0]["n"]
    assert set(sub.prediction) <= {"0", "1"}
    assert sub["index"].tolist() == [str(i) for i in load_split("mrpc", "test", glue_dir())["idx"]]


def submission(ws, name: str) -> list[list[str]]:
    lines = (ws / "predictions" / f"{name}.tsv").read_text(encoding="utf-8").splitlines()
    assert lines[0] == "index\tprediction"
    return [line.split("\t") for line in lines[1:]]


def test_predict_submission_files(ws, data, tok):
    out = ok_json(run("glue", "-w", ws, "--task", "mrpc,stsb,rte", "--split", "test", "--predict",
                      "--data-dir", data, "--json"))
    assert [(r["task"], r["model"], r["file"]) for r in out["results"]] == [
        ("MRPC", "student", str(ws / "predictions" / "MRPC.tsv")),
        ("STS-B", "student", str(ws / "predictions" / "STS-B.tsv")),
        ("RTE", "student", str(ws / "predictions" / "RTE.tsv"))]
    # MRPC: 0/1, the test file's own index column, the argmax of the student's logits
    test = load_split("mrpc", "test", data)
    rows = submission(ws, "MRPC")
    assert [int(i) for i, _ in rows] == test["idx"].tolist() == list(range(10, 16))
    want = own_logits(load(ws, "mrpc", "student"), tok, test).argmax(axis=1)
    assert [p for _, p in rows] == [str(int(x)) for x in want]
    # STS-B: scores clipped to [0, 5]
    test = load_split("stsb", "test", data)
    rows = submission(ws, "STS-B")
    assert len(rows) == len(test) == 5
    scores = np.array([float(p) for _, p in rows])
    assert ((0 <= scores) & (scores <= 5)).all()
    want = np.clip(own_logits(load(ws, "sts-b", "student"), tok, test)[:, 0], 0, 5)
    assert scores == pytest.approx(want, abs=1e-3)
    # RTE: label names
    rows = submission(ws, "RTE")
    assert len(rows) == 4 and {p for _, p in rows} <= {"entailment", "not_entailment"}
    assert not [p for p in (ws / "predictions").iterdir() if p.name.startswith(".")]  # no temporary files left


def test_predict_mnli_matched_mismatched_and_ax(ws, data):
    out = ok_json(run("glue", "-w", ws, "--task", "mnli,ax", "--split", "test", "--predict", "--model", "teacher",
                      "--data-dir", data, "--json"))
    assert [(r["task"], r["split"], r["n"]) for r in out["results"]] == [
        ("MNLI", "test_matched", 3), ("MNLI", "test_mismatched", 4), ("AX", "test", 5)]
    for name, n in (("MNLI-m", 3), ("MNLI-mm", 4), ("AX", 5)):
        rows = submission(ws, name)
        assert len(rows) == n and {p for _, p in rows} <= {"entailment", "neutral", "contradiction"}


def test_predict_all_adds_ax_when_its_data_is_there(ws, data, tmp_path):
    args = ["glue", "-w", ws, "--task", "all", "--split", "test", "--predict", "--model", "teacher", "--json"]
    out = ok_json(run(*args, "--data-dir", data))
    assert [(r["task"], r["split"]) for r in out["results"]] == [
        ("MRPC", "test"), ("STS-B", "test"), ("MNLI", "test_matched"), ("MNLI", "test_mismatched"), ("AX", "test")]
    assert {s["task"] for s in out["skipped"]} == {"CoLA", "SST-2", "QQP", "QNLI", "RTE", "WNLI"}
    shutil.copytree(data, tmp_path / "glue", ignore=shutil.ignore_patterns("diagnostic"))
    out = ok_json(run(*args, "--data-dir", tmp_path / "glue"))
    assert "AX" not in {r["task"] for r in out["results"]}
    (ax,) = [s for s in out["skipped"] if s["task"] == "AX"]
    assert "diagnostic.tsv" in ax["reason"]


# ------------------------------------------------------------------------------------------------- eval ood

HANS = ["gold_label\tsentence1\tsentence2\theuristic"] + [
    T.join([("entailment", "non-entailment")[i % 2], a, b, "lexical_overlap"]) for i, (a, b) in enumerate(pairs(8))]


def test_ood_mnli_on_hans_with_collapse_and_gap(ws, data, tok, tmp_path):
    write(tmp_path / "hans.tsv", HANS)
    out = ok_json(run("ood", "-w", ws, "--task", "mnli", "--data", tmp_path / "hans.tsv", "--label-column",
                      "gold_label", "--text-columns", "sentence1,sentence2", "--label-map",
                      "entailment=entailment,non-entailment=contradiction", "--collapse", "neutral=contradiction",
                      "--data-dir", data, "--json"))
    assert out["split"] == "ood:hans.tsv" and out["n"] == 8
    assert out["collapse"] == {"neutral": "contradiction"}
    dev, ood = out["results"]
    assert (dev["split"], ood["split"], ood["model"]) == ("dev_matched", "ood:hans.tsv", "teacher")
    model = load(ws, "mnli", "teacher")
    hans = pd.read_csv(tmp_path / "hans.tsv", sep="\t", quoting=3).rename(
        columns={"sentence1": "text_a", "sentence2": "text_b"})
    pred = own_logits(model, tok, hans).argmax(axis=1)
    pred[pred == 1] = 2  # neutral counts as non-entailment
    gold = np.where(hans.gold_label == "entailment", 0, 2)
    assert ood["metrics"]["accuracy"] == pytest.approx(100 * np.mean(pred == gold))
    dev_frame = load_split("mnli", "dev_matched", data)
    want = compute_metrics("mnli", own_logits(model, tok, dev_frame), dev_frame["label"])
    assert dev["metrics"] == pytest.approx(want)
    (gap,) = out["gaps"]
    assert gap["gap"] == pytest.approx(ood["metrics"]["accuracy"] - dev["metrics"]["accuracy"])
    rows = eval_csv(ws)
    rows = rows[rows.split == "ood:hans.tsv"]
    assert set(rows.metric) == {"accuracy", "accuracy_gap"} and (rows.n == 8).all()
    assert rows[rows.metric == "accuracy_gap"].value.iloc[-1] == pytest.approx(gap["gap"])


def test_ood_jsonl_default_labels_and_no_dev(ws, tmp_path):
    path = tmp_path / "paws.jsonl"
    path.write_text("\n".join(json.dumps({"sentence1": a, "sentence2": b, "label": i % 2})
                              for i, (a, b) in enumerate(pairs(5))) + "\n")
    out = ok_json(run("ood", "-w", ws, "--task", "mrpc", "--data", path, "--model", "student", "--no-dev", "--json"))
    (r,) = out["results"]
    assert (r["split"], r["n"], out["gaps"]) == ("ood:paws.jsonl", 5, [])
    assert {"f1", "accuracy", "combined"} == set(r["metrics"])


# --------------------------------------------------------------------------------------------- bad inputs

@pytest.fixture(scope="module")
def bad_ws(tmp_path_factory, tok):
    """A QNLI teacher with 3 labels (QNLI has 2)."""
    root = tmp_path_factory.mktemp("bad") / "ws"
    save_tiny(root / "tasks" / "qnli" / "teacher", 3, tok, 5)
    return root


def test_bad_inputs_are_one_line_errors(ws, bad_ws, data, tmp_path):
    d = ["--data-dir", data]
    one_line_error(run("glue", "-w", ws, "--task", "sst3"), "unknown GLUE task 'sst3'")
    one_line_error(run("ood", "-w", ws, "--task", "sst3", "--data", "x.tsv"), "sst3")
    one_line_error(run("glue", "-w", tmp_path / "nope", "--task", "mrpc"), "does not exist")
    one_line_error(run("glue", "-w", ws / "tasks", "--task", "mrpc"), "is not a kron workspace")
    (tmp_path / "only-student" / "tasks" / "mrpc" / "student").mkdir(parents=True)
    one_line_error(run("glue", "-w", tmp_path / "only-student", "--task", "all", "--model", "teacher"),
                   "no fine-tuned task teacher", "tasks/<task>/teacher")
    one_line_error(run("glue", "-w", ws, "--task", "cola", *d),
                   f"kron finetune --workspace {ws} --task cola --teacher-only")
    one_line_error(run("glue", "-w", ws, "--task", "rte", "--model", "teacher", *d),
                   f"kron finetune --workspace {ws} --task rte --teacher-only")
    msg = one_line_error(run("glue", "-w", ws, "--task", "mnli", "--model", "student", *d), "--task mnli")
    assert "--teacher-only" not in msg  # the teacher is there: only the student step is missing
    one_line_error(run("glue", "-w", bad_ws, "--task", "qnli", *d), "predicts 3 label(s) but QNLI has 2")
    one_line_error(run("glue", "-w", ws, "--task", "mrpc", "--split", "test"), "--predict")
    one_line_error(run("glue", "-w", ws, "--task", "mrpc", "--predict"), "--split test")
    one_line_error(run("glue", "-w", ws, "--task", "ax", "--model", "teacher", *d), "test-only")
    one_line_error(run("glue", "-w", ws, "--task", "mrpc", "--model", "both"), "student or teacher")
    # a data dir without the task's files; an empty split
    one_line_error(run("glue", "-w", ws, "--task", "mrpc", "--data-dir", tmp_path), "MRPC dev")
    write(tmp_path / "empty" / "MRPC" / "dev.tsv", ["Quality\t#1 ID\t#2 ID\t#1 String\t#2 String"])
    one_line_error(run("glue", "-w", ws, "--task", "mrpc", "--data-dir", tmp_path / "empty"), "empty")


def test_bad_ood_inputs(ws, data, tmp_path):
    write(tmp_path / "hans.tsv", HANS)
    base = ["ood", "-w", ws, "--task", "rte", "--data", tmp_path / "hans.tsv", "--label-column", "gold_label",
            "--model", "student", "--data-dir", data]
    one_line_error(run(*base, "--label-map", "entailment=entailment"), "'non-entailment'", "unmapped")
    one_line_error(run(*base), "'non-entailment'", "--label-map")
    one_line_error(run(*base, "--label-map", "entailment=0,non-entailment=2"), "out of range", "2 labels")
    one_line_error(run(*base, "--label-map", "entailment"), "VALUE=LABEL")
    one_line_error(run(*base, "--label-map", "entailment=0,non-entailment=1", "--collapse", "neutral=entailment"),
                   "'neutral' is not a RTE label")
    one_line_error(run(*base, "--label-map", "entailment=0,non-entailment=1", "--label-column", "nope"),
                   "no label column 'nope'")
    one_line_error(run(*base, "--label-map", "entailment=0,non-entailment=1", "--text-columns", "sentence1"),
                   "two columns")
    write(tmp_path / "empty.tsv", ["gold_label\tsentence1\tsentence2"])
    one_line_error(run("ood", "-w", ws, "--task", "rte", "--data", tmp_path / "empty.tsv"), "no data rows")
    (tmp_path / "blank.csv").write_text("")
    one_line_error(run("ood", "-w", ws, "--task", "rte", "--data", tmp_path / "blank.csv"), "empty file")
    one_line_error(run("ood", "-w", ws, "--task", "rte", "--data", tmp_path / "missing.tsv"), "no such file")
    one_line_error(run("ood", "-w", ws, "--task", "mnli", "--data", "hans", env={"HF_HUB_OFFLINE": "1"}),
                   "offline")
    one_line_error(run("ood", "-w", ws, "--task", "stsb", "--data", tmp_path / "hans.tsv", "--label-map", "a=0"),
                   "regression")


def test_unwritable_outputs(ws, data, tmp_path):
    copy = tmp_path / "ws"
    shutil.copytree(ws / "tasks" / "mrpc" / "teacher", copy / "tasks" / "mrpc" / "teacher")
    (copy / "predictions").write_text("a file where the folder should be")
    one_line_error(run("glue", "-w", copy, "--task", "mrpc", "--split", "test", "--predict", "--model", "teacher",
                       "--data-dir", data), "cannot write", "predictions")
    (copy / "metrics").write_text("a file where the folder should be")
    one_line_error(run("glue", "-w", copy, "--task", "mrpc", "--data-dir", data), "cannot write", "eval.csv")
