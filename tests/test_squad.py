"""SQuAD: official scoring on crafted answers, feature windows, span postprocessing, and the CLI end to end
(kron factorize -> kron finetune --task squad[_v2] -> kron eval squad) on a tiny model and files written here."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

import kroncli
from kroncli.cli import app
from kroncli.data.squad import (SquadExample, load_squad, parse_version, prepare_features, read_squad_json,
                                squad_version)
from kroncli.errors import KronError
from kroncli.squad_metrics import exact_score, f1_score, find_best_thresh, normalize_answer, postprocess, \
    squad_evaluate

from conftest import own_copy, tiny_config

runner = CliRunner()


def run(*args):
    return runner.invoke(app, [str(a) for a in args])


def last_json(res):
    return json.loads(res.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------------------------------------- the data files

C1 = "The cat sat on the mat. It was a sunny day in Paris, and the cat was happy."
C2 = " ".join(f"Filler sentence number {i} says nothing." for i in range(30)) + " The secret code is 42."


def qa(qid, question, context, answers):
    return {"id": qid, "question": question, "is_impossible": not answers,
            "answers": [{"text": a, "answer_start": context.index(a)} for a in answers]}


def squad_json(v2: bool) -> dict:
    first = [qa("q1", "Where did the cat sit?", C1, ["on the mat", "the mat"]),
             qa("q2", "Where was it sunny?", C1, ["Paris"])]
    if v2:
        first.append(qa("q4", "What colour was the dog?", C1, []))
    return {"version": "v2.0" if v2 else "1.1", "data": [{"title": "Cats", "paragraphs": [
        {"context": C1, "qas": first},
        {"context": C2, "qas": [qa("q3", "What is the secret code?", C2, ["42"])]}]}]}


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("squad-data")
    for v2, suffix in ((False, "v1.1"), (True, "v2.0")):
        for split in ("train", "dev"):
            (path / f"{split}-{suffix}.json").write_text(json.dumps(squad_json(v2)))
    return path


@pytest.fixture(scope="module")
def tokenizer(minilm_path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(minilm_path)


# ---------------------------------------------------------------------------------------------- official metric

def test_normalisation_articles_punctuation_case():
    assert normalize_answer("The  Cat, sat!") == "cat sat"
    assert normalize_answer("an apple a day") == "apple day"
    assert normalize_answer("theatre") == "theatre"  # articles only as whole words
    assert exact_score("the Eiffel Tower", "Eiffel tower.") == 1
    assert exact_score("Eiffel Tower", "Tower") == 0


def test_f1_by_hand():
    # gold tokens [quick, brown, fox], predicted [quick, fox, jumps]: 2 in common -> P = R = 2/3
    assert f1_score("the quick brown fox", "quick fox jumps") == pytest.approx(2 / 3)
    # gold [denver, broncos], predicted [broncos]: P = 1, R = 1/2 -> 2/3
    assert f1_score("Denver Broncos", "the Broncos") == pytest.approx(2 / 3)
    assert f1_score("a b", "c d") == 0.0
    assert f1_score("", "", version=2) == 1.0 and f1_score("", "", version=1) == 0.0
    assert f1_score("", "x", version=2) == 0.0


def test_v1_max_over_gold_answers_and_missing_predictions():
    gold = {"a": ["Denver Broncos", "Broncos"], "b": ["the quick brown fox"], "c": ["Paris"]}
    preds = {"a": "the Broncos", "b": "quick fox jumps"}  # c has no prediction: scores 0
    res = squad_evaluate(gold, preds, version=1)
    assert res["total"] == 3
    assert res["exact"] == pytest.approx(100 / 3)  # only a (matches "Broncos")
    assert res["f1"] == pytest.approx(100 * (1 + 2 / 3 + 0) / 3)


def test_v2_no_answer_breakdown_and_threshold_search():
    gold = {"a": ["Paris"], "b": [], "c": ["blue sky"], "d": []}
    best_non_null = {"a": "Paris", "b": "London", "c": "sky", "d": ""}
    na = {"a": -2.0, "b": 3.0, "c": 1.0, "d": 0.5}
    res = squad_evaluate(gold, best_non_null, version=2, na_probs=na, na_prob_thresh=0.0)
    # threshold 0: a answered (right); b, c, d predicted unanswerable: b and d right, c wrong
    assert res["exact"] == 75.0 and res["f1"] == 75.0 and res["total"] == 4
    assert (res["HasAns_exact"], res["HasAns_total"]) == (50.0, 2)
    assert (res["NoAns_exact"], res["NoAns_f1"], res["NoAns_total"]) == (100.0, 100.0, 2)
    # sweep (sorted by na: a, d, c, b) from 2 right: +1 (a) -> 3 at -2; d +0; c exact +0 / f1 +2/3; b -1
    assert res["best_exact"] == 75.0 and res["best_exact_thresh"] == -2.0
    assert res["best_f1"] == pytest.approx(100 * (3 + 2 / 3) / 4) and res["best_f1_thresh"] == 1.0
    # without null scores every prediction stands: a right, b wrong, c 0/(2/3), d right
    plain = squad_evaluate(gold, best_non_null, version=2)
    assert plain["exact"] == 50.0 and plain["f1"] == pytest.approx(100 * (2 + 2 / 3) / 4)
    assert "best_f1" not in plain


def test_threshold_when_no_answer_everywhere_is_best():
    score, thresh = find_best_thresh({"a": "x", "b": "y"}, {"a": 0.0, "b": 0.0}, {"a": 1.0, "b": 2.0},
                                     {"a": True, "b": False})
    assert score == 50.0 and thresh < 1.0  # below every na_prob: predicts "" everywhere
    gold, preds = {"a": ["z"], "b": []}, {"a": "x", "b": "y"}
    again = squad_evaluate(gold, preds, 2, na_probs={"a": 1.0, "b": 2.0}, na_prob_thresh=thresh)
    assert again["exact"] == 50.0


# ---------------------------------------------------------------------------------------------- loading

def test_task_names_and_versions():
    for name in ("squad", "SQuAD", "squad1", "squad_v1.1", "squad-v1"):
        assert squad_version(name) == 1
    for name in ("squad2", "squad_v2", "squad-v2", "SQuAD_v2.0"):
        assert squad_version(name) == 2
    assert squad_version("mrpc") is None
    assert parse_version("2.0") == 2 and parse_version("v1") == 1
    with pytest.raises(KronError, match="--version"):
        parse_version("3")


def test_load_official_json(data_dir):
    ex = load_squad(2, "dev", data_dir)
    assert [e.id for e in ex] == ["q1", "q2", "q4", "q3"]
    assert ex[0].answers == ["on the mat", "the mat"] and ex[0].answer_starts == [12, 15]
    assert ex[2].is_impossible and not ex[0].is_impossible
    assert ex[3].context == C2 and ex[3].title == "Cats"
    with pytest.raises(KronError, match="--version 2"):
        load_squad(1, "dev", file=data_dir / "dev-v2.0.json")


@pytest.mark.parametrize("text, where", [
    ('{"data": [', "not valid JSON"),
    ('{"version": "1.1"}', '"data"'),
    ('{"data": [{"paragraphs": [{"qas": []}]}]}', "context"),
    ('{"data": [{"paragraphs": [{"context": "x", "qas": [{"id": "a", "answers": []}]}]}]}', "question"),
    ('{"data": [{"paragraphs": [{"context": "x", "qas": [{"id": "a", "question": "q", "answers": '
     '[{"text": "x"}]}]}]}]}', "answer_start"),
])
def test_malformed_files_name_the_file(tmp_path, text, where):
    path = tmp_path / "bad.json"
    path.write_text(text)
    with pytest.raises(KronError) as e:
        read_squad_json(path, 1)
    assert str(path) in str(e.value) and where in str(e.value)


def test_missing_local_data_and_offline_hub(tmp_path, monkeypatch):
    with pytest.raises(KronError, match="train-v1.1.json"):
        load_squad(1, "train", tmp_path)
    monkeypatch.delenv("KRON_SQUAD_DIR", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.chdir(tmp_path)  # no ../shared/squad
    with pytest.raises(KronError, match="--data-dir"):
        load_squad(2, "dev")


# ---------------------------------------------------------------------------------------------- features

def test_train_windows_map_answers_back_through_offsets(tokenizer):
    examples = [SquadExample("q1", "Where did the cat sit?", C1, ["on the mat"], [C1.index("on the mat")]),
                SquadExample("q3", "What is the secret code?", C2, ["42"], [C2.index("42")]),
                SquadExample("q4", "What colour was the dog?", C1, [], [])]
    train = prepare_features(examples, tokenizer, max_seq_len=64, doc_stride=16, train=True)
    dev = prepare_features(examples, tokenizer, max_seq_len=64, doc_stride=16, train=False)
    assert train.example_index == dev.example_index
    windows = {i: [j for j, e in enumerate(dev.example_index) if e == i] for i in range(3)}
    assert len(windows[0]) == 1 and len(windows[2]) == 1 and len(windows[1]) > 3  # the long context overflows
    for j, i in enumerate(train.example_index):
        item, span = train[j], dev.offsets[j]
        assert len(item["input_ids"]) <= 64 and len(span) == len(item["input_ids"])
        s, e = item["start_positions"], item["end_positions"]
        if s == 0:
            assert e == 0 and (examples[i].is_impossible or i == 1)
            continue
        assert examples[i].context[span[s, 0]:span[e, 1]] == examples[i].answers[0]
    # exactly one window of the long context holds "42": the last one
    hits = [j for j in windows[1] if train[j]["start_positions"] != 0]
    assert hits == [windows[1][-1]]
    assert [train[j]["start_positions"] for j in windows[2]] == [0]  # unanswerable -> CLS
    # consecutive windows share doc_stride context tokens
    for a, b in zip(windows[1], windows[1][1:]):
        ctx_a = [tuple(o) for o in dev.offsets[a] if o[0] >= 0]
        ctx_b = [tuple(o) for o in dev.offsets[b] if o[0] >= 0]
        assert ctx_a[-16:] == ctx_b[:16]


def test_stride_too_large_is_an_error(tokenizer):
    ex = [SquadExample("q", "Why?", C2, ["42"], [C2.index("42")])]
    with pytest.raises(KronError, match="--doc-stride"):
        prepare_features(ex, tokenizer, max_seq_len=64, doc_stride=62)


# ---------------------------------------------------------------------------------------------- postprocess

class Ex:
    def __init__(self, id, context):
        self.id, self.context = id, context


CTX = "alpha beta gamma delta"
# tokens: [CLS] q [SEP] alpha beta gamma delta [SEP]
OFFS = np.array([(-1, -1), (-1, -1), (-1, -1), (0, 5), (6, 10), (11, 16), (17, 22), (-1, -1)])


def test_postprocess_picks_the_best_valid_span():
    start = np.array([0, 9, 0, 1, 5, 2, 0, 0.])  # the question token scores highest but is not context
    end = np.array([0, 0, 0, 0, 1, 6, 7, 0.])
    preds, best, odds = postprocess([Ex("x", CTX)], [0], [OFFS], [start], [end])
    assert preds == {"x": "beta gamma delta"} and best == preds  # 5 + 7
    assert odds["x"] == pytest.approx(0 - 12)
    preds, _, _ = postprocess([Ex("x", CTX)], [0], [OFFS], [start], [end], max_answer_len=2)
    assert preds == {"x": "beta gamma"}  # 5 + 6
    # end before start is never chosen
    preds, _, _ = postprocess([Ex("x", CTX)], [0], [OFFS], [np.array([0, 0, 0, 0, 0, 0, 9, 0.])],
                              [np.array([0, 0, 0, 8, 0, 0, 1, 0.])])
    assert preds == {"x": "delta"}


def test_postprocess_across_windows_and_null_answer():
    low = np.zeros(8)
    start2, end2 = np.array([0, 0, 0, 3, 0, 0, 0, 0.]), np.array([0, 0, 0, 4, 0, 0, 0, 0.])
    preds, _, _ = postprocess([Ex("x", CTX)], [0, 0], [OFFS, OFFS], [low, start2], [low, end2])
    assert preds == {"x": "alpha"}
    # v2: null score 10 + 10 (smallest over windows) beats the best span 3 + 4 by 13
    s_null, e_null = start2.copy(), end2.copy()
    s_null[0], e_null[0] = 10, 10
    preds, best, odds = postprocess([Ex("x", CTX)], [0], [OFFS], [s_null], [e_null], version=2)
    assert preds == {"x": ""} and best == {"x": "alpha"} and odds["x"] == pytest.approx(13)
    preds, _, _ = postprocess([Ex("x", CTX)], [0], [OFFS], [s_null], [e_null], version=2, null_threshold=13.5)
    assert preds == {"x": "alpha"}
    preds, _, _ = postprocess([Ex("x", CTX)], [0], [OFFS], [s_null], [e_null], version=1)
    assert preds == {"x": "alpha"}  # v1.1 never predicts no answer


# ---------------------------------------------------------------------------------------------- end to end

@pytest.fixture(scope="module")
def factorized(tmp_path_factory, minilm_path):
    """A tiny teacher and the workspace factorized from it, nothing trained; no test writes into it."""
    from transformers import AutoTokenizer, BertModel

    root = tmp_path_factory.mktemp("squad-ws")
    torch.manual_seed(0)
    teacher = root / "teacher"
    BertModel(tiny_config(vocab_size=30522, max_position_embeddings=512)).save_pretrained(teacher)
    AutoTokenizer.from_pretrained(minilm_path).save_pretrained(teacher)
    res = run("factorize", teacher, "--ratio", 3, "-w", root / "factorized")
    assert res.exit_code == 0, res.output
    return root / "factorized"


@pytest.fixture(scope="module")
def ws(factorized):
    """The workspace this module's tests train in (beside its teacher), shared; a test makes what it needs there."""
    import shutil

    return Path(shutil.copytree(factorized, factorized.parent / "ws"))


