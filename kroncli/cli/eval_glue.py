"""`kron eval glue` and `kron eval ood`: thin wrappers over kroncli.evaluation."""

from __future__ import annotations

from typing import Annotated, Optional

import typer
from rich.table import Table
from rich.text import Text

from ..workspace import Workspace
from .common import JsonOpt, WorkspaceOpt, emit_json, handle_errors, human_console, progress_factory, show_progress

ModelOpt = Annotated[Optional[str], typer.Option("--model", help="student or teacher (default: both, where "
                                                                 "present; with --predict: the student).")]
OodModelOpt = Annotated[Optional[str], typer.Option("--model", help="student or teacher (default: both, where "
                                                                    "present).")]
DataDirOpt = Annotated[Optional[str], typer.Option(
    help="GLUE folder in the original layout (default $KRON_GLUE_DIR or ../shared/glue; else the hub).")]
BatchOpt = Annotated[int, typer.Option(help="Examples per forward pass.")]
SeqLenOpt = Annotated[Optional[int], typer.Option(
    help="Tokens per sequence (default: the student's recorded value, else 128).")]


def _scores_table(title: str, results: list[dict]) -> Table:
    table = Table("task", "model", "split", "metric", "score", "n", "examples/s", title=title)
    for r in results:
        for i, (metric, value) in enumerate(r["metrics"].items()):
            bold = "bold" if metric == r["primary"] else None
            table.add_row(r["task"], r["model"], r["split"], metric, Text(f"{value:.2f}", style=bold or ""),
                          f"{r['n']:,}" if i == 0 else "",
                          f"{r['examples_per_s']:.1f}" if i == 0 and r["examples_per_s"] else "")
    return table


