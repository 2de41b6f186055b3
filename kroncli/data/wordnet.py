"""Plain English text from a WordNet 3.0 database, for stage-1 distillation offline.

GLUE's training sentences are ~450k tokens; general distillation wants more and more varied text. Debian's
`wordnet-base` (`apt-get install wordnet-base`, or `apt-get download` + `dpkg -x`) ships the database in
/usr/share/wordnet: every synset line of data.noun/verb/adj/adv ends in a gloss, a definition followed by
quoted usage examples. This writes one line per synset: "lemma, lemma: definition. example. example."

    python -m kroncli.data.wordnet /usr/share/wordnet corpus/wordnet.txt
    kron distill -w runs/m19 --corpus corpus/wordnet.txt --corpus ../shared/glue/MRPC/train.tsv ...
"""

from __future__ import annotations

import re
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path

from ..errors import KronError
from .extract import extractor_main, write_lines

DATA_FILES = ("data.noun", "data.verb", "data.adj", "data.adv")
_QUOTED = re.compile(r'"([^"]+)"')


def synset_line(line: str) -> str | None:
    """One line of a WordNet data file as text, or None for the licence header and malformed lines."""
    if line.startswith("  ") or " | " not in line:
        return None
    head, gloss = line.rstrip("\n").split(" | ", 1)
    fields = head.split()
    try:
        count = int(fields[3], 16)
        words = [fields[4 + 2 * i].replace("_", " ") for i in range(count)]
    except (IndexError, ValueError):
        return None
    words = [re.sub(r"\(.*\)$", "", w) for w in words]  # adjective markers such as "(a)"
    examples = [e.strip() for e in _QUOTED.findall(gloss)]
    definition = re.sub(r"(\s*;)+", ";", _QUOTED.sub("", gloss).replace('"', "")).strip(" ;")
    parts = [f"{', '.join(dict.fromkeys(words))}: {definition}."]
    parts += [e if e.endswith((".", "!", "?")) else e + "." for e in examples]
    return " ".join(parts)


def lines(folder: Path) -> Iterator[str]:
    found = [folder / name for name in DATA_FILES if (folder / name).is_file()]
    if not found:
        raise KronError(f"no WordNet data files ({', '.join(DATA_FILES)}) in {folder}; install Debian's "
                        "wordnet-base and pass /usr/share/wordnet")
    for path in found:
        with open(path, encoding="utf-8", errors="replace") as f:
            for raw in f:
                text = synset_line(raw)
                if text:
                    yield text


def write_corpus(folder: Path, out: Path) -> int:
    """Write the text to `out` (atomically); returns the number of lines."""
    return write_lines(lines(folder), out)


def main(argv: Iterable[str] | None = None) -> int:
    return extractor_main(argv, "python -m kroncli.data.wordnet WORDNET_DIR OUT.txt", lines)


if __name__ == "__main__":
    sys.exit(main())
