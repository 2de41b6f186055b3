"""Stage-1 corpus: unlabeled text -> token ids packed into fixed-length sequences, cached per workspace.

Sources: one or more text files (one document or sentence per line; plain or compressed .gz / .xz / .bz2),
folders of them (*.txt, *.txt.gz, ..., recursive), or a `datasets` name (hub, when online; its "text" column).
Lines are tokenised once, joined into one stream and cut into blocks of `max_seq_len` tokens (TinyBERT-style
packing), so no compute is spent on padding. By default a block has two segments, [CLS] A [SEP] B [SEP], split
at the line boundary nearest its middle, the layout of BERT's pre-training and of every GLUE pair task: a
student distilled only on one-segment blocks never sees a mid-sequence [SEP] or segment-B tokens before stage
2. The collate derives token_type_ids from the [SEP]s. The result is cached in the workspace keyed by the
sources' names, sizes and modification times, the tokenizer and the length.
"""

from __future__ import annotations

import bz2
import codecs
import gzip
import hashlib
import io
import json
import lzma
import warnings
from pathlib import Path
from typing import Callable

import torch

from ..errors import KronError
from ..workspace import atomic_write_bytes

TEXT_SUFFIXES = {".txt", ".text", ".md", ".rst", ".tsv"}
COMPRESSED = {".gz": gzip.open, ".xz": lzma.open, ".bz2": bz2.open}
NOT_UTF8_WARN = 0.001  # share of a file's bytes read as U+FFFD above which the file is named in a warning


class _CountReplaced:
    """errors="replace" that counts the bytes it replaces (codec error handlers are registered by name)."""

    NAME = "kroncli-count-replace"

    def __init__(self):
        self.bytes = 0

    def __call__(self, error: UnicodeDecodeError):
        self.bytes += error.end - error.start
        return "\ufffd", error.end


_replaced = _CountReplaced()
codecs.register_error(_CountReplaced.NAME, _replaced)


def _inner_suffix(path: Path) -> str:
    """The text suffix under a compression one: `notes.txt.gz` -> `.txt`."""
    suffixes = [x.lower() for x in path.suffixes]
    if suffixes and suffixes[-1] in COMPRESSED:
        suffixes = suffixes[:-1]
    return suffixes[-1] if suffixes else ""


def _is_text_file(path: Path) -> bool:
    return path.is_file() and _inner_suffix(path) in TEXT_SUFFIXES


def _open_binary(path: Path):
    opener = COMPRESSED.get(path.suffix.lower())
    return opener(path, "rb") if opener else open(path, "rb")


def _looks_like_path(s: str) -> bool:
    return bool(Path(s).suffix) or s.startswith((".", "/", "~")) or s.count("/") > 1 or s.endswith("/")  # corpus/


def corpus_files(sources: list[str]) -> list[Path] | None:
    """Expand files and folders; None when the single source is a `datasets` name rather than a path. `task:NAME`
    entries (a task's training text, stages.distill.task_corpus) are not files yet and are left out."""
    sources = [s for s in sources if not s.startswith("task:")]
    if len(sources) == 1 and not Path(sources[0]).expanduser().exists() and not _looks_like_path(sources[0]):
        return None
    files: list[Path] = []
    for s in sources:
        p = Path(s).expanduser()
        if p.is_dir():
            found = sorted(f for f in p.rglob("*") if _is_text_file(f))
            if not found:
                raise KronError(f"corpus folder {p} holds no text files ({', '.join(sorted(TEXT_SUFFIXES))}, "
                                "also compressed as .gz / .xz / .bz2)")
            for f in found:
                _check_text(f)
            files += found
        elif p.is_file():
            _check_text(p)
            files.append(p)
        else:
            raise KronError(f"corpus file {p} does not exist; pass existing text files or folders")
    return files


def _check_text(path: Path) -> None:
    """A weights file or an archive passed by mistake would be 'read' as millions of lines of noise and cached."""
    try:
        with _open_binary(path) as fh:
            head = fh.read(8192)
    except (OSError, EOFError, lzma.LZMAError) as e:
        raise KronError(f"corpus file {path} cannot be decompressed ({e}); pass it uncompressed or re-pack it") from e
    if b"\0" in head:
        raise KronError(f"corpus file {path} is not text (it holds NUL bytes); pass plain-text files, one sentence "
                        "or document per line, or GLUE .tsv files")


