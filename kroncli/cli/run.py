"""`kron run RECIPE`: the whole experiment, resumable."""

from __future__ import annotations

import json
import sys
from typing import Annotated, Optional

import typer
from rich.table import Table

from ..recipes import load_recipe
from ..workspace import Workspace
from .common import JsonOpt, WorkspaceOpt, emit_json, err_console, handle_errors, human_console, show_progress


@handle_errors
def run_cmd(
    recipe: Annotated[str, typer.Argument(help="Recipe YAML (see recipes/).")],
    workspace: WorkspaceOpt,
    set_: Annotated[Optional[list[str]], typer.Option("--set", help="Override a recipe value, e.g. "
                                                                    "--set distill.max_steps=100 "
                                                                    "(repeatable).")] = None,
    data_dir: Annotated[Optional[str], typer.Option(help="GLUE folder (original layout), overriding the recipe's "
                                                           "data_dir; the recipe's stage-1 sentences from its own "
                                                           "GLUE folder are read from this one too.")] = None,
    until: Annotated[Optional[str], typer.Option(help="Run the stages up to and including this one.")] = None,
    only: Annotated[Optional[str], typer.Option(help="Run only this stage.")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the plan (stages and their state) and "
                                                            "stop.")] = False,
    json_out: JsonOpt = False,
) -> None:
    """Run a recipe: factorize, distill, finetune, eval — skipping what is done, resuming what was cut.

    Example: kron run recipes/minilm-19x-mrpc.yaml --workspace runs/m19-mrpc --data-dir ../shared/glue

    With an evaluation in the plan, the run ends with the workspace's scores, as kron report prints them.
    """
    from ..run import execute, select, stages, validate
    overrides = [*(set_ or []), *([f"data_dir={json.dumps(data_dir)}"] if data_dir else [])]  # last wins
    spec = load_recipe(recipe, overrides)
    ws = Workspace(workspace)
    plan = select(stages(spec), until, only)
    if dry_run:
        _print_plan(recipe, spec, ws, plan, json_out)
        return
    validate(spec, ws, plan)
    log = (lambda msg: err_console.print(msg, highlight=False, markup=False))

    def record_recipe():  # what later runs compare their done stages with
        manifest = ws.read_manifest()
        manifest["recipe"] = {"path": recipe, "overrides": overrides, "config": spec.to_dict()}
        ws.write_manifest(manifest)

    with ws.lock():
        results = execute(spec, ws, plan, show_progress(json_out), log, ["kron", *sys.argv[1:]], record_recipe)
        if ws.manifest_path.is_file():
            record_recipe()
    scores = _scores(ws, plan, human_console(json_out))
    if json_out:
        emit_json({"recipe": recipe, "workspace": str(ws.root), "stages": results,
                   **({"report": scores} if scores is not None else {})})
    else:
        ran = sum(r["status"] == "done" for r in results)
        err_console.print(f"ran {ran} stage(s), {len(results) - ran} done before, in {ws.root}; compare with: "
                          f"kron report {ws.root}", highlight=False, markup=False)


def _print_plan(recipe: str, spec, ws: Workspace, plan, json_out: bool) -> None:
    """`--dry-run`: the stages, their state and settings, and what each still needs; a recipe mistake is still an
    error, a missing teacher or corpus is not (it is what the plan says to get)."""
    from rich.table import Column
    from rich.text import Text

    from ..run import _last_part, dry_run

    rows = dry_run(spec, ws, plan)
    table = Table("stage", "state", *(Column(c, overflow="fold") for c in ("settings", "needs")))  # no cell cut
    for r in rows:
        settings = ", ".join(f"{_last_part(k)}={v}" for k, v in r["settings"].items())
        state = f"{r['state']} (differs)" if r["differs"] else r["state"]
        table.add_row(Text(r["stage"]), Text(state), Text(settings), Text("; ".join(r["needs"]) or "-"))
    console = human_console(json_out)
    console.print(f"plan: {recipe} -> {ws.root}", highlight=False, markup=False)
    console.print(table)
    if any(r["needs"] for r in rows):
        console.print("not ready: the stages above need what their needs column says", highlight=False, markup=False)
    if json_out:
        emit_json({"recipe": recipe, "workspace": str(ws.root), "ready": not any(r["needs"] for r in rows),
                   "stages": rows, "config": spec.to_dict()})


def _scores(ws: Workspace, plan, console) -> list[dict] | None:
    """After a plan with an evaluation: the workspace's `kron report` table (its records for the JSON)."""
    if not any(s.kind.startswith("eval") for s in plan):
        return None
    from ..report import build_table, print_table

    df = build_table([str(ws.root)])
    print_table(df, console)
    return json.loads(df.to_json(orient="records"))
