"""`kron eval speed`: size, latency, throughput and peak memory of a student beside its teacher.

Method (also returned in the result, so every report carries it):

- Models: the student (general `student/` or `tasks/<task>/student`) and the teacher it was made from
  (the manifest's teacher, or `tasks/<task>/teacher`), both in eval mode and fp32.
- Inputs: random token ids (fixed seed) of shape (batch, seq_len) with a full attention mask; the very
  same tensors feed both models.
- Latency: per device and batch size, `warmup` untimed forwards of each model, then `repeats` timed
  forwards under torch.inference_mode with teacher and student interleaved (the order flips every repeat,
  the garbage collector is off), so both see the same machine state; the median is reported. On GPU,
  torch.cuda.synchronize() before and after each timed forward. Throughput = batch / median latency
  (sequences/s) and batch * seq_len / median latency (tokens/s). Speed-up = teacher / student latency.
- Peak memory on CPU: each model is measured in a fresh subprocess (so nothing else lives in its memory).
  A throw-away load + forward first warms lazy imports, thread pools and kernels; it is freed (gc +
  malloc_trim) and the resident set is read: the baseline. The model is loaded again; before each forward
  the kernel's high-water mark is reset (`/proc/self/clear_refs` = 5) and after it VmHWM is read.
  Peak = VmHWM - baseline = resident weights + activations + allocator overhead at that batch size.
  Without a resettable VmHWM (not Linux) it falls back to ru_maxrss, a high-water mark that cannot be
  reset: no throw-away load, batches in increasing order, lazy initialisation counted with the model.
- Peak memory on GPU: weight bytes of the model + (torch.cuda.max_memory_allocated() during one forward
  - torch.cuda.memory_allocated() before it), after a warm-up forward of both models.
- Sizes: student = bytes of its model.safetensors; teacher = bytes of the weight files it was loaded
  from, or the fp32 bytes of its tensors when it is a random init (nothing on disk). 1 MB = 2**20 bytes.
"""

from __future__ import annotations

import gc
import json
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

from ..errors import KronError
from ..workspace import Workspace, now

MB = 2 ** 20
CSV_NAME = "speed.csv"
CSV_COLUMNS = ("timestamp", "model", "device", "batch", "seq_len", "latency_ms", "throughput_seq_s", "tokens_s",
               "speedup", "params", "size_mb", "peak_mem_mb", "threads")
INPUT_SEED = 0
WORKER_TIMEOUT_S = 1800

CPU_MEMORY_METHOD = ("fresh subprocess per model, warmed by a throw-away load + forward; peak = VmHWM during one "
                     "forward (high-water mark reset via /proc/self/clear_refs before it) - VmRSS before loading "
                     "the model: weights + activations")
CPU_MEMORY_METHOD_FALLBACK = ("fresh subprocess per model; peak = ru_maxrss after one forward (batches in "
                              "increasing order) - RSS before loading the model: weights + activations + lazy "
                              "library initialisation")
GPU_MEMORY_METHOD = ("weight bytes + torch.cuda.max_memory_allocated() during one forward - "
                     "torch.cuda.memory_allocated() before it")
LATENCY_METHOD = ("median of {repeats} forwards after {warmup} warm-up forwards, teacher and student interleaved "
                  "(order flipped each repeat), torch.inference_mode, fp32, random token ids, full attention mask")


@dataclass
class SpeedOptions:
    batches: str = "1,8,32"
    seq_len: int = 128
    model: str = "general"
    repeats: int = 20
    warmup: int = 3
    threads: int | None = None
    device: str = "auto"


@dataclass
class ModelRef:
    """How to load one model: a Kronecker student folder, a random-init config, or a transformers folder."""

    label: str  # "student", "teacher", "mrpc/student", ...
    role: str  # "student" | "teacher"
    kind: str  # "student" | "random" | "pretrained"
    path: str | None
    requested: str


# ----------------------------------------------------------------------------------------------- input checks


def parse_batches(text: str) -> list[int]:
    """'1,8,32' -> [1, 8, 32] (order kept, duplicates dropped); KronError on anything else."""
    parts = [p.strip() for p in str(text).split(",")]
    out: list[int] = []
    for p in parts:
        try:
            n = int(p)
        except ValueError:
            n = 0
        if n < 1:
            raise KronError(f"--batch {text!r} is not a comma-separated list of positive integers; "
                            "pass e.g. --batch 1,8,32")
        if n not in out:
            out.append(n)
    return out


