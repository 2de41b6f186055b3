"""English prose paragraphs from folders of documentation (reST, POD, HTML, Mallard, JSON,
plain text; gzipped or not), offline.

Stage 1 gains most from more *distinct* text (run 17), and dictionaries are definitions, not running prose.
Debian ships plenty of prose that installs without the hub: the Python manual (`python3.11-doc`, reST
sources), the kernel's documentation (`linux-doc-6.1`), Perl's manual (`perl-doc`, POD), the Debian
Administrator's Handbook (`debian-handbook`, HTML), the GNU coding standards, the Jargon File, fortunes.
`apt-get download PKG && dpkg -x PKG.deb DIR`, then this walks DIR and writes one paragraph per line:
markup removed, code blocks, tables, headings and lists of symbols dropped, duplicates dropped. Only
paragraphs that read as sentences are kept (mostly words, few code characters, ending in punctuation),
so what stage 1 sees is English a GLUE sentence could come from, not source code.

    python -m kroncli.data.prose py/usr/share/doc/python3.11/html/_sources perl corpus/docs.txt  # dpkg -x'd here
    kron distill -w runs/m19 --corpus corpus/docs.txt --corpus ../shared/glue/MRPC/train.tsv

`recipes/offline-text.sh` downloads and extracts the packages of run 18 (docs/lab/runs.md): 6.2M words; with
`--more`, 53 more documentation packages, two dictionaries and two games' data: 13.3M more.
"""

from __future__ import annotations

import gzip
import html
import json
import re
from collections.abc import Iterable, Iterator
from html.parser import HTMLParser
from pathlib import Path

from ..errors import KronError
from .extract import extractor_main

MIN_WORDS = 8
_WORD = re.compile(r"^[\"'(]*[A-Za-z][A-Za-z'’-]*[\"')]*[.,;:!?]*[\"')]*$")
_CODE_CHARS = set("{}[]<>=;$#@\\|_`^~*/")
_SKIP_SUFFIXES = {".png", ".svg", ".jpg", ".gif", ".dat", ".js", ".css", ".py", ".c", ".h", ".inv", ".pdf"}

# reST inline markup: :role:`text <target>` -> text, ``literal`` -> literal, `link <url>`_ -> link, **x** -> x.
_RST_ROLE = re.compile(r":[A-Za-z:+-]+:`(?:~[\w.]*\.)?([^`<]*?)\s*(?:<[^`>]*>)?`")
_BULLET = re.compile(r"^\s*(?:[*+\u2022-]|#\.|\d+[.)]|\(?[a-z]\))\s+")
_RST_LINK = re.compile(r"`([^`<]+?)\s*(?:<[^`>]*>)?`__?")
_RST_LITERAL = re.compile(r"``([^`]+)``")
_RST_EMPHASIS = re.compile(r"\*\*?([^*\s][^*]*?)\*\*?")
_RST_REFERENCE = re.compile(r"\b(\w+)_\b|\[#?\w*\]_")
_RST_UNDERLINE = re.compile(r"^\s*([=\-~^\"'`#*+.:_])\1{2,}\s*$")
_NON_WORD = re.compile(r"[\W_]+")
_FORTUNE_SEPARATOR = re.compile(r"^%+\s*$")
# POD inline markup: C<code>, B<< bold >>, L<text|target> -> the text.
_POD_CODE = re.compile(r"[A-Z](<+)\s*(.*?)\s*(>+)")


def _strip_pod(text: str) -> str:
    while True:
        stripped = _POD_CODE.sub(lambda m: m.group(2).split("|")[0], text)
        if stripped == text:
            return text
        text = stripped


def is_prose(text: str) -> bool:
    """Does the paragraph read as English sentences (not code, a table, a heading or a list of names)?"""
    words = text.split()
    if len(words) < MIN_WORDS or not text[0].isupper() and text[0] not in "\"'(":
        return False
    if text[-1] not in ".!?:\"')":
        return False
    if sum(1 for w in words if _WORD.match(w)) < 0.85 * len(words):
        return False
    return sum(1 for ch in text if ch in _CODE_CHARS) <= 0.01 * len(text)


def _blocks(lines: Iterable[str], separator: re.Pattern[str] | None = None) -> Iterator[list[str]]:
    """Blank-line separated blocks (a separator line, such as fortune's `%`, also ends one)."""
    block: list[str] = []
    for line in lines:
        if not line.strip() or (separator is not None and separator.match(line)):
            if block:
                yield block
            block = []
        else:
            block.append(line.rstrip())
    if block:
        yield block


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip())


def rst_paragraphs(text: str) -> Iterator[str]:
    """Paragraphs of reST or plain text, dedented (API descriptions sit indented under their directive).

    Literal blocks (what follows a paragraph ending in `::`, until the indentation falls back), directives,
    headings and table rules are dropped; code that slips through fails `is_prose`.
    """
    literal_above: int | None = None  # indentation of the paragraph that opened a literal block
    for block in _blocks(text.splitlines(), _FORTUNE_SEPARATOR):
        indent = _indent(block[0])
        if literal_above is not None:
            if indent > literal_above:
                continue
            literal_above = None
        if block[-1].rstrip().endswith("::"):
            literal_above = indent
            continue  # "Example::" introduces a code block; the sentence alone is usually a fragment
        first = block[0].lstrip()
        if first.startswith((".. ", "::", "|", "+-", "=", "│", "┌", "├", ">>>", "$ ", "# ")):
            continue
        block = [line for line in block if not _RST_UNDERLINE.match(line)]
        if not block:
            continue
        for item in _list_items(block):
            yield _strip_rst(" ".join(line.strip() for line in item))


