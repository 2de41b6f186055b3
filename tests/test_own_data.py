"""Own model and own data: tasks from the user's files (data/own.py), metrics per kind, a fine-tuned classifier as
the task teacher, and the whole path (finetune, eval data, export, predict, report, recipes) on tiny models."""

import csv
import json
import random

import numpy as np
import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from kroncli.cli import app
from kroncli.data.own import TaskFiles, define
from kroncli.errors import KronError
from kroncli.metrics import compute_metrics, majority_baseline, per_class

from conftest import tiny_config

runner = CliRunner()

WORDS = {"billing": "invoice refund charge payment bill", "tech": "vpn crash error login wifi",
         "other": "lunch party office desk chair"}


def tickets(folder, n=60, seed=0):
    """Two-column ticket CSVs (subject, body) with a 3-class queue label; train and dev."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        label = rng.choice(list(WORDS))
        rows.append((" ".join(rng.choices(WORDS[label].split(), k=4)), f"note {i}", label))
    for name, part in (("train.csv", rows[: n * 3 // 4]), ("dev.csv", rows[n * 3 // 4:])):
        with open(folder / name, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["subject", "body", "queue"])
            w.writerows(part)
    return folder / "train.csv", folder / "dev.csv"


def kron(*args):
    return runner.invoke(app, [str(a) for a in args])


# ----------------------------------------------------------------------------------------------- reading tasks

def test_a_csv_task_reads_texts_and_labels_as_written(tmp_path):
    (tmp_path / "t.csv").write_text('text,label\n"NA, said he",yes\nnull,no\n"two\nlines",yes\n')
    task = define("t", TaskFiles(train=str(tmp_path / "t.csv"), dev=str(tmp_path / "t.csv")))
    frame = task.load("train")
    assert frame["text_a"].tolist() == ["NA, said he", "null", "two\nlines"]  # no NA guessing, quotes honoured
    assert task.kind == "classification" and task.label_names == ("no", "yes")
    assert frame["label"].tolist() == [1, 0, 1]
    assert task.metrics == ("accuracy", "f1", "macro_f1", "mcc")


def test_kinds_are_inferred_from_the_labels(tmp_path):
    pd.DataFrame({"text": list("abcd"), "label": [0.5, 1.0, 2.25, 4.0]}).to_json(tmp_path / "r.jsonl",
                                                                                 orient="records", lines=True)
    pd.DataFrame({"text": list("abcd"), "label": [3, 1, 2, 10]}).to_parquet(tmp_path / "c.parquet")
    pd.DataFrame({"text": list("abcd"), "tags": [["x"], ["x", "y"], [], ["z"]]}).to_json(
        tmp_path / "m.jsonl", orient="records", lines=True)
    pd.DataFrame({"text": list("abcd"), "x": [1, 0, 1, 0], "y": [0, 0, 1, 1]}).to_csv(tmp_path / "m.csv", index=False)
    reg = define("r", TaskFiles(train=str(tmp_path / "r.jsonl"), dev_fraction=0.5))
    cls = define("c", TaskFiles(train=str(tmp_path / "c.parquet"), dev_fraction=0.5))
    multi = define("m", TaskFiles(train=str(tmp_path / "m.jsonl"), dev_fraction=0.5, label_column="tags"))
    cols = define("m2", TaskFiles(train=str(tmp_path / "m.csv"), dev_fraction=0.5, label_column="x,y"))
    assert reg.kind == "regression" and reg.is_regression and reg.metrics == ("pearson", "spearman", "mse")
    assert cls.kind == "classification" and cls.label_names == ("1", "2", "3", "10")  # integers by value
    assert multi.kind == "multilabel" and multi.label_names == ("x", "y", "z")
    rows = multi.load("train")["label"].tolist() + multi.load("dev")["label"].tolist()
    assert sorted(map(tuple, rows)) == [(0, 0, 0), (0, 0, 1), (1, 0, 0), (1, 1, 0)]
    assert cols.kind == "multilabel" and cols.label_names == ("x", "y")


def test_dev_fraction_is_seeded_recorded_and_disjoint(tmp_path):
    train, _ = tickets(tmp_path, n=80)
    a = define("t", TaskFiles(train=str(train), text_columns="subject,body", label_column="queue", dev_fraction=0.25))
    b = define("t", TaskFiles(train=str(train), text_columns="subject,body", label_column="queue", dev_fraction=0.25))
    c = define("t", TaskFiles(train=str(train), text_columns="subject,body", label_column="queue", dev_fraction=0.25,
                              split_seed=1))
    assert a.dev_rows == b.dev_rows != c.dev_rows and len(a.dev_rows) == 15
    dev, rest = a.load("dev"), a.load("train")
    assert len(dev) + len(rest) == 60 and not set(dev["idx"]) & set(rest["idx"])
    assert a.definition()["dev_rows"] == list(a.dev_rows)


@pytest.mark.parametrize("content, options, message", [
    ("text,label\nhi,a\nyo,b\n", {"label_column": "queue"}, "has no column(s) 'queue' (has: text, label)"),
    ("text,label\nhi,a\n,b\n", {}, "row 2: the text in column 'text' is empty"),
    ("text,label\nhi,a\nyo,\n", {}, "row 2: the label in column 'label' is empty"),
    ("text,label\nhi,a\nyo,a\n", {}, "holds one class only ('a')"),
    ("text,label\nhi,1.5\nyo,high\n", {"kind": "regression"}, "row 2: label 'high' in column 'label' is not a number"),
    ("text,label\n", {}, "empty file" if False else "no data rows"),
])
def test_bad_training_files_are_one_line_naming_the_row(tmp_path, content, options, message):
    (tmp_path / "t.csv").write_text(content)
    with pytest.raises(KronError, match=None) as e:
        define("t", TaskFiles(train=str(tmp_path / "t.csv"), dev_fraction=0.5, **options))
    assert message in str(e.value) and "\n" not in str(e.value)


def test_other_bad_inputs(tmp_path):
    (tmp_path / "t.csv").write_text("text,label\nhi,a\nyo,b\n")
    (tmp_path / "dev.csv").write_text("text,label\nhi,a\nyo,c\n")
    (tmp_path / "latin.csv").write_bytes("text,label\ncaf\xe9,a\nyo,b\n".encode("latin-1"))
    pd.DataFrame({"text": ["a", "b"], "label": [1, "x"]}).to_json(tmp_path / "mixed.jsonl", orient="records",
                                                                  lines=True)
    train = str(tmp_path / "t.csv")
    cases = [(TaskFiles(train=train, dev=str(tmp_path / "dev.csv")), "dev.csv row 2: label 'c' is not among"),
             (TaskFiles(train=str(tmp_path / "latin.csv"), dev_fraction=0.5), "not UTF-8"),
             (TaskFiles(train=str(tmp_path / "mixed.jsonl"), dev_fraction=0.5), "mixed.jsonl:2: label 'x' is text"),
             (TaskFiles(train=str(tmp_path / "nope.csv"), dev_fraction=0.5), "--train"),
             (TaskFiles(train=train), "no dev data; pass --dev FILE, or --dev-fraction"),
             (TaskFiles(train=train, dev_fraction=1.5), "--dev-fraction 1.5"),
             (TaskFiles(train=train, dev_fraction=0.5, kind="ranking"), "--kind 'ranking'")]
    for files, message in cases:
        with pytest.raises(KronError) as e:
            define("t", files)
        assert message in str(e.value), (files, str(e.value))
    for name, message in (("cola", "built-in task"), ("../x", "a task name is")):
        with pytest.raises(KronError, match=message):
            define(name, TaskFiles(train=train, dev_fraction=0.5))


# ---------------------------------------------------------------------------------------------------- metrics

def test_metrics_per_kind_match_scikit_learn(tmp_path):
    from sklearn.metrics import f1_score, matthews_corrcoef, mean_squared_error

    (tmp_path / "c.csv").write_text("text,label\n" + "".join(f"t{i},{'abc'[i % 3]}\n" for i in range(9)))
    cls = define("c", TaskFiles(train=str(tmp_path / "c.csv"), dev_fraction=0.3))
    gold, pred = np.array([0, 1, 2, 2, 1, 0]), np.array([0, 2, 2, 2, 1, 1])
    m = compute_metrics(cls, pred, gold)
    assert m["macro_f1"] == pytest.approx(100 * f1_score(gold, pred, average="macro"))
    assert m["mcc"] == pytest.approx(100 * matthews_corrcoef(gold, pred))
    assert per_class(cls, pred, gold)["c"] == {"precision": pytest.approx(200 / 3), "recall": 100.0, "f1": 80.0,
                                               "support": 2}
    assert majority_baseline(cls, [0, 1, 1, 2], gold)["accuracy"] == pytest.approx(100 * 2 / 6)

    (tmp_path / "r.csv").write_text("text,label\n" + "".join(f"t{i},{i / 2}\n" for i in range(6)))
    reg = define("r", TaskFiles(train=str(tmp_path / "r.csv"), dev_fraction=0.3))
    g, p = np.array([0.5, 1.0, 2.0, 3.5]), np.array([0.7, 1.1, 1.5, 3.0])
    assert compute_metrics(reg, p, g)["mse"] == pytest.approx(mean_squared_error(g, p))  # not scaled to 0-100

    pd.DataFrame({"text": list("abcd"), "x": [1, 0, 1, 0], "y": [0, 1, 1, 1]}).to_csv(tmp_path / "m.csv", index=False)
    multi = define("m", TaskFiles(train=str(tmp_path / "m.csv"), dev_fraction=0.5, label_column="x,y"))
    gold = [np.array([1, 0]), np.array([0, 1]), np.array([1, 1])]
    logits = np.array([[2.0, -1.0], [1.0, 3.0], [0.5, 0.2]])  # above 0: the label is predicted
    m = compute_metrics(multi, logits, gold)
    assert m["subset_accuracy"] == pytest.approx(200 / 3)
    assert m["micro_f1"] == pytest.approx(100 * f1_score(np.stack(gold), logits > 0, average="micro"))


def test_the_multilabel_task_loss_is_binary_cross_entropy():
    from kroncli.distill.losses import supervised

    logits, labels = torch.tensor([[2.0, -1.0], [0.0, 1.0]]), torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    assert float(supervised(logits, labels)) == pytest.approx(
        float(torch.nn.functional.binary_cross_entropy_with_logits(logits, labels)))


def test_texts_longer_than_max_seq_len_are_counted(minilm_tok):
    from kroncli.data.encode import encode
    from kroncli.data.glue import normalize_task

    frame = pd.DataFrame({"text_a": ["short", "word " * 40, "two words"], "text_b": [None] * 3,
                          "label": [0, 1, 0], "idx": [0, 1, 2]})
    assert encode(normalize_task("sst2"), frame, minilm_tok, 16).truncated == 1
    assert encode(normalize_task("sst2"), frame, minilm_tok, 64).truncated == 0


# ------------------------------------------------------------------------------------------ the whole path (CLI)

@pytest.fixture(scope="module")
def classifier(tmp_path_factory, minilm_path):
    """A tiny BERT sequence classifier 'fine-tuned' on the tickets' three queues (random weights, named labels)."""
    from transformers import AutoTokenizer, BertForSequenceClassification

    torch.manual_seed(0)
    config = tiny_config(vocab_size=30522, num_labels=3, id2label={0: "billing", 1: "tech", 2: "other"},
                         label2id={"billing": 0, "tech": 1, "other": 2})
    path = tmp_path_factory.mktemp("clf")
    BertForSequenceClassification(config).save_pretrained(path)
    AutoTokenizer.from_pretrained(minilm_path).save_pretrained(path)
    return path


