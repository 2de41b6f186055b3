"""`kron eval speed`: parameters, size on disk, latency, throughput and peak memory, student beside teacher."""

from __future__ import annotations

from typing import Annotated, List, Optional

import typer
from rich import box
from rich.table import Column, Table
from rich.text import Text

from ..workspace import Workspace
from .common import JsonOpt, WorkspaceOpt, emit_json, err_console, handle_errors, human_console, \
    progress_factory, show_progress


@handle_errors
def speed_cmd(
    workspace: WorkspaceOpt,
    batch: Annotated[str, typer.Option(help="Comma-separated batch sizes.")] = "1,8,32",
    seq_len: Annotated[int, typer.Option(help="Tokens per sequence (at most max_position_embeddings).")] = 128,
    model: Annotated[str, typer.Option(help="'general' (student/ and the factorized teacher) or a task "
                                            "(tasks/<task>/student and tasks/<task>/teacher).")] = "general",
    repeats: Annotated[int, typer.Option(help="Timed forwards per model, batch and device (median "
                                              "reported).")] = 20,
    warmup: Annotated[int, typer.Option(help="Untimed forwards before timing.")] = 3,
    threads: Annotated[Optional[int], typer.Option(help="torch CPU threads (default: torch's "
                                                        "default).")] = None,
    device: Annotated[str, typer.Option(help="cpu, cuda, or auto (CPU, plus the GPU when there is "
                                             "one).")] = "auto",
    onnx: Annotated[Optional[List[str]], typer.Option(
        "--onnx", metavar="DIR", help="A folder written by kron export --format onnx (fp32, --quantize int8, "
                                      "--dense): timed in onnxruntime beside the PyTorch models, CPU rows. "
                                      "Repeatable.", show_default=False)] = None,
    new_tokens: Annotated[int, typer.Option(help="A decoder: tokens each timed greedy generate() adds with the KV "
                                                  "cache (generate rows beside the prefill rows; 0: prefill only).")]
    = 32,
    json_out: JsonOpt = False,
) -> None:
    """Size, latency, throughput and peak memory of the student and its teacher, measured side by side.

    Example: kron eval speed --workspace runs/m19 --batch 1,8,32 --seq-len 128

    With exports: kron eval speed -w runs/m19 --model mrpc --onnx deploy/m19 --onnx deploy/m19-int8

    Rows are appended to WORKSPACE/metrics/speed.csv.
    """
    from ..evaluation.speed import SpeedOptions, run_speed
    opts = SpeedOptions(batches=batch, seq_len=seq_len, model=model, repeats=repeats, warmup=warmup,
                        threads=threads, device=device, onnx=tuple(onnx or ()), new_tokens=new_tokens)
    console = human_console(json_out)

    def log(message: str) -> None:
        if show_progress(json_out):
            err_console.print(message, style="dim", highlight=False)

    result = run_speed(Workspace(workspace), opts, progress_factory(show_progress(json_out)), log)
    print_report(result, console)
    if json_out:
        emit_json(result)


def _num(x, fmt: str) -> str:
    return "n/a" if x is None or x != x else format(x, fmt)


def print_report(result: dict, console) -> None:
    models, comp = result["models"], result["compression"]
    sizes = Table("model", "params", "size MiB", "counted", title=f"kron eval speed: {result['workspace']}")
    for role in ("teacher", "student"):
        m = models[role]
        counted = "fp32 tensors (random init)" if m["size_counted"].startswith("fp32") else "weights on disk"
        sizes.add_row(m["label"], f"{m['params']:,}", f"{m['size_mib']:.1f}", counted)
    for e in result.get("exports", []):
        sizes.add_row(e["label"], f"{e['params']:,}", f"{e['size_mib']:.1f}", f".onnx file ({e['folder']})")
    console.print(sizes)
    console.print(f"compression: [bold]{comp['params']:.2f}x[/] fewer parameters, [bold]{comp['disk']:.2f}x[/] "
                  "smaller on disk", highlight=False, markup=True)
    gpu = f", GPU {result['gpu']}" if result.get("gpu") else ""
    threshold = result["other_load_threshold"]
    busy = any(r["other_load"] > threshold for r in result["results"])
    num = dict(justify="right", no_wrap=True)
    table = Table(Column("device", no_wrap=True), Column("batch", **num), Column("model", no_wrap=True),
                  Column("latency ms", **num), Column("seq/s", **num), Column("tokens/s", **num),
                  Column("speed-up", **num), Column("peak MiB", **num),
                  box=box.SIMPLE_HEAD, pad_edge=False, padding=(0, 0), show_edge=False,  # 80 columns
                  title=f"seq_len {result['seq_len']}, {result['threads']} CPU threads{gpu}, median of "
                        f"{result['repeats']} after {result['warmup']} warm-up",
                  caption=f"* timed while other processes used more than {100 * threshold:.0f}% of the CPUs: not a "
                          "result" if busy else None, caption_style="yellow", caption_justify="left")
    last = None
    for r in result["results"]:
        key = (r["device"], r["batch"])
        if last is not None and key != last:
            table.add_section()
        last = key
        teacher = r["role"] == "teacher"
        speedup = f"{r['speedup']:.2f}x" if teacher else f"[bold]{r['speedup']:.2f}x[/]"
        if r["other_load"] > threshold:
            speedup = f"[yellow]{speedup}*[/]"
        speedup = Text.from_markup(speedup)  # the consoles print plain text unless asked (cli/common.py)
        label = r["model"] + (f" gen {r['new_tokens']}" if r.get("phase") == "generate" else "")
        table.add_row(r["device"], str(r["batch"]), label, f"{r['latency_ms']:.2f}",
                      f"{r['throughput_seq_s']:,.1f}", f"{r['tokens_s']:,.0f}", speedup,
                      _num(r["peak_mem_mib"], ",.1f"))
    console.print(table)
    console.print(f"other processes used up to {100 * result['other_load']:.0f}% of the CPUs while this timed",
                  style="dim", highlight=False)
    method = result["method"]
    console.print(f"latency: {method['latency']}", style="dim", highlight=False)
    if method.get("onnx"):
        console.print(f"onnx: {method['onnx']}", style="dim", highlight=False)
    if method.get("generate"):
        console.print(f"generate: {method['generate']}", style="dim", highlight=False)
    for dev, text in method["memory"].items():
        console.print(f"peak memory ({dev}): {text}", style="dim", highlight=False)
    for w in result["warnings"]:
        console.print(f"warning: {w}", style="yellow", highlight=False)
    console.print(f"rows appended to {result['csv']}", style="dim", highlight=False)
