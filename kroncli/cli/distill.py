"""`kron distill`: stage 1, general distillation on unlabeled text."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from ..errors import KronError
from ..workspace import Workspace
from . import options as o
from .common import JsonOpt, WorkspaceOpt, emit_json, err_console, handle_errors, show_progress


def parse_weights(items: list[str] | None, defaults: dict[str, float]) -> dict[str, float]:
    weights = dict(defaults)
    for item in items or []:
        name, sep, value = item.partition("=")
        try:
            weights[name.strip()] = float(value)
        except ValueError:
            raise KronError(f"--weight {item!r} is not NAME=NUMBER, e.g. --weight hidden_mse=1.0") from None
        if not sep:
            raise KronError(f"--weight {item!r} is not NAME=NUMBER, e.g. --weight hidden_mse=1.0")
    return weights


@handle_errors
@o.train_options(skip=("eval_every",), lr=1e-4)
def distill_cmd(
    workspace: WorkspaceOpt,
    corpus: Annotated[list[str], typer.Option(help="Text file(s) or folder(s) (.gz/.xz/.bz2 too), one "
                                                   "sentence/document per line, or a datasets name (online). "
                                                   "Repeatable.")],
    max_seq_len: o.MaxSeqLen = 128,
    weight: o.Weight = None,
    attention: Annotated[str, typer.Option(help="Attention target: scores (pre-softmax, the paper) or "
                                                "probs.")] = "scores",
    teacher: Annotated[Optional[str], typer.Option(help="Teacher instead of the one factorized.")] = None,
    layer_map: Annotated[Optional[str], typer.Option(help="Shallower student: 'uniform' or teacher layer "
                                                          "indices '1,3,5'.")] = None,
    pairs: Annotated[bool, typer.Option("--pairs/--no-pairs", help="Pack text as [CLS] A [SEP] B [SEP] "
                                        "(BERT's pre-training and GLUE's pair layout) or as one segment.")]
    = True,
    temperature: Annotated[float, typer.Option(help="Temperature of logit_kd, a decoder's next-token distillation "
                                                    "(every position).")] = 1.0,
    json_out: JsonOpt = False,
    **train,
) -> None:
    """Stage 1: distil the pre-trained teacher into the factorized student on unlabeled text.

    Example: kron distill --workspace runs/m19 --corpus wiki.txt --max-steps 2000

    A decoder (GPT-2, Llama, Qwen) distils on contiguous causal blocks, logit KD added to the default losses.

    On a GPU lease of fixed length: kron distill -w runs/m19 --corpus text/ --max-minutes 7 --mixed-precision bf16
    """
    from ..distill.losses import check_temperature
    from ..stages.distill import DEFAULT_WEIGHTS, DistillOptions, run_distill
    from ..train_config import TrainConfig, check_training_values
    if attention not in ("scores", "probs"):
        raise KronError(f"--attention {attention!r}: choose scores or probs")
    try:
        check_temperature(temperature)
    except ValueError as e:
        raise KronError(f"{e} (--temperature), e.g. 1") from None
    if train["max_steps"] is None and train["epochs"] is None and train["max_minutes"] is None:
        train["epochs"] = 1.0
    ws = Workspace(workspace)
    cfg = TrainConfig(stage="distill", **train)
    opts = DistillOptions(corpus=corpus, max_seq_len=max_seq_len, weights=parse_weights(weight, DEFAULT_WEIGHTS),
                          attention=attention, teacher=teacher, layer_map=layer_map, pairs=pairs,
                          temperature=temperature)
    check_training_values({**vars(cfg), **vars(opts)})
    log = main_process_log
    with _maybe_lock(ws):
        summary = run_distill(ws, opts, cfg, show_progress(json_out), log)
    if summary["is_main"]:
        out = {k: v for k, v in summary.items() if k not in ("model", "is_main")}
        out["workspace"] = str(ws.root)
        if json_out:
            emit_json(out)
        else:
            loss = summary["final_loss"]
            err_console.print(f"distilled {summary['steps']} steps, final loss "
                              f"{'n/a' if loss is None else f'{loss:.4f}'} -> {ws.student_dir}", highlight=False)


def main_process_log(msg: str) -> None:
    """Print on rank 0 only (torchrun / accelerate launch set RANK)."""
    import os

    if int(os.environ.get("RANK", "0")) == 0:
        err_console.print(msg, highlight=False)


def _maybe_lock(ws: Workspace):
    """Only the main process of a distributed run takes the workspace lock."""
    import contextlib
    import os

    if int(os.environ.get("RANK", "0")) != 0 or not ws.root.exists():
        return contextlib.nullcontext()
    return ws.lock()
