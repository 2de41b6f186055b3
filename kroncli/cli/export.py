"""`kron export` (task model -> ONNX / int8 / transformers folder) and `kron predict` (run an export)."""

from __future__ import annotations

import json
import sys
from typing import Annotated, List, Optional

import typer

from .common import JsonOpt, WorkspaceOpt, emit_json, err_console, handle_errors


@handle_errors
def export_cmd(
    workspace: WorkspaceOpt,
    task: Annotated[str, typer.Option(help="Task whose fine-tuned student is exported: a GLUE task (mrpc, sst2, "
                                           "...) or an own-data task's name.")],
    out: Annotated[str, typer.Option("--out", "-o", help="Folder to write (must not exist, unless --force).")],
    format: Annotated[str, typer.Option("--format", help="onnx (onnxruntime) or hf (transformers folder).")]
    = "onnx",
    quantize: Annotated[Optional[str], typer.Option(help="int8: dynamic int8 quantisation of the ONNX graph, "
                                                         "with the dev-set accuracy change.")] = None,
    dense: Annotated[bool, typer.Option("--dense", help="Materialise A(x)B: an ordinary dense model (hf: a plain "
                                                        "checkpoint of the family's task class, e.g. "
                                                        "BertForSequenceClassification).")] = False,
    data_dir: Annotated[Optional[str], typer.Option(help="GLUE folder for the int8 accuracy check (default "
                                                         "$KRON_GLUE_DIR or ../shared/glue; none: skipped).")]
    = None,
    eval_limit: Annotated[Optional[int], typer.Option(help="int8 accuracy check on the first N dev examples "
                                                           "(0 skips it).")] = None,
    max_seq_len: Annotated[Optional[int], typer.Option(help="Tokens per input at prediction time (default: the "
                                                            "student's, else 128).")] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace an existing --out folder (never the workspace).")]
    = False,
    json_out: JsonOpt = False,
) -> None:
    """Export a fine-tuned task student: ONNX keeping the Kronecker factors, int8, or a transformers folder.

    Example: kron export -w runs/kb19 --task mrpc --format onnx --out deploy/kb19-mrpc
    """
    from ..data.tasks import resolve_task
    from ..export import ExportOptions, export
    from ..workspace import Workspace

    spec = resolve_task(task, Workspace(workspace)) if Workspace(workspace).is_workspace() else task
    log = (lambda m: None) if json_out else (lambda m: err_console.print(m, highlight=False))
    res = export(ExportOptions(workspace, spec, format, out, quantize, dense, force, data_dir, eval_limit,
                               max_seq_len), log=log)
    if json_out:
        emit_json(res)
        return
    kind = "dense" if not res["kronecker"] else "Kronecker"
    typer.echo(f"wrote {res['out']}: {res['task']} {kind} {res['format']}{' int8' if res['quantize'] else ''} "
           f"({', '.join(res['files'])}) in {res['seconds']:.1f}s")
    if "parity" in res:
        p = res["parity"]
        typer.echo(f"onnxruntime vs PyTorch: max |logit diff| {p['max_abs_diff']:.2e} (tolerance {p['tolerance']:.0e}, "
               f"{p['pairs']} sentence pairs)")
    if "dense_vs_kron_max_abs_diff" in res:
        typer.echo(f"dense vs Kronecker: max |logit diff| {res['dense_vs_kron_max_abs_diff']:.2e}")
    b = res.get("bytes") or {}
    if "int8_bytes" in b:
        typer.echo(f"size: fp32 {b['fp32_bytes']:,} bytes -> int8 {b['int8_bytes']:,} bytes ({b['size_ratio']:.2f}x)")
    acc = res.get("accuracy")
    if acc and "skipped" in acc:
        typer.echo(f"accuracy check skipped: {acc['skipped']}")
    elif acc:
        parts = ", ".join(f"{k} {acc['fp32'][k]:.2f} -> {acc['int8'][k]:.2f} ({acc['delta'][k]:+.2f})"
                          for k in acc["fp32"])
        typer.echo(f"{res['task']} {acc['split']} ({acc['n']} examples): {parts}")


@handle_errors
def predict_cmd(
    folder: Annotated[str, typer.Argument(help="A folder written by kron export.")],
    texts: Annotated[Optional[List[str]], typer.Argument(help="One input: a sentence, or two for a pair task. "
                                                              "None: one input per stdin line (pairs: "
                                                              "tab-separated).", show_default=False)] = None,
    batch_size: Annotated[int, typer.Option(help="Inputs per model call.")] = 32,
    threads: Annotated[Optional[int], typer.Option(help="CPU threads (default: the runtime's).")] = None,
) -> None:
    """Predict with an exported model: one JSON line {"label", "label_id", "score"} per input ({"score"}: regression).

    Example: kron predict deploy/kb19-mrpc "The cat sat." "A cat was sitting."
    """
    from ..errors import KronError
    from ..predict import args_input, lines_input, load, predict_rows, stdin_lines

    if batch_size < 1:
        raise KronError(f"--batch-size {batch_size}: choose a positive number")
    runner, meta = load(folder, threads=threads)
    inputs = args_input(texts, meta) if texts else lines_input(stdin_lines(), meta)
    for row in predict_rows(runner, meta, inputs, batch_size):
        sys.stdout.write(json.dumps(row) + "\n")
    sys.stdout.flush()
