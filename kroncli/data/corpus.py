"""Stage-1 corpus: unlabeled text -> token ids packed into fixed-length sequences, cached per workspace.

Sources: one or more text files (one document or sentence per line), folders of them (*.txt, recursive),
or a `datasets` name (hub, when online; its "text" column). Lines are tokenised once, joined into one
stream and cut into [CLS] ... [SEP] blocks of `max_seq_len` tokens (TinyBERT-style packing), so no
compute is spent on padding. The result is cached in the workspace keyed by the sources' names, sizes and
modification times, the tokenizer and the length.
"""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path

import torch

from ..errors import KronError
from ..workspace import atomic_write_bytes

TEXT_SUFFIXES = {".txt", ".text", ".md", ".rst", ".tsv"}


def _looks_like_path(s: str) -> bool:
    return bool(Path(s).suffix) or s.startswith((".", "/", "~")) or s.count("/") > 1


def corpus_files(sources: list[str]) -> list[Path] | None:
    """Expand files and folders; None when the single source is a `datasets` name rather than a path."""
    if len(sources) == 1 and not Path(sources[0]).expanduser().exists() and not _looks_like_path(sources[0]):
        return None
    files: list[Path] = []
    for s in sources:
        p = Path(s).expanduser()
        if p.is_dir():
            found = sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in TEXT_SUFFIXES)
            if not found:
                raise KronError(f"corpus folder {p} holds no text files ({', '.join(sorted(TEXT_SUFFIXES))})")
            files += found
        elif p.is_file():
            files.append(p)
        else:
            raise KronError(f"corpus file {p} does not exist; pass existing text files or folders with --corpus")
    return files


def _read_lines(files: list[Path]) -> list[str]:
    """Non-empty lines; from .tsv files (e.g. GLUE) only the text fields: those containing a space."""
    lines = []
    for f in files:
        with open(f, encoding="utf-8-sig", errors="replace") as fh:
            if f.suffix.lower() == ".tsv":
                lines += [field.strip() for ln in fh for field in ln.split("\t") if " " in field.strip()]
            else:
                lines += [ln.strip() for ln in fh if ln.strip()]
    return lines


def _dataset_lines(name: str) -> list[str]:
    from ..sources import _hub_reachable

    if not _hub_reachable():
        raise KronError(f"corpus {name!r} is neither a file nor a folder, and the hub is unreachable (offline) "
                        "to load it as a datasets name; pass text files or a folder with --corpus")
    import datasets

    ds = datasets.load_dataset(name, split="train")
    col = "text" if "text" in ds.column_names else ds.column_names[0]
    return [t.strip() for t in ds[col] if isinstance(t, str) and t.strip()]


def _fingerprint(sources: list[str], files: list[Path], tokenizer, max_seq_len: int) -> str:
    h = hashlib.sha256()
    h.update(json.dumps([sources, max_seq_len, getattr(tokenizer, "name_or_path", ""),
                         len(tokenizer)]).encode())
    for f in files:
        st = f.stat()
        h.update(f"{f.resolve()}:{st.st_size}:{st.st_mtime_ns}".encode())
    return h.hexdigest()[:16]


def pack(ids: list[list[int]], max_seq_len: int, cls_id: int, sep_id: int) -> torch.Tensor:
    """Concatenate tokenised lines and cut into [CLS] body [SEP] rows of exactly max_seq_len tokens."""
    body = max_seq_len - 2
    stream = [t for line in ids for t in line]
    n = len(stream) // body
    if n == 0:
        raise KronError(f"the corpus has {len(stream)} tokens, fewer than one sequence of --max-seq-len "
                        f"{max_seq_len}; add text or lower --max-seq-len")
    blocks = torch.tensor(stream[: n * body], dtype=torch.int32).view(n, body)
    cls = torch.full((n, 1), cls_id, dtype=torch.int32)
    sep = torch.full((n, 1), sep_id, dtype=torch.int32)
    return torch.cat([cls, blocks, sep], dim=1)


def load_corpus(sources: list[str], tokenizer, max_seq_len: int, cache_dir: Path | None) -> torch.Tensor:
    """(N, max_seq_len) int32 token ids, from the cache when the sources have not changed."""
    if not sources:
        raise KronError("no corpus given; pass --corpus FILE_OR_FOLDER (one sentence or document per line)")
    if tokenizer is None:
        raise KronError("the student has no tokenizer; re-run kron factorize on a model folder that has one")
    files = corpus_files(sources)
    key = _fingerprint(sources, files or [], tokenizer, max_seq_len)
    cache = cache_dir / f"corpus-{key}.pt" if cache_dir else None
    if cache and cache.exists():
        return torch.load(cache)
    lines = _read_lines(files) if files is not None else _dataset_lines(sources[0])
    if not lines:
        raise KronError(f"the corpus ({', '.join(sources)}) is empty; give files with text in them")
    ids = tokenizer(lines, add_special_tokens=False, truncation=False)["input_ids"]
    packed = pack(ids, max_seq_len, tokenizer.cls_token_id, tokenizer.sep_token_id)
    if cache:
        buf = io.BytesIO()
        torch.save(packed, buf)
        atomic_write_bytes(cache, buf.getvalue())
    return packed
