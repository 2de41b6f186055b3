"""Evaluation examples a model has already been trained on: inputs shared verbatim by two GLUE sets.

GLUE's tasks share sources. STS-B's training set holds pairs from the Microsoft paraphrase corpus, MRPC's
source: 48 of MRPC's 408 dev pairs are in it, with STS-B's gold similarity score. A student that starts MRPC
from STS-B's (`kron finetune --init-from stsb`) has been trained on those 48, so its MRPC dev score is
optimistic; scoring it (and the teacher) on the other 360 as well gives the figure that is not. Inputs match
after lower-casing and collapsing white space; a pair matches in either order.

    seen = seen_mask(mrpc_dev, stsb_train)     # bool per dev row
    mrpc_dev[~seen]                             # the rows no stage of training saw
"""

from __future__ import annotations

import numpy as np
import pandas as pd


def _text(value) -> str:
    return " ".join(value.lower().split()) if isinstance(value, str) else ""


def input_key(text_a, text_b=None) -> tuple[str, str]:
    """One example's input, normalised: a pair in a fixed order, a single text with an empty second."""
    a, b = _text(text_a), _text(text_b)
    return (a, b) if a <= b else (b, a)


def seen_mask(frame: pd.DataFrame, seen: pd.DataFrame) -> np.ndarray:
    """For each row of `frame` (text_a, text_b), whether `seen` holds the same input."""
    keys = {input_key(a, b) for a, b in zip(seen["text_a"], seen["text_b"])}
    return np.fromiter((input_key(a, b) in keys for a, b in zip(frame["text_a"], frame["text_b"])),
                       dtype=bool, count=len(frame))
