"""kroncli.data.glue: task table, names, the TSV loader on every task's original layout, errors, sources."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import pytest
from conftest import glue_dir, require_glue

from kroncli.data import glue
from kroncli.data.glue import TASKS, default_data_dir, load_split, normalize_task
from kroncli.errors import KronError

T = "\t"
NAN = math.nan
MNLI_COLS = ["index", "promptID", "pairID", "genre", "sentence1_binary_parse", "sentence2_binary_parse",
             "sentence1_parse", "sentence2_parse", "sentence1", "sentence2"]


def line(*fields) -> str:
    return T.join(map(str, fields))


def mnli_row(index, s1, s2, *labels) -> str:
    return line(index, 31193, f"{31193 + index}n", "government", "( ( x ) )", "( y )", "(ROOT x)", "(ROOT y)", s1, s2,
                *labels)


# Each task's files in the original GLUE layout, written verbatim, and the rows load_split must return:
# (text_a, text_b, label, idx). Sentences carry quote characters: leading, unbalanced, and doubled.
LAYOUTS: dict[str, dict[str, tuple[str, list[str], list[tuple]]]] = {
    "CoLA": {
        "train": ("CoLA/train.tsv", [
            line("gj04", 1, "", '"Hello," she said.'),
            line("gj04", 0, "*", 'He said "hi.'),
            line("bc01", 1, "", "Plain sentence."),
        ], [('"Hello," she said.', None, 1, 0), ('He said "hi.', None, 0, 1), ("Plain sentence.", None, 1, 2)]),
        "dev": ("CoLA/dev.tsv", [line("bc01", 0, "*", '"Unbalanced start')], [('"Unbalanced start', None, 0, 0)]),
        "test": ("CoLA/test.tsv", [line("index", "sentence"), line(0, '"Quoted" test.'), line(1, 'Another "one.')],
                 [('"Quoted" test.', None, NAN, 0), ('Another "one.', None, NAN, 1)]),
    },
    "SST-2": {
        "train": ("SST-2/train.tsv", [line("sentence", "label"), line('" a charming journey ', 1),
                                      line("dull , dull , dull ", 0)],
                  [('" a charming journey ', None, 1, 0), ("dull , dull , dull ", None, 0, 1)]),
        "dev": ("SST-2/dev.tsv", [line("sentence", "label"), line('it \'s "good', 1)], [('it \'s "good', None, 1, 0)]),
        "test": ("SST-2/test.tsv", [line("index", "sentence"), line(0, '""'), line(1, "fine .")],
                 [('""', None, NAN, 0), ("fine .", None, NAN, 1)]),
    },
    "MRPC": {
        "train": ("MRPC/train.tsv", ["\ufeff" + line("Quality", "#1 ID", "#2 ID", "#1 String", "#2 String"),
                                     line(1, 702876, 702977, 'He called "the witness", twice.', '"The witness" came.'),
                                     line(0, 2108705, 2108831, "Yucaipa owned it.", "Yucaipa bought it.")],
                  [('He called "the witness", twice.', '"The witness" came.', 1, 0),
                   ("Yucaipa owned it.", "Yucaipa bought it.", 0, 1)]),
        "dev": ("MRPC/dev.tsv", ["\ufeff" + line("Quality", "#1 ID", "#2 ID", "#1 String", "#2 String"),
                                 line(1, 1355540, 1355592, "It doesn't fit.", '"It does not fit.')],
                [("It doesn't fit.", '"It does not fit.', 1, 0)]),
        "test": ("MRPC/test.tsv", [line("index", "#1 ID", "#2 ID", "#1 String", "#2 String"),
                                   line(0, 1089874, 1089925, "A.", 'B "c'), line(1, 3019446, 3019327, "D", "E")],
                 [("A.", 'B "c', NAN, 0), ("D", "E", NAN, 1)]),
    },
    "STS-B": {
        "train": ("STS-B/train.tsv", [
            line("index", "genre", "filename", "year", "old_index", "source1", "source2", "sentence1", "sentence2",
                 "score"),
            line(0, "main-captions", "MSRvid", "2012test", "0001", "none", "none", "A plane is taking off.",
                 '"A plane', "5.000"),
            line(1, "main-news", "headlines", "2013", "0004", "none", "none", "x", "y", "3.800")],
            [("A plane is taking off.", '"A plane', 5.0, 0), ("x", "y", 3.8, 1)]),
        "dev": ("STS-B/dev.tsv", [
            line("index", "genre", "filename", "year", "old_index", "source1", "source2", "sentence1", "sentence2",
                 "score"),
            line(7, "main-forums", "f", "2014", "0002", "none", "none", 'a "b', "c", "0")],
            [('a "b', "c", 0.0, 0)]),
        "test": ("STS-B/test.tsv", [
            line("index", "genre", "filename", "year", "old_index", "source1", "source2", "sentence1", "sentence2"),
            line(0, "main-captions", "MSRvid", "2012test", "0024", "none", "none", "A girl.", '"Her hair."')],
            [("A girl.", '"Her hair."', NAN, 0)]),
    },
    "QQP": {
        "train": ("QQP/train.tsv", [line("id", "qid1", "qid2", "question1", "question2", "is_duplicate"),
                                    line(133273, 213221, 213222, 'What is "x?', "What is x?", 1),
                                    line(402555, 536040, 536041, "How?", '"Why"', 0)],
                  [('What is "x?', "What is x?", 1, 0), ("How?", '"Why"', 0, 1)]),
        "dev": ("QQP/dev.tsv", [line("id", "qid1", "qid2", "question1", "question2", "is_duplicate"),
                                line(201359, 303345, 303346, "q1", "q2", 0)], [("q1", "q2", 0, 0)]),
        "test": ("QQP/test.tsv", [line("id", "question1", "question2"), line(0, '"a', "b"), line(1, "c", "d")],
                 [('"a', "b", NAN, 0), ("c", "d", NAN, 1)]),
    },
    "MNLI": {
        "train": ("MNLI/train.tsv", [line(*MNLI_COLS, "label1", "gold_label"),
                                     mnli_row(0, 'He said "go.', "He spoke.", "neutral", "neutral"),
                                     mnli_row(1, "p", '"h"', "contradiction", "contradiction"),
                                     mnli_row(2, "p2", "h2", "entailment", "entailment")],
                  [('He said "go.', "He spoke.", 1, 0), ("p", '"h"', 2, 1), ("p2", "h2", 0, 2)]),
        "dev_matched": ("MNLI/dev_matched.tsv", [
            line(*MNLI_COLS, "label1", "label2", "label3", "label4", "label5", "gold_label"),
            mnli_row(0, "m1", "m2", "neutral", "entailment", "neutral", "neutral", "neutral", "neutral")],
            [("m1", "m2", 1, 0)]),
        "dev_mismatched": ("MNLI/dev_mismatched.tsv", [
            line(*MNLI_COLS, "label1", "label2", "label3", "label4", "label5", "gold_label"),
            mnli_row(5, '"mm', "x", "contradiction", "contradiction", "neutral", "contradiction",
                     "contradiction", "contradiction")],
            [('"mm', "x", 2, 0)]),
        "test_matched": ("MNLI/test_matched.tsv", [line(*MNLI_COLS), mnli_row(0, "t1", 't2"')],
                         [("t1", 't2"', NAN, 0)]),
        "test_mismatched": ("MNLI/test_mismatched.tsv", [line(*MNLI_COLS), mnli_row(3, "u1", "u2")],
                            [("u1", "u2", NAN, 3)]),
    },
    "QNLI": {
        "train": ("QNLI/train.tsv", [line("index", "question", "sentence", "label"),
                                     line(0, 'Who "said?', "Nobody.", "not_entailment"),
                                     line(1, "What?", "That.", "entailment")],
                  [('Who "said?', "Nobody.", 1, 0), ("What?", "That.", 0, 1)]),
        "dev": ("QNLI/dev.tsv", [line("index", "question", "sentence", "label"), line(0, "q", "s", "entailment")],
                [("q", "s", 0, 0)]),
        "test": ("QNLI/test.tsv", [line("index", "question", "sentence"), line(0, "q", '"s')],
                 [("q", '"s', NAN, 0)]),
    },
    "RTE": {
        "train": ("RTE/train.tsv", [line("index", "sentence1", "sentence2", "label"),
                                    line(0, '"No Weapons of Mass Destruction', "Weapons found.", "not_entailment"),
                                    line(1, "A.", "B.", "entailment")],
                  [('"No Weapons of Mass Destruction', "Weapons found.", 1, 0), ("A.", "B.", 0, 1)]),
        "dev": ("RTE/dev.tsv", [line("index", "sentence1", "sentence2", "label"), line(0, "s1", "s2", "entailment")],
                [("s1", "s2", 0, 0)]),
        "test": ("RTE/test.tsv", [line("index", "sentence1", "sentence2"), line(0, "a", "b")],
                 [("a", "b", NAN, 0)]),
    },
    "WNLI": {
        "train": ("WNLI/train.tsv", [line("index", "sentence1", "sentence2", "label"),
                                     line(0, 'I said "stop. He stopped.', "He stopped.", 1),
                                     line(1, "x", "y", 0)],
                  [('I said "stop. He stopped.', "He stopped.", 1, 0), ("x", "y", 0, 1)]),
        "dev": ("WNLI/dev.tsv", [line("index", "sentence1", "sentence2", "label"), line(0, "a", "b", 0)],
                [("a", "b", 0, 0)]),
        "test": ("WNLI/test.tsv", [line("index", "sentence1", "sentence2"), line(0, "c", '"d')],
                 [("c", '"d', NAN, 0)]),
    },
    "AX": {
        "test": ("diagnostic/diagnostic.tsv", [line("index", "sentence1", "sentence2"),
                                               line(0, 'The cat sat "on the mat.', "The cat did not sit."),
                                               line(1, "a", "b")],
                 [('The cat sat "on the mat.', "The cat did not sit.", NAN, 0), ("a", "b", NAN, 1)]),
    },
}


def write(root: Path, rel: str, lines: list[str], end: str = "\n") -> Path:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes((end.join(lines) + end).encode("utf-8"))
    return path


def write_task(root: Path, name: str) -> None:
    for rel, lines, _ in LAYOUTS[name].values():
        write(root, rel, lines)


def rows(df: pd.DataFrame) -> list[tuple]:
    return list(df.itertuples(index=False, name=None))


def same_rows(got: list[tuple], want: list[tuple]) -> bool:
    return len(got) == len(want) and all(
        g[:2] == w[:2] and g[3] == w[3] and (math.isnan(g[2]) if math.isnan(w[2]) else g[2] == w[2])
        for g, w in zip(got, want))


def fail(*args, **kwargs):
    pytest.fail("must not be called")


@pytest.fixture(autouse=True)
def no_hub(monkeypatch):
    """No test reaches the network: the socket check says 'unreachable', and load_dataset is never called."""
    for var in ("KRON_GLUE_DIR", "HF_DATASETS_OFFLINE", "HF_HUB_OFFLINE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr("kroncli.sources._hub_reachable", lambda timeout=3.0: False)
    try:
        import datasets
    except ImportError:
        return
    monkeypatch.setattr(datasets, "load_dataset", fail)


# --- the task table and names -----------------------------------------------------------------------------------

def test_every_task_has_a_layout_and_consistent_entries():
    assert set(TASKS) == set(LAYOUTS) == {"CoLA", "SST-2", "MRPC", "STS-B", "QQP", "MNLI", "QNLI", "RTE", "WNLI",
                                          "AX"}
    for task in TASKS.values():
        assert set(task.splits) == set(LAYOUTS[task.name])
        train = set() if task.name == "AX" else {"train"}
        assert train | set(task.eval_splits) | set(task.test_splits) == set(task.splits)
        assert task.primary in task.metrics
        assert len(task.hub_text) in (1, 2)
        assert all(len(spec.text) == len(task.hub_text) for spec in task.tsv.values())
    assert TASKS["STS-B"].num_labels == 1 and TASKS["STS-B"].is_regression
    assert TASKS["MNLI"].label_names == ("entailment", "neutral", "contradiction")
    assert TASKS["RTE"].label_names == TASKS["QNLI"].label_names == ("entailment", "not_entailment")
    assert TASKS["AX"].label_names == TASKS["MNLI"].label_names and TASKS["AX"].eval_splits == ()
    assert {t.name: t.hub_config for t in TASKS.values()} == {
        "CoLA": "cola", "SST-2": "sst2", "MRPC": "mrpc", "STS-B": "stsb", "QQP": "qqp", "MNLI": "mnli",
        "QNLI": "qnli", "RTE": "rte", "WNLI": "wnli", "AX": "ax"}
    assert not TASKS["CoLA"].is_pair and TASKS["MRPC"].is_pair


@pytest.mark.parametrize("spelling, name", [
    ("cola", "CoLA"), ("CoLA", "CoLA"), ("COLA", "CoLA"), ("sst2", "SST-2"), ("SST-2", "SST-2"), ("sst_2", "SST-2"),
    ("sts-b", "STS-B"), ("stsb", "STS-B"), ("STS-B", "STS-B"), ("STS_B", "STS-B"), ("mrpc", "MRPC"),
    ("qqp", "QQP"), ("mnli", "MNLI"), ("MNLI", "MNLI"), ("qnli", "QNLI"), ("rte", "RTE"), ("wnli", "WNLI"),
    ("ax", "AX"), ("diagnostic", "AX"), ("mnli-m", "MNLI-m"), ("mnli_matched", "MNLI-m"), ("mnli-mm", "MNLI-mm"),
    ("MNLI-MM", "MNLI-mm"), ("mnli_mismatched", "MNLI-mm"), (" Rte ", "RTE"),
])
def test_normalize_task_spellings(spelling, name):
    assert normalize_task(spelling).name == name


def test_mnli_variants_restrict_the_eval_and_test_splits():
    mm, m, full = normalize_task("mnli-mm"), normalize_task("mnli-m"), normalize_task("mnli")
    assert mm.eval_splits == ("dev_mismatched",) and mm.test_splits == ("test_mismatched",)
    assert m.eval_splits == ("dev_matched",) and m.test_splits == ("test_matched",)
    assert full.eval_splits == ("dev_matched", "dev_mismatched")
    assert mm.folder == m.folder == "MNLI" and mm.hub_config == "mnli" and mm.label_names == full.label_names


def test_normalize_task_unknown_lists_valid_names():
    with pytest.raises(KronError) as err:
        normalize_task("squad")
    message = str(err.value)
    assert "'squad'" in message and "\n" not in message
    for name in ("CoLA", "SST-2", "MRPC", "STS-B", "QQP", "MNLI", "QNLI", "RTE", "WNLI", "AX", "MNLI-mm"):
        assert name in message


# --- every task's loader on its original layout ---------------------------------------------------------------------

@pytest.mark.parametrize("name, split", [(n, s) for n, splits in LAYOUTS.items() for s in splits])
def test_load_split_original_layout(tmp_path, name, split):
    write_task(tmp_path, name)
    df = load_split(name, split, tmp_path)
    assert list(df.columns) == ["text_a", "text_b", "label", "idx"]
    assert same_rows(rows(df), LAYOUTS[name][split][2]), rows(df)
    assert df["idx"].dtype == "int64"
    task = TASKS[name]
    if task.tsv[split].label is None:
        assert df["label"].isna().all()
    else:
        assert df["label"].dtype == ("float64" if task.is_regression else "int64")
    if not task.is_pair:
        assert df["text_b"].isna().all()


def test_quote_rows_would_be_merged_by_default_csv_quoting(tmp_path):
    """The fixture is adversarial: pandas' default quoting reads it wrongly; load_split reads it exactly."""
    write_task(tmp_path, "CoLA")
    path = tmp_path / "CoLA" / "train.tsv"
    naive = pd.read_csv(path, sep="\t", header=None, dtype=str, keep_default_na=False)
    assert naive.iloc[:, 3].tolist() != ['"Hello," she said.', 'He said "hi.', "Plain sentence."]
    assert load_split("cola", "train", tmp_path)["text_a"].tolist() == [
        '"Hello," she said.', 'He said "hi.', "Plain sentence."]


