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
    from ..run import execute, select, stages, status, validate
    overrides = [*(set_ or []), *([f"data_dir={json.dumps(data_dir)}"] if data_dir else [])]  # last wins
    spec = load_recipe(recipe, overrides)
    ws = Workspace(workspace)
    plan = select(stages(spec), until, only)
    validate(spec, ws, plan)  # before the plan too: a dry run of an impossible recipe must say so
    rows = [{"stage": s.name, "state": status(ws, s, spec)} for s in plan]
    if dry_run:
        table = Table("stage", "state")
        for r in rows:
            table.add_row(r["stage"], r["state"])
        human_console(json_out).print(f"plan: {recipe} -> {ws.root}", highlight=False, markup=False)
        human_console(json_out).print(table)
        if json_out:
            emit_json({"recipe": recipe, "workspace": str(ws.root), "stages": rows, "config": spec.to_dict()})
        return
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


def _scores(ws: Workspace, plan, console) -> list[dict] | None:
    """After a plan with an evaluation: the workspace's `kron report` table (its records for the JSON)."""
    if not any(s.kind.startswith("eval") for s in plan):
        return None
    from ..report import build_table, print_table

    df = build_table([str(ws.root)])
    print_table(df, console)
    return json.loads(df.to_json(orient="records"))
