"""`kron factorize`: the student from the teacher, by shape search + nearest Kronecker product."""

from __future__ import annotations

import sys
from typing import Annotated, Optional

import typer
from rich.table import Table
from rich.text import Text

from ..kron.presets import PRESETS
from ..sources import DEFAULT_MODEL, RANDOM_CONFIGS
from ..workspace import Workspace
from .common import ForceOpt, JsonOpt, emit_json, handle_errors, human_console, not_a_file, progress_factory, \
    show_progress


@handle_errors
def factorize_cmd(
    model: Annotated[Optional[str], typer.Argument(
        help=f"Teacher: hub name, local folder, or the offline default {DEFAULT_MODEL}.")] = None,
    workspace: Annotated[Optional[str], typer.Option("--workspace", "-w", callback=not_a_file,
                                                     help="Experiment folder to create.")] = None,
    ratio: Annotated[Optional[float], typer.Option(help="Teacher params / student params "
                                                        "(default 19).")] = None,
    max_params: Annotated[Optional[int], typer.Option(help="Student parameter budget instead of "
                                                           "--ratio.")] = None,
    preset: Annotated[Optional[str], typer.Option(help=f"Paper shapes: {', '.join(PRESETS)}.")] = None,
    objective: Annotated[str, typer.Option(help="error: smallest reconstruction error; speed: also "
                                                "fewer multiply-adds.")] = "error",
    max_rank: Annotated[int, typer.Option(help="Largest number of Kronecker terms per matrix.")] = 1,
    targets: Annotated[Optional[str], typer.Option(help="Regex (fullmatch) of module names to factor; "
                                                        "default: the model family's embeddings, Q/K/V/O, FFN.")]
    = None,
    exclude: Annotated[Optional[str], typer.Option(help="Regex of module names to keep dense.")] = None,
    random_init: Annotated[Optional[str], typer.Option(
        help=f"Random-weight teacher for speed work: {', '.join(RANDOM_CONFIGS)}.")] = None,
    max_layer_ratio: Annotated[Optional[float], typer.Option(
        help="Skip candidate shapes compressing one matrix more than this (above 1). Default max(64, 4*ratio), "
             "lifted when the ratio needs more; a cap given here is kept, and a ratio it cannot reach refused.")]
    = None,
    min_side: Annotated[int, typer.Option(
        help="Shortest side a Linear factor may have; 2+ rules out one-column/one-row factors, which win on "
             "reconstruction error but distil worse.")] = 1,
    min_embedding_dim: Annotated[int, typer.Option(
        help="Narrowest per-token factor of an embedding (d/f): all token vectors share a subspace of this "
             "dimension.")] = 1,
    embedding_rank: Annotated[int, typer.Option(
        help="Factor embeddings as K terms of (V x 1) (x) (1 x d): a V x K table times a learned K x d matrix, "
             "SVD-initialised, instead of the paper's a_i (x) b (0: the paper's form).")] = 0,
    layers: Annotated[Optional[str], typer.Option(
        help="Keep only these teacher layers (0-based, comma list), e.g. 1,3,5: a shallower, faster student; "
             "the ratio stays relative to the whole teacher, and later stages map each kept layer to its "
             "teacher layer.")] = None,
    method: Annotated[str, typer.Option(
        help="kronecker: sums of Kronecker products (the paper); lowrank: each matrix as U V from a truncated SVD, "
             "ranks found by the same budget search; narrow: a dense student with a narrower hidden size and FFN "
             "(TinyBERT-style), cut from the teacher.")] = "kronecker",
    width: Annotated[Optional[int], typer.Option(
        help="--method narrow: the student's hidden size, a multiple of the teacher's head count (default: the "
             "widest within the budget; with --width and no --ratio/--max-params, no budget applies).")] = None,
    plan: Annotated[bool, typer.Option("--plan", help="Dry run: print the chosen shapes, write "
                                                      "nothing.")] = False,
    seed: Annotated[int, typer.Option(help="Seed for --random-init.")] = 0,
    force: ForceOpt = False,
    json_out: JsonOpt = False,
) -> None:
    """Factor a teacher's embeddings, attention and FFN matrices into Kronecker products (or, with --method, into
    low-rank products, or cut a narrow dense student) within one parameter budget.

    Example: kron factorize all-MiniLM-L6-v2 --ratio 19 --workspace runs/m19
    """
    from ..factorize import FactorizeOptions, factorize, write_workspace
    if not plan and not workspace:
        raise typer.BadParameter("--workspace is required (or pass --plan for a dry run)",
                                 param_hint="--workspace")
    ws = Workspace(workspace) if workspace else None
    if ws and not plan:
        ws.prepare_new(force)  # fail before the slow part
    opts = FactorizeOptions(model=model, random_init=random_init, ratio=ratio, max_params=max_params,
                            preset=preset, objective=objective, max_rank=max_rank, targets=targets,
                            exclude=exclude, max_layer_ratio=max_layer_ratio, min_side=min_side,
                            min_embedding_dim=min_embedding_dim, embedding_rank=embedding_rank,
                            layers=_parse_layers(layers), seed=seed, method=method, width=width)
    progress = progress_factory(show_progress(json_out))
    if plan:
        result, _, _ = factorize(opts, plan_only=True, progress_factory=progress)
    else:
        with ws.lock(force=force):  # --force: also a lock recorded on another machine
            result, student, tokenizer = factorize(opts, progress_factory=progress)
            args = {k: v for k, v in vars(opts).items()}
            write_workspace(ws, result, student, tokenizer, args, ["kron", *sys.argv[1:]], force)
    summary = result.summary(str(ws.root) if ws and not plan else None)
    summary["plan"] = plan
    _print_table(result, summary, json_out)
    if json_out:
        emit_json(summary)


def _parse_layers(text: str | None) -> list[int] | None:
    if text is None:
        return None
    try:
        return [int(x) for x in text.split(",")]
    except ValueError:
        raise typer.BadParameter(f"{text!r} is not a comma list of layer indices, e.g. 1,3,5",
                                 param_hint="--layers") from None


def _print_table(result, summary: dict, json_out: bool) -> None:
    console = human_console(json_out)
    table = Table("layer", "n", "A (x) B (most common)", "params", "ratio", "error",
                  title=("plan" if summary["plan"] else "factorized") + f": {summary['teacher']}")
    for row in summary["by_type"]:
        shapes = row["shapes"][0] + (f" +{len(row['shapes']) - 1}" if len(row["shapes"]) > 1 else "")
        table.add_row(row["layer_type"], str(row["count"]), shapes, f"{row['params']:,}",
                      f"{row['dense_params'] / row['params']:.1f}x",
                      "n/a" if row["rel_error_mean"] != row["rel_error_mean"] else f"{row['rel_error_mean']:.3f}")
    console.print(table)
    where = f" -> {summary['workspace']}" if summary["workspace"] else " (plan only, nothing written)"
    console.print(Text.assemble(f"teacher {summary['teacher_params']:,} params -> student "
                                f"{summary['student_params']:,} params: ", (f"{summary['compression']:.2f}x", "bold"),
                                f" smaller{where}"), highlight=False)
