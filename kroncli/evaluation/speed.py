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
import json
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

from .. import metrics_csv
from ..errors import KronError, first_line
from ..integrity import check_folder
from ..machine import THRESHOLD, Contention, load_warning
from ..workspace import Workspace, now

MIB = 2 ** 20
CSV_NAME = "speed.csv"
CSV_COLUMNS = ("timestamp", "model", "device", "batch", "seq_len", "latency_ms", "throughput_seq_s", "tokens_s",
               "speedup", "params", "size_mib", "peak_mem_mib", "threads", "other_load")
OLD_CSV_NAMES = {"size_mb": "size_mib", "peak_mem_mb": "peak_mem_mib"}  # older files: the same unit, misnamed
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
LATENCY_METHOD = ("median of {repeats} forwards after {warmup} warm-up forwards, {who} interleaved "
                  "(order flipped each repeat), torch.inference_mode, fp32, random token ids, full attention mask")
ONNX_METHOD = ("onnxruntime {version} CPUExecutionProvider, intra_op_num_threads {threads} (the torch thread count), "
               "inter_op_num_threads 1, intra-op spinning off, default graph optimisations; same token ids and "
               "attention mask, token_type_ids zeros; CPU rows only")
EXPORT_EXPECTED = "a folder written by kron export --format onnx (model.onnx + kron_export.json)"


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


@dataclass
class ModelRef:
    """How to load one model: a Kronecker student folder, a random-init config, a transformers folder, or an
    exported ONNX graph."""

    label: str  # "student", "teacher", "mrpc/student", "kronecker-onnx-int8", ...
    role: str  # "student" | "teacher" | "onnx"
    kind: str  # "student" | "random" | "pretrained" | "onnx"
    path: str | None  # for "onnx": the .onnx file
    requested: str  # for "onnx": the export folder


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


def _is_task(name: str) -> bool:
    """A GLUE or SQuAD task name that kron finetune takes."""
    from ..data.glue import find_task
    from ..data.squad import squad_version

    return squad_version(name) is not None or find_task(name) is not None


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
    from ..data.tasks import find_any_task

    task = find_any_task(model)  # an unknown task name is taken as written
    folder = ws.task_dir(task) if task else ws.tasks_dir / model.lower()
    name = folder.name
    student, teacher = folder / "student", folder / "teacher"
    if not (student / KRON_CONFIG).is_file():
        have = sorted(p.parent.parent.name for p in (ws.root / "tasks").glob(f"*/student/{KRON_CONFIG}"))
        hint = f" (task students here: {', '.join(have)})" if have else ""
        if not folder.is_dir() and not _is_task(model):  # a typo, not a task to fine-tune
            raise KronError(f"--model {model}: not a task of this workspace{hint}; pass --model general or a task "
                            "name")
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

    from ..families import random_config
    from ..sources import _quiet_transformers

    _quiet_transformers()
    if ref.kind == "random":
        return random_config(ref.requested.split(":", 1)[1])
    if Path(ref.path).is_dir():
        check_folder(ref.path)  # config, kron.json and weights readable: one line naming a damaged file
    try:
        return transformers.AutoConfig.from_pretrained(ref.path)
    except (OSError, ValueError) as e:
        raise KronError(f"could not read the config of {ref.label} in {ref.path}: {str(e).splitlines()[0]}") \
            from None


def check_seq_len(seq_len: int, configs: dict) -> None:
    from ..families import max_positions

    if seq_len < 1:
        raise KronError(f"--seq-len {seq_len} must be at least 1")
    for label, cfg in configs.items():
        limit = max_positions(cfg)
        if limit is not None and seq_len > limit:
            raise KronError(f"--seq-len {seq_len} is above the {label}'s {limit} positions (its "
                            f"max_position_embeddings); pass --seq-len {limit} or less")


