"""The benchmark scripts: each starts (imports resolve, its options parse), and the shared load line warns
when other processes took the CPUs, so a figure measured under load is never printed as clean."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
SCRIPTS = sorted(p.name for p in BENCH.glob("*.py") if p.name != "machine.py")


def _machine():
    spec = importlib.util.spec_from_file_location("bench_machine", BENCH / "machine.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_load_line_warns_above_threshold():
    m = _machine()
    quiet, busy = m.load_line(0.04), m.load_line(0.36)
    assert "4% of the CPUs" in quiet and "WARNING" not in quiet
    assert "36% of the CPUs" in busy and "WARNING" in busy
    assert "WARNING" not in m.load_line(0.36, threshold=0.5)


def test_contention_share_is_a_fraction():
    m = _machine()
    with m.Contention() as c:
        sum(i * i for i in range(200_000))
    assert 0.0 <= c.other <= 1.0


@pytest.mark.parametrize("script", SCRIPTS)
def test_benchmark_script_starts(script):
    proc = subprocess.run([sys.executable, str(BENCH / script), "--help"], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "usage:" in proc.stdout
