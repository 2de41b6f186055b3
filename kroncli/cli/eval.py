"""`kron eval`: a sub-app with one thin module per evaluation (glue, squad, ood, speed)."""

from __future__ import annotations

import typer

eval_app = typer.Typer(
    name="eval",
    help="Evaluate a workspace's models: GLUE dev/test, SQuAD, out-of-distribution, speed and size.\n\n"
         "Example: kron eval glue --workspace runs/m19 --task mrpc",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
from .eval_speed import speed_cmd  # noqa: E402
eval_app.command("speed")(speed_cmd)
