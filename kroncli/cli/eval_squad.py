"""`kron eval squad`: exact match and F1 (official SQuAD v1.1 / v2.0 scoring) of the task student and teacher."""

from __future__ import annotations

from typing import Annotated, Optional

import typer
from rich.table import Table

from ..workspace import Workspace
from .common import JsonOpt, WorkspaceOpt, emit_json, err_console, handle_errors, human_console, \
    progress_factory, show_progress


@handle_errors
def squad_cmd(
    workspace: WorkspaceOpt,
    version: Annotated[str, typer.Option(help="SQuAD version: 1 (v1.1) or 2 (v2.0, unanswerable "
                                              "questions).")] = "1",
    data_dir: Annotated[Optional[str], typer.Option(help="Folder with dev-v1.1.json / dev-v2.0.json (default "
                                                         "$KRON_SQUAD_DIR or ../shared/squad; else the hub).")]
    = None,
    dev_file: Annotated[Optional[str], typer.Option(help="Dev file in the official SQuAD JSON format.")] = None,
    model: Annotated[Optional[str], typer.Option(help="student, teacher or both (default: the student, and the "
                                                      "teacher when the workspace has one).")] = None,
    limit: Annotated[Optional[int], typer.Option(help="Score only the first N questions.")] = None,
    batch_size: Annotated[int, typer.Option(help="Windows per forward pass.")] = 64,
    max_seq_len: Annotated[Optional[int], typer.Option(help="Tokens per window (default: the value the "
                                                            "student was fine-tuned with, else 384).")] = None,
    doc_stride: Annotated[Optional[int], typer.Option(help="Tokens shared by consecutive windows (default: "
                                                           "as fine-tuned, else 128).")] = None,
    null_threshold: Annotated[float, typer.Option(help="v2.0: predict no answer when null score - best span "
                                                       "score > this.")] = 0.0,
    max_answer_len: Annotated[int, typer.Option(help="Longest answer, in tokens.")] = 30,
    json_out: JsonOpt = False,
) -> None:
    """SQuAD dev exact match and F1 (official normalisation) of the fine-tuned student and teacher.

    Example: kron eval squad --workspace runs/m19 --version 1 --data-dir data/squad

    v2.0 adds HasAns/NoAns scores and the best null-score thresholds.

    Rows go to WORKSPACE/metrics/eval.csv, answers to WORKSPACE/predictions/squad[_v2]-MODEL.json.
    """
    from ..data.squad import parse_version
    from ..stages.squad import SquadEvalOptions, evaluate_squad
    opts = SquadEvalOptions(version=parse_version(version), data_dir=data_dir, dev_file=dev_file, model=model,
                            limit=limit, batch_size=batch_size, max_seq_len=max_seq_len, doc_stride=doc_stride,
                            null_threshold=null_threshold, max_answer_len=max_answer_len)

    def log(message: str) -> None:
        if not json_out:
            err_console.print(message, style="dim", highlight=False)

    result = evaluate_squad(Workspace(workspace), opts, progress_factory(show_progress(json_out)), log)
    _print_table(result, human_console(json_out))
    if json_out:
        emit_json(result)


def _print_table(result: dict, console) -> None:
    v2 = result["version"] == 2
    cols = ["model", "exact", "f1", "n"]
    if v2:
        cols += ["HasAns f1", "NoAns exact", "best f1", "threshold"]
    table = Table(*cols, title=f"{result['task']} dev: {result['workspace']}")
    for which, r in result["results"].items():
        row = [which, f"{r['exact']:.2f}", f"{r['f1']:.2f}", str(r["n"])]
        if v2:
            row += [f"{r[k]:.2f}" if k in r else "-" for k in ("HasAns_f1", "NoAns_exact", "best_f1")]
            row.append(f"{r['best_f1_thresh']:.4g}")
        table.add_row(*row)
    console.print(table)
    for which, path in result["predictions"].items():
        console.print(f"{which} predictions: {path}", highlight=False)