def test_own_classifier_and_own_files_end_to_end(tmp_path, classifier):
    train, dev = tickets(tmp_path)
    ws = tmp_path / "ws"
    assert kron("factorize", classifier, "--ratio", "4", "-w", ws).exit_code == 0
    own = ["--task", "tickets", "--train", train, "--dev", dev, "--text-columns", "subject,body",
           "--label-column", "queue"]
    res = kron("finetune", "-w", ws, *own, "--max-steps", "3", "--batch-size", "8", "--max-seq-len", "32", "--json")
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert out["task"] == "tickets" and set(out["eval"]) >= {"accuracy", "macro_f1", "mcc"}
    manifest = json.loads((ws / "manifest.json").read_text())
    assert manifest["stages"]["teacher-tickets"]["adopted"] == str(classifier)  # scored, not fine-tuned again
    assert manifest["stages"]["teacher-tickets"]["steps"] == 0
    for which in ("teacher", "student"):
        config = json.loads((ws / "tasks" / "tickets" / which / "config.json").read_text())
        assert config["id2label"] == {"0": "billing", "1": "tech", "2": "other"}
    # later commands know the task by its name; an extra file is read with the task's columns and labels
    (tmp_path / "march.jsonl").write_text('{"subject": "vpn crash", "body": "x", "queue": "tech"}\n'
                                          '{"subject": "refund bill", "body": "y", "queue": "billing"}\n')
    res = kron("eval", "data", "-w", ws, "--task", "tickets", "--data", tmp_path / "march.jsonl", "--json")
    assert res.exit_code == 0, res.output
    scored = json.loads(res.stdout)
    assert {(r["model"], r["split"]) for r in scored["results"]} >= {("student", "dev"), ("teacher", "dev"),
                                                                     ("student", "data:march.jsonl"),
                                                                     ("majority", "dev")}
    assert set(scored["per_class"]["student"]["dev"]) == {"billing", "tech", "other"}
    res = kron("report", ws, "--json")
    assert res.exit_code == 0 and "tickets" in json.loads(res.stdout)[0], res.output
    deploy = tmp_path / "deploy"
    assert kron("export", "-w", ws, "--task", "tickets", "--out", deploy).exit_code == 0
    meta = json.loads((deploy / "kron_export.json").read_text())
    assert meta["label_names"] == ["billing", "tech", "other"] and meta["text_columns"] == ["subject", "body"]
    res = runner.invoke(app, ["predict", str(deploy)], input='{"subject": "VPN down", "body": "since 9am"}\n')
    assert res.exit_code == 0, res.output
    row = json.loads(res.stdout)
    assert row["label"] in WORDS and set(row["scores"]) == set(WORDS)
    assert sum(row["scores"].values()) == pytest.approx(1.0)
    res = runner.invoke(app, ["predict", str(deploy)], input='{"subject": "VPN down"}\n')
    assert res.exit_code == 2 and "no field(s) 'body'" in res.output


