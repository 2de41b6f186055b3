"""`kron export --format onnx`: the task model as an ONNX graph that keeps the Kronecker factors.

torch.onnx.export with the TorchScript exporter (`dynamo=False`: fast, no onnxscript needed, exact on these
models), eager attention, dynamic batch and sequence axes, opset 17. The Kronecker modules export as their
factor MatMuls (the dense A (x) B is never built in forward, so it never appears as an initializer). After the
export, onnxruntime's logits are compared with PyTorch's on real tokenised sentence pairs; a difference above
PARITY_TOL fails the export.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from ..errors import KronError
from .onnx_runtime import INPUT_NAMES, session  # noqa: F401  (session: also for the benchmarks)

OPSET = 17
PARITY_TOL = 1e-4  # max |logit difference| onnxruntime vs PyTorch, fp32

# Real sentence pairs of different lengths (tokenised with the model's own tokenizer for the parity check).
PARITY_PAIRS = [
    ("The cat sat on the mat.", "A cat was sitting on a mat."),
    ("Stocks fell 3% on Monday after the report.", "Shares dropped on Monday."),
    ("He said \"hi.", "Nobody said anything at all, not even a single word, during the long meeting."),
    ("The company's revenue rose 12 percent in the third quarter.", "Revenue grew."),
    ("Plain words here.", "Plain words here."),
]


def require_onnx():
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError:
        raise KronError('ONNX export needs onnx and onnxruntime: pip install "kroncli[export]"') from None


def input_names(tokenizer) -> list[str]:
    names = [n for n in INPUT_NAMES if n in getattr(tokenizer, "model_input_names", INPUT_NAMES)]
    return names if "input_ids" in names else list(INPUT_NAMES)


class _Logits(torch.nn.Module):
    """Positional inputs -> logits (what the ONNX graph computes); `extra` keyword arguments for every call."""

    def __init__(self, model, names, **extra):
        super().__init__()
        self.model, self.names, self.extra = model, list(names), extra

    def forward(self, *args):
        return self.model(**dict(zip(self.names, args)), **self.extra).logits


def encode_pairs(tokenizer, pairs, is_pair: bool, max_seq_len: int, names) -> dict[str, np.ndarray]:
    a = [p[0] for p in pairs]
    b = [p[1] for p in pairs] if is_pair else None
    enc = tokenizer(a, b, truncation=True, max_length=max_seq_len, padding=True, return_tensors="np")
    return {n: np.asarray(enc[n], dtype=np.int64) for n in names}


def export_onnx(model, tokenizer, path: Path, is_pair: bool = True, max_seq_len: int = 128,
                causal: bool = False) -> list[str]:
    """Write `path` (a single .onnx file); returns the graph's input names. `causal`: a decoder's forward pass,
    without the KV cache (logits for every position: dynamic sequence axis)."""
    require_onnx()
    names = input_names(tokenizer)
    if hasattr(model, "set_attn_implementation"):
        try:
            model.set_attn_implementation("eager")
        except (ValueError, AttributeError):
            pass
    model = model.eval().float().to("cpu")
    sample = encode_pairs(tokenizer, PARITY_PAIRS[:2], is_pair, max_seq_len, names)
    args = tuple(torch.from_numpy(sample[n]) for n in names)
    axes = {n: {0: "batch", 1: "sequence"} for n in names}
    axes["logits"] = {0: "batch", 1: "sequence"} if causal else {0: "batch"}
    import warnings

    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        # eval(): the exporter restores the wrapper's mode, and with it the model's (dropout on)
        wrapper = _Logits(model, names, **({"use_cache": False} if causal else {}))
        torch.onnx.export(wrapper.eval(), args, str(path), input_names=names, output_names=["logits"],
                          dynamic_axes=axes, opset_version=OPSET, dynamo=False, do_constant_folding=True)
    return names


def parity(path: Path, model, tokenizer, is_pair: bool, max_seq_len: int = 128) -> dict:
    """Max |logits onnxruntime - logits PyTorch| on PARITY_PAIRS (one padded batch, then one pair alone)."""
    model.eval()
    sess = session(path)
    names = [i.name for i in sess.get_inputs()]
    diffs = []
    for pairs in (PARITY_PAIRS, PARITY_PAIRS[2:3]):
        feed = encode_pairs(tokenizer, pairs, is_pair, max_seq_len, names)
        with torch.no_grad():
            ref = model(**{k: torch.from_numpy(v) for k, v in feed.items()}).logits.float().numpy()
        got = sess.run(["logits"], feed)[0]
        diffs.append(float(np.abs(got - ref).max()))
    return {"max_abs_diff": max(diffs), "tolerance": PARITY_TOL, "pairs": len(PARITY_PAIRS)}


def initializer_shapes(path: Path | str) -> list[tuple[int, ...]]:
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    return [tuple(int(d) for d in init.dims) for init in graph.initializer]


def file_bytes(path: Path | str) -> int:
    return os.path.getsize(path)
