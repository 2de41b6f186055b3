"""The paper's published figures: kroncli/data/paper.json against the transcription in
../shared/paper/kroneckerbert-tables.md, both ways (every figure of a table is in the rows tagged with that table,
and no row holds a figure its table does not), and `kron report --paper` showing every row and column."""

from __future__ import annotations

import json
import re
from importlib import resources
from io import StringIO

import pandas as pd
import pytest
from typer.testing import CliRunner

from kroncli.cli import app

from conftest import REPO, require

TABLES = REPO.parent / "shared" / "paper" / "kroneckerbert-tables.md"
# a figure as printed: 83.9, 1e-4, 109.5M, 7.8x, 21.7B, 10%; not the digits of a name (SST-2, BERT4-PKD, W2^T, V100,
# SQuAD1.1) or of a section number after a dot (A.1)
NUMBER = re.compile(r"(?<![A-Za-z0-9.^_])(?<![A-Za-z]-)(\d+(?:\.\d+)?(?:e-\d+)?)([MBx%]?)")
SCALE = {"M": 1e6, "B": 1e9}


def numbers(text: str) -> set[float]:
    return {_key(float(v) * SCALE.get(unit, 1)) for v, unit in NUMBER.findall(text)}


def _key(x: float) -> float:
    """Ten significant digits: 109.5 * 1e6 and 109500000 are one figure, 1e-13 stays itself."""
    return float(f"{x:.10g}")


def markdown_sections() -> dict[str, set[float]]:
    """{"Table 2": its figures, ..., "Training details": its figures}: table rows without their header and first
    column (a model's name), list items after their label, and Table 7's one line; the recount note is not the
    paper's and is left out."""
    require(TABLES.is_file(), f"{TABLES} not found (the paper's tables, ../shared/paper)")
    out: dict[str, set[float]] = {}
    for section in TABLES.read_text(encoding="utf-8").split("\n## ")[1:]:
        title, *lines = re.sub(r"\n  +", " ", section).splitlines()  # an item's continuation lines joined
        name = "Training details" if title.startswith("Training") else title.split(":")[0]
        found, header_seen = set(), False
        for line in lines:
            if line.startswith("|") and not line.startswith("|---"):
                if header_seen:
                    found |= numbers("|".join(line.strip("|").split("|")[1:]))
                header_seen = True
            elif line.startswith("- "):
                label, _, rest = line[2:].partition(":")
                found |= numbers(rest if rest and name != "Training details" else line)
            elif name == "Table 7" and line.strip():
                found |= numbers(line)
        out[name] = found
    return out


def value_numbers(value) -> set[float]:
    if isinstance(value, bool):
        return set()
    if isinstance(value, (int, float)):
        return {_key(float(value))}
    if isinstance(value, str):
        return numbers(value)
    if isinstance(value, dict):
        return set().union(*map(value_numbers, value.values())) if value else set()
    if isinstance(value, list):
        return set().union(*map(value_numbers, value)) if value else set()
    return set()


def package_sections() -> dict[str, set[float]]:
    data = json.loads(resources.files("kroncli.data").joinpath("paper.json").read_text())
    out: dict[str, set[float]] = {"Training details": value_numbers(data["training"])}
    for row in data["rows"]:
        cells = {k: v for k, v in row.items() if k not in ("model", "table")}
        out.setdefault(row["table"], set()).update(value_numbers(cells))
    return out


def test_every_published_figure_is_in_the_package_data_under_its_table():
    paper, package = markdown_sections(), package_sections()
    assert set(paper) == set(package), "tables in one and not the other"
    for table, figures in paper.items():
        assert figures, table
        missing = figures - package[table]
        assert not missing, f"{table}: in the paper, not in paper.json: {sorted(missing)}"
        extra = package[table] - figures
        assert not extra, f"{table}: in paper.json, not in the paper's {table}: {sorted(extra)}"


