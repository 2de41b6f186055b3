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
  from, or the fp32 bytes of its tensors when it is a random init (nothing on disk). Sizes and memory are in MiB
  (2**20 bytes; columns size_mib, peak_mem_mib); speed.csv files of older versions named them size_mb and
  peak_mem_mb, in the same unit, and are renamed on the next append.
- Exported ONNX folders (`--onnx DIR`, written by `kron export --format onnx [--quantize int8] [--dense]`):
  extra CPU rows, labelled from the folder's kron_export.json (kronecker|dense)-onnx-(fp32|int8). Each runs
  in an onnxruntime CPUExecutionProvider session with intra_op_num_threads = the torch thread count of the
  PyTorch rows (inter_op 1; idle threads sleep instead of spinning, so they take no core from the model
  that runs next), on the same token ids and attention mask (token_type_ids zeros, as the PyTorch
  models default to), timed in the same interleaved loop as teacher and student; speed-up = teacher / row
  latency. Size = bytes of the .onnx file (+ external data files); params = elements of the graph's
  initializers. Peak memory: the same fresh-subprocess measurement, the session in place of the model.
- Load: the share of all CPUs that other processes used while each batch size was timed (kroncli/machine.py,
  as the benchmarks measure it) is recorded per row (other_load); above 10% the run warns (a 0.96x under load
  was 3.10x on a quiet machine), in the table and in the JSON's warnings.
"""

from __future__ import annotations

import gc
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ... import metrics_csv
from ...errors import KronError
from ...machine import THRESHOLD, Contention
from ...workspace import Workspace, now
from .memory import finish_cpu_memory_worker, start_cpu_memory_worker
from .models import (EXPORT_EXPECTED, ModelRef, check_seq_len, export_label, export_vocab_size, is_decoder,  # noqa: F401
                     load_ref, model_config, onnx_weights, resolve_exports, resolve_models, weights_on_disk)
from .report import CSV_COLUMNS, CSV_NAME, append_rows, load_warnings, rename_old_columns  # noqa: F401
from .timing import (GENERATE_METHOD, GPU_MEMORY_METHOD, LATENCY_METHOD, MIB, generate_rows, gpu_peak_memory,
                     make_inputs, time_interleaved)

ONNX_METHOD = ("onnxruntime {version} CPUExecutionProvider, intra_op_num_threads {threads} (the torch thread count), "
               "inter_op_num_threads 1, intra-op spinning off, default graph optimisations; same token ids and "
               "attention mask, token_type_ids zeros; CPU rows only")


@dataclass
class SpeedOptions:
    batches: str = "1,8,32"
    seq_len: int = 128
    model: str = "general"
    repeats: int = 20
    warmup: int = 3
    threads: int | None = None
    device: str = "auto"
    onnx: tuple[str, ...] = ()  # exported ONNX folders timed beside teacher and student (CPU)
    new_tokens: int = 32  # a decoder: tokens each timed generate() adds (0: prefill only)


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

    batches, devices, exports = check_options(opts)
    student_ref, teacher_ref = resolve_models(ws, opts.model)
    metrics_csv.check(ws.speed_csv)  # a damaged speed.csv is refused before minutes of timing
    configs = {"student": model_config(student_ref), "teacher": model_config(teacher_ref)}
    decoder = is_decoder(configs["student"])
    check_seq_len(opts.seq_len, configs)
    warnings = fit_new_tokens(opts, configs) if decoder else []
    vocab_sizes = [int(c.vocab_size) for c in configs.values()]
    vocab_sizes += [v for v in (export_vocab_size(ref.requested) for ref, _ in exports) if v]
    vocab_size = min(vocab_sizes)
    warnings += export_warnings(opts, exports, student_ref, teacher_ref)

    old_threads = torch.get_num_threads()
    if opts.threads is not None:
        torch.set_num_threads(opts.threads)
    threads = torch.get_num_threads()
    try:
        log(f"loading {teacher_ref.label} ({teacher_ref.requested}) and {student_ref.label}"
            + "".join(f", {ref.label} ({ref.requested})" for ref, _ in exports))
        refs = {"teacher": teacher_ref, "student": student_ref}
        models = {role: load_ref(ref) for role, ref in refs.items()}
        info = {role: model_info(ref, models[role]) for role, ref in refs.items()}
        compression = {"params": info["teacher"]["params"] / info["student"]["params"],
                       "disk": info["teacher"]["size_bytes"] / info["student"]["size_bytes"]}
        onnx_info: dict[str, dict] = {}
        onnx_models = {}
        for ref, meta in exports:  # keyed by label (unique), timed on the CPU only
            onnx_models[ref.label] = load_ref(ref)
            onnx_info[ref.label] = export_info(ref, meta)
        about = {**info, **onnx_info}
        bar = progress_factory or _no_progress
        with bar("timing", len(devices) * len(batches)) as advance:
            rows = time_rows(models, onnx_models, about, devices, batches, opts, vocab_size, threads, advance,
                             decoder)
        del models, onnx_models
        gc.collect()
        memory_method = {}
        if "cpu" in devices:
            log("measuring CPU peak memory (one fresh process per model)")
            cpu_method = cpu_memory(refs, exports, about, rows, batches, opts.seq_len, vocab_size, threads, warnings)
            if cpu_method:
                memory_method["cpu"] = cpu_method
        if "cuda" in devices:
            memory_method["cuda"] = GPU_MEMORY_METHOD
    finally:
        torch.set_num_threads(old_threads)

    warnings += load_warnings(rows)
    csv_path = append_rows(ws, rows)
    return {
        "workspace": str(ws.root), "model": opts.model, "devices": devices, "batches": batches,
        "seq_len": opts.seq_len, "repeats": opts.repeats, "warmup": opts.warmup, "threads": threads,
        "gpu": torch.cuda.get_device_name(0) if "cuda" in devices else None,
        "torch": torch.__version__, "models": info, "exports": list(onnx_info.values()),
        "compression": compression, "method": method(opts, exports, memory_method, threads, decoder),
        "other_load": max(r["other_load"] for r in rows), "other_load_threshold": THRESHOLD,
        "warnings": warnings, "csv": str(csv_path), "results": rows,
    }


def check_options(opts: SpeedOptions) -> tuple[list[int], list[str], list[tuple[ModelRef, dict]]]:
    """(batch sizes, devices, ONNX exports) of the options, or a one-line error, before anything loads."""
    batches = parse_batches(opts.batches)
    for flag, value, low in (("--repeats", opts.repeats, 1), ("--warmup", opts.warmup, 0)):
        if value < low:
            raise KronError(f"{flag} {value} must be at least {low}")
    if opts.threads is not None and opts.threads < 1:
        raise KronError(f"--threads {opts.threads} must be at least 1")
    if opts.new_tokens < 0:
        raise KronError(f"--new-tokens {opts.new_tokens} must be 0 (prefill only) or more")
    devices = resolve_devices(opts.device)
    exports = resolve_exports(opts.onnx or ())
    if exports:
        from ...export.onnx_export import require_onnx

        require_onnx()
        if "cpu" not in devices:
            raise KronError("--onnx runs on the CPU (onnxruntime's CPUExecutionProvider); pass --device cpu or "
                            "auto")
    return batches, devices, exports


def fit_new_tokens(opts: SpeedOptions, configs: dict) -> list[str]:
    """A decoder's generation must fit its positions after the --seq-len prompt: fewer new tokens, with a warning."""
    from ...families import max_positions

    room = min((max_positions(c) or 10**9) for c in configs.values()) - opts.seq_len
    if opts.new_tokens <= room:
        return []
    asked, opts.new_tokens = opts.new_tokens, max(room, 0)
    return [f"--new-tokens {asked} does not fit after a --seq-len {opts.seq_len} prompt (the models have "
            f"{opts.seq_len + room} positions): generation timed with {opts.new_tokens} new tokens"
            + (" (none: no generate rows)" if not opts.new_tokens else "")]


