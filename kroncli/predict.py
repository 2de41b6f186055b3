"""`kron predict FOLDER [TEXT ...]`: run an exported task model (kron export) on sentences.

An exported folder carries kron_export.json (EXPORT_JSON): task, label names, is_pair, format, max_seq_len,
the ONNX input names and the pad id. ONNX folders run on onnxruntime with the `tokenizers` library (no torch
import: a fast start); HF folders (Kronecker with remote code, or dense) run on transformers.

Inputs: the TEXT arguments are one input (one sentence, or two for a pair task); without arguments every
non-empty stdin line is one input: the two sentences of a pair separated by a tab, or a JSON object whose fields
are named as the task's training files named its text columns (the export's text_columns, e.g. {"subject": ...,
"body": ...}). Output: one JSON line per input, {"label": name, "label_id": class id, "score": probability,
"scores": {name: probability}}; for regression {"score": value}; for a multi-label task {"labels": [names whose
probability is above 0.5], "scores": {name: probability}}. The
names are the task model's id2label (`kron finetune` writes the names `datasets` gives GLUE's classes, e.g. MRPC's
not_equivalent / equivalent); an export made before that carries the ids as names ("0", "1").
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Iterable, Iterator

from .errors import KronError, first_line, silence_stdout, stdout_reader_gone

EXPORT_JSON = "kron_export.json"
ONNX_FILE = "model.onnx"
EXPORT_FORMAT_VERSION = 1
BATCH_SIZE = 32


def read_export(folder: str | Path) -> dict:
    folder = Path(folder)
    if not folder.is_dir():
        raise KronError(f"{folder} is not a folder; pass a folder written by kron export")
    path = folder / EXPORT_JSON
    if not path.is_file():
        from .workspace import Workspace

        if Workspace(folder).is_workspace():
            raise KronError(f"{folder} is a kron workspace, not an export; create one with kron export --workspace "
                            f"{folder} --task TASK --out {folder.name}-TASK, then kron predict {folder.name}-TASK")
        raise KronError(f"{folder} is not a kron export ({EXPORT_JSON} missing); create one with kron export "
                        f"--workspace WS --task TASK --out {folder}")
    try:
        meta = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise KronError(f"cannot read {path} ({e}); re-run kron export") from None
    if meta.get("export_format_version") != EXPORT_FORMAT_VERSION or meta.get("format") not in ("onnx", "hf"):
        raise KronError(f"{path} is not a kron export this version reads (format {meta.get('format')!r}, "
                        f"version {meta.get('export_format_version')}); re-run kron export")
    return meta


def _softmax(row: list[float]) -> list[float]:
    top = max(row)
    exp = [math.exp(v - top) for v in row]
    total = sum(exp)
    return [v / total for v in exp]


def label_names(config) -> list[str]:
    """The class names a model config gives (its id2label, in id order); [] for transformers' LABEL_0, LABEL_1, ...
    placeholders. What `kron export` records as the export's label_names."""
    id2label = getattr(config, "id2label", None) or {}
    names = [str(id2label[i]) for i in sorted(id2label, key=int)]
    return [] if all(n == f"LABEL_{i}" for i, n in enumerate(names)) else names


def format_row(logits, meta: dict) -> dict:
    row = [float(v) for v in logits]
    if meta.get("is_regression"):
        return {"score": row[0]}
    names = meta.get("label_names") or []
    name = lambda i: names[i] if i < len(names) else str(i)  # noqa: E731
    if meta.get("is_multilabel"):  # one sigmoid per label
        probs = [1.0 / (1.0 + math.exp(-v)) if v > -700 else 0.0 for v in row]
        return {"labels": [name(i) for i, p in enumerate(probs) if p > 0.5],
                "scores": {name(i): p for i, p in enumerate(probs)}}
    probs = _softmax(row)
    best = max(range(len(probs)), key=probs.__getitem__)
    return {"label": name(best), "label_id": best, "score": probs[best],
            "scores": {name(i): p for i, p in enumerate(probs)}}