def export_label(meta: dict) -> str:
    """kronecker-onnx-fp32, kronecker-onnx-int8, dense-onnx-fp32, ... from an export's kron_export.json."""
    kind = "kronecker" if meta.get("kronecker", True) else "dense"
    return f"{kind}-onnx-{meta.get('quantize') or 'fp32'}"


def resolve_exports(folders, taken=("teacher", "student")) -> list[tuple[ModelRef, dict]]:
    """(ref, kron_export.json) per --onnx folder, in order, duplicates dropped; KronError naming the folder
    when it is not an ONNX export. Labels come from the export's metadata (folder name appended on a clash)."""
    from ..predict import EXPORT_JSON, ONNX_FILE, read_export

    out: list[tuple[ModelRef, dict]] = []
    seen, labels = set(), set(taken)
    for text in folders:
        folder = Path(text)
        if not folder.is_dir():
            raise KronError(f"--onnx {folder}: no such folder; expected {EXPORT_EXPECTED}")
        if not (folder / EXPORT_JSON).is_file():
            raise KronError(f"--onnx {folder} is not an ONNX export (no {EXPORT_JSON}); expected {EXPORT_EXPECTED}")
        meta = read_export(folder)
        if meta["format"] != "onnx":
            raise KronError(f"--onnx {folder} is a --format {meta['format']} export, not ONNX; expected "
                            f"{EXPORT_EXPECTED}")
        model_file = folder / meta.get("model_file", ONNX_FILE)
        if not model_file.is_file():
            raise KronError(f"--onnx {folder} is not a complete ONNX export ({model_file.name} missing); expected "
                            f"{EXPORT_EXPECTED}")
        if folder.resolve() in seen:
            continue
        seen.add(folder.resolve())
        label = base = export_label(meta)
        if label in labels:
            label = base = f"{base}:{folder.name}"
        n = 2
        while label in labels:
            label, n = f"{base}#{n}", n + 1
        labels.add(label)
        out.append((ModelRef(label, "onnx", "onnx", str(model_file), str(folder)), meta))
    return out


def onnx_weights(ref: ModelRef) -> tuple[int, int, list[str]]:
    """(bytes of the .onnx file + its external data files, elements of its initializers, the files counted)."""
    import onnx

    path = Path(ref.path)
    try:
        graph = onnx.load(str(path), load_external_data=False).graph
    except Exception as e:  # a truncated or foreign file: protobuf's DecodeError, onnx's own errors
        first = first_line(e)
        raise KronError(f"--onnx {ref.requested}: cannot read {path.name} ({first}); expected "
                        f"{EXPORT_EXPECTED}") from None
    files, elements = {path}, 0
    for init in graph.initializer:
        n = 1
        for d in init.dims:
            n *= int(d)
        elements += n
        if init.data_location == onnx.TensorProto.EXTERNAL:
            files |= {path.parent / e.value for e in init.external_data if e.key == "location"}
    files = sorted(f for f in files if f.is_file())
    return sum(f.stat().st_size for f in files), elements, [str(f) for f in files]


def export_vocab_size(folder: str) -> int | None:
    """The export's tokenizer vocabulary (an upper bound for the random token ids), when it is readable."""
    path = Path(folder) / "tokenizer.json"
    if not path.is_file():
        return None
    try:
        from tokenizers import Tokenizer

        return int(Tokenizer.from_file(str(path)).get_vocab_size())
    except Exception:  # unreadable tokenizer: no bound from it (the run fails loudly if the ids do not fit)
        return None


