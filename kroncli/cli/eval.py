"""`kron eval`: a sub-app with one thin module per evaluation (glue, ood, data, squad, speed)."""

from __future__ import annotations

import typer

from .eval_glue import data_cmd, glue_cmd, ood_cmd
from .eval_speed import speed_cmd
from .eval_squad import squad_cmd

eval_app = typer.Typer(
    name="eval",
    help="Evaluate a workspace's models: GLUE dev/test, own-data tasks, SQuAD, out-of-distribution, speed and size.\n\n"
         "Example: kron eval glue --workspace runs/m19 --task mrpc",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
eval_app.command("glue")(glue_cmd)
eval_app.command("ood")(ood_cmd)
eval_app.command("data")(data_cmd)
eval_app.command("squad")(squad_cmd)
eval_app.command("speed")(speed_cmd)