def test_crlf_no_trailing_newline_and_unicode_separators(tmp_path):
    path = write(tmp_path, "RTE/dev.tsv", [line("index", "sentence1", "sentence2", "label"),
                                           line(0, "a\u2028b", "c\x0bd", "entailment"),
                                           line(1, "e", "f", "not_entailment")], end="\r\n")
    path.write_bytes(path.read_bytes()[:-2])  # drop the final CRLF
    assert rows(load_split("RTE", "dev", tmp_path)) == [("a\u2028b", "c\x0bd", 0, 0), ("e", "f", 1, 1)]


def test_mnli_variant_and_hub_split_names(tmp_path):
    write_task(tmp_path, "MNLI")
    assert rows(load_split("mnli-mm", "dev_mismatched", tmp_path)) == [('"mm', "x", 2, 0)]
    assert rows(load_split("mnli", "validation_matched", tmp_path)) == [("m1", "m2", 1, 0)]
    write_task(tmp_path, "RTE")
    assert rows(load_split("rte", "validation", tmp_path)) == [("s1", "s2", 0, 0)]


# --- errors the user can fix: file and 1-based line named, nothing dropped -----------------------------------------

def error(name, split, root) -> str:
    with pytest.raises(KronError) as err:
        load_split(name, split, root)
    message = str(err.value)
    assert "\n" not in message
    return message


