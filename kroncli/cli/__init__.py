"""The `kron` typer app: one thin module per subcommand, no logic here."""

from __future__ import annotations

import typer

from . import distill as _distill
from . import env as _env
from . import eval as _eval
from . import export as _export
from . import factorize as _factorize
from . import finetune as _finetune
from . import report as _report
from . import run as _run
from .common import OneLineUsageErrors

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
app.command("factorize", no_args_is_help=False)(_factorize.factorize_cmd)
app.command("distill")(_distill.distill_cmd)
app.command("finetune")(_finetune.finetune_cmd)
app.add_typer(_eval.eval_app, name="eval")
app.command("run")(_run.run_cmd)
app.command("report")(_report.report_cmd)
app.command("export")(_export.export_cmd)
app.command("predict")(_export.predict_cmd)
app.command("env")(_env.env_cmd)


def main() -> None:
    app()
