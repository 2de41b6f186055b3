"""The one onnxruntime runner of an exported graph, shared by `kron predict`, `kron export --quantize`'s dev check and
`kron eval speed`. numpy only, no torch import (kron predict on ONNX starts fast); torch CPU tensors are fed as they
are (numpy reads them through __array__)."""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

from ..errors import KronError, first_line

INPUT_NAMES = ("input_ids", "attention_mask", "token_type_ids")


def session(path: Path | str, threads: int | None = None, spinning: bool = True):
    """An onnxruntime CPU session (intra-op threads: `threads`, else onnxruntime's default). `spinning=False`:
    idle intra-op threads sleep instead of busy-waiting (for timing it between other models)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    if threads:
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
    if not spinning:
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    opts.log_severity_level = 3
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


class OnnxRunner:
    """An exported graph on onnxruntime's CPU provider, fed by input name.

    The graph gets the inputs it names; token_type_ids, when it takes them and the caller has none, are zeros (what
    the PyTorch models use when it is not given). The feed of the last inputs is kept, so that calling it again on
    the same arrays (a timing loop) converts nothing. One-line KronErrors: `label` (e.g. "--onnx DIR") and `hint`
    word them for the caller; without a label they name the file.
    """

    def __init__(self, path: Path | str, threads: int | None = None, spinning: bool = True, *,
                 label: str | None = None, hint: str = "re-run kron export",
                 run_hint: str = "check that the inputs fit the export"):
        try:
            import onnxruntime  # noqa: F401
        except ImportError:
            raise KronError('an ONNX export needs onnxruntime: pip install "kroncli[export]"') from None
        self.path, self.label, self.run_hint = Path(path), label, run_hint
        try:
            self.session = session(self.path, threads, spinning)
        except Exception as e:  # onnxruntime's own types (InvalidProtobuf, Fail, InvalidGraph, ...): a damaged file
            where = f"{label}: onnxruntime cannot load {self.path.name}" if label else f"cannot load {self.path}"
            raise KronError(f"{where} ({first_line(e)}); {hint}") from None
        self.names = [i.name for i in self.session.get_inputs()]
        self.outputs = [o.name for o in self.session.get_outputs()]
        self._source: tuple = ()
        self._feed: dict = {}

    def feed(self, inputs: Mapping) -> dict:
        """{graph input: int64 array} for `inputs` (built once per set of input objects)."""
        import numpy as np

        source = tuple(inputs.values())
        if len(source) != len(self._source) or any(a is not b for a, b in zip(source, self._source)):
            arrays = {k: np.ascontiguousarray(v, dtype=np.int64) for k, v in inputs.items()}
            if "input_ids" in arrays:
                arrays.setdefault("token_type_ids", np.zeros_like(arrays["input_ids"]))
            self._source, self._feed = source, {n: arrays[n] for n in self.names}
        return self._feed

    def run(self, inputs: Mapping, output: str | None = None):
        """The graph's `output` (default: its first) on `inputs`."""
        feed = self.feed(inputs)
        try:
            return self.session.run([output or self.outputs[0]], feed)[0]
        except Exception as e:  # onnxruntime's own types: a shape or type the graph does not take
            shape = "x".join(str(d) for d in next(iter(feed.values())).shape) if feed else "empty"
            raise KronError(f"{self.label or self.path}: onnxruntime failed on a {shape} input ({first_line(e)}); "
                            f"{self.run_hint}") from None

    def __call__(self, **inputs):
        """Called like the PyTorch models: runner(input_ids=..., attention_mask=...)."""
        return self.run(inputs)