def test_row_with_too_few_fields(tmp_path):
    path = write(tmp_path, "MRPC/train.tsv", ["\ufeff" + line("Quality", "#1 ID", "#2 ID", "#1 String", "#2 String"),
                                              line(1, 1, 2, "a", "b"), line(0, 3, 4, "only one sentence")])
    message = error("mrpc", "train", tmp_path)
    assert f"{path}:3:" in message and "4 tab-separated fields, expected 5" in message


def test_row_with_an_extra_tab_in_a_headerless_file(tmp_path):
    path = write(tmp_path, "CoLA/train.tsv", [line("gj04", 1, "", "fine"), line("gj04", 1, "", "a\ttab")])
    assert f"{path}:2:" in error("cola", "train", tmp_path)


def test_blank_line_in_the_middle_is_not_skipped(tmp_path):
    path = write(tmp_path, "WNLI/train.tsv", [line("index", "sentence1", "sentence2", "label"), line(0, "a", "b", 1),
                                              "", line(1, "c", "d", 0)])
    assert f"{path}:3:" in error("wnli", "train", tmp_path)


def test_missing_column(tmp_path):
    path = write(tmp_path, "RTE/train.tsv", [line("index", "sentence1", "sentence2"), line(0, "a", "b")])
    message = error("rte", "train", tmp_path)
    assert f"{path}:1:" in message and "'label'" in message