class OnnxPredictor:
    """Text in, logits out: the export's tokenizer (tokenizers, else a slow transformers one) before the shared
    onnxruntime runner (export/onnx_runtime.py); numpy only, no torch."""

    def __init__(self, folder: Path, meta: dict, model_path: Path | None = None, threads: int | None = None):
        from .export.onnx_runtime import OnnxRunner

        self.meta, self.folder = meta, Path(folder)
        path = model_path or self.folder / meta.get("model_file", ONNX_FILE)
        if not Path(path).is_file():
            raise KronError(f"{self.folder} is not a complete kron export ({Path(path).name} missing); re-run "
                            f"kron export")
        self.runner = OnnxRunner(path, threads)
        self.names = self.runner.names
        self._tok, self._hf = self._tokenizer()

    def _tokenizer(self):
        max_len = int(self.meta.get("max_seq_len", 128))
        if (self.folder / "tokenizer.json").is_file():
            from tokenizers import Tokenizer

            tok = Tokenizer.from_file(str(self.folder / "tokenizer.json"))
            tok.no_padding()
            tok.enable_truncation(max_length=max_len)
            tok.enable_padding(pad_id=int(self.meta.get("pad_id") or 0),
                               pad_token=self.meta.get("pad_token") or "[PAD]")
            return tok, None
        from transformers import AutoTokenizer  # slow tokenizers only

        return None, AutoTokenizer.from_pretrained(self.folder)

    def encode(self, inputs: list[tuple]) -> dict:
        import numpy as np

        pair = bool(self.meta.get("is_pair"))
        if self._tok is not None:
            encs = self._tok.encode_batch([(a, b) if pair else a for a, b in inputs])
            cols = {"input_ids": [e.ids for e in encs], "attention_mask": [e.attention_mask for e in encs],
                    "token_type_ids": [e.type_ids for e in encs]}
            return {n: np.asarray(cols[n], dtype=np.int64) for n in self.names}
        a = [x[0] for x in inputs]
        b = [x[1] for x in inputs] if pair else None
        enc = self._hf(a, b, truncation=True, max_length=int(self.meta.get("max_seq_len", 128)), padding=True,
                       return_tensors="np")
        return {n: np.asarray(enc[n], dtype=np.int64) for n in self.names}

    def logits(self, inputs: list[tuple]):
        return self.runner.run(self.encode(inputs), "logits")


class HfRunner:
    """transformers (trust_remote_code for the Kronecker folder); torch on the CPU."""

    def __init__(self, folder: Path, meta: dict, threads: int | None = None):
        import torch
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        if threads:
            torch.set_num_threads(threads)
        self.meta, self.torch = meta, torch
        from .integrity import check_folder

        check_folder(folder, hint="re-run kron export")
        try:
            self.model = AutoModelForSequenceClassification.from_pretrained(folder, trust_remote_code=True).eval()
            self.tokenizer = AutoTokenizer.from_pretrained(folder, trust_remote_code=True)
        except (OSError, ValueError) as e:
            first = first_line(e)
            raise KronError(f"cannot load the export in {folder} ({first}); re-run kron export") from None

    def logits(self, inputs: list[tuple]):
        pair = bool(self.meta.get("is_pair"))
        a = [x[0] for x in inputs]
        b = [x[1] for x in inputs] if pair else None
        enc = self.tokenizer(a, b, truncation=True, max_length=int(self.meta.get("max_seq_len", 128)),
                             padding=True, return_tensors="pt")
        with self.torch.inference_mode():
            return self.model(**enc).logits.float().numpy()


# a tokenizer's vocabulary: without one, transformers builds a tokenizer that maps every word to [UNK]
VOCAB_FILES = ("tokenizer.json", "vocab.txt", "vocab.json", "spiece.model", "sentencepiece.bpe.model")


def load(folder: str | Path, threads: int | None = None):
    """(runner, meta) for an exported folder."""
    if threads is not None and threads < 1:
        raise KronError(f"--threads {threads} must be at least 1 (leave it out for the runtime's default)")
    meta = read_export(folder)
    if not any((Path(folder) / name).is_file() for name in VOCAB_FILES):
        raise KronError(f"{folder} is not a complete kron export (no tokenizer vocabulary: {VOCAB_FILES[0]} or "
                        f"{VOCAB_FILES[1]} missing); re-run kron export")
    if meta["format"] == "onnx":
        return OnnxPredictor(Path(folder), meta, threads=threads), meta
    return HfRunner(Path(folder), meta, threads=threads), meta


def _need(meta: dict) -> int:
    return 2 if meta.get("is_pair") else 1


def _describe(meta: dict) -> str:
    task = meta.get("task", "this task")
    return f"{task} takes two sentences" if meta.get("is_pair") else f"{task} takes one sentence"


