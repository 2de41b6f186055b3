"""`kron eval ppl`: a decoder's perplexity on held-out text (teacher and student), a thin wrapper."""

from __future__ import annotations

from typing import Annotated, Optional

import typer
from rich.table import Table

from ..workspace import Workspace
from .common import JsonOpt, WorkspaceOpt, emit_json, err_console, handle_errors, human_console


@handle_errors
def ppl_cmd(
    workspace: WorkspaceOpt,
    data: Annotated[list[str], typer.Option(help="Held-out text file(s) or folder(s), one line per sentence or "
                                                 "document (repeatable).")],
    model: Annotated[Optional[str], typer.Option(help="student or teacher (default: both).")] = None,
    max_length: Annotated[Optional[int], typer.Option(help="Window in tokens (default: the model's "
                                                           "positions).")] = None,
    stride: Annotated[Optional[int], typer.Option(help="Tokens between window starts, at most the window "
                                                       "(default: half the window, at most 512).")] = None,
    prompt: Annotated[Optional[list[str]], typer.Option(help="Prompt to continue greedily (repeatable; default: "
                                                             "the starts of the data's first 3 lines).")] = None,
    max_new_tokens: Annotated[int, typer.Option(help="Tokens each greedy generation adds (0: none).")] = 20,
    json_out: JsonOpt = False,
) -> None:
    """Perplexity of a decoder's teacher and student on held-out text (sliding window), plus greedy samples.

    Rows go to WS/metrics/eval.csv (task ppl); kron report shows them.

    Example: kron eval ppl --workspace runs/g8 --data corpus/heldout.txt
    """
    from ..evaluation.perplexity import PplOptions, evaluate_ppl

    ws = Workspace(workspace)
    opts = PplOptions(data=data, model=model, max_length=max_length, stride=stride, prompts=prompt or [],
                      max_new_tokens=max_new_tokens)
    log = (lambda msg: None) if json_out else (lambda msg: err_console.print(msg, highlight=False))
    out = evaluate_ppl(ws, opts, log)
    console = human_console(json_out)
    table = Table("model", "perplexity", "tokens", "seconds", title=f"perplexity: {ws.root}")
    for r in out["results"]:
        table.add_row(r["model"], f"{r['perplexity']:.2f}", f"{r['tokens']:,}", f"{r['seconds']:.1f}")
    console.print(table)
    for r in out["results"]:
        for g in r["generations"]:
            console.print(f"{r['model']}: {g['prompt']!r} -> {g['completion']!r}", highlight=False)
    if json_out:
        emit_json(out)
