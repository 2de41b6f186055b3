"""Which evaluation inputs a training set already holds (kroncli.data.overlap), on toy frames and real GLUE."""

import pandas as pd
import pytest

from kroncli.data.glue import load_split
from kroncli.data.overlap import input_key, seen_mask

from conftest import glue_dir, require_glue


def frame(rows):
    return pd.DataFrame(rows, columns=["text_a", "text_b"])


def test_pairs_match_in_either_order_after_case_and_space_folding():
    seen = frame([("The cat sat.", "A cat was sitting."), ("Stocks fell.", "Shares dropped.")])
    probe = frame([("a cat was  sitting.", "THE CAT SAT."),  # swapped, other case and spacing
                   ("Stocks fell.", "Shares rose."),  # one sentence shared, not the pair
                   ("Shares dropped.", "Stocks fell.")])
    assert seen_mask(probe, seen).tolist() == [True, False, True]


def test_single_texts_match_on_their_one_text():
    seen = frame([("John ate.", None), ("Mary ran.", float("nan"))])
    probe = frame([("john ate.", None), ("Mary ran.", None), ("Mary ran.", "John ate.")])
    assert seen_mask(probe, seen).tolist() == [True, True, False]
    assert input_key("x", None) == input_key("x", float("nan"))


def test_mrpc_dev_pairs_in_the_stsb_training_set():
    """STS-B's training set holds MSR paraphrase pairs: 48 of MRPC's 408 dev pairs, none of CoLA's dev sentences."""
    require_glue("STS-B/train.tsv", "MRPC/dev.tsv", "CoLA/dev.tsv")
    stsb = load_split("stsb", "train", glue_dir())
    mask = seen_mask(load_split("mrpc", "dev", glue_dir()), stsb)
    assert len(mask) == 408 and mask.sum() == 48
    assert not seen_mask(load_split("cola", "dev", glue_dir()), stsb).any()