def export_warnings(opts: SpeedOptions, exports, student_ref: ModelRef, teacher_ref: ModelRef) -> list[str]:
    """An export of another model than the PyTorch student's is timed, with a warning naming --model."""
    warnings = []
    general = opts.model.strip().lower() == "general"
    for ref, meta in exports:
        task = str(meta.get("task", "?"))
        if general or task.lower() != Path(student_ref.path).parent.name:
            warnings.append(f"{ref.requested} is an export of the {task} student, the PyTorch rows are "
                            f"{student_ref.label} and {teacher_ref.label}; pass --model {task.lower()} to time "
                            "the same model in PyTorch")
    return warnings


def model_info(ref: ModelRef, model) -> dict:
    from ...surgery import count_params

    size, counted = weights_on_disk(ref, model)
    return {"label": ref.label, "source": ref.requested, "params": count_params(model), "size_bytes": size,
            "size_mib": size / MIB, "size_counted": counted}


def export_info(ref: ModelRef, meta: dict) -> dict:
    size, elements, files = onnx_weights(ref)
    return {"label": ref.label, "folder": ref.requested, "task": meta.get("task"),
            "kronecker": bool(meta.get("kronecker", True)), "quantize": meta.get("quantize"), "params": elements,
            "size_bytes": size, "size_mib": size / MIB, "size_counted": ", ".join(files),
            "source": meta.get("source")}