@pytest.mark.parametrize("name, rel, lines, bad", [
    ("MRPC", "MRPC/dev.tsv", ["\ufeff" + line("Quality", "#1 ID", "#2 ID", "#1 String", "#2 String"),
                              line(1, 1, 2, "a", "b"), line(2, 3, 4, "c", "d")], "'2'"),
    ("CoLA", "CoLA/dev.tsv", [line("gj04", "1.0", "", "s")], "'1.0'"),
    ("RTE", "RTE/dev.tsv", [line("index", "sentence1", "sentence2", "label"), line(0, "a", "b", "entailment"),
                            line(1, "c", "d", "maybe")], "'maybe'"),
    ("MNLI", "MNLI/train.tsv", [line(*MNLI_COLS, "label1", "gold_label"), mnli_row(0, "a", "b", "neutral", "neutral"),
                                mnli_row(1, "c", "d", "-", "-")], "'-'"),
    ("STS-B", "STS-B/dev.tsv", [line("index", "genre", "filename", "year", "old_index", "source1", "source2",
                                     "sentence1", "sentence2", "score"),
                                line(0, "g", "f", "y", "o", "s", "s", "a", "b", "1.5"),
                                line(1, "g", "f", "y", "o", "s", "s", "a", "b", "high")], "'high'"),
    ("QQP", "QQP/test.tsv", [line("id", "question1", "question2"), line(0, "a", "b"), line("x9", "c", "d")],
     "'x9'"),
])
def test_bad_label_or_id_names_file_and_line(tmp_path, name, rel, lines, bad):
    path = write(tmp_path, rel, lines)
    split = Path(rel).stem
    message = error(name, split, tmp_path)
    want_line = 1 if name == "CoLA" else 3  # CoLA dev has no header
    assert f"{path}:{want_line}:" in message and bad in message