class OnnxModel:
    """An exported ONNX graph called like the PyTorch models: model(input_ids=..., attention_mask=...).

    The torch tensors are handed over as numpy views (no copy); token_type_ids, when the graph takes it, are
    zeros (what the PyTorch BERT models use when it is not given). The feed is built once per input."""

    def __init__(self, path: str, folder: str, threads: int | None):
        from ..export.onnx_export import require_onnx, session

        require_onnx()
        self.folder = folder
        try:
            self.session = session(path, threads, spinning=False)
        except Exception as e:  # onnxruntime's Fail / InvalidGraph / ...: one line naming the folder
            first = first_line(e)
            raise KronError(f"--onnx {folder}: onnxruntime cannot load {Path(path).name} ({first}); expected "
                            f"{EXPORT_EXPECTED}") from None
        self.names = [i.name for i in self.session.get_inputs()]
        self.outputs = [o.name for o in self.session.get_outputs()][:1]
        unknown = [n for n in self.names if n not in ("input_ids", "attention_mask", "token_type_ids")]
        if unknown or "input_ids" not in self.names:
            raise KronError(f"--onnx {folder}: the graph takes {', '.join(self.names)}; kron eval speed feeds "
                            f"input_ids, attention_mask and token_type_ids (expected {EXPORT_EXPECTED})")
        self._source: tuple = ()
        self._feed: dict = {}

    def feed(self, inputs: dict) -> dict:
        import numpy as np

        source = tuple(inputs.values())
        if len(source) != len(self._source) or any(a is not b for a, b in zip(source, self._source)):
            arrays = {k: np.ascontiguousarray(v.cpu().numpy(), dtype=np.int64) for k, v in inputs.items()}
            arrays.setdefault("token_type_ids", np.zeros_like(arrays["input_ids"]))
            self._source, self._feed = source, {n: arrays[n] for n in self.names}
        return self._feed

    def __call__(self, **inputs):
        feed = self.feed(inputs)
        try:
            return self.session.run(self.outputs, feed)
        except Exception as e:
            first = first_line(e)
            shape = "x".join(str(d) for d in feed["input_ids"].shape)
            raise KronError(f"--onnx {self.folder}: onnxruntime failed on a {shape} input ({first}); check that "
                            "the export is of this workspace's model and --seq-len fits it") from None


# ------------------------------------------------------------------------------------------ loading and sizes