def _read_lines(files: list[Path], log: Callable[[str], None] | None = None) -> list[str]:
    """Non-empty lines; from .tsv files (e.g. GLUE) only the text fields: those containing a space. Bytes that are not
    UTF-8 become U+FFFD; a file with more than NOT_UTF8_WARN of them is named in a warning (`log`, else `warnings`)."""
    lines = []
    for f in files:
        _replaced.bytes = 0
        try:
            with io.TextIOWrapper(_open_binary(f), encoding="utf-8-sig", errors=_CountReplaced.NAME) as fh:
                if _inner_suffix(f) == ".tsv":
                    lines += [field.strip() for ln in fh for field in ln.split("\t") if " " in field.strip()]
                else:
                    lines += [ln.strip() for ln in fh if ln.strip()]
                size = fh.buffer.tell()  # uncompressed bytes read
        except (OSError, EOFError, lzma.LZMAError) as e:  # a compressed file cut short
            raise KronError(f"corpus file {f} cannot be read to its end ({e}); pass a complete copy") from e
        if _replaced.bytes > NOT_UTF8_WARN * max(size, 1):
            _warn_not_utf8(f, _replaced.bytes, size, log)
    return lines


def _warn_not_utf8(path: Path, bad: int, size: int, log: Callable[[str], None] | None) -> None:
    how = ("decompressed, e.g. with iconv -f latin1 -t utf-8" if path.suffix.lower() in COMPRESSED else
           f"e.g. iconv -f latin1 -t utf-8 {path} > {path.with_name(f'{path.stem}.utf8{path.suffix}')}")
    message = (f"warning: corpus file {path}: {bad:,} of {size:,} bytes ({bad / max(size, 1):.1%}) are not UTF-8 and "
               f"were read as U+FFFD; if it is Latin-1 or cp1252, convert it to UTF-8 first ({how})")
    if log is None:
        warnings.warn(message, stacklevel=3)
    else:
        log(message)


def _dataset_lines(name: str) -> list[str]:
    from ..sources import _hub_reachable

    if not _hub_reachable():
        raise KronError(f"corpus {name!r} is neither a file nor a folder, and the hub is unreachable (offline) "
                        "to load it as a datasets name; pass text files or a folder")
    import datasets

    ds = datasets.load_dataset(name, split="train")
    col = "text" if "text" in ds.column_names else ds.column_names[0]
    return [t.strip() for t in ds[col] if isinstance(t, str) and t.strip()]


def _fingerprint(sources: list[str], files: list[Path], tokenizer, max_seq_len: int, pairs: bool) -> str:
    h = hashlib.sha256()
    h.update(json.dumps([sources, max_seq_len, getattr(tokenizer, "name_or_path", ""),
                         len(tokenizer)] + (["pairs"] if pairs else [])).encode())
    for f in files:
        st = f.stat()
        h.update(f"{f.resolve()}:{st.st_size}:{st.st_mtime_ns}".encode())
    return h.hexdigest()[:16]


