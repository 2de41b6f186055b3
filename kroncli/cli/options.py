"""Training options shared by `kron distill` and `kron finetune` (defined once)."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

MaxSteps = Annotated[Optional[int], typer.Option(help="Stop after this many optimizer steps.")]
Epochs = Annotated[Optional[float], typer.Option(help="Passes over the data (when --max-steps is not set).")]
MaxMinutes = Annotated[Optional[float], typer.Option(
    help="Fit the run to this many minutes of training steps: the speed is timed on the real batch first, then the "
         "step count is fixed so the learning-rate schedule still ends at zero (--max-steps / --epochs cap it). "
         "Evaluations and checkpoints are extra.")]
BatchSize = Annotated[int, typer.Option(help="Examples per process per step.")]
Lr = Annotated[float, typer.Option(help="Peak learning rate (linear warm-up and decay).")]
SaveEvery = Annotated[int, typer.Option(help="Checkpoint every N steps (and at the end, and on Ctrl-C).")]
Keep = Annotated[int, typer.Option(help="Checkpoints to keep.")]
LogEvery = Annotated[int, typer.Option(help="Metrics row every N steps.")]
Resume = Annotated[bool, typer.Option("--resume", help="Continue from the newest checkpoint of this stage.")]
Restart = Annotated[bool, typer.Option("--restart", help="Delete this stage's checkpoints and metrics rows and "
                                                         "start it again.")]
MixedPrecision = Annotated[str, typer.Option(help="no, fp16 or bf16 (GPU).")]
GradAccum = Annotated[int, typer.Option(help="Gradient accumulation steps.")]
Seed = Annotated[int, typer.Option(help="Random seed.")]
MaxSeqLen = Annotated[int, typer.Option(help="Tokens per sequence.")]
Weight = Annotated[Optional[list[str]], typer.Option(
    "--weight", help="Loss weight NAME=VALUE (repeatable), e.g. --weight attention_mse=0.5.")]