def test_missing_file_names_the_expected_path(tmp_path):
    write_task(tmp_path, "WNLI")
    message = error("sst2", "train", tmp_path)
    assert str(tmp_path / "SST-2" / "train.tsv") in message and "--data-dir" in message
    (tmp_path / "WNLI" / "dev.tsv").unlink()
    assert str(tmp_path / "WNLI" / "dev.tsv") in error("wnli", "dev", tmp_path)


def test_data_dir_that_does_not_exist(tmp_path):
    message = error("cola", "train", tmp_path / "nowhere")
    assert str(tmp_path / "nowhere") in message and "not a directory" in message


@pytest.mark.parametrize("rel, lines, needle", [
    ("RTE/dev.tsv", [line("index", "sentence1", "sentence2", "label")], "no data rows"),
    ("CoLA/dev.tsv", [], "no data rows"),
    ("WNLI/dev.tsv", [], "empty file"),
])
def test_empty_split(tmp_path, rel, lines, needle):
    path = tmp_path / rel
    path.parent.mkdir(parents=True)
    path.write_text("\n".join(lines) + ("\n" if lines else ""), encoding="utf-8")
    message = error(rel.split("/")[0], "dev", tmp_path)
    assert str(path) in message and needle in message


def test_unknown_split(tmp_path):
    message = error("cola", "dev_matched", tmp_path)
    assert "train, dev, test" in message
    assert "test" in error("ax", "train", tmp_path)


