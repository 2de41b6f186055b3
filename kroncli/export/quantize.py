"""`kron export --quantize int8`: dynamic int8 quantisation of the exported ONNX graph.

onnxruntime.quantization.quantize_dynamic on the fp32 graph: the weights of MatMul/Gemm nodes (here the
Kronecker factors and the dense head) become int8 with per-tensor scales; activations are quantised on the
fly. The accuracy change is measured on the task's dev split through the same runner `kron predict` uses.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np

from ..data.glue import Task, load_split
from ..errors import KronError


def quantize_int8(fp32: Path, int8: Path) -> dict:
    try:
        from onnxruntime.quantization import QuantType, quantize_dynamic
    except ImportError:
        raise KronError('--quantize int8 needs onnxruntime: pip install "kroncli[export]"') from None
    import logging

    logging.getLogger().setLevel(logging.ERROR)  # the quantiser suggests pre-processing on every call
    quantize_dynamic(str(fp32), str(int8), weight_type=QuantType.QInt8)
    return {"fp32_bytes": os.path.getsize(fp32), "int8_bytes": os.path.getsize(int8),
            "size_ratio": os.path.getsize(fp32) / max(os.path.getsize(int8), 1)}


def dev_accuracy(folder: Path, meta: dict, fp32: Path, int8: Path, task: Task, data_dir, limit: int | None,
                 explicit_dir: bool) -> dict:
    """Task metrics of the fp32 and the int8 graph on the dev split (first `limit` rows), or a skip note."""
    from ..evaluation.glue_eval import score_logits
    from ..predict import OnnxPredictor

    if limit == 0:
        return {"skipped": "--eval-limit 0"}
    if data_dir is None:
        return {"skipped": "no GLUE data (pass --data-dir DIR or set KRON_GLUE_DIR) to measure the accuracy change"}
    split = task.eval_splits[0]
    try:
        frame = load_split(task, split, data_dir)
    except KronError as e:
        if explicit_dir:
            raise
        return {"skipped": f"no {task.name} {split} data: {e}"}
    if limit:
        frame = frame.iloc[:limit]
    if len(frame) == 0:
        raise KronError(f"{task.name} {split}: no examples to evaluate (empty split)")
    inputs = list(zip(frame["text_a"].tolist(), frame["text_b"].tolist() if task.is_pair else [None] * len(frame)))
    out = {"split": split, "n": len(frame)}
    logits = {}
    for name, path in (("fp32", fp32), ("int8", int8)):
        runner = OnnxPredictor(folder, meta, model_path=path)
        t0 = time.perf_counter()
        logits[name] = np.concatenate([runner.logits(inputs[i:i + 32]) for i in range(0, len(inputs), 32)])
        out[f"{name}_seconds"] = time.perf_counter() - t0
        out[name] = score_logits(task, logits[name], frame["label"])
    out["delta"] = {k: out["int8"][k] - out["fp32"][k] for k in out["fp32"]}
    out["max_abs_logit_diff"] = float(np.abs(logits["int8"] - logits["fp32"]).max())
    return out
