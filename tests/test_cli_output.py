"""What a new user sees first: `kron --version`, help pages whose flags show no value type, and training commands
that say what they prepare before their first step (without a terminal there is no progress bar to watch)."""

from __future__ import annotations

import pytest
import torch
import typer
from typer.testing import CliRunner

import kroncli
from kroncli.cli import app

from conftest import glue_dir, tiny_config

runner = CliRunner()


def test_version():
    res = runner.invoke(app, ["--version"])
    assert res.exit_code == 0 and res.stdout == f"kron {kroncli.__version__}\n"


def _commands(group, path: tuple[str, ...] = ()):
    """Every command path of a group (typer 0.29 carries its own click: groups are told by their commands)."""
    yield path
    for name, cmd in group.commands.items():
        if hasattr(cmd, "commands"):
            yield from _commands(cmd, (*path, name))
        else:
            yield (*path, name)


def test_the_command_line_starts_without_torch():
    """`kron --help` and every one-line error come before torch loads (seconds on a cold start): the CLI's modules
    import only what defines options (train_config, not train)."""
    import subprocess
    import sys

    code = "import sys, kroncli.cli; print(sorted(m for m in ('torch', 'transformers', 'pandas') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]", out


def test_no_flag_shows_a_value_type_in_help():
    """Every help page: a flag (--json, --force, --help, --dev/--no-dev) shows no `<bool>`; options that take a
    value still show its type."""
    pages = list(_commands(typer.main.get_command(app)))
    assert len(pages) > 12 and ("eval", "speed") in pages
    for page in pages:
        res = runner.invoke(app, [*page, "--help"], env={"COLUMNS": "200"})
        assert res.exit_code == 0, (page, res.output)
        assert "<bool>" not in res.output, (page, [ln for ln in res.output.splitlines() if "<bool>" in ln])
        assert "--help" in res.output
    res = runner.invoke(app, ["distill", "--help"], env={"COLUMNS": "200"})
    assert "<int>" in res.output and "<float>" in res.output


@pytest.fixture(scope="module")
def tiny_ws(tmp_path_factory, minilm_path):
    from transformers import AutoTokenizer, BertModel

    torch.manual_seed(0)
    root = tmp_path_factory.mktemp("first-hour")
    teacher = root / "teacher"
    BertModel(tiny_config(vocab_size=30522)).save_pretrained(teacher)
    AutoTokenizer.from_pretrained(minilm_path).save_pretrained(teacher)
    ws = root / "ws"
    res = runner.invoke(app, ["factorize", str(teacher), "--ratio", "4", "-w", str(ws)])
    assert res.exit_code == 0, res.output
    return ws


def _in_order(output: str, needles: list[str]) -> None:
    at = [output.find(n) for n in needles]
    assert -1 not in at and at == sorted(at), list(zip(needles, at))


def test_distill_says_what_it_prepares_before_the_first_step(tiny_ws, tmp_path):
    corpus = tmp_path / "text"
    corpus.mkdir()
    for i in range(2):
        (corpus / f"part{i}.txt").write_text("\n".join(f"a cat sat on mat number {j}" for j in range(60)) + "\n")
    res = runner.invoke(app, ["distill", "-w", str(tiny_ws), "--corpus", str(corpus), "--max-steps", "2",
                              "--batch-size", "4", "--max-seq-len", "32", "--log-every", "1"])
    assert res.exit_code == 0, res.output
    _in_order(res.output, ["loading the teacher", "corpus: reading and tokenising 2 file(s)", "sequences of 32 tokens",
                           "distill: training starts (a loss line every 1 steps)", "distill step 1/2"])


def test_finetune_says_what_it_prepares_before_the_first_step(tiny_ws):
    glue = glue_dir()
    assert (glue / "MRPC" / "train.tsv").is_file(), f"GLUE's MRPC files are needed in {glue} (set KRON_GLUE_DIR)"
    common = ["-w", str(tiny_ws), "--task", "mrpc", "--data-dir", str(glue), "--limit", "8", "--max-steps", "1",
              "--batch-size", "4", "--max-seq-len", "32"]
    res = runner.invoke(app, ["finetune", *common, "--teacher-only"])
    assert res.exit_code == 0, res.output
    _in_order(res.output, ["MRPC: loading the teacher", "MRPC: reading and tokenising the training and dev sets",
                           "MRPC: 8 training examples; fine-tuning the teacher"])
    res = runner.invoke(app, ["finetune", *common])
    assert res.exit_code == 0, res.output
    _in_order(res.output, ["MRPC: loading the fine-tuned teacher", "MRPC: reading and tokenising the training",
                           "distilling the student", "MRPC: scoring the student on dev before training"])