def finetune(ws, data_dir, task, *extra):
    return run("finetune", "-w", ws, "--task", task, "--data-dir", data_dir, "--batch-size", 4, "--log-every", 1,
               "--json", *extra)


def with_squad_models(ws, data_dir, student: bool = True) -> None:
    """SQuAD's teacher (and student) in the shared ws, trained briefly unless an earlier test left them."""
    task = ws / "tasks" / "squad"
    if not (task / "teacher" / "config.json").is_file():
        assert finetune(ws, data_dir, "squad", "--teacher-only", "--max-steps", 2).exit_code == 0
    if student and not (task / "student" / "config.json").is_file():
        res = finetune(ws, data_dir, "squad", "--max-steps", 2, "--max-seq-len", 64, "--doc-stride", 16)
        assert res.exit_code == 0, res.output


def test_squad_v1_end_to_end(factorized, data_dir, tmp_path):
    ws = own_copy(factorized, tmp_path)  # from the factorized student, whatever other tests trained meanwhile
    res = run("eval", "squad", "-w", ws, "--version", 1, "--data-dir", data_dir)
    assert res.exit_code == 2 and "kron finetune" in res.output and "--teacher-only" in res.output
    res = finetune(ws, data_dir, "squad", "--max-steps", 3)
    assert res.exit_code == 2 and "--teacher-only" in res.output

    res = finetune(ws, data_dir, "squad", "--teacher-only", "--max-steps", 3)  # 384 tokens, stride 128
    assert res.exit_code == 0, res.output
    out = last_json(res)
    assert out["model"] == "teacher" and out["max_seq_len"] == 384 and out["eval"]["n"] == 3
    assert (ws / "tasks" / "squad" / "teacher" / "config.json").is_file()

    res = finetune(ws, data_dir, "squad_v1.1", "--max-steps", 3, "--max-seq-len", 64, "--doc-stride", 16)
    assert res.exit_code == 0, res.output
    out = last_json(res)
    assert out["steps"] == 3 and out["eval"]["n"] == 3 and 0 <= out["eval"]["f1"] <= 100
    df = pd.read_csv(ws / "metrics" / "finetune-squad.csv")
    for col in ("embedding_mse", "attention_mse", "hidden_mse", "qa_logit_kd", "qa_supervised", "total",
                "eval_exact", "eval_f1"):
        assert col in df and df[col].notna().any()
    student = kroncli.load_student(ws / "tasks" / "squad" / "student")
    assert type(student).__name__ == "BertForQuestionAnswering"
    kron_json = json.loads((ws / "tasks" / "squad" / "student" / "kron.json").read_text())
    assert (kron_json["max_seq_len"], kron_json["doc_stride"], kron_json["task"]) == (64, 16, "squad")

    res = run("eval", "squad", "-w", ws, "--version", 1, "--data-dir", data_dir, "--json")
    assert res.exit_code == 0, res.output
    out = last_json(res)
    assert out["n"] == 3 and set(out["results"]) == {"student", "teacher"}
    for which, r in out["results"].items():
        assert 0 <= r["exact"] <= 100 and 0 <= r["f1"] <= 100 and r["exact"] <= r["f1"] + 1e-9 and r["n"] == 3
        preds = json.loads((ws / "predictions" / f"squad-{which}.json").read_text())
        assert set(preds) == {"q1", "q2", "q3"}
        answers = {q: t for q, t in preds.items()}
        assert all(t in C1 + C2 for t in answers.values())
        # the reported scores are the official scores of the written predictions
        gold = {e.id: e.answers for e in load_squad(1, "dev", data_dir)}
        assert squad_evaluate(gold, preds, 1)["f1"] == pytest.approx(r["f1"])
    assert out["max_seq_len"] == 64  # recorded by kron finetune
    csv = pd.read_csv(ws / "metrics" / "eval.csv")
    assert list(csv.columns) == ["workspace", "model", "task", "split", "metric", "value", "n", "seconds",
                                 "timestamp"]
    rows = csv[(csv.task == "squad") & (csv.metric == "f1")]
    assert set(rows.model) == {"student", "teacher"} and (rows.n == 3).all()

    res = run("eval", "squad", "-w", ws, "--version", 1, "--dev-file", data_dir / "dev-v1.1.json",
              "--model", "student", "--limit", 2, "--json")
    assert res.exit_code == 0, res.output
    out = last_json(res)
    assert out["n"] == 2 and list(out["results"]) == ["student"]