def pack(ids: list[list[int]], max_seq_len: int, cls_id: int, sep_id: int, pairs: bool = False) -> torch.Tensor:
    """Concatenate tokenised lines and cut into rows of exactly max_seq_len tokens: [CLS] body [SEP], or with
    `pairs` [CLS] A [SEP] B [SEP], A/B split at the line boundary nearest the block's middle (the middle
    itself when the block holds no boundary)."""
    body = max_seq_len - (3 if pairs else 2)
    if body < (2 if pairs else 1):
        raise KronError(f"--max-seq-len {max_seq_len} leaves no room for text; pass at least 8")
    stream = [t for line in ids for t in line]
    n = len(stream) // body
    if n == 0:
        raise KronError(f"the corpus has {len(stream)} tokens, fewer than one sequence of --max-seq-len "
                        f"{max_seq_len}; add text or lower --max-seq-len")
    blocks = torch.tensor(stream[: n * body], dtype=torch.int32).view(n, body)
    if not pairs:
        cls = torch.full((n, 1), cls_id, dtype=torch.int32)
        sep = torch.full((n, 1), sep_id, dtype=torch.int32)
        return torch.cat([cls, blocks, sep], dim=1)
    ends = torch.tensor([len(line) for line in ids], dtype=torch.long).cumsum(0)  # line ends in the stream
    starts = torch.arange(n) * body
    mid = starts + body // 2
    # nearest line end to each block's middle, kept strictly inside the block so both segments are non-empty
    right = torch.searchsorted(ends, mid).clamp(max=len(ends) - 1)
    left = (right - 1).clamp(min=0)

    def distance(end):
        inside = (end > starts) & (end < starts + body)
        return torch.where(inside, (end - mid).abs(), torch.full_like(end, body + 1))

    d_right, d_left = distance(ends[right]), distance(ends[left])
    near = torch.where(d_right < d_left, ends[right], ends[left])
    cut = torch.where(torch.minimum(d_right, d_left) <= body, near - starts, torch.full_like(mid, body // 2))
    rows = torch.empty((n, max_seq_len), dtype=torch.int32)
    rows[:, 0] = cls_id
    pos = torch.arange(max_seq_len - 1)  # row[1:] = A [SEP] B [SEP], with the inner [SEP] after cut tokens
    src = pos - (pos > cut[:, None]).long()  # index into the block for every non-separator slot
    rows[:, 1:] = torch.gather(blocks, 1, src.clamp(max=body - 1).to(torch.int64)).to(torch.int32)
    rows[:, 1:][pos[None, :].expand(n, -1) == cut[:, None]] = sep_id
    rows[:, -1] = sep_id
    return rows


def token_types(ids: torch.Tensor, sep_id: int) -> torch.Tensor:
    """Segment ids from the [SEP]s: 0 up to and including the first [SEP], 1 after it (BERT's convention)."""
    is_sep = (ids == sep_id).long()
    return ((is_sep.cumsum(-1) - is_sep) > 0).long()


def _cached(cache: Path) -> torch.Tensor | None:
    """The tokenised corpus from its cache file; None, with a warning, when the file is damaged (it is made anew)."""
    from ..integrity import DAMAGE, torch_file_problem, warn

    problem = torch_file_problem(cache)
    if problem is None:
        try:
            return torch.load(cache)
        except (*DAMAGE, RuntimeError) as e:
            problem = str(e).splitlines()[0]
    warn(f"{cache} is damaged ({problem}); tokenising the corpus again")
    return None


def load_corpus(sources: list[str], tokenizer, max_seq_len: int, cache_dir: Path | None,
                pairs: bool = True, log: Callable[[str], None] | None = None) -> torch.Tensor:
    """(N, max_seq_len) int32 token ids, from the cache when the sources have not changed. `log` gets the warnings
    about the text (files that are not UTF-8)."""
    if not sources:
        raise KronError("no corpus given; pass --corpus FILE_OR_FOLDER (one sentence or document per line)")
    if tokenizer is None:
        raise KronError("the student has no tokenizer; re-run kron factorize on a model folder that has one")
    files = corpus_files(sources)
    key = _fingerprint(sources, files or [], tokenizer, max_seq_len, pairs)
    cache = cache_dir / f"corpus-{key}.pt" if cache_dir else None
    if cache and cache.exists():
        packed = _cached(cache)
        if packed is not None:
            return packed
    lines = _read_lines(files, log) if files is not None else _dataset_lines(sources[0])
    if not lines:
        raise KronError(f"the corpus ({', '.join(sources)}) is empty; give files with text in them")
    ids = tokenizer(lines, add_special_tokens=False, truncation=False)["input_ids"]
    packed = pack(ids, max_seq_len, tokenizer.cls_token_id, tokenizer.sep_token_id, pairs)
    if cache:
        buf = io.BytesIO()
        torch.save(packed, buf)
        atomic_write_bytes(cache, buf.getvalue())
    return packed