def test_not_utf8(tmp_path):
    path = tmp_path / "RTE" / "dev.tsv"
    path.parent.mkdir()
    path.write_bytes(line("index", "sentence1", "sentence2", "label").encode() + b"\n0\t\xe9\tb\tentailment\n")
    assert str(path) in error("rte", "dev", tmp_path)


# --- where the data comes from ----------------------------------------------------------------------------------

def test_default_data_dir(tmp_path, monkeypatch):
    work = tmp_path / "repo"
    work.mkdir()
    monkeypatch.chdir(work)
    assert default_data_dir() is None
    (tmp_path / "shared" / "glue").mkdir(parents=True)
    assert default_data_dir().resolve() == (tmp_path / "shared" / "glue").resolve()
    monkeypatch.setenv("KRON_GLUE_DIR", str(tmp_path / "elsewhere"))
    assert default_data_dir() == tmp_path / "elsewhere"


def test_env_dir_is_used_and_never_falls_back_to_the_hub(tmp_path, monkeypatch):
    write_task(tmp_path, "RTE")
    monkeypatch.setenv("KRON_GLUE_DIR", str(tmp_path))
    assert rows(load_split("rte", "dev")) == [("s1", "s2", 0, 0)]
    monkeypatch.setattr("kroncli.sources._hub_reachable", fail)
    message = error("qnli", "dev", None)
    assert "KRON_GLUE_DIR" in message and str(tmp_path / "QNLI" / "dev.tsv") in message


def test_shared_default_beside_the_cwd(tmp_path, monkeypatch):
    write_task(tmp_path / "shared" / "glue", "WNLI")
    (tmp_path / "repo").mkdir()
    monkeypatch.chdir(tmp_path / "repo")
    assert rows(load_split("wnli", "dev")) == [("a", "b", 0, 0)]


