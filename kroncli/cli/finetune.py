"""`kron finetune`: fine-tune the teacher on a GLUE, SQuAD or own-data task, or distil it into the student (stage 2)."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from ..data.task_files import TaskFiles
from ..errors import KronError
from ..workspace import Workspace
from . import options as o
from .common import JsonOpt, WorkspaceOpt, emit_json, err_console, handle_errors, show_progress
from .distill import _maybe_lock, main_process_log, parse_weights


@handle_errors
@o.train_options()
@o.group_options(TaskFiles, "files")
def finetune_cmd(
    workspace: WorkspaceOpt,
    task: Annotated[str, typer.Option(help="GLUE task: cola, sst2, mrpc, stsb, qqp, mnli, qnli, rte, wnli; "
                                           "squad (v1.1) / squad_v2; or a name for your own data (with "
                                           "--train FILE).")],
    teacher_only: Annotated[bool, typer.Option("--teacher-only", help="Fine-tune the dense teacher (run this "
                                                                      "first).")] = False,
    data_dir: Annotated[Optional[str], typer.Option(help="GLUE folder in the original layout (default "
                                                         "$KRON_GLUE_DIR or ../shared/glue; else the hub); SQuAD: "
                                                         "folder with the official train/dev JSON files.")]
    = None,
    lr: Annotated[Optional[float], typer.Option(help="Peak learning rate (default 2e-5 teacher, "
                                                     "3e-5 SQuAD teacher, 1e-4 student).")] = None,
    max_seq_len: Annotated[Optional[int], typer.Option(help="Tokens per sequence (default 128; 384 for "
                                                            "SQuAD).")] = None,
    doc_stride: Annotated[int, typer.Option(help="SQuAD: tokens shared by consecutive windows of a long "
                                                 "context.")] = 128,
    train_file: Annotated[Optional[str], typer.Option(help="SQuAD: training file in the official JSON "
                                                           "format (instead of --data-dir).")] = None,
    dev_file: Annotated[Optional[str], typer.Option(help="SQuAD: dev file in the official JSON "
                                                         "format.")] = None,
    weight: o.Weight = None,
    temperature: Annotated[float, typer.Option(help="Logit distillation temperature.")] = 1.0,
    layer_map: Annotated[Optional[str], typer.Option(help="Shallower student: 'uniform' or '1,3,5'.")] = None,
    limit: Annotated[Optional[int], typer.Option(help="Use only the first N training examples.")] = None,
    teacher: Annotated[Optional[str], typer.Option(help="Teacher: start the teacher stage from this model instead "
                                                        "of the one factorized.")] = None,
    eval_batch_size: Annotated[int, typer.Option(help="Examples per batch when scoring on dev.")] = 64,
    augment: Annotated[int, typer.Option(help="Student: unlabelled copies of each training example with words "
                                              "swapped for the teacher's embedding neighbours (TinyBERT-style "
                                              "augmentation; the teacher labels them).")] = 0,
    augment_p: Annotated[float, typer.Option(help="Probability of swapping each eligible word.")] = 0.4,
    augment_k: Annotated[int, typer.Option(help="Nearest neighbours a swap is drawn from.")] = 15,
    augment_mask: Annotated[float, typer.Option(help="Probability of masking each word of a copy (Tang et al. "
                                                     "2019 use 0.1).")] = 0.0,
    augment_ngram: Annotated[float, typer.Option(help="Probability of cutting a copy to one random n-gram of "
                                                      "1-5 words (Tang et al. use 0.25).")] = 0.0,
    rehearse: Annotated[int, typer.Option(help="Student: blocks of general (stage-1) text per task example, on "
                                               "which the intermediate losses keep the student's general "
                                               "features (0: off).")] = 0,
    rehearse_corpus: Annotated[Optional[list[str]], typer.Option(help="Text for --rehearse (default: the "
                                                                      "stage-1 corpus in the manifest).")] = None,
    rehearse_weight: Annotated[float, typer.Option(help="Scales the rehearsal's intermediate losses.")] = 1.0,
    init_from: Annotated[Optional[str], typer.Option(help="Student: start from this workspace's distilled student "
                                                          "of another task (e.g. mrpc from stsb, rte from mnli) "
                                                          "instead of the general one.")] = None,
    unlabelled_from: Annotated[Optional[list[str]], typer.Option(help="Student: add this GLUE task's training "
                                                                      "inputs without their labels, for the teacher "
                                                                      "to label (e.g. mrpc with stsb); inputs in the "
                                                                      "task's own splits are dropped. "
                                                                      "Repeatable.")] = None,
    json_out: JsonOpt = False,
    files: TaskFiles = TaskFiles(),
    **train,
) -> None:
    """Stage 2: fine-tune the teacher on a task (--teacher-only), then distil it into the student.

    Example: kron finetune --workspace runs/m19 --task mrpc --teacher-only && kron finetune --workspace runs/m19 --task mrpc

    Intermediate-task transfer: kron finetune --workspace runs/m19 --task mrpc --init-from stsb (after STS-B's student)

    SQuAD: --task squad (v1.1) or squad_v2, windows of --max-seq-len 384 tokens overlapping by --doc-stride 128,
    data from --data-dir (official train/dev JSON files), --train-file/--dev-file, or the hub; 2 epochs by default.

    Your own data: kron finetune --workspace runs/t19 --task tickets --train train.csv --dev dev.csv
    --text-columns subject,body --label-column queue (.csv/.tsv/.jsonl/.json/.parquet or a save_to_disk folder;
    classification, regression or multi-label; later commands know the task by its name). A teacher factorized
    from a fine-tuned classifier with these labels is the task teacher as it is: run the student stage directly.
    """
    from ..data.squad import SquadTask
    from ..data.tasks import resolve_task
    from ..stages.finetune import FinetuneOptions, classifier_labels, default_weights, finetune_student, \
        finetune_teacher
    from ..train_config import TrainConfig, check_training_values
    if teacher_only and weight:
        raise KronError(f"--weight {weight[0]} weighs a loss of the student's distillation; the teacher trains on the "
                        "labels alone: drop --weight with --teacher-only")
    ws = Workspace(workspace)
    order = classifier_labels(ws) if files.given and ws.is_workspace() else None
    spec = resolve_task(task, ws, files, label_order=order)
    if isinstance(spec, SquadTask):
        return _squad(version=spec.version, **locals())
    if train_file or dev_file:
        raise KronError("--train-file/--dev-file are for SQuAD; GLUE data comes from --data-dir, your own data from "
                        "--train/--dev")
    max_seq_len = max_seq_len or 128
    if train["max_steps"] is None and train["epochs"] is None and train["max_minutes"] is None:
        train["epochs"] = 3.0
    stage = f"{'teacher' if teacher_only else 'finetune'}-{spec.name.lower()}"
    cfg = TrainConfig(stage=stage, lr=lr if lr is not None else (2e-5 if teacher_only else 1e-4), **train)
    opts = FinetuneOptions(task=spec, data_dir=data_dir, max_seq_len=max_seq_len, teacher_only=teacher_only,
                           weights=parse_weights(weight, default_weights(spec)) if weight else None,
                           temperature=temperature, teacher=teacher, layer_map=layer_map, limit=limit,
                           eval_batch_size=eval_batch_size, augment=augment,
                           augment_p=augment_p, augment_k=augment_k, augment_mask=augment_mask,
                           augment_ngram=augment_ngram, rehearse=rehearse,
                           rehearse_corpus=rehearse_corpus, rehearse_weight=rehearse_weight,
                           init_from=resolve_task(init_from, ws) if init_from else None,
                           unlabelled_from=[resolve_task(n, ws) for n in unlabelled_from or []] or None)
    check_training_values({**vars(cfg), **vars(opts)})
    if teacher_only and (augment or rehearse or init_from or unlabelled_from):
        raise KronError("--augment, --rehearse, --init-from and --unlabelled-from are for the student (the teacher "
                        "labels the copies, the general text and the other task's inputs, and starts from the "
                        "pre-trained model); drop them with --teacher-only")
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
        if "eval_unseen" in summary:
            err_console.print(_unseen_line(summary["eval_unseen"]), highlight=False)


def _unseen_line(record: dict) -> str:
    """The student and teacher on the eval examples that the --init-from task's training set did not hold."""
    lost = ", ".join(f"{n} {split}" for split, n in record["excluded"].items())

    def shown(scores):
        return ", ".join(f"{k} {v:.2f}" for k, v in scores.items() if isinstance(v, float)) or "nothing left"

    return (f"without the {lost} examples in {record['seen_in']}'s training set: student {shown(record['student'])}; "
            f"teacher {shown(record['teacher'])}")


def _squad(version: int, spec, **a) -> None:
    """`kron finetune --task squad|squad_v2`: the same loop and outputs, on the SQuAD stage functions."""
    from ..data.squad import task_name
    from ..distill.losses import check_temperature
    from ..train_config import TrainConfig, check_training_values
    from ..stages.squad import SquadOptions, default_weights, finetune_squad_student, finetune_squad_teacher
    if a["augment"]:
        raise KronError("--augment is for GLUE tasks; SQuAD spans do not survive word swaps, drop --augment")
    if a["rehearse"]:
        raise KronError("--rehearse is for GLUE tasks so far; drop it for SQuAD")
    if a["init_from"]:
        raise KronError("--init-from is for GLUE tasks so far; drop it for SQuAD")
    if a["unlabelled_from"]:
        raise KronError("--unlabelled-from is for GLUE tasks; drop it for SQuAD")
    if not a["teacher_only"]:
        try:
            check_temperature(a["temperature"])
        except ValueError as e:
            raise KronError(f"{e} (--temperature), e.g. 1") from None

    name = task_name(version)
    teacher_only = a["teacher_only"]
    train = dict(a["train"])
    if train["max_steps"] is None and train["epochs"] is None and train["max_minutes"] is None:
        train["epochs"] = 2.0
    cfg = TrainConfig(stage=f"{'teacher' if teacher_only else 'finetune'}-{name}",
                      lr=a["lr"] if a["lr"] is not None else (3e-5 if teacher_only else 1e-4), **train)
    opts = SquadOptions(task=spec, data_dir=a["data_dir"], train_file=a["train_file"],
                        dev_file=a["dev_file"], max_seq_len=a["max_seq_len"] or 384, doc_stride=a["doc_stride"],
                        teacher_only=teacher_only, temperature=a["temperature"], layer_map=a["layer_map"],
                        teacher=a["teacher"], eval_batch_size=a["eval_batch_size"],
                        limit=a["limit"],
                        weights=parse_weights(a["weight"], default_weights()) if a["weight"] else None)
    check_training_values({**vars(cfg), **vars(opts)})
    ws = Workspace(a["workspace"])
    run = finetune_squad_teacher if teacher_only else finetune_squad_student
    with _maybe_lock(ws):
        summary = run(ws, opts, cfg, show_progress(a["json_out"]), main_process_log)
    if not summary["is_main"]:
        return
    out = {k: v for k, v in summary.items() if k not in ("model", "is_main")}
    out.update(workspace=str(ws.root), task=name, model="teacher" if teacher_only else "student",
               max_seq_len=opts.max_seq_len, doc_stride=opts.doc_stride)
    if a["json_out"]:
        emit_json(out)
    else:
        shown = ", ".join(f"{k} {v:.2f}" for k, v in summary["eval"].items() if k != "n" and isinstance(v, float))
        err_console.print(f"{out['model']} {name}: {summary['steps']} steps; dev {shown}", highlight=False)
