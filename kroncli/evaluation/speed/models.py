"""Which models `kron eval speed` times and how they load: the workspace's student and teacher (general or a
task's), exported ONNX folders, their configs and their sizes on disk."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ...errors import KronError, first_line
from ...integrity import check_folder
from ...workspace import Workspace

EXPORT_EXPECTED = "a folder written by kron export --format onnx (model.onnx + kron_export.json)"


@dataclass
class ModelRef:
    """How to load one model: a Kronecker student folder, a random-init config, a transformers folder, or an
    exported ONNX graph."""

    label: str  # "student", "teacher", "mrpc/student", "kronecker-onnx-int8", ...
    role: str  # "student" | "teacher" | "onnx"
    kind: str  # "student" | "random" | "pretrained" | "onnx"
    path: str | None  # for "onnx": the .onnx file
    requested: str  # for "onnx": the export folder


def _is_task(name: str) -> bool:
    """A GLUE or SQuAD task name that kron finetune takes."""
    from ...data.glue import find_task
    from ...data.squad import squad_version

    return squad_version(name) is not None or find_task(name) is not None


def resolve_models(ws: Workspace, model: str) -> tuple[ModelRef, ModelRef]:
    """(student, teacher) for `--model general` or `--model <task>`."""
    from ...stages.common import require_student, teacher_source
    from ...student import KRON_CONFIG

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
    from ...data.tasks import find_any_task

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

    from ...families import random_config
    from ...sources import _quiet_transformers

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


def is_decoder(config) -> bool:
    """A decoder family's model: timed for prefill and generation."""
    from ...families import find

    family = find(config)
    return bool(family and family.is_decoder)


def check_seq_len(seq_len: int, configs: dict) -> None:
    from ...families import max_positions

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
    from ...predict import EXPORT_JSON, ONNX_FILE, read_export

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


def load_onnx(ref: ModelRef, threads: int | None):
    """The export's graph on the shared onnxruntime runner (export/onnx_runtime.py), called like the PyTorch models;
    idle threads sleep between its forwards (spinning off), so they take no core from the model timed next."""
    from ...export.onnx_export import require_onnx
    from ...export.onnx_runtime import INPUT_NAMES, OnnxRunner

    require_onnx()
    runner = OnnxRunner(ref.path, threads, spinning=False, label=f"--onnx {ref.requested}",
                        hint=f"expected {EXPORT_EXPECTED}",
                        run_hint="check that the export is of this workspace's model and --seq-len fits it")
    unknown = [n for n in runner.names if n not in INPUT_NAMES]
    if unknown or "input_ids" not in runner.names:
        raise KronError(f"--onnx {ref.requested}: the graph takes {', '.join(runner.names)}; kron eval speed feeds "
                        f"input_ids, attention_mask and token_type_ids (expected {EXPORT_EXPECTED})")
    return runner


def load_ref(ref: ModelRef):
    """The model in eval mode, fp32, without its tokenizer (so memory is the model's alone); for an ONNX
    export its runner, whose session uses torch's current thread count."""
    import torch

    from ...sources import _quiet_transformers, model_class
    from ...student import load_student

    if ref.kind == "onnx":
        return load_onnx(ref, torch.get_num_threads())
    _quiet_transformers()
    if ref.kind == "student":
        model = load_student(ref.path)
    elif ref.kind == "random":  # as sources.load_model builds it
        torch.manual_seed(0)
        from ...sources import model_class

        config = model_config(ref)
        model = model_class(config).from_config(config)  # a decoder with its LM head, for generate()
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
    from ...student import WEIGHTS

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
