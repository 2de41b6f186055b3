"""The machine a timing ran on and how busy other processes kept its CPUs while it ran.

Shared by `kron eval speed` and the scripts in benchmarks/ (benchmarks/machine.py re-exports this), so a figure
measured while a neighbour held the cores is flagged the same way everywhere.
"""

from __future__ import annotations

import datetime
import os
import platform
import time

THRESHOLD = 0.1  # above this share of the CPUs taken by other processes a timing is not a clean result


def cpu_ticks(stat: str) -> tuple[int, int]:
    """(busy, total) clock ticks of all CPUs together since boot, from the text of /proc/stat (its first,
    aggregate `cpu` line); ValueError on anything else."""
    head = stat.split("\n", 1)[0].split()
    if not head or head[0] != "cpu":
        raise ValueError("no aggregate cpu line")
    # user nice system idle iowait irq softirq steal; guest time is counted inside user already
    vals = ([int(v) for v in head[1:]] + [0] * 8)[:8]
    busy = vals[0] + vals[1] + vals[2] + vals[5] + vals[6] + vals[7]
    return busy, sum(vals)


def _cpu_ticks() -> tuple[int, int] | None:
    """cpu_ticks of /proc/stat now; None where there is none (not Linux) or it cannot be read."""
    try:
        with open("/proc/stat") as f:
            return cpu_ticks(f.readline())
    except (OSError, ValueError):
        return None


def _own_ticks() -> int:
    """CPU time of this process and its waited-for children, in clock ticks."""
    t = os.times()
    return int(round((t.user + t.system + t.children_user + t.children_system) * os.sysconf("SC_CLK_TCK")))


def other_share(busy: int, own: int, total: int) -> float:
    """Share of all CPUs' ticks that other processes used: (busy - own) / total, clipped to [0, 1].

    The denominator is the ticks of every CPU (busy and idle) over the same interval, so the share of the whole
    machine cannot exceed 1; own ticks are rounded to whole ticks and the busy ones sampled, hence the clip."""
    if total <= 0:
        return 0.0
    return min(1.0, max(0.0, (busy - own) / total))


class Contention:
    """Share of all CPUs used by *other* processes while a block ran (0 = the machine was ours).

    `other` is that share in [0, 1]; `measured` is False where the system gives no CPU counters (then
    `other` is 0.0)."""

    def __enter__(self):
        self.t, self.start, self.own = time.perf_counter(), _cpu_ticks(), _own_ticks()
        return self

    def __exit__(self, *exc):
        self.wall = time.perf_counter() - self.t
        end = _cpu_ticks()
        self.measured = self.start is not None and end is not None
        if self.measured:
            self.other = other_share(end[0] - self.start[0], _own_ticks() - self.own, end[1] - self.start[1])
        else:
            self.other = 0.0
        return False


def wait_quiet(max_wait: float, threshold: float = THRESHOLD, window: float = 2.0) -> float:
    """Wait (up to max_wait s) until other processes use < threshold of the CPUs over `window` s."""
    t0 = time.perf_counter()
    while True:
        with Contention() as c:
            time.sleep(window)
        if c.other < threshold or time.perf_counter() - t0 >= max_wait:
            return c.other


def quiet_run(fn, wait: float, retries: int, threshold: float = THRESHOLD, wait_first: bool = True):
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


def load_warning(other: float, threshold: float = THRESHOLD) -> str | None:
    """The warning for a timing during which other processes took more than `threshold` of the CPUs."""
    if other <= threshold:
        return None
    return (f"other processes used {100 * other:.0f}% of the CPUs while this timed (more than "
            f"{100 * threshold:.0f}%); rerun on a quiet machine for clean figures")


def load_line(other: float, threshold: float = THRESHOLD) -> str:
    """The share of the CPUs other processes used while a benchmark timed, and a WARNING above `threshold`:
    on 2 cores one busy neighbour can slow a timed block several times, so such figures are not results."""
    line = f"other processes used {100 * other:.0f}% of the CPUs while this timed"
    if other > threshold:
        line += (f"\nWARNING: other processes used more than {100 * threshold:.0f}% of the CPUs; "
                 "rerun on a quiet machine for clean figures")
    return line
