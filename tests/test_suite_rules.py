"""The suite's own rules: a test whose input is missing skips only off CI, through conftest.require (under CI, as
.ci/run sets it, it fails: a CI run cannot pass by skipping); no test skips by another route or waits on the clock."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from conftest import REPO, require, require_glue, require_module

BANNED = re.compile(r"pytest\.skip\(|importorskip\(|mark\.skip(if)?\b|time\.sleep\(")


def test_a_missing_input_skips_off_ci_and_fails_under_ci(monkeypatch, tmp_path):
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="GLUE files"):
        require(False, "GLUE files not found")
    require(True, "never said")
    for value in ("true", "1", "yes"):
        monkeypatch.setenv("CI", value)
        with pytest.raises(pytest.fail.Exception, match="CI is set"):
            require(False, "GLUE files not found")
    monkeypatch.setenv("CI", "false")
    with pytest.raises(pytest.skip.Exception):
        require(False, "GLUE files not found")

    monkeypatch.setenv("CI", "true")
    monkeypatch.setenv("KRON_GLUE_DIR", str(tmp_path))
    (tmp_path / "MRPC").mkdir()
    (tmp_path / "MRPC" / "dev.tsv").write_text("x\n")
    assert require_glue("MRPC/dev.tsv") == tmp_path
    with pytest.raises(pytest.fail.Exception, match=r"MRPC/train\.tsv not found in"):
        require_glue("MRPC/dev.tsv", "MRPC/train.tsv")
    assert require_module("json", "stdlib").dumps(1) == "1"
    with pytest.raises(pytest.fail.Exception, match="pip install nothing"):
        require_module("no_such_module_here", "pip install nothing")


def test_no_test_skips_or_waits_by_another_route():
    offenders = [f"{path.name}:{n}: {line.strip()}"
                 for path in sorted((REPO / "tests").glob("*.py")) if path.name not in ("conftest.py", Path(__file__).name)
                 for n, line in enumerate(path.read_text().splitlines(), 1) if BANNED.search(line)]
    assert not offenders, "skip through conftest.require; stop a process at a step with KRON_TEST_SIGNAL_AT"
