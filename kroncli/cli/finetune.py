"""`kron finetune`: fine-tune the teacher on a GLUE task, or distil it into the student (stage 2)."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from ..data.glue import normalize_task
from ..stages.finetune import FinetuneOptions, default_weights, finetune_student, finetune_teacher
from ..train import TrainConfig
from ..workspace import Workspace
from . import options as o
from .common import JsonOpt, WorkspaceOpt, emit_json, err_console, handle_errors, show_progress
from .distill import _maybe_lock, main_process_log, parse_weights


@handle_errors
def finetune_cmd(
    workspace: WorkspaceOpt,
    task: Annotated[str, typer.Option(help="GLUE task: cola, sst2, mrpc, stsb, qqp, mnli, qnli, rte, wnli.")],
    teacher_only: Annotated[bool, typer.Option("--teacher-only", help="Fine-tune the dense teacher (run this "
                                                                      "first).")] = False,
    data_dir: Annotated[Optional[str], typer.Option(help="GLUE folder in the original layout (default "
                                                         "$KRON_GLUE_DIR or ../shared/glue; else the hub).")]
    = None,
    max_steps: o.MaxSteps = None,
    epochs: o.Epochs = None,
    batch_size: o.BatchSize = 32,
    lr: Annotated[Optional[float], typer.Option(help="Peak learning rate (default 2e-5 teacher, "
                                                     "1e-4 student).")] = None,
    max_seq_len: o.MaxSeqLen = 128,
    save_every: o.SaveEvery = 500,
    keep: o.Keep = 2,
    log_every: o.LogEvery = 10,
    eval_every: Annotated[Optional[int], typer.Option(help="Evaluate on dev every N steps (and at the "
                                                           "end).")] = None,
    resume: o.Resume = False,
    mixed_precision: o.MixedPrecision = "no",
    grad_accum: o.GradAccum = 1,
    seed: o.Seed = 0,
    weight: o.Weight = None,
    temperature: Annotated[float, typer.Option(help="Logit distillation temperature.")] = 1.0,
    layer_map: Annotated[Optional[str], typer.Option(help="Shallower student: 'uniform' or '1,3,5'.")] = None,
    limit: Annotated[Optional[int], typer.Option(help="Use only the first N training examples.")] = None,
    json_out: JsonOpt = False,
) -> None:
    """Stage 2: fine-tune the teacher on a task (--teacher-only), then distil it into the student.

    Example: kron finetune --workspace runs/m19 --task mrpc --teacher-only && kron finetune --workspace runs/m19 --task mrpc
    """
    spec = normalize_task(task)
    if max_steps is None and epochs is None:
        epochs = 3.0
    stage = f"{'teacher' if teacher_only else 'finetune'}-{spec.name.lower()}"
    cfg = TrainConfig(stage=stage, max_steps=max_steps, epochs=epochs, batch_size=batch_size,
                      lr=lr if lr is not None else (2e-5 if teacher_only else 1e-4), save_every=save_every,
                      keep=keep, log_every=log_every, eval_every=eval_every, mixed_precision=mixed_precision,
                      grad_accum=grad_accum, seed=seed, resume=resume)
    opts = FinetuneOptions(task=task, data_dir=data_dir, max_seq_len=max_seq_len, teacher_only=teacher_only,
                           weights=parse_weights(weight, default_weights(spec)) if weight else None,
                           temperature=temperature, layer_map=layer_map, limit=limit)
    ws = Workspace(workspace)
    run = finetune_teacher if teacher_only else finetune_student
    with _maybe_lock(ws):
        summary = run(ws, opts, cfg, show_progress(json_out), main_process_log)
    if not summary["is_main"]:
        return
    out = {k: v for k, v in summary.items() if k not in ("model", "is_main")}
    out.update(workspace=str(ws.root), task=spec.name, model="teacher" if teacher_only else "student")
    if json_out:
        emit_json(out)
    else:
        shown = ", ".join(f"{k} {v:.2f}" for k, v in summary["eval"].items() if k != "n" and isinstance(v, float))
        err_console.print(f"{out['model']} {spec.name}: {summary['steps']} steps; dev {shown}", highlight=False)
