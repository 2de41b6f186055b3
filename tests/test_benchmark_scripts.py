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
    return _load("machine")


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCH / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_glue_retention_judges_the_unseen_dev_examples_too(capsys):
    """MRPC started from STS-B's student: the target is judged on all of dev and on the examples no training saw."""
    import pandas as pd

    nan = float("nan")
    df = pd.DataFrame([
        {"task": "MRPC", "metric": "accuracy", "teacher": 80.6, "student": 79.0, "majority": 68.4, "gap": 1.6,
         "retention": 0.98, "unseen_teacher": 82.2, "unseen_student": 79.7, "unseen_n": 360},
        {"task": "CoLA", "metric": "mcc", "teacher": 30.0, "student": 20.0, "majority": 0.0, "gap": 10.0,
         "retention": 0.667, "unseen_teacher": nan, "unseen_student": nan, "unseen_n": nan}])
    _load("glue_retention").judge(df)
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "target MRPC accuracy: gap 1.60 (goal <= 2.0) -> met"
    assert lines[1] == "target MRPC accuracy on the 360 dev examples no training saw: gap 2.50 (goal <= 2.0) -> MISSED"
    assert lines[2].startswith("target CoLA mcc: keeps 67%") and len(lines) == 3


def test_load_line_warns_above_threshold():
    m = _machine()
    quiet, busy = m.load_line(0.04), m.load_line(0.36)
    assert "4% of the CPUs" in quiet and "WARNING" not in quiet
    assert "36% of the CPUs" in busy and "WARNING" in busy
    assert "WARNING" not in m.load_line(0.36, threshold=0.5)


# /proc/stat's aggregate line (user nice system idle iowait irq softirq steal guest guest_nice) at two moments
STAT_0 = "cpu  1000 20 300 8000 50 0 10 0 0 0\ncpu0 500 10 150 4000 25 0 5 0 0 0\nintr 1\n"
STAT_1 = "cpu  1134 20 320 8000 50 0 12 0 0 0\ncpu0 567 10 160 4000 25 0 6 0 0 0\nintr 2\n"


def test_cpu_ticks_read_the_aggregate_line():
    from kroncli.machine import cpu_ticks

    assert cpu_ticks(STAT_0) == (1330, 9380)  # busy = all but idle and iowait; total = every field but guest
    assert cpu_ticks("cpu 1 2 3 4\n") == (6, 10)  # an old kernel's four fields
    with pytest.raises(ValueError):
        cpu_ticks("cpu0 1 2 3 4\n")


def test_contention_share_is_other_ticks_over_all_cpus_ticks(monkeypatch):
    """Two busy CPUs over a short block: 156 busy ticks of 156, 20 of them ours. The share is of all CPUs' ticks
    in the interval, so it stays within [0, 1] however coarse the ticks (counting against wall time gave 1.35)."""
    import kroncli.machine as m

    readings, own = iter([STAT_0, STAT_1]), iter([400, 420])
    monkeypatch.setattr(m, "_cpu_ticks", lambda: m.cpu_ticks(next(readings)))
    monkeypatch.setattr(m, "_own_ticks", lambda: next(own))
    with m.Contention() as c:
        pass
    assert c.measured and c.other == pytest.approx(136 / 156)
    assert m.other_share(busy=150, own=160, total=156) == 0.0  # our ticks rounded up past the sampled busy ones
    assert m.other_share(busy=170, own=0, total=156) == 1.0  # busy sampled a tick later than total
    assert m.other_share(busy=0, own=0, total=0) == 0.0  # no tick passed


@pytest.mark.parametrize("script", SCRIPTS)
def test_benchmark_script_starts(script):
    proc = subprocess.run([sys.executable, str(BENCH / script), "--help"], capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "usage:" in proc.stdout