def test_report_paper_shows_every_row_and_column_with_its_table():
    data = json.loads(resources.files("kroncli.data").joinpath("paper.json").read_text())
    res = CliRunner().invoke(app, ["report", "--paper", "--format", "csv"])
    assert res.exit_code == 0, res.output
    df = pd.read_csv(StringIO(res.stdout))
    assert len(df) == len(data["rows"]) and set(df.workspace) == {"paper"}
    assert {c for row in data["rows"] for c in row} <= set(df.columns)
    for model in ("BERT-base", "BERT4-PKD", "MobileBERT-tiny", "TinyBERT", "KroneckerBERT5", "KroneckerBERT8",
                  "KroneckerBERT21", "DynaBERT", "SharedProject", "LadaBERT4"):
        assert model in set(df.model), model
    kb8 = df[(df.model == "KroneckerBERT8")].set_index("table")
    assert kb8.loc["Table 2", "MRPC"] == 88.5 and kb8.loc["Table 2", "split"] == "test"
    assert kb8.loc["Table 4", "RTE"] == 69.66 and kb8.loc["Table 4", "split"] == "dev"
    assert kb8.loc["Table 5", "squad_v2 f1"] == 73.8 and kb8.loc["Table 9", "ood SST-2 IMDb"] == 86.5
    assert kb8.loc["Table 8", "lr RTE"] == 1e-5
    table = CliRunner().invoke(app, ["report", "--paper"])  # the rich table, piped: every cell whole
    assert table.exit_code == 0 and "…" not in table.stdout
    assert "LadaBERT4" in table.stdout and "69.66" in table.stdout
    assert "1e-05" in table.stdout and " 768 " in table.stdout  # Table 8's RTE rate is not 0.00, nor n 768.00


def test_a_workspaces_mnli_scores_sit_in_the_papers_mnli_columns(tmp_path):
    """MNLI's matched and mismatched dev scores are MNLI-m and MNLI-mm, the paper's (and GLUE's) names; they were
    MNLI-ma and MNLI-mi, columns of their own beside the paper's."""
    ws = tmp_path / "ws"
    (ws / "metrics").mkdir(parents=True)
    (ws / "manifest.json").write_text(json.dumps({"stages": {"factorize": {"done": True, "student_params": 5}}}))
    cols = "workspace,model,task,split,metric,value,n,seconds,timestamp"
    rows = [f"{ws},student,MNLI,{split},accuracy,{v},10,1.0,2026-01-01T00:00:0{i}"
            for i, (split, v) in enumerate((("dev_matched", 80.5), ("dev_mismatched", 81.25)))]
    (ws / "metrics" / "eval.csv").write_text("\n".join([cols, *rows]) + "\n")
    res = CliRunner().invoke(app, ["report", str(ws), "--paper", "--format", "csv"])
    assert res.exit_code == 0, res.output
    df = pd.read_csv(StringIO(res.stdout))
    student = df[df.workspace == "ws"].iloc[0]
    assert student["MNLI-m"] == 80.5 and student["MNLI-mm"] == 81.25
    assert not {"MNLI-ma", "MNLI-mi"} & set(df.columns)


@pytest.mark.parametrize("name,paper", [("kroneckerbert8", "KroneckerBERT8"), ("kroneckerbert21", "KroneckerBERT21")])
def test_the_kroneckerbert_recipes_use_the_papers_settings(name, paper):
    """Table 8's student learning rate per task, epochs inside the searched ranges, the batch sizes and lengths of
    appendix A.1, stage 1 for 3 epochs at 512 tokens with the MLM term; read from paper.json, which
    test_every_published_figure_is_in_the_package_data_under_its_table holds to the paper."""
    from kroncli.data.glue import normalize_task
    from kroncli.evaluation.glue_eval import model_task
    from kroncli.recipes import load_recipe
    from kroncli.run import per_task, recipe_stage1_weights

    data = json.loads(resources.files("kroncli.data").joinpath("paper.json").read_text())
    lrs = next(r for r in data["rows"] if r["table"] == "Table 8" and r["model"] == paper)
    training = data["training"]
    recipe = load_recipe(REPO / "recipes" / f"{name}.yaml")
    assert recipe.factorize.preset == name and recipe.teacher == "bert-base-uncased"
    f = recipe.finetune
    paper_tasks = {k.split(" ", 1)[1] for k in lrs if k.startswith("lr ")}
    assert {normalize_task(t).name for t in f.tasks} == {model_task(normalize_task(t)).name for t in paper_tasks}
    for task in paper_tasks:  # MNLI-m and MNLI-mm: the one MNLI model
        assert per_task(f.lr_per_task, model_task(normalize_task(task)), f.lr) == lrs[f"lr {task}"], task
        low, high = training["glue"]["cola_epochs_searched" if task == "CoLA" else "epochs_searched"]
        assert low <= f.epochs <= high, task
    assert (f.batch_size, f.max_seq_len) == (training["batch_size"], training["glue"]["max_seq_len"])
    d, pre = recipe.distill, training["pretraining"]
    assert (d.epochs, d.max_seq_len, d.batch_size, d.lr) == (pre["epochs"], pre["max_seq_len"], pre["batch_size"],
                                                             pre["lr"])
    assert recipe_stage1_weights(recipe) == {"embedding_mse": 1.0, "attention_mse": 1.0, "hidden_mse": 1.0, "mlm": 1.0}
