"""SQuAD v1.1 / v2.0: task names, loading (official JSON or the hub) and feature preparation.

Sources, in order: ``--train-file`` / ``--dev-file`` (a file in the official format); the folder
``data_dir`` (else ``$KRON_SQUAD_DIR``, else ``../shared/squad`` when it exists) holding the official file
names ``train-v1.1.json`` / ``dev-v1.1.json`` or ``train-v2.0.json`` / ``dev-v2.0.json``; the hub
(``rajpurkar/squad``, ``rajpurkar/squad_v2``), only when online. A file or folder named explicitly never
falls back to the hub: a missing file there is an error that names it.

The official format::

    {"version": "v2.0", "data": [{"title": ..., "paragraphs": [{"context": ..., "qas": [
        {"id": ..., "question": ..., "answers": [{"text": ..., "answer_start": 17}], "is_impossible": false}]}]}]}

Malformed JSON, a missing key or a wrong type is a KronError naming the file and where in it.

Features (the Hugging Face recipe): question + context tokenised with a fast tokenizer, the context truncated
to windows of `max_seq_len` tokens that overlap by `doc_stride` tokens (``return_overflowing_tokens``);
questions longer than ``min(64, max_seq_len - doc_stride - 4)`` tokens are cut. Training windows get the
token positions of the first gold answer, or the CLS position when the question is unanswerable or the answer
is not wholly inside the window. Evaluation windows keep the character offsets of their context tokens
(-1 elsewhere) and the example they come from, for `kroncli.squad_metrics.postprocess`.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..errors import KronError, first_line

ENV_DIR = "KRON_SQUAD_DIR"
HUB = {1: "rajpurkar/squad", 2: "rajpurkar/squad_v2"}
FILES = {(1, "train"): "train-v1.1.json", (1, "dev"): "dev-v1.1.json",
         (2, "train"): "train-v2.0.json", (2, "dev"): "dev-v2.0.json"}
TASK_NAMES = {1: "squad", 2: "squad_v2"}
DATA_DIR_HINT = (f"pass --data-dir DIR holding the official files ({', '.join(FILES.values())}), "
                 f"--train-file/--dev-file, or set {ENV_DIR}")
MAX_QUERY_LEN = 64

_ALIASES = {"squad": 1, "squad1": 1, "squadv1": 1, "squad11": 1, "squadv11": 1,
            "squad2": 2, "squadv2": 2, "squad20": 2, "squadv20": 2}


def squad_version(name: str) -> int | None:
    """1 or 2 for a SQuAD task name (squad, squad1, squad_v1.1, squad2, squad_v2, squad-v2 ...), else None."""
    return _ALIASES.get(re.sub(r"[^a-z0-9]", "", str(name).lower()))


def parse_version(value) -> int:
    """--version: 1, 1.1, v1, 2, 2.0, v2 -> 1 or 2; anything else a KronError."""
    text = str(value).strip().lower().lstrip("v")
    version = {"1": 1, "1.1": 1, "2": 2, "2.0": 2}.get(text)
    if version is None:
        raise KronError(f"--version {value!r} is not a SQuAD version; pass 1 (v1.1) or 2 (v2.0)")
    return version


def task_name(version: int) -> str:
    return TASK_NAMES[version]


@dataclass(frozen=True)
class SquadTask:
    """A SQuAD version as a task: what the CLI and recipe edge parse a name into (its name is its folder)."""

    version: int

    @property
    def name(self) -> str:
        return TASK_NAMES[self.version]


SQUAD_TASKS = {v: SquadTask(v) for v in TASK_NAMES}


def find_squad_task(name) -> SquadTask | None:
    """The SquadTask for any spelling `squad_version` accepts (a SquadTask itself), else None."""
    if isinstance(name, SquadTask):
        return name
    version = squad_version(name)
    return SQUAD_TASKS[version] if version else None


@dataclass
class SquadExample:
    """One question. `answers`: gold texts, `answer_starts`: their character offsets in the context."""

    id: str
    question: str
    context: str
    answers: list[str] = field(default_factory=list)
    answer_starts: list[int] = field(default_factory=list)
    title: str = ""

    @property
    def is_impossible(self) -> bool:
        return not self.answers


# ------------------------------------------------------------------------------------------------ loading

def _check(cond: bool, where: str, what: str) -> None:
    if not cond:
        raise KronError(f"{where}: {what}; expected the official SQuAD JSON format "
                        '({"data": [{"title", "paragraphs": [{"context", "qas": [{"id", "question", "answers"}]}]}]})')


def parse_squad(obj, origin: str, version: int) -> list[SquadExample]:
    """Examples from the official JSON structure; KronError naming `origin` and the place of any problem."""
    _check(isinstance(obj, dict) and isinstance(obj.get("data"), list), origin, 'no top-level "data" list')
    out: list[SquadExample] = []
    seen: set[str] = set()
    for a, article in enumerate(obj["data"]):
        where = f"{origin}: data[{a}]"
        _check(isinstance(article, dict) and isinstance(article.get("paragraphs"), list), where,
               'no "paragraphs" list')
        title = article.get("title") or ""
        for p, para in enumerate(article["paragraphs"]):
            pw = f"{where}.paragraphs[{p}]"
            _check(isinstance(para, dict) and isinstance(para.get("context"), str), pw, 'no "context" string')
            _check(isinstance(para.get("qas"), list), pw, 'no "qas" list')
            context = para["context"]
            for q, qa in enumerate(para["qas"]):
                qw = f"{pw}.qas[{q}]"
                _check(isinstance(qa, dict), qw, "not an object")
                for key, kind in (("id", (str, int)), ("question", str), ("answers", list)):
                    _check(isinstance(qa.get(key), kind), qw, f'no {key!r} ({"list" if key == "answers" else "string"})')
                qid = str(qa["id"])
                if qid in seen:
                    raise KronError(f"{qw}: question id {qid!r} appears twice; SQuAD ids must be unique")
                seen.add(qid)
                texts, starts = [], []
                impossible = bool(qa.get("is_impossible", False))
                for k, ans in enumerate([] if impossible else qa["answers"]):
                    aw = f"{qw}.answers[{k}]"
                    _check(isinstance(ans, dict) and isinstance(ans.get("text"), str), aw, 'no "text" string')
                    start = ans.get("answer_start")
                    _check(isinstance(start, int) and not isinstance(start, bool) and 0 <= start <= len(context),
                           aw, f'"answer_start" {start!r} is not a character offset in the context')
                    texts.append(ans["text"])
                    starts.append(start)
                if not texts and version == 1:
                    raise KronError(f"{qw}: question {qid!r} has no answer, which SQuAD v1.1 does not allow; "
                                    "this looks like v2.0 data: use --version 2 / --task squad_v2")
                out.append(SquadExample(qid, qa["question"], context, texts, starts, title))
    if not out:
        raise KronError(f"{origin}: no questions found")
    return out


def read_squad_json(path: str | Path, version: int) -> list[SquadExample]:
    """Examples from one file in the official SQuAD JSON format."""
    path = Path(path).expanduser()
    if path.is_dir():
        raise KronError(f"{path} is a folder; pass the JSON file (or use --data-dir for a folder)")
    if not path.is_file():
        raise KronError(f"{path} does not exist; pass a SQuAD file in the official JSON format")
    try:
        obj = json.loads(path.read_text(encoding="utf-8-sig"))
    except UnicodeDecodeError as e:
        raise KronError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    except json.JSONDecodeError as e:
        raise KronError(f"{path}: not valid JSON ({e.msg} at line {e.lineno} column {e.colno})") from None
    return parse_squad(obj, str(path), version)


def default_data_dir() -> Path | None:
    """`$KRON_SQUAD_DIR` if set, else `../shared/squad` if it exists."""
    env = os.environ.get(ENV_DIR)
    if env:
        return Path(env).expanduser()
    shared = Path.cwd().parent / "shared" / "squad"
    return shared if shared.is_dir() else None


def _online() -> bool:
    if any(os.environ.get(v, "").lower() in {"1", "true", "yes", "on"}
           for v in ("HF_DATASETS_OFFLINE", "HF_HUB_OFFLINE")):
        return False
    from ..sources import _hub_reachable

    return _hub_reachable(timeout=3.0)


def _from_hub(version: int, split: str, expected: str) -> list[SquadExample]:
    name = HUB[version]
    if not _online():
        raise KronError(f"no local SQuAD v{'1.1' if version == 1 else '2.0'} {split} data{expected} and the "
                        f"Hugging Face hub is unreachable (offline); {DATA_DIR_HINT}")
    try:
        import datasets
    except ImportError:
        raise KronError(f"SQuAD must come from the hub but the `datasets` package is missing; {DATA_DIR_HINT}") \
            from None
    hub_split = "validation" if split == "dev" else split
    try:
        ds = datasets.load_dataset(name, split=hub_split)
    except Exception as e:  # network, cache or hub errors: one line and the local alternative
        first = first_line(e)
        raise KronError(f"could not load {name} {hub_split} from the hub ({first}); {DATA_DIR_HINT}") from None
    out = []
    for row in ds:
        answers = row["answers"]
        out.append(SquadExample(str(row["id"]), row["question"], row["context"], list(answers["text"]),
                                [int(s) for s in answers["answer_start"]], row.get("title") or ""))
    return out


def load_squad(version: int, split: str, data_dir: str | Path | None = None, file: str | Path | None = None
               ) -> list[SquadExample]:
    """The train or dev questions of SQuAD v1.1 (`version=1`) or v2.0 (see the module docstring)."""
    if split not in ("train", "dev"):
        raise KronError(f"SQuAD has no split {split!r}; use train or dev")
    if file is not None:
        return read_squad_json(file, version)
    origin = "--data-dir" if data_dir is not None else ENV_DIR if os.environ.get(ENV_DIR) else None
    root = Path(data_dir).expanduser() if data_dir is not None else default_data_dir()
    expected = ""
    if root is not None:
        path = root / FILES[(version, split)]
        if origin and not root.is_dir():
            raise KronError(f"{origin} {root} is not a directory; point it at the folder holding {path.name}")
        if path.is_file():
            return read_squad_json(path, version)
        if origin:
            raise KronError(f"{origin} {root} has no {path.name} (expected {path}); put the official SQuAD "
                            f"file there or pass --{split}-file")
        expected = f" (expected {path})"
    return _from_hub(version, split, expected)


# ------------------------------------------------------------------------------------------------ features

class SquadFeatures(torch.utils.data.Dataset):
    """Tokenised windows. Items: input_ids/token_type_ids/attention_mask (unpadded int arrays) and, for
    training, start_positions/end_positions. Evaluation windows also carry, outside the items,
    `example_index` (the question they belong to), `offsets` ((n, 2) character spans, -1 outside the context)
    and `cls_index`."""

    def __init__(self, items: list[dict], example_index: list[int], offsets: list[np.ndarray] | None,
                 cls_index: list[int]):
        self.items, self.example_index, self.offsets, self.cls_index = items, example_index, offsets, cls_index

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        return self.items[i]


def _check_tokenizer(tokenizer) -> None:
    if not getattr(tokenizer, "is_fast", False):
        raise KronError(f"SQuAD needs a fast tokenizer (character offsets); {type(tokenizer).__name__} is not one. "
                        "Factorize a model folder with a tokenizer.json")


def query_limit(max_seq_len: int, doc_stride: int) -> int:
    """Question tokens kept: the tokenizer needs room for the stride in every context window."""
    if doc_stride < 0:
        raise KronError(f"--doc-stride {doc_stride} must be >= 0")
    limit = min(MAX_QUERY_LEN, max_seq_len - doc_stride - 4)
    if limit < 1:
        raise KronError(f"--doc-stride {doc_stride} leaves no room in --max-seq-len {max_seq_len}; the stride "
                        "must be smaller than the context part of a window (e.g. 128 with 384)")
    return limit


def _cut_questions(questions: list[str], tokenizer, limit: int) -> list[str]:
    enc = tokenizer([q.lstrip() for q in questions], add_special_tokens=False, return_offsets_mapping=True)
    out = []
    for q, offs in zip(questions, enc["offset_mapping"]):
        q = q.lstrip()
        out.append(q[: offs[limit - 1][1]] if len(offs) > limit else q)
    return out


def _tokenize(examples: list[SquadExample], tokenizer, max_seq_len: int, doc_stride: int):
    _check_tokenizer(tokenizer)
    questions = _cut_questions([e.question for e in examples], tokenizer, query_limit(max_seq_len, doc_stride))
    contexts = [e.context for e in examples]
    q_first = tokenizer.padding_side == "right"
    pair = (questions, contexts) if q_first else (contexts, questions)
    enc = tokenizer(*pair, truncation="only_second" if q_first else "only_first", max_length=max_seq_len,
                    stride=doc_stride, return_overflowing_tokens=True, return_offsets_mapping=True)
    return enc, (1 if q_first else 0)


def _window_items(enc, k: int) -> dict:
    """Compact arrays (SQuAD train has ~88k windows): int32 ids, int8 masks; the collate makes them long."""
    item = {"input_ids": np.asarray(enc["input_ids"][k], dtype=np.int32)}
    for key in ("token_type_ids", "attention_mask"):
        if key in enc:
            item[key] = np.asarray(enc[key][k], dtype=np.int8)
    return item


def _cls(ids, tokenizer) -> int:
    cls_id = tokenizer.cls_token_id
    return ids.index(cls_id) if cls_id is not None and cls_id in ids else 0


def prepare_features(examples: list[SquadExample], tokenizer, max_seq_len: int = 384, doc_stride: int = 128,
                     train: bool = True, chunk: int = 1000) -> SquadFeatures:
    """Windows of `max_seq_len` tokens overlapping by `doc_stride`; training targets or evaluation offsets."""
    items, example_index, offsets, cls_index = [], [], [], []
    for base in range(0, len(examples), chunk):
        part = examples[base: base + chunk]
        enc, ctx_seq = _tokenize(part, tokenizer, max_seq_len, doc_stride)
        for k, i in enumerate(enc["overflow_to_sample_mapping"]):
            ex = part[i]
            item = _window_items(enc, k)
            seq_ids = enc.sequence_ids(k)
            offs = enc["offset_mapping"][k]
            cls = _cls(enc["input_ids"][k], tokenizer)
            span = np.asarray([o if s == ctx_seq else (-1, -1) for o, s in zip(offs, seq_ids)],
                              dtype=np.int32).reshape(-1, 2)
            if train:
                item["start_positions"], item["end_positions"] = _positions(ex, span, cls)
            else:
                offsets.append(span)
            items.append(item)
            example_index.append(base + i)
            cls_index.append(cls)
    return SquadFeatures(items, example_index, None if train else offsets, cls_index)


def _positions(ex: SquadExample, span: np.ndarray, cls: int) -> tuple[int, int]:
    """Token start/end of the first gold answer in this window, or (cls, cls)."""
    if not ex.answers:
        return cls, cls
    start_char = ex.answer_starts[0]
    end_char = start_char + len(ex.answers[0])
    ctx = np.nonzero(span[:, 0] >= 0)[0]
    if not len(ctx) or span[ctx[0], 0] > start_char or span[ctx[-1], 1] < end_char:
        return cls, cls  # not wholly inside this window
    first, last = int(ctx[0]), int(ctx[-1])
    s = first
    while s <= last and span[s, 0] <= start_char:
        s += 1
    e = last
    while e >= first and span[e, 1] >= end_char:
        e -= 1
    return s - 1, e + 1


class SquadCollate:
    """Pad a list of windows on the right to the longest (token positions stay valid); start/end positions
    become long tensors."""

    def __init__(self, tokenizer):
        self.pad_id = tokenizer.pad_token_id or 0

    def __call__(self, rows: list[dict]) -> dict:
        width = max(len(r["input_ids"]) for r in rows)
        batch = {}
        for key in ("input_ids", "token_type_ids", "attention_mask"):
            if key not in rows[0]:
                continue
            fill = self.pad_id if key == "input_ids" else 0
            out = torch.full((len(rows), width), fill, dtype=torch.long)
            for j, r in enumerate(rows):
                v = torch.as_tensor(np.asarray(r[key]), dtype=torch.long)
                out[j, : len(v)] = v
            batch[key] = out
        for key in ("start_positions", "end_positions"):
            if key in rows[0]:
                batch[key] = torch.tensor([int(r[key]) for r in rows], dtype=torch.long)
        return batch
