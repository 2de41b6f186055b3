"""The command-line shell shared by the offline text extractors (WordNet, GCIDE): source in, one text file out."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from ..errors import KronError


def write_lines(lines: Iterator[str], out: Path) -> int:
    """Write the lines to `out` atomically (an interrupted run leaves no half corpus); returns how many."""
    from ..workspace import atomic_write_text

    text = list(lines)
    atomic_write_text(out, "\n".join(text) + "\n")
    return len(text)


def extractor_main(argv: Iterable[str] | None, usage: str, lines: Callable[..., Iterator[str]],
                   many: bool = False) -> int:
    """`python -m kroncli.data.X SOURCE OUT.txt` (with `many`, several sources, passed to `lines` in order):
    exit 0 with a count, or 2 with a one-line error."""
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 2 and not (many and len(args) > 2):
        print(f"usage: {usage}", file=sys.stderr)
        return 2
    try:
        n = write_lines(lines(*[Path(a) for a in args[:-1]]), Path(args[-1]))
    except KronError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"{n:,} lines -> {args[-1]}", file=sys.stderr)
    return 0
