"""Training options of `kron distill` and `kron finetune`, derived from `train.TrainConfig` (defined once there)."""

from __future__ import annotations

import dataclasses
import functools
import inspect
import typing
from typing import Annotated, Optional

import typer

MaxSeqLen = Annotated[int, typer.Option(help="Tokens per sequence.")]
Weight = Annotated[Optional[list[str]], typer.Option(
    "--weight", help="Loss weight NAME=VALUE (repeatable), e.g. --weight attention_mse=0.5.")]


def flag_decls(name: str, default) -> tuple[str, ...]:
    """How a field is spelt on the command line: --max-steps; a bool off by default is a bare flag (--resume), one on
    by default a pair (--pairs/--no-pairs)."""
    flag = "--" + name.replace("_", "-")
    if isinstance(default, bool):
        return (flag,) if not default else (f"{flag}/--no-{flag[2:]}",)
    return (flag,)


def train_options(skip: tuple[str, ...] = (), **defaults):
    """Give a command every TrainConfig field with a help as a typer option (its type, default and help; `defaults`
    for a stage's own, e.g. lr=1e-4), unless the command declares it itself or `skip` names it. The command takes
    them in **train: `TrainConfig(stage=..., **train)`. typer reads the options from `__signature__`."""
    from ..train_config import TrainConfig

    hints = typing.get_type_hints(TrainConfig)

    def decorate(command):
        sig = inspect.signature(command, eval_str=True)  # the Annotated typer options, resolved
        own = [p.replace(kind=p.KEYWORD_ONLY) for p in sig.parameters.values() if p.kind is not p.VAR_KEYWORD]
        names = {p.name for p in own}
        derived = []
        for f in dataclasses.fields(TrainConfig):
            if "help" not in f.metadata or f.name in names or f.name in skip:
                continue
            default = defaults.get(f.name, f.default)
            option = typer.Option(*flag_decls(f.name, default), help=f.metadata["help"])
            derived.append(inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=default,
                                             annotation=Annotated[hints[f.name], option]))
        last = [p for p in own if p.name == "json_out"]  # --json stays the last option on the help page
        params = [p for p in own if p.name != "json_out"] + derived + last

        @functools.wraps(command)
        def wrapper(**kwargs):
            return command(**kwargs)

        wrapper.__signature__ = sig.replace(parameters=params)
        wrapper.train_fields = tuple(p.name for p in derived)
        return wrapper

    return decorate



def group_options(cls, into: str):
    """Give a command every field of the dataclass `cls` that has a help as a typer option, and pass them to it as
    one `cls` instance in the keyword `into` (e.g. data.own.TaskFiles as `files`): the dataclass stays the one
    definition of the options, their defaults and their help, shared with a recipe's mapping."""
    hints = typing.get_type_hints(cls)
    fields = [f for f in dataclasses.fields(cls) if "help" in f.metadata]

    def decorate(command):
        sig = inspect.signature(command, eval_str=True)
        own = [p.replace(kind=p.KEYWORD_ONLY) for p in sig.parameters.values()
               if p.kind is not p.VAR_KEYWORD and p.name != into]
        derived = [inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=f.default,
                                     annotation=Annotated[hints[f.name], typer.Option(*flag_decls(f.name, f.default),
                                                                                      help=f.metadata["help"])])
                   for f in fields]
        last = [p for p in own if p.name == "json_out"]
        params = [p for p in own if p.name != "json_out"] + derived + last
        names = [f.name for f in fields]

        @functools.wraps(command)
        def wrapper(**kwargs):
            values = {n: kwargs.pop(n) for n in names if n in kwargs}
            return command(**kwargs, **{into: cls(**values)})

        wrapper.__signature__ = sig.replace(parameters=params)
        wrapper.group_fields = getattr(command, "group_fields", ()) + tuple(names)
        return wrapper

    return decorate
