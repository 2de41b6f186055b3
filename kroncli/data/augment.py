"""Task-data augmentation for stage 2 (TinyBERT-style), offline: word swaps with the teacher's own neighbours.

A small task (MRPC: 3,668 pairs) lets a tiny student memorise its training set without learning the task.
TinyBERT widens it with word substitutes from GloVe; offline, the teacher's input word embeddings stand in:
a whole word that is a single word-piece is replaced, with probability `p`, by one of its `k` nearest
neighbours (cosine) among the vocabulary's whole-word pieces. Multi-piece words, numbers, punctuation and
special tokens stay. The teacher labels every variant through the distillation losses; the gold label of the
original does not carry over (a swap can flip it), so augmented rows get no label (`-100` / NaN) and the
`supervised` term sees the originals only.

Two more rules from Tang et al. (2019, "Distilling task-specific knowledge from BERT into simple neural
networks") are optional: `p_mask` replaces a word by the mask token, and `p_ngram` cuts a text to one random
n-gram of 1-5 words. Both make inputs the originals never show (fragments, missing words), so the student
learns the teacher's answer off the training distribution too; their paper used 0.1 and 0.25.

    aug = Augmenter.from_model(teacher, tokenizer, k=15, p=0.4, seed=0)
    frame = aug.expand(train_df, regression=False, copies=4)   # originals first, then 4 variants of each
    Augmenter.from_model(teacher, tokenizer, p=0.1, p_mask=0.1, p_ngram=0.25)   # Tang et al.'s rules
"""

from __future__ import annotations

import random
import re

import pandas as pd
import torch

_WORD = re.compile(r"^[a-z]+$")


def check_rates(p: float, p_mask: float = 0.0, p_ngram: float = 0.0,
                names: tuple[str, str, str] = ("swap", "mask", "n-gram")) -> None:
    """Valid rates: each in [0, 1], at least one rule on, and masking plus swapping at most 1 per word.
    `names` are how the caller spells the three rates (the CLI passes its flags)."""
    for name, value in zip(names, (p, p_mask, p_ngram)):
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"the {name} probability must be in [0, 1], got {value}")
    if p + p_mask + p_ngram == 0:
        raise ValueError(f"every augmentation rule is off ({', '.join(names)} probabilities all 0)")
    if p_mask + p > 1.0 + 1e-9:
        raise ValueError(f"{names[1]} ({p_mask}) and {names[0]} ({p}) probabilities share each word and sum to "
                         "more than 1")


class Augmenter:
    """Replaces single-piece words by nearest neighbours in an embedding table; deterministic for a seed."""

    def __init__(self, embeddings: torch.Tensor, tokenizer, k: int = 15, p: float = 0.4, seed: int = 0,
                 p_mask: float = 0.0, p_ngram: float = 0.0, max_ngram: int = 5):
        check_rates(p, p_mask, p_ngram)
        if k < 1:
            raise ValueError(f"neighbours per word must be >= 1, got {k}")
        if max_ngram < 1:
            raise ValueError(f"the longest sampled n-gram must be >= 1 word, got {max_ngram}")
        self.tokenizer, self.k, self.p, self.seed = tokenizer, k, p, seed
        self.p_mask, self.p_ngram, self.max_ngram = p_mask, p_ngram, max_ngram
        self.mask = getattr(tokenizer, "mask_token", None)
        if p_mask and not self.mask:
            raise ValueError("the tokenizer has no mask token; masking needs one (set p_mask to 0)")
        vocab = tokenizer.get_vocab()
        special = set(tokenizer.all_special_ids)
        self.words = {t: i for t, i in vocab.items() if _WORD.match(t) and len(t) > 1 and i not in special}
        self.candidates = torch.tensor(sorted(self.words.values()), dtype=torch.long)
        e = embeddings.detach().float()
        self.unit = torch.nn.functional.normalize(e, dim=-1)
        self._cand_unit = self.unit[self.candidates]
        self._cache: dict[int, list[int]] = {}

    @classmethod
    def from_model(cls, model, tokenizer, **kw) -> "Augmenter":
        return cls(model.get_input_embeddings().weight, tokenizer, **kw)

    def neighbours(self, token_id: int) -> list[int]:
        """The k nearest whole-word pieces of `token_id` (itself excluded), nearest first."""
        if token_id not in self._cache:
            sims = self._cand_unit @ self.unit[token_id]
            top = torch.topk(sims, min(self.k + 1, len(self.candidates))).indices
            ids = [int(self.candidates[j]) for j in top if int(self.candidates[j]) != token_id]
            self._cache[token_id] = ids[: self.k]
        return self._cache[token_id]

    def variant(self, text: str, rng: random.Random) -> str:
        """One augmented copy of `text`: each word masked with probability p_mask, or else (an eligible word)
        swapped with probability p; then, with probability p_ngram, only one random n-gram of it kept."""
        if not text:
            return text
        out = []
        for word in text.split():
            core = word.strip(".,;:!?\"'()[]")
            lead = word[: word.find(core)] if core else ""
            trail = word[len(lead) + len(core):] if core else ""
            tid = self.words.get(core.lower()) if core else None
            if self.p_mask and core:  # one draw per word: [0, p_mask) masks, [p_mask, p_mask + p) swaps
                draw = rng.random()
                if draw < self.p_mask:
                    out.append(lead + self.mask + trail)
                    continue
                swap = draw < self.p_mask + self.p
            else:  # without masking, the draw sequence of the swap-only augmenter (earlier runs reproduce)
                swap = tid is not None and rng.random() < self.p
            if tid is not None and swap:
                cands = self.neighbours(tid)
                if cands:
                    new = self.tokenizer.convert_ids_to_tokens(rng.choice(cands))
                    if core[:1].isupper():
                        new = new[:1].upper() + new[1:]
                    word = lead + new + trail
            out.append(word)
        if self.p_ngram and len(out) > 1 and rng.random() < self.p_ngram:
            n = rng.randint(1, min(self.max_ngram, len(out) - 1))  # strictly shorter than the text
            start = rng.randrange(len(out) - n + 1)
            out = out[start:start + n]
        return " ".join(out)

    def expand(self, frame: pd.DataFrame, regression: bool, copies: int) -> pd.DataFrame:
        """The originals, then `copies` unlabelled variants of every row (label -100, NaN for regression)."""
        if copies < 0:
            raise ValueError(f"augmentation copies must be >= 0, got {copies}")
        if copies == 0:
            return frame
        rng = random.Random(self.seed)
        rows = []
        for c in range(copies):
            for rec in frame.itertuples(index=False):
                rows.append({"text_a": self.variant(rec.text_a, rng),
                             "text_b": self.variant(rec.text_b, rng) if isinstance(rec.text_b, str) else rec.text_b,
                             "label": float("nan") if regression else -100, "idx": rec.idx})
        extra = pd.DataFrame(rows, columns=frame.columns)
        return pd.concat([frame, extra], ignore_index=True)