def test_offline_without_local_data(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no ../shared/glue here
    message = error("rte", "train", None)
    assert "offline" in message and "--data-dir" in message and "KRON_GLUE_DIR" in message


@pytest.mark.parametrize("env", ["HF_DATASETS_OFFLINE", "HF_HUB_OFFLINE"])
def test_offline_variables_skip_the_socket_check(tmp_path, monkeypatch, env):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(env, "1")
    monkeypatch.setattr("kroncli.sources._hub_reachable", fail)
    message = error("cola", "dev", None)
    assert "offline" in message and "--data-dir" in message and "KRON_GLUE_DIR" in message


def test_online_check_is_one_3s_socket_probe(monkeypatch):
    calls = []
    monkeypatch.setattr("kroncli.sources._hub_reachable", lambda timeout: calls.append(timeout) or False)
    assert glue._online() is False and calls == [3.0]


def test_saved_datasetdict_and_hub_conversion(tmp_path, monkeypatch):
    import datasets  # a dependency of kroncli
    saved = datasets.DatasetDict({
        "train": datasets.Dataset.from_dict({"sentence1": ['"a', "b"], "sentence2": ["c", 'd"'], "label": [1, 0],
                                             "idx": [0, 1]}),
        "validation": datasets.Dataset.from_dict({"sentence1": ["e"], "sentence2": ["f"], "label": [0],
                                                  "idx": [9]}),
        "test": datasets.Dataset.from_dict({"sentence1": ["g"], "sentence2": ["h"], "label": [-1], "idx": [0]}),
    })
    saved.save_to_disk(str(tmp_path / "rte"))
    assert rows(load_split("RTE", "train", tmp_path)) == [('"a', "c", 1, 0), ("b", 'd"', 0, 1)]
    assert rows(load_split("RTE", "dev", tmp_path)) == [("e", "f", 0, 9)]
    assert same_rows(rows(load_split("RTE", "test", tmp_path)), [("g", "h", NAN, 0)])

    asked = []
    stsb = datasets.Dataset.from_dict({"sentence1": ["x"], "sentence2": ["y"], "label": [2.5], "idx": [4]})
    monkeypatch.setattr("kroncli.sources._hub_reachable", lambda timeout: True)
    monkeypatch.setattr(datasets, "load_dataset", lambda *a, **k: asked.append((a, k)) or stsb)
    monkeypatch.chdir(tmp_path)
    assert rows(load_split("sts-b", "dev")) == [("x", "y", 2.5, 4)]
    assert asked == [(("nyu-mll/glue", "stsb"), {"split": "validation"})]


# --- the real files in ../shared/glue ---------------------------------------------------------------------------

GLUE_DIR = glue_dir()  # $KRON_GLUE_DIR, else ../shared/glue beside the repo


@pytest.fixture
def real_glue():
    """The real GLUE folder (GLUE_DIR: no_hub clears $KRON_GLUE_DIR); conftest.require: a skip, or under CI a failure."""
    return require_glue("CoLA", "MRPC", "STS-B", "WNLI", root=GLUE_DIR)


REAL = pytest.mark.usefixtures("real_glue")


@pytest.mark.integration
@REAL
@pytest.mark.parametrize("name, split, count", [
    ("CoLA", "train", 8551), ("CoLA", "dev", 1043), ("CoLA", "test", 1063),
    ("MRPC", "train", 3668), ("MRPC", "dev", 408), ("MRPC", "test", 1725),
    ("STS-B", "train", 5749), ("STS-B", "dev", 1500), ("STS-B", "test", 1379),
    ("WNLI", "train", 635), ("WNLI", "dev", 71), ("WNLI", "test", 146),
])
def test_real_files_row_counts(name, split, count):
    df = load_split(name, split, GLUE_DIR)
    assert len(df) == count
    assert df["text_a"].str.len().gt(0).all()
    if split == "test":
        assert df["label"].isna().all() and df["idx"].tolist() == list(range(count))
    else:
        assert df["label"].notna().all()


@pytest.mark.integration
@REAL
def test_real_files_values():
    cola = load_split("cola", "train", GLUE_DIR)
    assert rows(cola.head(1)) == [("Our friends won't buy this analysis, let alone the next one we propose.", None,
                                   1, 0)]
    assert set(cola["label"]) == {0, 1}
    mrpc = load_split("mrpc", "dev", GLUE_DIR)
    assert mrpc.loc[0, "text_b"] == '"The foodservice pie business does not fit our long-term growth strategy.'
    assert mrpc.loc[0, "label"] == 1
    stsb = load_split("stsb", "train", GLUE_DIR)
    assert stsb.loc[0, ["text_a", "text_b", "label"]].tolist() == ["A plane is taking off.",
                                                                  "An air plane is taking off.", 5.0]
    assert stsb["label"].between(0, 5).all()
    assert load_split("wnli", "dev", GLUE_DIR).loc[0, "label"] == 0
