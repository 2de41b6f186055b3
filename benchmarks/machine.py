"""Shared by the benchmarks: the machine line they print and how busy other processes kept the CPUs.

The measurement lives in the package (kroncli/machine.py), where `kron eval speed` uses it too; a benchmark
imports it from here as `from machine import ...` (scripts run as `python benchmarks/NAME.py`, so benchmarks/
is on sys.path).
"""

from __future__ import annotations

from kroncli.machine import (THRESHOLD, Contention, load_line, load_warning, machine_line,  # noqa: F401
                             other_share, quiet_run, wait_quiet)