def test_a_task_name_with_other_files_is_refused_and_nothing_is_overwritten(tmp_path, classifier):
    train, dev = tickets(tmp_path)
    ws = tmp_path / "ws"
    assert kron("factorize", classifier, "--ratio", "4", "-w", ws).exit_code == 0
    own = ["--task", "tickets", "--train", train, "--dev", dev, "--text-columns", "subject,body",
           "--label-column", "queue", "--max-steps", "1", "--max-seq-len", "32"]
    assert kron("finetune", "-w", ws, *own).exit_code == 0
    before = {p: p.read_bytes() for p in (ws / "tasks").rglob("*") if p.is_file()}
    res = kron("finetune", "-w", ws, "--task", "tickets", "--train", train, "--dev-fraction", "0.2",
               "--text-columns", "subject,body", "--label-column", "queue", "--max-steps", "1")
    assert res.exit_code == 2 and "already has task tickets on other data (files.dev" in res.output
    tickets(tmp_path, n=40, seed=1)  # the same paths, other rows
    res = kron("finetune", "-w", ws, "--task", "tickets", "--max-steps", "1")
    assert res.exit_code == 2 and "changed since task tickets was defined" in res.output
    assert {p: p.read_bytes() for p in (ws / "tasks").rglob("*") if p.is_file()} == before


