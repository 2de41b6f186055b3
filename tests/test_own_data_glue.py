"""The own-data path on GLUE's own rows: CoLA and STS-B written as a user's CSV and JSON lines give the same
scores as the GLUE-named tasks, model for model, with the same seed (real MiniLM, real GLUE files)."""

import json
import shutil

import pytest
from typer.testing import CliRunner

from kroncli.cli import app
from kroncli.data.glue import load_split

from conftest import glue_dir, require_glue

runner = CliRunner()
pytestmark = pytest.mark.integration

TRAIN = ["--limit", "48", "--max-steps", "3", "--batch-size", "16", "--max-seq-len", "32", "--json"]
DEV_ROWS = 160  # the first rows of each dev file: the same rows on both paths, and a short test


def kron(*args):
    res = runner.invoke(app, [str(a) for a in args])
    assert res.exit_code == 0, res.output
    return res


def scores(res) -> dict:
    return json.loads(res.stdout.strip().splitlines()[-1])["eval"]


@pytest.fixture(scope="module")
def glue_files(tmp_path_factory):
    """GLUE's CoLA and STS-B files in their own layout, each dev file cut to its first DEV_ROWS rows."""
    require_glue("CoLA/train.tsv", "CoLA/dev.tsv", "STS-B/train.tsv", "STS-B/dev.tsv")
    root = tmp_path_factory.mktemp("glue")
    for folder, header in (("CoLA", 0), ("STS-B", 1)):
        (root / folder).mkdir()
        shutil.copy(glue_dir() / folder / "train.tsv", root / folder / "train.tsv")
        lines = (glue_dir() / folder / "dev.tsv").read_bytes().split(b"\n")
        (root / folder / "dev.tsv").write_bytes(b"\n".join(lines[: header + DEV_ROWS]) + b"\n")
    return root


@pytest.fixture(scope="module")
def ws(tmp_path_factory, minilm_path):
    path = tmp_path_factory.mktemp("own-glue") / "m19"
    kron("factorize", minilm_path, "--ratio", "19", "-w", path)
    return path


@pytest.mark.parametrize("glue, kind, fmt", [("cola", "classification", "csv"), ("stsb", "regression", "jsonl")])
def test_own_files_score_as_the_glue_task(ws, glue_files, tmp_path, glue, kind, fmt):
    folder = tmp_path / "data"
    folder.mkdir()
    files = {}
    for split in ("train", "dev"):
        frame = load_split(glue, split, glue_files)
        assert split == "train" or len(frame) == DEV_ROWS
        frame = frame.rename(columns={"text_a": "first", "text_b": "second"})[
            ["first", "second", "label"] if glue == "stsb" else ["first", "label"]]
        files[split] = folder / f"{split}.{fmt}"
        if fmt == "csv":
            frame.to_csv(files[split], index=False)
        else:
            frame.to_json(files[split], orient="records", lines=True)
    own = ["--task", f"my-{glue}", "--train", files["train"], "--dev", files["dev"], "--label-column", "label",
           "--text-columns", "first,second" if glue == "stsb" else "first"]
    glue_args = ["--task", glue, "--data-dir", glue_files]
    teacher = {}
    for name, args in (("glue", glue_args), ("own", own)):
        teacher[name] = scores(kron("finetune", "-w", ws, *args, "--teacher-only", *TRAIN))
    student = {name: scores(kron("finetune", "-w", ws, *args, *TRAIN)) for name, args in
               (("glue", glue_args), ("own", own))}
    shared = ("mcc",) if glue == "cola" else ("pearson", "spearman")
    for result in (teacher, student):
        for metric in shared:
            assert result["own"][metric] == pytest.approx(result["glue"][metric], abs=1e-6), (metric, result)
    definition = json.loads((ws / "tasks" / f"my-{glue}" / "task.json").read_text())
    assert definition["kind"] == kind
    # downstream: eval data scores the same dev rows; the export predicts with the task's label names
    res = kron("eval", "data", "-w", ws, "--task", f"my-{glue}", "--json")
    dev = next(r for r in json.loads(res.stdout)["results"] if r["model"] == "student" and r["split"] == "dev")
    for metric in shared:
        assert dev["metrics"][metric] == pytest.approx(student["own"][metric], abs=1e-6)
    out = tmp_path / "deploy"
    kron("export", "-w", ws, "--task", f"my-{glue}", "--out", out)
    first = load_split(glue, "dev", glue_files).iloc[0]
    record = {"first": first["text_a"], **({"second": first["text_b"]} if glue == "stsb" else {})}
    res = runner.invoke(app, ["predict", str(out)], input=json.dumps(record) + "\n")
    assert res.exit_code == 0, res.output
    row = json.loads(res.stdout)
    assert ("label" in row and row["label"] in ("0", "1")) if glue == "cola" else isinstance(row["score"], float)
    shutil.rmtree(out)
