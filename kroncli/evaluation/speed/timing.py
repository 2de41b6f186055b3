"""Timing: the same random token ids for every model, forwards interleaved (order flipped each repeat, the garbage
collector off), and the GPU's peak memory of one forward."""

from __future__ import annotations

import gc
import statistics
import time
from typing import Callable

MIB = 2 ** 20
INPUT_SEED = 0

LATENCY_METHOD = ("median of {repeats} forwards after {warmup} warm-up forwards, {who} interleaved "
                  "(order flipped each repeat), torch.inference_mode, fp32, random token ids, full attention mask")
GPU_MEMORY_METHOD = ("weight bytes + torch.cuda.max_memory_allocated() during one forward - "
                     "torch.cuda.memory_allocated() before it")


def make_inputs(batch: int, seq_len: int, vocab_size: int, device: str = "cpu") -> dict:
    import torch

    g = torch.Generator().manual_seed(INPUT_SEED)
    ids = torch.randint(0, vocab_size, (batch, seq_len), generator=g)
    return {"input_ids": ids.to(device), "attention_mask": torch.ones_like(ids).to(device)}


def time_interleaved(models: dict, inputs: dict, repeats: int, warmup: int, sync: Callable[[], None]) \
        -> dict[str, list[float]]:
    """Seconds per forward, models alternating (order flipped each repeat)."""
    import torch

    names = list(models)
    times: dict[str, list[float]] = {n: [] for n in names}
    with torch.inference_mode():
        for _ in range(warmup):
            for n in names:
                models[n](**inputs)
        sync()
        gc.collect()
        was_enabled = gc.isenabled()
        gc.disable()
        try:
            for r in range(repeats):
                for n in (names if r % 2 == 0 else names[::-1]):
                    sync()
                    t0 = time.perf_counter()
                    models[n](**inputs)
                    sync()
                    times[n].append(time.perf_counter() - t0)
        finally:
            if was_enabled:
                gc.enable()
    return times


def gpu_peak_memory(model, inputs: dict) -> float:
    """MiB: the model's weight bytes + the extra memory one forward allocates at its peak."""
    import torch

    weights = sum(p.numel() * p.element_size() for p in model.parameters()) + \
        sum(b.numel() * b.element_size() for b in model.buffers())
    torch.cuda.synchronize()
    before = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    with torch.inference_mode():
        model(**inputs)
    torch.cuda.synchronize()
    return (weights + torch.cuda.max_memory_allocated() - before) / MIB


GENERATE_METHOD = ("a decoder: prefill = the forward above over the whole (batch, seq_len) prompt; generate = greedy "
                   "generate() of exactly {new_tokens} new tokens after that prompt with the KV cache, median of "
                   "{repeats} after {warmup} warm-up, teacher and student interleaved; tokens/s = batch x new "
                   "tokens / time")


class Generating:
    """A decoder called like a model in `time_interleaved`, but generating `new_tokens` greedy tokens (KV cache)."""

    def __init__(self, model, new_tokens: int):
        self.model, self.new_tokens = model, new_tokens

    def __call__(self, **inputs):
        return self.model.generate(**inputs, do_sample=False, max_new_tokens=self.new_tokens,
                                   min_new_tokens=self.new_tokens, use_cache=True, pad_token_id=0)


def generate_rows(models: dict, about: dict, inputs: dict, opts, sync, base: dict) -> list[dict]:
    """A decoder's generated tokens per second with the KV cache, teacher and student interleaved."""
    gen = {role: Generating(m, opts.new_tokens) for role, m in models.items()}
    times = time_interleaved(gen, inputs, opts.repeats, opts.warmup, sync)
    med = {key: statistics.median(t) for key, t in times.items()}
    b = inputs["input_ids"].shape[0]
    return [{**base, "model": about[key]["label"], "latency_ms": med[key] * 1e3,
             "throughput_seq_s": b / med[key], "tokens_s": b * opts.new_tokens / med[key],
             "speedup": med["teacher"] / med[key], "params": about[key]["params"], "size_mib": about[key]["size_mib"],
             "peak_mem_mib": None, "role": key, "latency_ms_min": min(times[key]) * 1e3,
             "latency_ms_max": max(times[key]) * 1e3, "phase": "generate", "new_tokens": opts.new_tokens}
            for key in gen]