def test_a_teacher_whose_labels_differ_from_the_datas_is_refused(tmp_path, classifier):
    (tmp_path / "t.csv").write_text("text,label\nhi there,spam\nhello you,ham\nbuy now,spam\nsee you,ham\n")
    ws = tmp_path / "ws"
    assert kron("factorize", classifier, "--ratio", "4", "-w", ws).exit_code == 0
    res = kron("finetune", "-w", ws, "--task", "mail", "--train", tmp_path / "t.csv", "--dev-fraction", "0.5",
               "--max-seq-len", "32")
    assert res.exit_code == 2
    assert "the teacher's labels (billing, tech, other) are not the data's (ham, spam)" in res.output
    assert not (ws / "tasks").exists()


def test_multilabel_and_regression_tasks_train_from_a_base_model(tmp_path, tiny_teacher):
    rng = random.Random(0)
    rows = [{"text": " ".join(rng.choices("red green blue cat dog".split(), k=3))} for _ in range(24)]
    for r in rows:
        r["tags"] = [w for w in ("red", "cat") if w in r["text"]]
        r["score"] = float(r["text"].count("blue")) + 0.5
    pd.DataFrame(rows).to_json(tmp_path / "d.jsonl", orient="records", lines=True)
    ws = tmp_path / "ws"
    assert kron("factorize", tiny_teacher, "--ratio", "4", "-w", ws).exit_code == 0
    for name, column in (("tags", "tags"), ("score", "score")):
        base = ["-w", ws, "--task", name, "--train", tmp_path / "d.jsonl", "--dev-fraction", "0.25",
                "--label-column", column, "--max-steps", "2", "--batch-size", "8", "--max-seq-len", "32"]
        res = kron("finetune", *base, "--teacher-only")
        assert res.exit_code == 0, res.output
        res = kron("finetune", *base, "--json")
        assert res.exit_code == 0, res.output
        scores = json.loads(res.stdout.strip().splitlines()[-1])["eval"]
        assert set(scores) >= ({"micro_f1", "macro_f1", "subset_accuracy"} if name == "tags" else
                               {"pearson", "spearman", "mse"})
    config = json.loads((ws / "tasks" / "tags" / "student" / "config.json").read_text())
    assert config["problem_type"] == "multi_label_classification" and config["id2label"] == {"0": "cat", "1": "red"}
    deploy = tmp_path / "deploy"
    assert kron("export", "-w", ws, "--task", "tags", "--out", deploy).exit_code == 0
    res = runner.invoke(app, ["predict", str(deploy), "red cat"])
    row = json.loads(res.stdout)
    assert set(row["scores"]) == {"cat", "red"} and set(row["labels"]) <= {"cat", "red"}


