"""Shared CLI plumbing: consoles, progress bars, JSON output and the one-line error contract."""

from __future__ import annotations

import contextlib
import functools
import json
import os
import sys
from typing import Annotated, Callable, Iterator

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, \
    TimeRemainingColumn

from ..errors import KronError

err_console = Console(stderr=True)
out_console = Console()

# Option aliases defined once and shared by every subcommand.
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON object on stdout; human output goes "
                                                      "to stderr and progress bars are off.")]
WorkspaceOpt = Annotated[str, typer.Option("--workspace", "-w", help="Experiment folder (created by "
                                                                     "`kron factorize`).")]
ForceOpt = Annotated[bool, typer.Option("--force", help="Overwrite an existing workspace.")]


def human_console(json_mode: bool) -> Console:
    """Tables go to stdout normally, to stderr when stdout carries JSON."""
    return err_console if json_mode else out_console


def progress_factory(enabled: bool) -> Callable[[str, int], contextlib.AbstractContextManager]:
    """A `(description, total) -> context manager yielding advance(n)`; a no-op when disabled."""

    @contextlib.contextmanager
    def make(description: str, total: int) -> Iterator[Callable[[int], None]]:
        if not enabled:
            yield lambda n=1: None
            return
        cols = [TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                TimeElapsedColumn(), TimeRemainingColumn()]
        with Progress(*cols, console=err_console, transient=True) as bar:
            task = bar.add_task(description, total=total)
            yield lambda n=1: bar.advance(task, n)

    return make


def show_progress(json_mode: bool) -> bool:
    return not json_mode and err_console.is_terminal


def emit_json(obj) -> None:
    sys.stdout.write(json.dumps(obj, default=str) + "\n")
    sys.stdout.flush()


def fail(message: str, code: int = 2) -> None:
    err_console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def handle_errors(fn):
    """Turn known errors into one line + exit 2; the traceback only with KRON_DEBUG=1."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        # no library progress bars or warnings between our own lines (read when those libraries load,
        # so commands that never import transformers start fast)
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
        try:
            return fn(*args, **kwargs)
        except KronError as e:
            if os.environ.get("KRON_DEBUG"):
                raise
            fail(str(e))
        except KeyboardInterrupt:
            err_console.print("interrupted", style="yellow")
            raise typer.Exit(130)
        except (OSError, MemoryError) as e:  # disk full, permissions: still one actionable line
            if os.environ.get("KRON_DEBUG"):
                raise
            fail(f"{type(e).__name__}: {e}")

    return wrapper
