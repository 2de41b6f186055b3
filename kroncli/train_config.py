"""The training options of a stage (TrainConfig) and their checks, apart from the loop: the CLI builds its options
from these fields, so this module must not import torch (`kron --help` would wait seconds for it)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

from .errors import KronError

MIXED_PRECISION = ("no", "fp16", "bf16")


def _knob(default, help: str, recipe: bool = True):
    """A TrainConfig field that is a command-line option (its help) and, unless recipe=False, a recipe key."""
    return field(default=default, metadata={"help": help, "recipe": recipe})


@dataclass
class TrainConfig:
    """Hyper-parameters and bookkeeping of one training stage: the one definition of each training option. A field
    with a `help` is a `kron distill` / `kron finetune` option (cli/options.train_options) and a recipe key of the
    distill and finetune sections (tests/test_options.py holds them to the same name and default)."""

    stage: str
    max_steps: int | None = _knob(None, "Stop after this many optimizer steps.")
    epochs: float | None = _knob(None, "Passes over the data (when --max-steps is not set).")
    # timed on the real model and batch before the schedule is built, so the learning rate still decays to zero
    max_minutes: float | None = _knob(
        None, "Fit the run to this many minutes of training steps: the speed is timed on the real batch first, then "
              "the step count is fixed so the learning-rate schedule still ends at zero (--max-steps / --epochs cap "
              "it). Evaluations and checkpoints are extra.")
    batch_size: int = _knob(32, "Examples per process per step.")
    lr: float = _knob(5e-5, "Peak learning rate (linear warm-up and decay).")
    weight_decay: float = _knob(0.01, "AdamW weight decay (not on biases and LayerNorm weights).")
    warmup_ratio: float = _knob(0.1, "Share of the steps over which the learning rate rises linearly to its peak.")
    max_grad_norm: float = _knob(1.0, "Clip the gradient norm to this (0: no clipping).")
    grad_accum: int = _knob(1, "Gradient accumulation steps.")
    save_every: int = _knob(500, "Checkpoint every N steps (and at the end, and on Ctrl-C).")
    keep: int = _knob(2, "Checkpoints to keep.")
    log_every: int = _knob(10, "Metrics row every N steps.")
    eval_every: int | None = _knob(None, "Evaluate on dev every N steps (and at the end).")
    mixed_precision: str = _knob("no", "no, fp16 or bf16 (GPU).")
    seed: int = _knob(0, "Random seed.")
    resume: bool = _knob(False, "Continue from the newest checkpoint of this stage.", recipe=False)
    restart: bool = _knob(False, "Delete this stage's checkpoints and metrics rows and start it again.", recipe=False)

    def __post_init__(self):
        if self.resume and self.restart:
            raise KronError("--resume continues from the newest checkpoint and --restart deletes the checkpoints; "
                            "pass one of them")


# Numbers a training stage cannot run with below these bounds (augmentation and rehearsal: check_student_options);
# other keys in the dict given to check_training_values are ignored.
AT_LEAST_ONE = ("max_steps", "batch_size", "eval_batch_size", "grad_accum", "save_every", "keep", "log_every",
                "eval_every", "max_seq_len", "doc_stride", "max_answer_len", "limit")
ABOVE_ZERO = ("epochs", "teacher_epochs", "lr", "teacher_lr", "max_minutes")
AT_LEAST_ZERO = ("weight_decay", "max_grad_norm", "warmup_ratio")


def cli_flag(key: str) -> str:
    return "--" + key.replace("_", "-")


def check_training_values(values: dict, spell: Callable[[str], str] = cli_flag) -> None:
    """One-line errors, named as the caller spells them (`--max-steps`, `recipe key distill.max_steps`), for values
    that plan no training or that torch / accelerate would reject with a traceback. Checked before anything loads."""
    for key, value in values.items():
        if value is None or isinstance(value, bool):
            continue
        if key == "mixed_precision" and value not in MIXED_PRECISION:
            raise KronError(f"{spell(key)} {value!r}: choose one of {', '.join(MIXED_PRECISION)}")
        if key in AT_LEAST_ONE and value < 1:
            raise KronError(f"{spell(key)} {value} must be at least 1")
        if key in ABOVE_ZERO and not (math.isfinite(value) and value > 0):
            raise KronError(f"{spell(key)} {value:g} must be above 0")
        if key in AT_LEAST_ZERO and not (math.isfinite(value) and value >= 0):
            raise KronError(f"{spell(key)} {value:g} must be at least 0")
        if key == "warmup_ratio" and value >= 1:
            raise KronError(f"{spell(key)} {value:g} must be below 1 (a share of the steps)")


# TrainConfig fields a resumed stage may change: its budget (a longer run is how a stage is extended; kron run allows
# it too), its bookkeeping, and the arithmetic's precision (a stage begun in bf16 on a GPU lease may finish on a CPU;
# kron run does not compare it either). Every other field, and the stage's own settings, shape what it learns.
RESUMABLE = ("stage", "max_steps", "epochs", "max_minutes", "save_every", "keep", "log_every", "eval_every",
             "mixed_precision", "resume", "restart")


def first_change(old: dict, now: dict, skip: Callable[[str], bool] = lambda key: False) -> tuple | None:
    """(key, old value, new value) of the first setting in `now` that `old` also holds with another value; a dict of
    settings (loss weights) entry by entry, keyed `key entry`. A key `old` lacks was not recorded then: not compared."""
    for key, value in now.items():
        if key not in old or skip(key) or old[key] == value:
            continue
        if isinstance(value, dict) and isinstance(old[key], dict):
            entry = next(e for e in {**old[key], **value} if old[key].get(e) != value.get(e))
            return f"{key} {entry}", old[key].get(entry), value.get(entry)
        return key, old[key], value
    return None
