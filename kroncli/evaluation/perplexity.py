"""`kron eval ppl`: a decoder's perplexity on held-out text, teacher and student, and a greedy generation.

The sliding window of transformers' perplexity guide (docs: perplexity of fixed-length models): windows of
`max_length` tokens start every `stride` tokens; each window scores only the tokens the previous one did not, with
everything before them in the window as context. Every token but the first is scored exactly once (the guide's
count differs by one token per window; here the count is exact). stride == max_length: disjoint chunks, the
fastest and the most pessimistic; a smaller stride gives each token more context.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from .. import families, metrics_csv
from ..errors import KronError
from ..workspace import Workspace

DEFAULT_STRIDE = 512


@dataclass
class PplOptions:
    data: list[str]
    model: str | None = None  # student | teacher | None: both
    max_length: int | None = None  # window; default: the model's positions
    stride: int | None = None  # default: half the window (at most DEFAULT_STRIDE)
    prompts: list[str] = field(default_factory=list)  # default: the starts of the first lines of the data
    max_new_tokens: int = 20


def check_window(max_length: int, stride: int, positions: int | None) -> None:
    """Window and stride before any model runs."""
    if positions and max_length > positions:
        raise KronError(f"--max-length {max_length} exceeds the model's {positions} positions")
    if max_length < 2:
        raise KronError(f"--max-length {max_length}: a window needs at least 2 tokens")
    if not 1 <= stride <= max_length:
        raise KronError(f"--stride {stride} must be between 1 and the window (--max-length {max_length}): a larger "
                        "stride would skip the tokens between windows")


@torch.no_grad()
def perplexity(model, ids: list[int] | torch.Tensor, max_length: int, stride: int) -> dict:
    """Perplexity of `model` on the token stream `ids` (sliding window, see the module docstring)."""
    ids = torch.as_tensor(ids, dtype=torch.long).view(1, -1)
    seq_len = ids.shape[1]
    if seq_len < 2:
        raise KronError(f"the text has {seq_len} token(s); perplexity needs at least 2")
    device = next(model.parameters()).device
    nll, scored, prev_end = 0.0, 0, 0
    for begin in range(0, seq_len, stride):
        end = min(begin + max_length, seq_len)
        window = ids[:, begin:end].to(device)
        logits = model(input_ids=window).logits.float()
        first = max(prev_end, begin + 1) - begin  # window position of the first token not scored yet
        targets = window[0, first:]
        nll += float(F.cross_entropy(logits[0, first - 1:-1], targets, reduction="sum"))
        scored += targets.numel()
        prev_end = end
        if end == seq_len:
            break
    return {"perplexity": math.exp(nll / scored), "nll": nll / scored, "tokens": scored}


@torch.no_grad()
def greedy(model, tokenizer, prompts: list[str], max_new_tokens: int) -> list[dict]:
    """Each prompt continued greedily (KV cache on): a sanity check that the model writes text."""
    out = []
    for prompt in prompts:
        ids = tokenizer(prompt, add_special_tokens=False, return_tensors="pt")["input_ids"]
        ids = ids.to(next(model.parameters()).device)
        new = model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False, max_new_tokens=max_new_tokens,
                             pad_token_id=tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0)
        out.append({"prompt": prompt, "completion": tokenizer.decode(new[0, ids.shape[1]:], skip_special_tokens=True),
                    "tokens": new[0, ids.shape[1]:].tolist()})
    return out


def default_prompts(files: list[str], n: int = 3, words: int = 6) -> list[str]:
    from ..data.corpus import _read_lines, corpus_files

    return [" ".join(line.split()[:words]) for line in _read_lines(corpus_files(files) or [])[:n]]


def _models(ws: Workspace, which: str | None):
    """(name, loader) of the models to score: the student and the teacher it was factorized from."""
    from .. import sources
    from ..stages.common import teacher_source
    from ..student import load_student

    if which not in (None, "student", "teacher"):
        raise KronError(f"--model {which!r}: choose student or teacher (default: both)")
    out = []
    if which in (None, "teacher"):
        out.append(("teacher", lambda: sources.load_model(teacher_source(ws))[0]))
    if which in (None, "student"):
        out.append(("student", lambda: load_student(ws.student_dir)))
    return out


def evaluate_ppl(ws: Workspace, opts: PplOptions, log=lambda msg: None) -> dict:
    from transformers import AutoTokenizer

    from ..data.corpus import text_stream
    from ..evaluation.glue_eval import append_eval_rows
    from ..stages.common import require_student
    from ..workspace import now

    folder = require_student(ws, "causal_lm")  # an encoder: one line before anything loads
    config = __import__("transformers").AutoConfig.from_pretrained(folder)
    positions = families.max_positions(config)
    max_length = opts.max_length or positions or 1024
    stride = opts.stride or min(DEFAULT_STRIDE, max(1, max_length // 2))
    check_window(max_length, stride, positions)
    if opts.max_new_tokens < 0:
        raise KronError(f"--max-new-tokens {opts.max_new_tokens} must be >= 0")
    metrics_csv.check(ws.eval_csv)
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder)
    except (OSError, ValueError):
        raise KronError(f"{folder} has no tokenizer; re-run kron factorize on a model folder that has one") from None
    ids = text_stream(opts.data, tokenizer, log)
    prompts = opts.prompts or default_prompts(opts.data)
    split = ",".join(Path(d).name for d in opts.data)
    results, rows = [], []
    for name, load in _models(ws, opts.model):
        log(f"perplexity of the {name} on {len(ids):,} tokens (window {max_length}, stride {stride})")
        model = load().eval()
        t0 = time.perf_counter()
        scores = perplexity(model, ids, max_length, stride)
        seconds = time.perf_counter() - t0
        gen = greedy(model, tokenizer, prompts, opts.max_new_tokens) if opts.max_new_tokens else []
        results.append({"model": name, **scores, "seconds": round(seconds, 3), "generations": gen})
        stamp = now()
        rows += [{"workspace": str(ws.root), "model": name, "task": "ppl", "split": split, "metric": metric,
                  "value": scores[metric], "n": scores["tokens"], "seconds": round(seconds, 4), "timestamp": stamp}
                 for metric in ("perplexity", "nll")]
    path = append_eval_rows(ws, rows)
    return {"workspace": str(ws.root), "data": opts.data, "max_length": max_length, "stride": stride,
            "results": results, "eval_csv": str(path)}
