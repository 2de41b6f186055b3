"""Shared by the benchmarks: the machine line they print and how busy other processes kept the CPUs.

A benchmark imports this as `from machine import ...` (scripts run as `python benchmarks/NAME.py`, so
benchmarks/ is on sys.path).
"""

from __future__ import annotations

import datetime
import os
import platform
import time


def _busy_jiffies() -> int:
    with open("/proc/stat") as f:
        vals = [int(v) for v in f.readline().split()[1:]]
    # user nice system idle iowait irq softirq steal ...
    return vals[0] + vals[1] + vals[2] + vals[5] + vals[6] + (vals[7] if len(vals) > 7 else 0)


def _own_jiffies() -> int:
    """CPU time of this process and its waited-for children, in clock ticks."""
    t = os.times()
    return int(round((t.user + t.system + t.children_user + t.children_system) * os.sysconf("SC_CLK_TCK")))


class Contention:
    """Share of all CPUs used by *other* processes while a block ran (0 = the machine was ours)."""

    def __enter__(self):
        self.t, self.busy, self.own = time.perf_counter(), _busy_jiffies(), _own_jiffies()
        return self

    def __exit__(self, *exc):
        wall = time.perf_counter() - self.t
        other = (_busy_jiffies() - self.busy) - (_own_jiffies() - self.own)
        cap = (os.cpu_count() or 1) * wall * os.sysconf("SC_CLK_TCK")
        self.other = max(0.0, other / cap) if cap > 0 else 0.0
        return False


def wait_quiet(max_wait: float, threshold: float = 0.1, window: float = 2.0) -> float:
    """Wait (up to max_wait s) until other processes use < threshold of the CPUs over `window` s."""
    t0 = time.perf_counter()
    while True:
        with Contention() as c:
            time.sleep(window)
        if c.other < threshold or time.perf_counter() - t0 >= max_wait:
            return c.other


def quiet_run(fn, wait: float, retries: int, threshold: float = 0.1, wait_first: bool = True):
    """fn() in a quiet moment: wait for an idle machine, run, and run again (up to `retries` times) if
    other processes took more than `threshold` of the CPUs meanwhile. Returns (fn(), that share)."""
    for attempt in range(retries + 1):
        if wait and (wait_first or attempt):
            wait_quiet(wait, threshold)
        with Contention() as c:
            out = fn()
        if c.other <= threshold or attempt == retries:
            return out, c.other


def machine_line(extra: str = "") -> str:
    """CPU model, torch (and its threads), python, date and load average; `extra` is appended."""
    try:
        with open("/proc/cpuinfo") as f:
            model = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), "?")
    except OSError:
        model = platform.processor() or "?"
    try:
        import torch

        tv = f"{torch.__version__} (threads {torch.get_num_threads()})"
    except ImportError:
        tv = "?"
    return (f"{os.cpu_count()}-core CPU ({model}), fp32, torch {tv}{extra}, python {platform.python_version()}, "
            f"{datetime.date.today().isoformat()}, loadavg {os.getloadavg()[0]:.2f}")


def load_line(other: float, threshold: float = 0.1) -> str:
    """The share of the CPUs other processes used while a benchmark timed, and a WARNING above `threshold`:
    on 2 cores one busy neighbour can slow a timed block several times, so such figures are not results."""
    line = f"other processes used {100 * other:.0f}% of the CPUs while this timed"
    if other > threshold:
        line += (f"\nWARNING: other processes used more than {100 * threshold:.0f}% of the CPUs; "
                 "rerun on a quiet machine for clean figures")
    return line