def time_rows(models: dict, onnx_models: dict, about: dict, devices: list[str], batches: list[int],
              opts: SpeedOptions, vocab_size: int, threads: int, advance, decoder: bool = False) -> list[dict]:
    """One row per device, batch size and model (ONNX on the CPU only), all models timed on the same inputs; a
    decoder's forward rows are its prefill, and generate rows follow (`_generate_rows`)."""
    import torch

    rows: list[dict] = []
    stamp = now()
    for device in devices:
        cuda = device == "cuda"
        sync = torch.cuda.synchronize if cuda else (lambda: None)
        for m in models.values():
            m.to(device)
        timed = dict(models) if cuda else {**models, **onnx_models}
        for b in batches:
            inputs = make_inputs(b, opts.seq_len, vocab_size, device)
            gpu_mem = {}
            try:
                if cuda:
                    with torch.inference_mode():
                        for m in models.values():
                            m(**inputs)  # cuBLAS workspaces etc. are allocated once, before measuring
                    gpu_mem = {role: gpu_peak_memory(m, inputs) for role, m in models.items()}
                with Contention() as load:  # other processes' share of the CPUs while this batch timed
                    times = time_interleaved(timed, inputs, opts.repeats, opts.warmup, sync)
            except torch.OutOfMemoryError:
                raise KronError(f"out of {device} memory at --batch {b} --seq-len {opts.seq_len}; pass "
                                "smaller batch sizes") from None
            med = {key: statistics.median(t) for key, t in times.items()}
            for key in timed:
                lat, onnx = med[key], key in onnx_models
                rows.append({
                    "timestamp": stamp, "model": about[key]["label"], "device": device, "batch": b,
                    "seq_len": opts.seq_len, "latency_ms": lat * 1e3, "throughput_seq_s": b / lat,
                    "tokens_s": b * opts.seq_len / lat, "speedup": med["teacher"] / lat,
                    "params": about[key]["params"], "size_mib": about[key]["size_mib"],
                    "peak_mem_mib": gpu_mem.get(key), "threads": threads, "other_load": load.other,
                    "role": "onnx" if onnx else key, "latency_ms_min": min(times[key]) * 1e3,
                    "latency_ms_max": max(times[key]) * 1e3,
                    **({"export": about[key]["folder"]} if onnx else {}),
                    **({"phase": "prefill", "new_tokens": 0} if decoder else {}),
                })
            if decoder and opts.new_tokens:
                with Contention() as load:
                    rows += generate_rows(models, about, inputs, opts, sync,
                                           {"timestamp": stamp, "device": device, "batch": b, "seq_len": opts.seq_len,
                                            "threads": threads, "other_load": 0.0})
                for r in rows[-len(models):]:
                    r["other_load"] = load.other
            advance(1)
            del inputs
        if cuda:
            for m in models.values():
                m.to("cpu")
            torch.cuda.empty_cache()
    return rows


def cpu_memory(refs: dict, exports, about: dict, rows: list[dict], batches: list[int], seq_len: int,
               vocab_size: int, threads: int, warnings: list[str]) -> str | None:
    """CPU peak memory of every model, one fresh worker process each, written into its CPU rows (and its
    `cpu_weights_rss_mib` into `about`); a model the worker could not measure is a warning. Returns the method."""
    everyone = {**refs, **{ref.label: ref for ref, _ in exports}}
    procs = {key: start_cpu_memory_worker(ref, batches, seq_len, vocab_size, threads)
             for key, ref in everyone.items()}
    method = None
    for key, proc in procs.items():
        res, error = finish_cpu_memory_worker(proc)
        if res is None:
            warnings.append(f"CPU peak memory of {'the ' + key if key in refs else key} not measured ({error})")
            continue
        method = res["method"]
        about[key]["cpu_weights_rss_mib"] = res["weights_mib"]
        for row in rows:  # key: the role of teacher and student rows, the label of ONNX rows
            if row["device"] == "cpu" and key in (row["role"], row["model"]) and row.get("phase") != "generate":
                row["peak_mem_mib"] = res["peak_mib"][str(row["batch"])]
    return method


def method(opts: SpeedOptions, exports, memory_method: dict, threads: int, decoder: bool = False) -> dict:
    """How each figure was measured, for the result (see the module docstring)."""
    out = {"latency": LATENCY_METHOD.format(repeats=opts.repeats, warmup=opts.warmup,
                                            who="teacher, student and exports" if exports else "teacher and student"),
           "memory": memory_method, "size": "student: model.safetensors bytes; teacher: its weight files, or fp32 "
                                            "tensor bytes for a random init"
                                            + ("; exports: .onnx file bytes" if exports else "")}
    if decoder and opts.new_tokens:
        out["generate"] = GENERATE_METHOD.format(new_tokens=opts.new_tokens, repeats=opts.repeats, warmup=opts.warmup)
    if exports:
        import onnxruntime

        out["onnx"] = ONNX_METHOD.format(version=onnxruntime.__version__, threads=threads)
    return out
