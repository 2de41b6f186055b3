"""`kron report`: compare workspaces."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from .common import KronConsole, err_console, handle_errors, out_console


@handle_errors
def report_cmd(
    workspaces: Annotated[Optional[list[str]], typer.Argument(help="Workspaces to compare.")] = None,
    format: Annotated[str, typer.Option("--format", help="table, markdown, csv or json.")] = "table",
    plot: Annotated[Optional[str], typer.Option(help="Write PNG figures into this folder (e.g. "
                                                     "runs/m19/plots).")] = None,
    paper: Annotated[bool, typer.Option("--paper", help="Add the paper's published rows.")] = False,
    json_out: Annotated[bool, typer.Option("--json", help="The same as --format json.")] = False,
) -> None:
    """One comparison table: params, compression, size, GLUE scores, retention, SQuAD, OOD, speed-up.

    Example: kron report runs/kb8 runs/m19 --format markdown > results.md

    A table wider than the terminal is turned on its side (a row per figure, a column per model); no cell is cut.
    """
    from ..errors import KronError
    from ..report import build_table, print_table, render
    if json_out and format not in ("table", "json"):
        raise KronError(f"--json and --format {format} ask for two formats; pass one")
    format = "json" if json_out else format
    if plot and Path(plot).exists() and not Path(plot).is_dir():
        raise KronError(f"--plot {plot} is a file; pass a folder for the PNG figures")
    df = build_table(workspaces or [], paper, skip=lambda why: err_console.print(f"skipped: {why}", highlight=False))
    if format == "table":
        # piped: the table's own width, however many columns; a terminal's width otherwise (print_table fits it)
        print_table(df, out_console if out_console.is_terminal else KronConsole(width=100_000))
    else:
        sys.stdout.write(render(df, format))
    if plot:
        from ..plots import write_plots

        for path in write_plots(df, workspaces or [], Path(plot)):
            err_console.print(f"wrote {path}", highlight=False)