def args_input(texts: list[str], meta: dict) -> list[tuple]:
    need = _need(meta)
    if len(texts) != need:
        how = "FIRST SECOND" if need == 2 else "TEXT"
        raise KronError(f"{_describe(meta)}, got {len(texts)} argument(s): pass {how}, or one input per stdin line"
                        + (" (the two sentences separated by a tab)" if need == 2 else ""))
    return [(texts[0], texts[1] if need == 2 else None)]


def stdin_lines() -> Iterator[str]:
    """stdin decoded here, whatever the locale: bytes that are not UTF-8 reach the line check as lone surrogates."""
    import sys

    return (raw.decode("utf-8", errors="surrogateescape") for raw in sys.stdin.buffer)


def lines_input(lines: Iterable[str], meta: dict) -> list[tuple]:
    """One input per non-empty line (tab between the sentences of a pair); a wrong count names the line.

    Every line is checked before the first prediction, so a bad line prints nothing but its error."""
    return list(_lines(lines, meta))


def _lines(lines: Iterable[str], meta: dict) -> Iterator[tuple]:
    need = _need(meta)
    for number, line in enumerate(lines, 1):
        line = line.rstrip("\r\n")
        if not line.strip():
            continue
        try:
            line.encode("utf-8")
        except UnicodeEncodeError:  # undecodable bytes arrive as lone surrogates
            raise KronError(f"stdin line {number} is not valid UTF-8; convert the input, e.g. with iconv") from None
        if line.lstrip().startswith("{"):
            yield _json_input(line, number, meta)
            continue
        parts = line.split("\t")
        if len(parts) != need:
            sep = "separated by one tab" if need == 2 else "without tabs"
            raise KronError(f"stdin line {number}: {_describe(meta)} ({sep}), got {len(parts)}: {line[:60]!r}")
        yield (parts[0], parts[1] if need == 2 else None)


def _json_input(line: str, number: int, meta: dict) -> tuple:
    """A JSON-object line: the texts under the task's text column names."""
    cols = meta.get("text_columns") or []
    try:
        record = json.loads(line)
    except json.JSONDecodeError as e:
        raise KronError(f"stdin line {number}: not a JSON object ({e.msg}); pass one JSON object or one text a "
                        "line") from None
    if not isinstance(record, dict) or not cols:
        raise KronError(f"stdin line {number}: a JSON line needs an export that names its text columns; re-run kron "
                        "export, or pass plain text lines")
    missing = [c for c in cols if c not in record]
    if missing:
        raise KronError(f"stdin line {number}: no field(s) {', '.join(map(repr, missing))} (the task reads "
                        f"{', '.join(cols)}; the line has {', '.join(record) or 'none'})")
    texts = [record[c] for c in cols]
    if any(not isinstance(t, str) or not t.strip() for t in texts):
        raise KronError(f"stdin line {number}: the field(s) {', '.join(cols)} must be non-empty strings")
    return (texts[0], texts[1] if len(texts) > 1 else None)


def predict_rows(runner, meta: dict, inputs: Iterable[tuple], batch_size: int = BATCH_SIZE) -> Iterator[dict]:
    """Batched predictions, one dict per input, in order."""
    batch: list[tuple] = []

    def flush():
        for row in runner.logits(batch):
            yield format_row(row, meta)

    for item in inputs:
        batch.append(item)
        if len(batch) >= batch_size:
            yield from flush()
            batch = []
    if batch:
        yield from flush()


def main(argv: list[str] | None = None) -> int:
    """`python -m kroncli.predict FOLDER [TEXT ...]`: the fast path (no typer/torch import for ONNX)."""
    import sys

    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print("usage: python -m kroncli.predict FOLDER [TEXT ...]  (no TEXT: one input per stdin line)")
        return 0 if argv else 2
    try:
        runner, meta = load(argv[0])
        inputs = args_input(argv[1:], meta) if len(argv) > 1 else lines_input(stdin_lines(), meta)
        for row in predict_rows(runner, meta, inputs):
            sys.stdout.write(json.dumps(row) + "\n")
        sys.stdout.flush()
    except KronError as e:
        sys.stderr.write(f"error: {e}\n")
        return 2
    except BrokenPipeError:  # `... | head -1`: quietly, as kron predict does
        if not stdout_reader_gone():
            raise
        return silence_stdout()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