def test_a_recipe_takes_an_own_task_as_a_mapping(tmp_path, tiny_teacher):
    import yaml

    train, dev = tickets(tmp_path)
    recipe = {"teacher": str(tiny_teacher), "factorize": {"ratio": 4},
              "finetune": {"tasks": [{"name": "tickets", "train": str(train), "dev": str(dev),
                                      "text_columns": ["subject", "body"], "label_column": "queue"}],
                           "max_steps": 2, "batch_size": 8, "max_seq_len": 32},
              "eval": {"data": ["tickets"], "speed": False}}
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(recipe))
    ws = tmp_path / "ws"
    res = kron("run", path, "-w", ws)
    assert res.exit_code == 0, res.output
    manifest = json.loads((ws / "manifest.json").read_text())
    assert all(manifest["stages"][s]["done"] for s in ("teacher-tickets", "finetune-tickets", "eval-data"))
    again = kron("run", path, "-w", ws)
    assert again.exit_code == 0 and "[finetune-tickets] done, skipped" in again.output
    recipe["finetune"]["tasks"][0]["label_column"] = "nope"
    path.write_text(yaml.safe_dump(recipe))
    res = kron("run", path, "-w", tmp_path / "ws2")
    assert res.exit_code == 2 and "finetune.tasks[0]" in res.output and "'nope'" in res.output
    assert not (tmp_path / "ws2").exists()


def test_a_saved_datasetdict_is_a_task_and_its_text_a_stage1_corpus(tmp_path, tiny_teacher):
    import datasets

    rows = {"text": [f"word{i} and more words" for i in range(16)], "label": ["a", "b"] * 8}
    datasets.DatasetDict({"train": datasets.Dataset.from_dict(rows),
                          "validation": datasets.Dataset.from_dict({k: v[:4] for k, v in rows.items()})}
                         ).save_to_disk(str(tmp_path / "saved"))
    task = define("saved", TaskFiles(dataset=str(tmp_path / "saved")))
    assert len(task.load("train")) == 16 and len(task.load("dev")) == 4 and task.label_names == ("a", "b")
    ws = tmp_path / "ws"
    assert kron("factorize", tiny_teacher, "--ratio", "4", "-w", ws).exit_code == 0
    res = kron("finetune", "-w", ws, "--task", "saved", "--dataset", tmp_path / "saved", "--teacher-only",
               "--max-steps", "1", "--max-seq-len", "32")
    assert res.exit_code == 0, res.output
    res = kron("distill", "-w", ws, "--corpus", "task:saved", "--max-steps", "1", "--max-seq-len", "16")
    assert res.exit_code == 0, res.output
    assert (ws / "cache" / "task-saved.txt").read_text().splitlines() == rows["text"]
    res = kron("eval", "data", "-w", ws, "--task", "nothing")
    assert res.exit_code == 2 and "has no own-data task 'nothing' (tasks: saved)" in res.output


def test_a_hub_dataset_offline_is_one_line_saying_what_to_pass(monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    with pytest.raises(KronError) as e:
        define("reviews", TaskFiles(dataset="stanfordnlp/imdb", dataset_config="plain_text"))
    assert "stanfordnlp/imdb:plain_text[train]: the Hugging Face hub is unreachable (offline)" in str(e.value)
    assert "save_to_disk" in str(e.value)
