"""`kron export`: the fine-tuned task student leaves the toolkit as ONNX (optionally int8) or a transformers folder.

    kron export -w WS --task mrpc --format onnx --out deploy/m            # model.onnx + tokenizer
    kron export -w WS --task mrpc --format onnx --quantize int8 --out d   # dynamic int8 on the factors
    kron export -w WS --task mrpc --format hf --out deploy/m-hf           # remote-code Kronecker model
    kron export -w WS --task mrpc --format hf --dense --out deploy/m-hf   # plain dense checkpoint

Every folder carries kron_export.json (kroncli.predict.EXPORT_JSON), which `kron predict` reads. The folder is
written atomically (a failed export leaves nothing, or the previous folder with --force).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from ..errors import KronError

FORMATS = ("onnx", "hf")
QUANTIZE = ("int8",)


@dataclass
class ExportOptions:
    workspace: str
    task: object  # a Task (data.tasks.resolve_task at the CLI edge); a name is resolved against the workspace
    format: str = "onnx"
    out: str | None = None
    quantize: str | None = None
    dense: bool = False
    force: bool = False
    data_dir: str | None = None
    eval_limit: int | None = None
    max_seq_len: int | None = None


def check_options(opts: ExportOptions) -> None:
    if opts.format not in FORMATS:
        raise KronError(f"unknown --format {opts.format!r}; choose onnx or hf")
    if opts.quantize is not None and opts.quantize not in QUANTIZE:
        raise KronError(f"unknown --quantize {opts.quantize!r}; choose int8")
    if opts.quantize and opts.format != "onnx":
        raise KronError("--quantize int8 quantises the ONNX graph; add --format onnx")
    if opts.eval_limit is not None and opts.eval_limit < 0:
        raise KronError(f"--eval-limit {opts.eval_limit}: choose 0 (skip the accuracy check) or more")
    if not opts.out:
        raise KronError("--out FOLDER is required (where the export is written)")
    out = Path(opts.out)
    ws, target = Path(opts.workspace).resolve(), out.resolve()
    if target == ws or ws in target.parents or target in ws.parents:  # --force would replace what is exported
        raise KronError(f"--out {out} is the workspace {opts.workspace}, inside it or above it; write the export to a "
                        "folder of its own, e.g. --out deploy/NAME")
    if out.exists() and not opts.force:
        raise KronError(f"--out {out} exists; pass --force to overwrite it or choose another folder")


def _tokenizer(path: Path):
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(path)
    except (OSError, ValueError):
        raise KronError(f"no tokenizer in {path}; re-run kron finetune with a workspace that has one") from None


def _max_abs_diff(a, b, tokenizer, task, max_seq_len: int) -> float:
    import torch

    from .onnx_export import PARITY_PAIRS, encode_pairs, input_names

    feed = encode_pairs(tokenizer, PARITY_PAIRS, task.is_pair, max_seq_len, input_names(tokenizer))
    feed = {k: torch.from_numpy(v) for k, v in feed.items()}
    with torch.no_grad():
        return float((a(**feed).logits - b(**feed).logits).abs().max())


def export(opts: ExportOptions, log=lambda msg: None) -> dict:
    """Write the export folder; returns the JSON summary."""
    from ..data.glue import default_data_dir
    from ..data.tasks import resolve_task
    from ..evaluation.glue_eval import (check_labels, finetune_hint, has_model, model_dir, model_task,
                                        require_workspace)
    from ..predict import EXPORT_FORMAT_VERSION, EXPORT_JSON, ONNX_FILE, label_names
    from ..workspace import Workspace, atomic_dir, atomic_write_json, versions

    check_options(opts)
    ws = Workspace(opts.workspace)
    require_workspace(ws)
    task = resolve_task(opts.task, ws) if isinstance(opts.task, str) else opts.task
    if not has_model(ws, task, "student"):
        raise KronError(f"no fine-tuned {model_task(task).name} student in {ws.root} ({model_dir(ws, task, 'student')} "
                        f"missing); run {finetune_hint(ws, task, 'student')}")
    check_labels(ws, task, "student")  # label count, and the task it was fine-tuned on
    if opts.format == "onnx":
        from .onnx_export import require_onnx

        require_onnx()
    t0 = time.perf_counter()
    from ..student import load_student, task_seq_len

    path = model_dir(ws, task, "student")
    model = load_student(path).float()
    tokenizer = _tokenizer(path)
    mtask = model_task(task)
    seq_len = task_seq_len(path, model.config, opts.max_seq_len)
    out = Path(opts.out)
    meta = {"export_format_version": EXPORT_FORMAT_VERSION, "format": opts.format, "task": mtask.name,
            "label_names": label_names(model.config) or list(mtask.names), "is_pair": mtask.is_pair,
            "is_regression": mtask.is_regression, "is_multilabel": mtask.is_multilabel,
            # the input field names a JSON line to kron predict holds: as the task's training files name them
            "text_columns": list(getattr(mtask, "text", ()) or mtask.hub_text),
            "max_seq_len": seq_len, "kronecker": not opts.dense, "quantize": opts.quantize,
            "pad_id": tokenizer.pad_token_id, "pad_token": tokenizer.pad_token, "source": str(path),
            "kroncli_version": versions().get("kroncli", "unknown")}
    result = {"out": str(out), "format": opts.format, "task": mtask.name, "kronecker": not opts.dense,
              "quantize": opts.quantize, "max_seq_len": seq_len}
    with atomic_dir(out) as tmp:
        if opts.format == "hf":
            from .hf_export import write_dense, write_hf

            if opts.dense:
                from .hf_export import densify

                result.update(write_dense(model, tokenizer, tmp))
                result["dense_vs_kron_max_abs_diff"] = _max_abs_diff(densify(model), model, tokenizer, mtask,
                                                                     seq_len)
            else:
                result.update(write_hf(model, tokenizer, tmp))
        else:
            from .onnx_export import PARITY_TOL, export_onnx, parity

            if opts.dense:
                from .hf_export import densify

                model = densify(model)
            tokenizer.save_pretrained(tmp)
            fp32 = tmp / ("model.fp32.onnx" if opts.quantize else ONNX_FILE)
            log(f"exporting {mtask.name} student to ONNX")
            meta["input_names"] = export_onnx(model, tokenizer, fp32, mtask.is_pair, seq_len)
            meta["model_file"] = ONNX_FILE
            check = parity(fp32, model, tokenizer, mtask.is_pair, seq_len)
            result["parity"] = check
            if check["max_abs_diff"] > PARITY_TOL:
                raise KronError(f"onnxruntime's logits differ from PyTorch's by {check['max_abs_diff']:.3g} "
                                f"(> {PARITY_TOL}); the export was not written")
            if opts.quantize:
                from .quantize import dev_accuracy, quantize_int8

                log("quantising to int8")
                result["bytes"] = quantize_int8(fp32, tmp / ONNX_FILE)
                data_dir = opts.data_dir or default_data_dir()
                result["accuracy"] = dev_accuracy(tmp, meta, fp32, tmp / ONNX_FILE, mtask, data_dir,
                                                  opts.eval_limit, explicit_dir=opts.data_dir is not None)
                fp32.unlink()
            else:
                result["bytes"] = {"fp32_bytes": fp32.stat().st_size}
        atomic_write_json(tmp / EXPORT_JSON, meta)
        files = sorted(p.name for p in tmp.iterdir())
    result["files"] = files
    result["seconds"] = round(time.perf_counter() - t0, 3)
    return result