def load_ref(ref: ModelRef):
    """The model in eval mode, fp32, without its tokenizer (so memory is the model's alone); for an ONNX
    export an OnnxModel whose session uses torch's current thread count."""
    import torch

    from ..sources import _quiet_transformers, model_class
    from ..student import load_student

    if ref.kind == "onnx":
        return OnnxModel(ref.path, ref.requested, torch.get_num_threads())
    _quiet_transformers()
    if ref.kind == "student":
        model = load_student(ref.path)
    elif ref.kind == "random":  # as sources.load_model builds it
        torch.manual_seed(0)
        import transformers

        model = transformers.AutoModel.from_config(model_config(ref))
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
    """MiB: the model's weight bytes + the extra memory one forward allocates at its peak."""
    import torch

    weights = sum(p.numel() * p.element_size() for p in model.parameters()) + \
        sum(b.numel() * b.element_size() for b in model.buffers())
    torch.cuda.synchronize()
    before = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    with torch.inference_mode():
        model(**inputs)
    torch.cuda.synchronize()
    return (weights + torch.cuda.max_memory_allocated() - before) / MIB


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
    """Runs inside the fresh subprocess: MiB of weights and of the peak at each batch size."""
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

    batches = parse_batches(opts.batches)
    for flag, value, low in (("--repeats", opts.repeats, 1), ("--warmup", opts.warmup, 0)):
        if value < low:
            raise KronError(f"{flag} {value} must be at least {low}")
    if opts.threads is not None and opts.threads < 1:
        raise KronError(f"--threads {opts.threads} must be at least 1")
    devices = resolve_devices(opts.device)
    exports = resolve_exports(opts.onnx or ())
    if exports:
        from ..export.onnx_export import require_onnx

        require_onnx()
        if "cpu" not in devices:
            raise KronError("--onnx runs on the CPU (onnxruntime's CPUExecutionProvider); pass --device cpu or "
                            "auto")
    student_ref, teacher_ref = resolve_models(ws, opts.model)
    metrics_csv.check(ws.metrics_dir / CSV_NAME)  # a damaged speed.csv is refused before minutes of timing
    configs = {"student": model_config(student_ref), "teacher": model_config(teacher_ref)}
    check_seq_len(opts.seq_len, configs)
    vocab_sizes = [int(c.vocab_size) for c in configs.values()]
    vocab_sizes += [v for v in (export_vocab_size(ref.requested) for ref, _ in exports) if v]
    vocab_size = min(vocab_sizes)

    warnings: list[str] = []
    general = opts.model.strip().lower() == "general"
    for ref, meta in exports:
        task = str(meta.get("task", "?"))
        if general or task.lower() != Path(student_ref.path).parent.name:
            warnings.append(f"{ref.requested} is an export of the {task} student, the PyTorch rows are "
                            f"{student_ref.label} and {teacher_ref.label}; pass --model {task.lower()} to time "
                            "the same model in PyTorch")

    old_threads = torch.get_num_threads()
    if opts.threads is not None:
        torch.set_num_threads(opts.threads)
    threads = torch.get_num_threads()
    try:
        log(f"loading {teacher_ref.label} ({teacher_ref.requested}) and {student_ref.label}"
            + "".join(f", {ref.label} ({ref.requested})" for ref, _ in exports))
        refs = {"teacher": teacher_ref, "student": student_ref}
        models = {role: load_ref(ref) for role, ref in refs.items()}
        info = {}
        for role, ref in refs.items():
            size, counted = weights_on_disk(ref, models[role])
            info[role] = {"label": ref.label, "source": ref.requested, "params": count_params(models[role]),
                          "size_bytes": size, "size_mib": size / MIB, "size_counted": counted}
        compression = {"params": info["teacher"]["params"] / info["student"]["params"],
                       "disk": info["teacher"]["size_bytes"] / info["student"]["size_bytes"]}
        onnx_info: dict[str, dict] = {}
        onnx_models = {}
        for ref, meta in exports:  # keyed by label (unique), timed on the CPU only
            size, elements, files = onnx_weights(ref)
            onnx_models[ref.label] = load_ref(ref)
            onnx_info[ref.label] = {"label": ref.label, "folder": ref.requested, "task": meta.get("task"),
                                    "kronecker": bool(meta.get("kronecker", True)),
                                    "quantize": meta.get("quantize"), "params": elements, "size_bytes": size,
                                    "size_mib": size / MIB, "size_counted": ", ".join(files),
                                    "source": meta.get("source")}

        rows: list[dict] = []
        stamp = now()
        bar = progress_factory or _no_progress
        with bar("timing", len(devices) * len(batches)) as advance:
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
                        lat = med[key]
                        about = info.get(key) or onnx_info[key]
                        rows.append({
                            "timestamp": stamp, "model": about["label"], "device": device, "batch": b,
                            "seq_len": opts.seq_len, "latency_ms": lat * 1e3, "throughput_seq_s": b / lat,
                            "tokens_s": b * opts.seq_len / lat, "speedup": med["teacher"] / lat,
                            "params": about["params"], "size_mib": about["size_mib"],
                            "peak_mem_mib": gpu_mem.get(key), "threads": threads, "other_load": load.other,
                            "role": key if key in info else "onnx", "latency_ms_min": min(times[key]) * 1e3,
                            "latency_ms_max": max(times[key]) * 1e3,
                            **({"export": onnx_info[key]["folder"]} if key in onnx_info else {}),
                        })
                    advance(1)
                    del inputs
                if cuda:
                    for m in models.values():
                        m.to("cpu")
                    torch.cuda.empty_cache()
        del models, onnx_models, timed
        gc.collect()

        memory_method = {}
        if "cpu" in devices:
            log("measuring CPU peak memory (one fresh process per model)")
            everyone = {**refs, **{ref.label: ref for ref, _ in exports}}
            procs = {key: start_cpu_memory_worker(ref, batches, opts.seq_len, vocab_size, threads)
                     for key, ref in everyone.items()}
            for key, proc in procs.items():
                res, error = finish_cpu_memory_worker(proc)
                if res is None:
                    warnings.append(f"CPU peak memory of {'the ' + key if key in refs else key} not measured "
                                    f"({error})")
                    continue
                memory_method["cpu"] = res["method"]
                (info.get(key) or onnx_info[key])["cpu_weights_rss_mib"] = res["weights_mib"]
                for row in rows:  # key: the role of teacher and student rows, the label of ONNX rows
                    if row["device"] == "cpu" and key in (row["role"], row["model"]):
                        row["peak_mem_mib"] = res["peak_mib"][str(row["batch"])]
        if "cuda" in devices:
            memory_method["cuda"] = GPU_MEMORY_METHOD
    finally:
        torch.set_num_threads(old_threads)

    warnings += load_warnings(rows)
    ws.metrics_dir.mkdir(parents=True, exist_ok=True)
    csv_path = ws.metrics_dir / CSV_NAME
    rename_old_columns(csv_path)
    metrics_csv.append(csv_path, [{k: r[k] for k in CSV_COLUMNS} for r in rows])
    method = {"latency": LATENCY_METHOD.format(repeats=opts.repeats, warmup=opts.warmup,
                                               who="teacher, student and exports" if exports else
                                               "teacher and student"),
              "memory": memory_method, "size": "student: model.safetensors bytes; teacher: its weight files, or "
                                                "fp32 tensor bytes for a random init"
                                                + ("; exports: .onnx file bytes" if exports else "")}
    if exports:
        import onnxruntime

        method["onnx"] = ONNX_METHOD.format(version=onnxruntime.__version__, threads=threads)
    return {
        "workspace": str(ws.root), "model": opts.model, "devices": devices, "batches": batches,
        "seq_len": opts.seq_len, "repeats": opts.repeats, "warmup": opts.warmup, "threads": threads,
        "gpu": torch.cuda.get_device_name(0) if "cuda" in devices else None,
        "torch": torch.__version__, "models": info, "exports": list(onnx_info.values()),
        "compression": compression, "method": method,
        "other_load": max(r["other_load"] for r in rows), "other_load_threshold": THRESHOLD,
        "warnings": warnings, "csv": str(csv_path), "results": rows,
    }