@handle_errors
def glue_cmd(
    workspace: WorkspaceOpt,
    task: Annotated[str, typer.Option(help="GLUE task (mrpc), a comma list (mrpc,rte,mnli-m) or 'all': every task "
                                           "the workspace has a student or teacher for.")] = "all",
    split: Annotated[str, typer.Option(help="dev: score the dev split(s) (MNLI: matched and mismatched); test: with "
                                            "--predict, write submission files.")] = "dev",
    predict: Annotated[bool, typer.Option("--predict", help="Write GLUE-server submission files <TASK>.tsv "
                                                            "into WS/predictions/ (with --split test).")] = False,
    model: ModelOpt = None,
    data_dir: DataDirOpt = None,
    batch_size: BatchOpt = 64,
    max_seq_len: SeqLenOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Score a workspace's task students (and teachers) on GLUE dev, or write test-set submission files.

    Scores go to WS/metrics/eval.csv, one row per metric. --split test --predict writes WS/predictions/<TASK>.tsv
    instead (MNLI-m.tsv and MNLI-mm.tsv for MNLI, AX.tsv from the MNLI model).

    Example: kron eval glue --workspace runs/m19 --task mrpc
    """
    from ..evaluation.glue_eval import GlueOptions, evaluate_glue
    ws = Workspace(workspace)
    opts = GlueOptions(task=task, split=split, predict=predict, model=model, data_dir=data_dir,
                       batch_size=batch_size, max_seq_len=max_seq_len)
    out = evaluate_glue(ws, opts, progress_factory(show_progress(json_out)))
    console = human_console(json_out)
    if predict:
        table = Table("task", "model", "split", "file", "n", "examples/s", title=f"predictions: {ws.root}")
        for r in out["results"]:
            table.add_row(r["task"], r["model"], r["split"], r["file"], f"{r['n']:,}", f"{r['examples_per_s']:.1f}")
        console.print(table)
    else:
        console.print(_scores_table(f"GLUE {split}: {ws.root}", out["results"]))
        console.print(f"{sum(len(r['metrics']) for r in out['results'])} rows appended to {out['eval_csv']}",
                      highlight=False)
    for s in out["skipped"]:
        console.print(f"skipped {s['task']}: {s['reason']}", style="yellow", highlight=False)
    if json_out:
        emit_json(out)


@handle_errors
def ood_cmd(
    workspace: WorkspaceOpt,
    task: Annotated[str, typer.Option(help="The task the model was fine-tuned on (rte, mnli, ...).")],
    data: Annotated[str, typer.Option(help="Labelled .tsv/.txt/.csv/.json/.jsonl file, a folder saved with "
                                           "save_to_disk, or a datasets name (online only).")],
    label_map: Annotated[Optional[str], typer.Option(
        help="Data label value -> model label (name or id): entailment=0,non-entailment=1. Default: the "
             "task's own label names/ids.")] = None,
    collapse: Annotated[Optional[str], typer.Option(
        help="Model prediction -> label before scoring, e.g. neutral=contradiction for a 3-class MNLI model "
             "on 2-class HANS.")] = None,
    text_columns: Annotated[Optional[str], typer.Option(
        help="Text column(s), e.g. premise,hypothesis (default: the task's own names).")] = None,
    label_column: Annotated[str, typer.Option(help="Label column.")] = "label",
    data_split: Annotated[str, typer.Option(help="Split of a datasets name or saved DatasetDict.")] = "validation",
    dev: Annotated[bool, typer.Option("--dev/--no-dev", help="Also score the task's dev split and report the "
                                                             "gap (ood - dev).")] = True,
    model: OodModelOpt = None,
    data_dir: DataDirOpt = None,
    batch_size: BatchOpt = 64,
    max_seq_len: SeqLenOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Score a task model on an out-of-distribution labelled set, beside its dev score (the robustness gap).

    Rows go to WS/metrics/eval.csv with split ood:<file name>. A 3-class MNLI model on 2-class HANS:
    --label-map entailment=entailment,non-entailment=contradiction --collapse neutral=contradiction.

    Example: kron eval ood --workspace runs/m19 --task rte --data hans.tsv --label-map entailment=0,non-entailment=1
    """
    from ..data.glue import normalize_task
    from ..evaluation.ood import OodOptions, evaluate_ood
    ws = Workspace(workspace)
    opts = OodOptions(task=normalize_task(task), data=data, label_map=label_map, collapse=collapse, text_columns=text_columns,
                      label_column=label_column, data_split=data_split, model=model, data_dir=data_dir, dev=dev,
                      batch_size=batch_size, max_seq_len=max_seq_len)
    out = evaluate_ood(ws, opts, progress_factory(show_progress(json_out)))
    console = human_console(json_out)
    console.print(_scores_table(f"{out['task']} out of distribution: {out['data']}", out["results"]))
    for g in out["gaps"]:
        console.print(f"{g['model']}: {g['metric']} {g['ood']:.2f} on {out['split']} vs {g['dev']:.2f} on "
                      f"{g['dev_split']}: gap [bold]{g['gap']:+.2f}[/]", highlight=False, markup=True)
    console.print(f"rows appended to {out['eval_csv']}", highlight=False)
    if json_out:
        emit_json(out)


@handle_errors
def data_cmd(
    workspace: WorkspaceOpt,
    task: Annotated[str, typer.Option(help="An own-data task of the workspace (defined by kron finetune --task NAME "
                                           "--train FILE).")],
    data: Annotated[Optional[list[str]], typer.Option(help="Another labelled file to score, read with the task's "
                                                           "columns and labels (e.g. out-of-distribution data). "
                                                           "Repeatable.")] = None,
    model: OodModelOpt = None,
    batch_size: BatchOpt = 64,
    max_seq_len: SeqLenOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Score an own-data task's models on its dev and test files and on --data files, beside the majority floor.

    Rows go to WS/metrics/eval.csv (split dev, test or data:<file name>); --json adds per-class precision, recall
    and F1.

    Example: kron eval data --workspace runs/tickets --task tickets --data data/test-march.jsonl
    """
    from ..evaluation.own_eval import DataOptions, evaluate_data
    ws = Workspace(workspace)
    out = evaluate_data(ws, DataOptions(task=task, data=data, model=model, batch_size=batch_size,
                                        max_seq_len=max_seq_len), progress_factory(show_progress(json_out)))
    console = human_console(json_out)
    console.print(_scores_table(f"{out['task']} ({out['kind']}): {ws.root}", out["results"]))
    console.print(f"rows appended to {out['eval_csv']}", highlight=False)
    if json_out:
        emit_json(out)