def _list_items(block: list[str]) -> Iterator[list[str]]:
    """A block that is a bulleted or numbered list, as one block per item, bullets removed."""
    if not _BULLET.match(block[0]):
        yield block
        return
    item: list[str] = []
    for line in block:
        if _BULLET.match(line):
            if item:
                yield item
            item = [_BULLET.sub("", line, count=1)]
        else:
            item.append(line)
    if item:
        yield item


def _strip_rst(para: str) -> str:
    para = _RST_ROLE.sub(r"\1", para)
    para = _RST_LITERAL.sub(r"\1", para)
    para = _RST_LINK.sub(r"\1", para)
    para = _RST_EMPHASIS.sub(r"\1", para)
    para = _RST_REFERENCE.sub(lambda m: m.group(1) or "", para)
    return para


def pod_paragraphs(text: str) -> Iterator[str]:
    """Paragraphs of Perl's POD: commands (=head1 ...) and verbatim (indented) blocks dropped."""
    in_pod = not text.lstrip().startswith(("#!", "package ", "use "))
    for block in _blocks(text.splitlines()):
        first = block[0]
        if first.startswith("="):
            in_pod = not first.startswith("=cut")
            continue
        if not in_pod or first[:1].isspace():
            continue
        yield _strip_pod(" ".join(line.strip() for line in block))


class _HtmlParagraphs(HTMLParser):
    """Text of <p>, <li>, <dd> and <div class="para"> elements outside <pre>, <table>, <script> and <style>."""

    _PARAGRAPH = {"p", "li", "dd"}  # and DocBook's <div class="para">
    _OPAQUE = {"pre", "script", "style", "table"}

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.paragraphs: list[str] = []
        self._parts: list[str] | None = None
        self._opaque = 0

    def handle_starttag(self, tag: str, attrs: list) -> None:
        if tag in self._OPAQUE:
            self._opaque += 1
        elif tag in self._PARAGRAPH or tag == "div" and "para" in (dict(attrs).get("class") or "").split():
            self._flush()
            self._parts = []

    def handle_endtag(self, tag: str) -> None:
        if tag in self._OPAQUE:
            self._opaque = max(0, self._opaque - 1)
        elif tag in self._PARAGRAPH or tag == "div":
            self._flush()

    def handle_data(self, data: str) -> None:
        if self._parts is not None and not self._opaque:
            self._parts.append(data)

    def _flush(self) -> None:
        if self._parts:
            self.paragraphs.append(" ".join("".join(self._parts).split()))
        self._parts = None

    def close(self) -> None:
        super().close()
        self._flush()


def html_paragraphs(text: str) -> Iterator[str]:
    parser = _HtmlParagraphs()
    parser.feed(text)
    parser.close()
    yield from parser.paragraphs


def json_paragraphs(text: str) -> Iterator[str]:
    """Every string value of a JSON document (item descriptions and dialogue in game data); `is_prose` keeps
    the sentences. A file that does not parse yields nothing."""
    try:
        stack = [json.loads(text)]
    except ValueError:
        return
    while stack:
        value = stack.pop()
        if isinstance(value, str):
            yield " ".join(value.split())
        elif isinstance(value, dict):
            stack.extend(reversed(list(value.values())))
        elif isinstance(value, list):
            stack.extend(reversed(value))


def _read(path: Path) -> str | None:
    """The file's text (gunzipped), or None for binary files."""
    raw = path.read_bytes()
    if path.suffix == ".gz":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError):
            return None
    if b"\0" in raw[:4096]:
        return None
    return raw.decode("utf-8", errors="replace")


def file_paragraphs(path: Path) -> Iterator[str]:
    """Paragraphs of one file, by its kind (the suffix under any .gz)."""
    name = path.name[:-3] if path.name.endswith(".gz") else path.name
    suffix = Path(name).suffix.lower()
    if suffix in _SKIP_SUFFIXES:
        return
    text = _read(path)
    if text is None:
        return
    if suffix in {".html", ".htm", ".xhtml", ".page"}:  # .page: GNOME's Mallard help, <p> like HTML
        yield from html_paragraphs(text)
    elif suffix == ".json":
        yield from json_paragraphs(text)
    elif suffix in {".pod", ".pm"} or "\n=head1 " in text or text.startswith("=head1"):
        yield from pod_paragraphs(text)
    else:
        yield from rst_paragraphs(text)


def _dedupe_key(para: str) -> str:
    return " ".join(_NON_WORD.split(para.lower())).strip()


def prose_lines(*sources: Path) -> Iterator[str]:
    """Distinct prose paragraphs of every file under each source (a folder or one file), sources in the
    order given, files in path order; a paragraph seen in an earlier source is not repeated, also where it
    differs only in case, punctuation or quote style (Sphinx packages ship each page as HTML and as reST)."""
    seen: set[str] = set()
    for source in sources:
        if not source.exists():
            raise KronError(f"{source} does not exist; pass a folder of documentation, e.g. one unpacked with "
                            f"`apt-get download python3.11-doc && dpkg -x python3.11-doc_*.deb DIR`")
        files = sorted(p for p in source.rglob("*") if p.is_file()) if source.is_dir() else [source]
        found = False
        for path in files:
            for para in file_paragraphs(path):
                para = " ".join(html.unescape(para).split())
                if is_prose(para):
                    found = True
                    key = _dedupe_key(para)
                    if key not in seen:
                        seen.add(key)
                        yield para
        if not found:
            raise KronError(f"no English prose paragraphs found under {source}; point it at documentation "
                            f"(reST, POD, HTML or plain-text files)")


def main(argv: Iterable[str] | None = None) -> int:
    return extractor_main(argv, "python -m kroncli.data.prose SOURCE [SOURCE ...] OUT.txt", prose_lines, many=True)


if __name__ == "__main__":
    raise SystemExit(main())