def test_shallow_squad_student_matches_the_teacher_layer_it_was_cut_from(ws, data_dir, monkeypatch):
    import shutil

    import kroncli.stages.squad as stage

    with_squad_models(ws, data_dir, student=False)
    shallow = ws.parent / "shallow"
    res = run("factorize", ws.parent / "teacher", "--ratio", 3, "--layers", 0, "-w", shallow)
    assert res.exit_code == 0, res.output
    shutil.copytree(ws / "tasks" / "squad" / "teacher", shallow / "tasks" / "squad" / "teacher")
    maps = []
    real = stage.DistillLoss
    monkeypatch.setattr(stage, "DistillLoss", lambda *a, **kw: maps.append(kw.get("layer_map")) or real(*a, **kw))
    res = finetune(shallow, data_dir, "squad", "--max-steps", 2, "--max-seq-len", 64, "--doc-stride", 16)
    assert res.exit_code == 0, res.output
    assert maps == [[0]]  # kron.json's teacher layer, not the uniform default [1]
    assert kroncli.load_student(shallow / "tasks" / "squad" / "student").config.num_hidden_layers == 1


def test_squad_v2_end_to_end(ws, data_dir):
    for extra in (("--teacher-only",), ("--weight", "logit_kd=0.5")):
        res = finetune(ws, data_dir, "squad-v2", "--max-steps", 2, "--max-seq-len", 64, "--doc-stride", 16, *extra)
        assert res.exit_code == 0, res.output
    assert last_json(res)["weights"]["qa_logit_kd"] == 0.5  # logit_kd means the start/end logit KD here
    res = run("eval", "squad", "-w", ws, "--version", 2, "--data-dir", data_dir, "--json")
    assert res.exit_code == 0, res.output
    out = last_json(res)
    assert out["task"] == "squad_v2" and out["n"] == 4
    r = out["results"]["student"]
    assert r["HasAns_total"] == 3 and r["NoAns_total"] == 1
    assert r["best_f1"] >= r["f1"] - 1e-9 and r["best_exact"] >= r["exact"] - 1e-9
    assert 0 <= r["exact"] <= 100 and 0 <= r["f1"] <= 100
    # predicting with the best threshold gives the best score
    res = run("eval", "squad", "-w", ws, "--version", 2, "--data-dir", data_dir, "--model", "student",
              "--null-threshold", r["best_f1_thresh"], "--json")
    assert last_json(res)["results"]["student"]["f1"] == pytest.approx(r["best_f1"])
    preds = json.loads((ws / "predictions" / "squad_v2-student.json").read_text())
    assert set(preds) == {"q1", "q2", "q3", "q4"}