def load_warnings(rows: list[dict]) -> list[str]:
    """One warning per device and batch size timed while other processes took more than THRESHOLD of the CPUs."""
    seen, out = set(), []
    for r in rows:
        key = (r["device"], r["batch"])
        text = load_warning(r["other_load"])
        if text and key not in seen:
            seen.add(key)
            out.append(f"{r['device']} batch {r['batch']}: {text}; its speed-ups are not a result")
    return out


def rename_old_columns(path: Path) -> None:
    """An older speed.csv names its MiB columns size_mb / peak_mem_mb: renamed in place, so old and new rows share
    one column. A file that cannot be parsed is left to the append, which reports it."""
    import pandas as pd

    from ..workspace import atomic_write_text

    if not path.is_file() or not path.stat().st_size:
        return
    with open(path, encoding="utf-8", errors="replace") as f:
        header = f.readline().rstrip("\r\n").split(",")
    if not set(OLD_CSV_NAMES) & set(header):
        return
    try:
        df = pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError):
        return
    for old, new in OLD_CSV_NAMES.items():
        if old in df and new in df:  # both (widened by a newer append): one column
            df = df.assign(**{new: df[new].fillna(df[old])}).drop(columns=old)
        elif old in df:
            df = df.rename(columns={old: new})
    atomic_write_text(path, df.to_csv(index=False))


def _worker_main(argv: list[str]) -> int:
    from ..sources import _quiet_transformers

    _quiet_transformers()
    result = measure_cpu_memory(json.loads(argv[0]))
    sys.stdout.write(json.dumps(result) + "\n")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(_worker_main(sys.argv[1:]))