def resolve_devices(device: str) -> list[str]:
    import torch

    device = (device or "auto").lower()
    if device not in ("auto", "cpu", "cuda"):
        raise KronError(f"--device {device!r} is not one of cpu, cuda, auto")
    has_gpu = torch.cuda.is_available()
    if device == "cuda" and not has_gpu:
        raise KronError("--device cuda but torch sees no GPU (torch.cuda.is_available() is False); "
                        "use --device cpu or auto")
    if device == "cpu":
        return ["cpu"]
    if device == "cuda":
        return ["cuda"]
    return ["cpu", "cuda"] if has_gpu else ["cpu"]


def _task_folder(ws: Workspace, name: str) -> Path:
    """tasks/<task> as `kron finetune` names it; an unknown task name is taken as written."""
    from ..data.glue import normalize_task
    from ..stages.finetune import task_dir

    try:
        return task_dir(ws, normalize_task(name))
    except KronError:
        return ws.root / "tasks" / name.lower()


def resolve_models(ws: Workspace, model: str) -> tuple[ModelRef, ModelRef]:
    """(student, teacher) for `--model general` or `--model <task>`."""
    from ..stages.common import require_student, teacher_source
    from ..student import KRON_CONFIG

    model = (model or "general").strip()
    if model.lower() == "general":
        student_path = require_student(ws)
        source = teacher_source(ws)
        kind = "random" if source.kind == "random" else "pretrained"
        return (ModelRef("student", "student", "student", str(student_path), str(student_path)),
                ModelRef("teacher", "teacher", kind, source.path, source.requested))
    if not ws.root.exists():
        raise KronError(f"workspace {ws.root} does not exist; create it with kron factorize MODEL --workspace "
                        f"{ws.root}")
    folder = _task_folder(ws, model)
    name = folder.name
    student, teacher = folder / "student", folder / "teacher"
    if not (student / KRON_CONFIG).is_file():
        have = sorted(p.parent.parent.name for p in (ws.root / "tasks").glob(f"*/student/{KRON_CONFIG}"))
        hint = f" (task students here: {', '.join(have)})" if have else ""
        raise KronError(f"--model {model}: no task student in {student}{hint}; run kron finetune --workspace "
                        f"{ws.root} --task {model} first, or pass --model general")
    if not (teacher / "config.json").is_file():
        raise KronError(f"--model {model}: no fine-tuned teacher in {teacher}; run kron finetune --workspace "
                        f"{ws.root} --task {model} --teacher-only")
    return (ModelRef(f"{name}/student", "student", "student", str(student), str(student)),
            ModelRef(f"{name}/teacher", "teacher", "pretrained", str(teacher), str(teacher)))


def model_config(ref: ModelRef):
    """The transformers config, read without loading weights."""
    import transformers

    from ..sources import RANDOM_CONFIGS, _quiet_transformers

    _quiet_transformers()
    if ref.kind == "random":
        return transformers.BertConfig(**RANDOM_CONFIGS[ref.requested.split(":", 1)[1]])
    try:
        return transformers.AutoConfig.from_pretrained(ref.path)
    except (OSError, ValueError) as e:
        raise KronError(f"could not read the config of {ref.label} in {ref.path}: {str(e).splitlines()[0]}") \
            from None


def check_seq_len(seq_len: int, configs: dict) -> None:
    if seq_len < 1:
        raise KronError(f"--seq-len {seq_len} must be at least 1")
    for label, cfg in configs.items():
        limit = getattr(cfg, "max_position_embeddings", None)
        if limit is not None and seq_len > limit:
            raise KronError(f"--seq-len {seq_len} is above the {label}'s max_position_embeddings ({limit}); "
                            f"pass --seq-len {limit} or less")


# ------------------------------------------------------------------------------------------ loading and sizes


def load_ref(ref: ModelRef):
    """The model in eval mode, fp32, without its tokenizer (so memory is the model's alone)."""
    import torch

    from ..sources import _quiet_transformers, model_class
    from ..student import load_student

    _quiet_transformers()
    if ref.kind == "student":
        model = load_student(ref.path)
    elif ref.kind == "random":  # as sources.load_model builds it
        torch.manual_seed(0)
        import transformers

        model = transformers.BertModel(model_config(ref))
    else:
        try:
            model = model_class(model_config(ref)).from_pretrained(ref.path)
        except (OSError, ValueError) as e:
            raise KronError(f"could not load {ref.label} from {ref.path}: {str(e).splitlines()[0]}") from None
    return model.float().eval().requires_grad_(False)


def _tensor_bytes(model) -> int:
    seen, total = set(), 0
    for t in model.state_dict().values():
        key = (t.data_ptr(), t.numel())
        if key not in seen:
            seen.add(key)
            total += t.numel() * t.element_size()
    return total


