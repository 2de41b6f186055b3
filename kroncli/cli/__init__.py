"""The `kron` typer app: one thin module per subcommand, no logic here."""

from __future__ import annotations

import signal
from typing import Annotated

import typer
import typer.core

from . import distill as _distill
from . import env as _env
from . import eval as _eval
from . import export as _export
from . import factorize as _factorize
from . import finetune as _finetune
from . import report as _report
from . import run as _run
from .common import OneLineUsageErrors, err_console

app = typer.Typer(
    name="kron",
    help="Compress pre-trained Transformers with Kronecker decomposition + knowledge distillation.\n\n"
         "Example: kron factorize all-MiniLM-L6-v2 --ratio 19 --workspace runs/m19",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    rich_markup_mode="rich",
    cls=OneLineUsageErrors,
)


def _flags_take_no_value() -> None:
    """typer's rich help prints each option's type, flags included: every --json, --force, --help showed a `<bool>`
    it takes no value for (its plain help, like click's, leaves flags out). A flag shows no type, in every command."""
    display = typer.core.TyperOption.display_type_rich

    def display_type_rich(self, ctx):
        return None if (self.is_flag or self.count) and self.metavar is None else display(self, ctx)

    typer.core.TyperOption.display_type_rich = display_type_rich


_flags_take_no_value()


def _print_version(value: bool) -> None:
    if value:
        from .. import __version__

        typer.echo(f"kron {__version__}")
        raise typer.Exit()


@app.callback()
def _kron(version: Annotated[bool, typer.Option("--version", callback=_print_version, is_eager=True,
                                                help="Print kron's version and exit.")] = False) -> None:
    """Compress pre-trained Transformers with Kronecker decomposition + knowledge distillation."""


app.command("factorize", no_args_is_help=False)(_factorize.factorize_cmd)
app.command("distill")(_distill.distill_cmd)
app.command("finetune")(_finetune.finetune_cmd)
app.add_typer(_eval.eval_app, name="eval")
app.command("run")(_run.run_cmd)
app.command("report")(_report.report_cmd)
app.command("export")(_export.export_cmd)
app.command("predict")(_export.predict_cmd)
app.command("env")(_env.env_cmd)


class Terminated(BaseException):
    """SIGTERM outside a training loop (inside one, train._StopFlag saves a checkpoint first): it unwinds the stack as
    Ctrl-C does, so every `finally` runs (the workspace lock, temporary files), and the command exits 143. Not an
    Exception, so that no `except Exception` on the way takes it for an error."""


def _terminate(signum, frame):
    raise Terminated


def main() -> None:
    signal.signal(signal.SIGTERM, _terminate)
    try:
        app()
    except Terminated:
        err_console.print("terminated", style="yellow", highlight=False)
        raise SystemExit(128 + signal.SIGTERM) from None
