"""The error contract for mistakes caught by the command-line parser itself: one `error:` line, exit 2."""

import pytest
from typer.testing import CliRunner

from kroncli.cli import app

runner = CliRunner()


@pytest.mark.parametrize("args, needle", [
    (["factorize", "--ratio", "abc"], "Invalid value for '--ratio'"),
    (["factorize", "--layers", "a,b", "-w", "never"], "not a comma list of layer indices"),
    (["factorise"], "Did you mean 'factorize'"),
    (["eval", "glu"], "Did you mean 'glue'"),
    (["distill", "-w", "never"], "Missing option '--corpus'"),
    (["finetune", "-w", "never", "--task", "mrpc", "--max-steps", "three"], "Invalid value for '--max-steps'"),
    (["--version"], "No such option: --version"),
    (["report", "--json", "--format", "csv"], "--json and --format csv"),
])
def test_parser_mistakes_are_one_line_errors(args, needle, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    res = runner.invoke(app, args)
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert res.exit_code == 2 and len(lines) == 1, res.output
    assert lines[0].startswith("error: ") and needle in lines[0] and "Traceback" not in res.output
    assert "--help" in lines[0] or "--json" in lines[0]  # where to look next
    assert not (tmp_path / "never").exists()


def test_help_and_no_arguments_still_print_help():
    assert runner.invoke(app, ["factorize", "--help"]).exit_code == 0
    res = runner.invoke(app, [])
    assert res.exit_code == 2 and "Usage" in res.output
