"""Plain English text from GCIDE (the GNU Collaborative International Dictionary of English), offline.

Stage 1 wants much more distinct text than GLUE's ~450k training tokens. Debian's `dict-gcide`
(`apt-get download dict-gcide` + `dpkg -x`, ~15 MB) ships Webster's 1913 plus WordNet glosses as a dictd
database in /usr/share/dictd: `gcide.index` (headword, base64 offset, base64 length) and `gcide.dict.dz`
(gzip-compatible). This writes one line per entry: "Headword: definition. definition. quotation." with the
pronunciations, etymologies, source tags ([1913 Webster]), cross-reference braces, quotation authors and
synonym lists removed. From dict-gcide 0.48.5: 122,505 lines, 3.7M words (WordNet's glosses: 1.75M).

    python -m kroncli.data.gcide /usr/share/dictd corpus/gcide.txt
    kron distill -w runs/m19 --corpus corpus/gcide.txt --corpus corpus/wordnet.txt --corpus ../shared/glue/MRPC/train.tsv
"""

from __future__ import annotations

import gzip
import re
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path

from ..errors import KronError
from .extract import extractor_main

_B64 = {c: i for i, c in enumerate("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/")}
_INNER_BRACKETS = re.compile(r"\[[^\[\]]*\]")
_AUTHOR = re.compile(r"\s*--\s*[A-Z][^-]*$")  # "... cold heat. --Milton." (a quotation's source)
_LEADING_LABELS = re.compile(r"^(\d+\.\s*|\([a-z]\)\s*|\([A-Z][^()]*\)\s*|Note:\s*)+")


def b64_number(text: str) -> int:
    """dictd's base64 numbers: most significant digit first, alphabet A-Z a-z 0-9 + /."""
    value = 0
    for ch in text:
        value = value * 64 + _B64[ch]
    return value


def _strip_brackets(text: str) -> str:
    while True:  # innermost first: etymologies hold accent marks such as [=a]
        stripped = _INNER_BRACKETS.sub("", text)
        if stripped == text:
            return text
        text = stripped


def entry_text(raw: str) -> str | None:
    """One dictionary entry as one line of text, or None when nothing sentence-like is left."""
    lines = raw.strip("\n").split("\n")
    if not lines or " \\" not in lines[0]:
        return None
    headword = lines[0].split(" \\", 1)[0].strip()
    depth, body_start = 0, 1
    for i, line in enumerate(lines):  # the head line and its etymology, which may run over several lines
        depth += line.count("[") - line.count("]")
        body_start = i + 1
        if depth <= 0:
            break
    paragraphs, current = [], []
    for line in lines[body_start:] + [""]:
        if line.strip():
            current.append(line.strip())
        elif current:
            paragraphs.append(current)
            current = []
    sentences = []
    for para in paragraphs:
        if para[0].startswith("Syn"):
            continue  # word lists, not sentences
        words = " ".join(_AUTHOR.sub("", line) for line in para)
        words = _strip_brackets(words).replace("{", "").replace("}", "")
        words = _LEADING_LABELS.sub("", re.sub(r"\s+", " ", words).strip()).strip()
        if len(words.split()) >= 2:
            sentences.append(words if words.endswith((".", "!", "?")) else words + ".")
    if not sentences:
        return None
    return f"{headword}: {' '.join(sentences)}"


def _dictionary_files(path: Path) -> tuple[Path, Path]:
    folder = path if path.is_dir() else path.parent if path.is_file() else None
    candidates = [] if folder is None else [folder / "gcide.dict.dz", folder / "gcide.dict"]
    for data in candidates:
        if data.is_file() and (folder / "gcide.index").is_file():
            return data, folder / "gcide.index"
    raise KronError(f"no gcide.index with gcide.dict(.dz) in {path}; install Debian's dict-gcide and pass "
                    "/usr/share/dictd")


def lines(path: Path) -> Iterator[str]:
    data_file, index_file = _dictionary_files(path)
    opener = gzip.open if data_file.suffix == ".dz" else open
    with opener(data_file, "rb") as f:
        data = f.read()
    seen = set()
    with open(index_file, encoding="utf-8", errors="replace") as f:
        for row in f:
            fields = row.rstrip("\n").split("\t")
            if len(fields) != 3 or fields[0].startswith("00-database") or (fields[1], fields[2]) in seen:
                continue
            seen.add((fields[1], fields[2]))  # several headwords share one entry
            try:
                start, length = b64_number(fields[1]), b64_number(fields[2])
            except KeyError:
                continue
            text = entry_text(data[start:start + length].decode("utf-8", errors="replace"))
            if text:
                yield text


def main(argv: Iterable[str] | None = None) -> int:
    return extractor_main(argv, "python -m kroncli.data.gcide DICTD_DIR OUT.txt", lines)


if __name__ == "__main__":
    sys.exit(main())
