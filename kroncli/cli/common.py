"""Shared CLI plumbing: consoles, progress bars, JSON output and the one-line error contract."""

from __future__ import annotations

import contextlib
import functools
import json
import os
import sys
from typing import Annotated, Callable, Iterator, NoReturn

import typer
import typer.core
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, \
    TimeRemainingColumn
from rich.text import Text

from ..console import KronConsole, err_console, out_console  # noqa: F401  (re-exported to the commands)
from ..errors import KronError, silence_stdout, stdout_reader_gone



# Option aliases defined once and shared by every subcommand.
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON object on stdout; human output goes "
                                                      "to stderr and progress bars are off.")]


def not_a_file(path: str | None) -> str | None:
    """A --workspace that names a regular file is refused before any command reads or plans anything."""
    if path is not None and os.path.exists(path) and not os.path.isdir(path):
        raise typer.BadParameter(f"{path} is a file, not a folder; pass a folder (new, or made by kron factorize)")
    return path


WorkspaceOpt = Annotated[str, typer.Option("--workspace", "-w", callback=not_a_file,
                                           help="Experiment folder (created by `kron factorize`).")]
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
        cols = [TextColumn("{task.description}", style="bold", markup=False), BarColumn(), MofNCompleteColumn(),
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


def error_line(message: str) -> None:
    """`error: MESSAGE` on stderr, the message verbatim (no markup: brackets in paths and regexes survive)."""
    err_console.print(Text.assemble(("error:", "bold red"), " ", message), highlight=False, soft_wrap=True)


def fail(message: str, code: int = 2) -> NoReturn:
    error_line(message)
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
            result = fn(*args, **kwargs)
            sys.stdout.flush()  # a closed pipe shows here, not in Python's flush at exit
            return result
        except KronError as e:
            if os.environ.get("KRON_DEBUG"):
                raise
            fail(str(e), getattr(e, "exit_code", 2))
        except KeyboardInterrupt:
            err_console.print("interrupted", style="yellow")
            raise typer.Exit(130)
        except (OSError, MemoryError) as e:  # disk full, permissions: still one actionable line
            if isinstance(e, BrokenPipeError) and stdout_reader_gone():  # `kron predict ... | head -1`
                raise typer.Exit(silence_stdout())  # quietly, as Unix tools do (kroncli/errors.py)
            if os.environ.get("KRON_DEBUG"):
                raise
            fail(f"{type(e).__name__}: {e}")

    return wrapper


class OneLineUsageErrors(typer.core.TyperGroup):
    """Usage errors (a value of the wrong type, a missing or unknown option, a misspelt command) as one `error:` line
    with exit 2, like every other error, instead of typer's boxed panel; help and everything else unchanged."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode, **extra)
        try:
            code = super().main(args, prog_name, complete_var, False, **extra)
        except typer.TyperException as e:  # typer >= 0.29: its click's UsageError, BadParameter, ... derive from it
            if type(e).__name__ == "NoArgsIsHelpError":  # `kron` alone: the help is printed already
                raise SystemExit(e.exit_code) from None
            ctx = getattr(e, "ctx", None)
            hint = f" (see {ctx.command_path} --help)" if ctx is not None else ""
            error_line(f"{e.format_message()}{hint}")
            raise SystemExit(e.exit_code) from None
        except typer.Abort:
            err_console.print("aborted", style="yellow")
            raise SystemExit(1) from None
        raise SystemExit(code if isinstance(code, int) else 0)