def weights_on_disk(ref: ModelRef, model) -> tuple[int, str]:
    """(bytes, what was counted) of the weights the model was loaded from."""
    from ..student import WEIGHTS

    if ref.kind == "random":
        return _tensor_bytes(model), "fp32 tensors (random init, nothing on disk)"
    folder = Path(ref.path)
    if ref.kind == "student":
        files = [folder / WEIGHTS]
    else:
        files = sorted(folder.glob("*.safetensors")) or sorted(folder.glob("pytorch_model*.bin"))
    files = [f for f in files if f.is_file()]
    if not files:
        return _tensor_bytes(model), "fp32 tensors (no weight file found)"
    return sum(f.stat().st_size for f in files), ", ".join(str(f) for f in files)


def make_inputs(batch: int, seq_len: int, vocab_size: int, device: str = "cpu") -> dict:
    import torch

    g = torch.Generator().manual_seed(INPUT_SEED)
    ids = torch.randint(0, vocab_size, (batch, seq_len), generator=g)
    return {"input_ids": ids.to(device), "attention_mask": torch.ones_like(ids).to(device)}


# --------------------------------------------------------------------------------------------------- timing


def time_interleaved(models: dict, inputs: dict, repeats: int, warmup: int, sync: Callable[[], None]) \
        -> dict[str, list[float]]:
    """Seconds per forward, models alternating (order flipped each repeat)."""
    import torch

    names = list(models)
    times: dict[str, list[float]] = {n: [] for n in names}
    with torch.inference_mode():
        for _ in range(warmup):
            for n in names:
                models[n](**inputs)
        sync()
        gc.collect()
        was_enabled = gc.isenabled()
        gc.disable()
        try:
            for r in range(repeats):
                for n in (names if r % 2 == 0 else names[::-1]):
                    sync()
                    t0 = time.perf_counter()
                    models[n](**inputs)
                    sync()
                    times[n].append(time.perf_counter() - t0)
        finally:
            if was_enabled:
                gc.enable()
    return times


def gpu_peak_memory(model, inputs: dict) -> float:
    """MB: the model's weight bytes + the extra memory one forward allocates at its peak."""
    import torch

    weights = sum(p.numel() * p.element_size() for p in model.parameters()) + \
        sum(b.numel() * b.element_size() for b in model.buffers())
    torch.cuda.synchronize()
    before = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    with torch.inference_mode():
        model(**inputs)
    torch.cuda.synchronize()
    return (weights + torch.cuda.max_memory_allocated() - before) / MB


