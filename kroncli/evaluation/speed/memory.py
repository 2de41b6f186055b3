"""CPU peak memory, measured in a fresh subprocess per model (`python -m kroncli.evaluation.speed SPEC`), so that
nothing else lives in its memory: the worker's side (measure_cpu_memory, main) and the parent's (start, finish)."""

from __future__ import annotations

import gc
import json
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

from .models import ModelRef, load_ref
from .timing import make_inputs

WORKER_TIMEOUT_S = 1800

CPU_MEMORY_METHOD = ("fresh subprocess per model, warmed by a throw-away load + forward; peak = VmHWM during one "
                     "forward (high-water mark reset via /proc/self/clear_refs before it) - VmRSS before loading "
                     "the model: weights + activations")
CPU_MEMORY_METHOD_FALLBACK = ("fresh subprocess per model; peak = ru_maxrss after one forward (batches in "
                              "increasing order) - RSS before loading the model: weights + activations + lazy "
                              "library initialisation")


def _status_kb(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def _reset_high_water_mark() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        return False
    return _status_kb("VmHWM") is not None


def _ru_maxrss_kb() -> int:
    import resource

    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return r // 1024 if sys.platform == "darwin" else r  # bytes on macOS, KiB on Linux


def _malloc_trim() -> None:
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _current_rss_kb() -> int:
    return _status_kb("VmRSS") or _ru_maxrss_kb()


def measure_cpu_memory(spec: dict) -> dict:
    """Runs inside the fresh subprocess: MiB of weights and of the peak at each batch size."""
    import torch
    import transformers  # noqa: F401  (imported before the baseline, like everything the loaders need)

    from ... import sources, student  # noqa: F401

    ref = ModelRef(**spec["ref"])
    if spec.get("threads"):
        torch.set_num_threads(int(spec["threads"]))
    batches = sorted(spec["batches"])
    full = make_inputs(max(batches), spec["seq_len"], spec["vocab_size"])
    resettable = _reset_high_water_mark()
    if resettable:  # a throw-away load + forward: lazy imports, thread pools, kernels go to the baseline
        with torch.inference_mode():
            load_ref(ref)(**{k: v[:min(batches)] for k, v in full.items()})
    gc.collect()
    _malloc_trim()
    base = _current_rss_kb()
    model = load_ref(ref)
    gc.collect()
    _malloc_trim()
    loaded = _current_rss_kb()
    peaks = {}
    with torch.inference_mode():
        for b in batches:
            inputs = {k: v[:b] for k, v in full.items()}
            gc.collect()
            _malloc_trim()
            if resettable:
                _reset_high_water_mark()
            model(**inputs)
            high = _status_kb("VmHWM") if resettable else _ru_maxrss_kb()
            peaks[str(b)] = max(high - base, 0) / 1024
    return {"weights_mib": max(loaded - base, 0) / 1024, "baseline_mib": base / 1024, "peak_mib": peaks,
            "method": CPU_MEMORY_METHOD if resettable else CPU_MEMORY_METHOD_FALLBACK}


def start_cpu_memory_worker(ref: ModelRef, batches: list[int], seq_len: int, vocab_size: int, threads: int):
    spec = {"ref": asdict(ref), "batches": batches, "seq_len": seq_len, "vocab_size": vocab_size,
            "threads": threads}
    return subprocess.Popen([sys.executable, "-m", "kroncli.evaluation.speed", json.dumps(spec)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish_cpu_memory_worker(proc) -> tuple[dict | None, str | None]:
    try:
        out, err = proc.communicate(timeout=WORKER_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        return None, f"timed out after {WORKER_TIMEOUT_S} s"
    lines = [ln for ln in out.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        tail = [ln for ln in err.splitlines() if ln.strip()]
        return None, f"exit {proc.returncode}: {tail[-1] if tail else 'no output'}"
    return json.loads(lines[-1]), None


def main(argv: list[str]) -> int:
    """The worker: measure one model (the JSON spec in argv[0]), print the result as one JSON line."""
    from ...sources import _quiet_transformers

    _quiet_transformers()
    result = measure_cpu_memory(json.loads(argv[0]))
    sys.stdout.write(json.dumps(result) + "\n")
    sys.stdout.flush()
    return 0
