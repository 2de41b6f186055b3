"""The two consoles every kron output goes through (stdout for results, stderr for progress and messages).

Below the CLI so that the training loop's progress bar (train.py) prints on the same stderr console as the
commands' messages without importing the CLI.
"""

from __future__ import annotations

import os

from rich.console import Console

from .errors import silence_stdout


class KronConsole(Console):
    """Rich's console with markup off: messages, paths, regexes and table cells print as they are (`--targets
    'x[a-z]y'` stays `x[a-z]y`, a `[/x]` cannot crash a print); styling is asked for explicitly (`style=`, rich
    `Text`, `markup=True` on a print of our own text). A closed stdout (`kron report | head -1`) ends the command
    quietly with the status of every other broken pipe (kroncli/errors.py) instead of rich's exit 1."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("markup", False)
        super().__init__(*args, **kwargs)

    def on_broken_pipe(self) -> None:
        self.quiet = True
        raise SystemExit(silence_stdout())


def _console(stderr: bool = False, piped_width: int = 200) -> Console:
    """A terminal's own width; piped output (CI logs, `| tee`, `> file`) is not cut or wrapped at rich's 80 columns."""
    console = KronConsole(stderr=stderr)
    if console.is_terminal or os.environ.get("COLUMNS"):
        return console
    return KronConsole(stderr=stderr, width=piped_width)


err_console = _console(stderr=True)
out_console = _console()