# ---------------------------------------------------------------------------------------- CPU memory worker


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
    """Runs inside the fresh subprocess: MB of weights and of the peak at each batch size."""
    import torch
    import transformers  # noqa: F401  (imported before the baseline, like everything the loaders need)

    from .. import sources, student  # noqa: F401

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
    return {"weights_mb": max(loaded - base, 0) / 1024, "baseline_mb": base / 1024, "peak_mb": peaks,
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


# ------------------------------------------------------------------------------------------------------ run


def _no_progress(description: str, total: int):
    import contextlib

    return contextlib.nullcontext(lambda n=1: None)


def run_speed(ws: Workspace, opts: SpeedOptions, progress_factory=None,
              log: Callable[[str], None] = lambda m: None) -> dict:
    """Measure, append rows to metrics/speed.csv and return {"results": [...], ...}.

    `progress_factory(description, total)` is a context manager yielding advance(n) (see cli.common).
    """
    import torch

    from ..surgery import count_params
    from ..train import append_rows

    batches = parse_batches(opts.batches)
    for flag, value, low in (("--repeats", opts.repeats, 1), ("--warmup", opts.warmup, 0)):
        if value < low:
            raise KronError(f"{flag} {value} must be at least {low}")
    if opts.threads is not None and opts.threads < 1:
        raise KronError(f"--threads {opts.threads} must be at least 1")
    devices = resolve_devices(opts.device)
    student_ref, teacher_ref = resolve_models(ws, opts.model)
    configs = {"student": model_config(student_ref), "teacher": model_config(teacher_ref)}
    check_seq_len(opts.seq_len, configs)
    vocab_size = min(int(c.vocab_size) for c in configs.values())

    old_threads = torch.get_num_threads()
    if opts.threads is not None:
        torch.set_num_threads(opts.threads)
    threads = torch.get_num_threads()
    try:
        log(f"loading {teacher_ref.label} ({teacher_ref.requested}) and {student_ref.label}")
        refs = {"teacher": teacher_ref, "student": student_ref}
        models = {role: load_ref(ref) for role, ref in refs.items()}
        info = {}
        for role, ref in refs.items():
            size, counted = weights_on_disk(ref, models[role])
            info[role] = {"label": ref.label, "source": ref.requested, "params": count_params(models[role]),
                          "size_bytes": size, "size_mb": size / MB, "size_counted": counted}
        compression = {"params": info["teacher"]["params"] / info["student"]["params"],
                       "disk": info["teacher"]["size_bytes"] / info["student"]["size_bytes"]}

        rows: list[dict] = []
        stamp = now()
        bar = progress_factory or _no_progress
        with bar("timing", len(devices) * len(batches)) as advance:
            for device in devices:
                cuda = device == "cuda"
                sync = torch.cuda.synchronize if cuda else (lambda: None)
                for m in models.values():
                    m.to(device)
                for b in batches:
                    inputs = make_inputs(b, opts.seq_len, vocab_size, device)
                    gpu_mem = {}
                    try:
                        if cuda:
                            with torch.inference_mode():
                                for m in models.values():
                                    m(**inputs)  # cuBLAS workspaces etc. are allocated once, before measuring
                            gpu_mem = {role: gpu_peak_memory(m, inputs) for role, m in models.items()}
                        times = time_interleaved(models, inputs, opts.repeats, opts.warmup, sync)
                    except torch.OutOfMemoryError:
                        raise KronError(f"out of {device} memory at --batch {b} --seq-len {opts.seq_len}; pass "
                                        "smaller batch sizes") from None
                    med = {role: statistics.median(t) for role, t in times.items()}
                    for role in ("teacher", "student"):
                        lat = med[role]
                        rows.append({
                            "timestamp": stamp, "model": info[role]["label"], "device": device, "batch": b,
                            "seq_len": opts.seq_len, "latency_ms": lat * 1e3, "throughput_seq_s": b / lat,
                            "tokens_s": b * opts.seq_len / lat, "speedup": med["teacher"] / lat,
                            "params": info[role]["params"], "size_mb": info[role]["size_mb"],
                            "peak_mem_mb": gpu_mem.get(role), "threads": threads,
                            "role": role, "latency_ms_min": min(times[role]) * 1e3,
                            "latency_ms_max": max(times[role]) * 1e3,
                        })
                    advance(1)
                    del inputs
                if cuda:
                    for m in models.values():
                        m.to("cpu")
                    torch.cuda.empty_cache()
        del models
        gc.collect()

        warnings: list[str] = []
        memory_method = {}
        if "cpu" in devices:
            log("measuring CPU peak memory (one fresh process per model)")
            procs = {role: start_cpu_memory_worker(ref, batches, opts.seq_len, vocab_size, threads)
                     for role, ref in refs.items()}
            for role, proc in procs.items():
                res, error = finish_cpu_memory_worker(proc)
                if res is None:
                    warnings.append(f"CPU peak memory of the {role} not measured ({error})")
                    continue
                memory_method["cpu"] = res["method"]
                info[role]["cpu_weights_rss_mb"] = res["weights_mb"]
                for row in rows:
                    if row["role"] == role and row["device"] == "cpu":
                        row["peak_mem_mb"] = res["peak_mb"][str(row["batch"])]
        if "cuda" in devices:
            memory_method["cuda"] = GPU_MEMORY_METHOD
    finally:
        torch.set_num_threads(old_threads)

    ws.metrics_dir.mkdir(parents=True, exist_ok=True)
    csv_path = ws.metrics_dir / CSV_NAME
    append_rows(csv_path, [{k: r[k] for k in CSV_COLUMNS} for r in rows])
    return {
        "workspace": str(ws.root), "model": opts.model, "devices": devices, "batches": batches,
        "seq_len": opts.seq_len, "repeats": opts.repeats, "warmup": opts.warmup, "threads": threads,
        "gpu": torch.cuda.get_device_name(0) if "cuda" in devices else None,
        "torch": torch.__version__, "models": info, "compression": compression,
        "method": {"latency": LATENCY_METHOD.format(repeats=opts.repeats, warmup=opts.warmup),
                   "memory": memory_method, "size": "student: model.safetensors bytes; teacher: its weight "
                                                     "files, or fp32 tensor bytes for a random init"},
        "warnings": warnings, "csv": str(csv_path), "results": rows,
    }


def _worker_main(argv: list[str]) -> int:
    from ..sources import _quiet_transformers

    _quiet_transformers()
    result = measure_cpu_memory(json.loads(argv[0]))
    sys.stdout.write(json.dumps(result) + "\n")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(_worker_main(sys.argv[1:]))