def test_bad_inputs(ws, data_dir, tmp_path):
    with_squad_models(ws, data_dir)  # the errors below come after the models are found
    def fails(*args, text):
        res = run(*args)
        assert res.exit_code == 2, res.output
        assert text in res.output and "Traceback" not in res.output
        assert len(res.output.strip().splitlines()) <= 3  # one (wrapped) line

    fails("eval", "squad", "-w", ws, "--version", 3, text="--version")
    fails("eval", "squad", "-w", ws, "--dev-file", tmp_path / "nope.json", text="nope.json")
    bad = tmp_path / "bad.json"
    bad.write_text('{"data": [')
    fails("eval", "squad", "-w", ws, "--dev-file", bad, text="bad.json")
    fails("eval", "squad", "-w", ws, "--data-dir", tmp_path, text="dev-v1.1.json")
    fails("eval", "squad", "-w", tmp_path / "none", "--data-dir", data_dir, text="does not exist")
    fails("eval", "squad", "-w", ws, "--model", "dog", "--data-dir", data_dir, text="--model")
    for option, value in (("--batch-size", 0), ("--max-seq-len", 0), ("--max-answer-len", -5)):
        fails("eval", "squad", "-w", ws, "--data-dir", data_dir, option, value, text=f"{option} {value} must be at least 1")
    fails("finetune", "-w", ws, "--task", "squad", "--data-dir", tmp_path, text="train-v1.1.json")
    fails("finetune", "-w", ws, "--task", "squad", "--data-dir", data_dir, "--doc-stride", 400,
          text="--doc-stride")
    fails("finetune", "-w", ws, "--task", "squad3", text="squad3")
