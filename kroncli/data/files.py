"""Labelled tables from a user's files: CSV, TSV, JSON / JSON lines, parquet, a folder written by `datasets`'
save_to_disk, or a `datasets` name (the hub, only when it is reachable). Shared by `kron eval ood` and the
own-data tasks (data/own.py).

Every reader returns a DataFrame with the file's columns and a `where(i)` that names row i for an error message
(`train.csv:14`, the 1-based line of a text file; `ds[train] row 14` otherwise). CSV/TSV cells are read as
strings exactly as written (no "NA" -> NaN guessing); TSV has quoting off by default, as GLUE writes it.
"""

from __future__ import annotations

import csv
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pandas as pd

from ..errors import KronError, first_line

TEXT_SUFFIXES = (".tsv", ".txt", ".csv")
FILE_SUFFIXES = (*TEXT_SUFFIXES, ".json", ".jsonl", ".parquet")
QUOTING = {"minimal": csv.QUOTE_MINIMAL, "none": csv.QUOTE_NONE}


@dataclass
class Table:
    """A read table and how to name its rows in messages."""

    frame: pd.DataFrame
    origin: str  # the file or dataset, for messages
    where: Callable[[int], str]  # 0-based data row -> "file:line"


def _read_json(path: Path, text: str) -> tuple[pd.DataFrame, list[int]]:
    """Records and the 1-based line of each (a JSON list: line 1 for all)."""
    obj = None
    if path.suffix.lower() == ".json":
        try:
            obj = json.loads(text)
        except json.JSONDecodeError:
            obj = None  # maybe JSON lines under a .json name
    if isinstance(obj, dict) and obj and all(isinstance(v, list) for v in obj.values()):
        frame = pd.DataFrame(obj)  # {column: [values]}
        return frame, []
    lines: list[int] = []
    if obj is None:
        obj = []
        for number, line in enumerate(text.split("\n"), start=1):
            if line.strip():
                try:
                    obj.append(json.loads(line))
                except json.JSONDecodeError as e:
                    raise KronError(f"{path}:{number}: not a JSON record ({e.msg}); expected a JSON list of "
                                    f"records or one JSON object a line") from None
                lines.append(number)
    if not isinstance(obj, list) or not all(isinstance(r, dict) for r in obj):
        raise KronError(f"{path}: expected a JSON list of records (objects) or one JSON object a line")
    return pd.DataFrame(obj), lines


def read_file(path: Path, quoting: str | None = None, delimiter: str | None = None) -> Table:
    """A CSV/TSV/JSON(lines)/parquet file. `quoting` minimal|none (default: none for .tsv/.txt as GLUE, minimal
    for .csv); `delimiter` (default: tab for .tsv/.txt, comma for .csv)."""
    suffix = path.suffix.lower()
    if suffix not in FILE_SUFFIXES:
        raise KronError(f"{path}: unknown file type {suffix or '(none)'!r}; use .csv, .tsv/.txt (tab-separated), "
                        f".json, .jsonl or .parquet")
    lines: list[int] = []
    try:
        if suffix in (".json", ".jsonl"):
            frame, lines = _read_json(path, path.read_text(encoding="utf-8-sig"))
        elif suffix == ".parquet":
            frame = pd.read_parquet(path)
        else:
            quote = quoting or ("minimal" if suffix == ".csv" else "none")
            if quote not in QUOTING:
                raise KronError(f"--quoting {quote!r}: choose minimal (CSV's quotes) or none (GLUE's TSV files)")
            frame = pd.read_csv(path, sep=delimiter or ("," if suffix == ".csv" else "\t"), dtype=str,
                                keep_default_na=False, na_filter=False, encoding="utf-8-sig",
                                quoting=QUOTING[quote])
            lines = [] if quote == "minimal" else [i + 2 for i in range(len(frame))]
    except pd.errors.EmptyDataError:
        raise KronError(f"{path}: empty file; expected a header line and labelled rows") from None
    except pd.errors.ParserError as e:
        first = str(e).strip().splitlines()[-1] if str(e).strip() else "malformed"
        raise KronError(f"{path}: {first}; fix or remove the line") from None
    except UnicodeDecodeError as e:
        raise KronError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start}); re-save it as UTF-8") from None
    except (OSError, ValueError) as e:  # parquet: not a parquet file, unreadable
        raise KronError(f"{path}: cannot read it ({first_line(e)})") from None
    if len(frame) == 0:
        raise KronError(f"{path}: no data rows; expected labelled examples after the header")
    if lines:
        return Table(frame, str(path), lambda i: f"{path}:{lines[i]}")
    # quoted CSV (a cell may span lines), parquet, a JSON list: the data row, 1 = the first after any header
    return Table(frame, str(path), lambda i: f"{path} row {i + 1}")


def _from_dataset(dataset, origin: str) -> Table:
    """A datasets.Dataset as a table, ClassLabel columns as their names (Sequence(ClassLabel): lists of names)."""
    import datasets

    if len(dataset) == 0:
        raise KronError(f"{origin}: no data rows")
    frame = dataset.to_pandas()
    for name, feature in dataset.features.items():
        if isinstance(feature, datasets.ClassLabel):
            frame[name] = [feature.int2str(int(v)) if v is not None and int(v) >= 0 else "" for v in frame[name]]
        inner = getattr(feature, "feature", None)
        if isinstance(inner, datasets.ClassLabel):  # multi-label: a list of class ids per row
            frame[name] = [[inner.int2str(int(x)) for x in v] for v in frame[name]]
    return Table(frame, origin, lambda i: f"{origin} row {i + 1}")


def _pick_split(saved, split: str, origin: str):
    import datasets

    if isinstance(saved, datasets.DatasetDict):
        if split not in saved:
            raise KronError(f"{origin} has no split {split!r} (has: {', '.join(saved)}); name one of them")
        return saved[split], f"{origin}[{split}]"
    return saved, origin


def import_datasets(why: str):
    try:
        import datasets
    except ImportError:
        raise KronError(f"{why} but the `datasets` package is missing; pip install datasets") from None
    return datasets


def load_saved(folder: Path, split: str) -> Table:
    """One split of a folder written by save_to_disk (a Dataset, or a DatasetDict and the split's name)."""
    datasets = import_datasets(f"{folder} is a folder (a saved dataset?)")
    try:
        saved = datasets.load_from_disk(str(folder))
    except (FileNotFoundError, ValueError) as e:
        raise KronError(f"{folder} is a folder but not a dataset saved with save_to_disk ({first_line(e)}); pass a "
                        f"CSV/TSV/JSON(lines)/parquet file") from None
    dataset, origin = _pick_split(saved, split, str(folder))
    return _from_dataset(dataset, origin)


def load_hub(name: str, config: str | None, split: str) -> Table:
    """A `datasets` hub dataset's split; offline, one line saying what to pass instead."""
    from .glue import _online

    origin = f"{name}{':' + config if config else ''}[{split}]"
    if not _online():
        raise KronError(f"{origin}: the Hugging Face hub is unreachable (offline); pass local files (CSV, JSON "
                        f"lines, parquet) or a folder written by save_to_disk")
    datasets = import_datasets(f"{name} names a hub dataset")
    try:
        dataset = datasets.load_dataset(name, config or None, split=split)
    except Exception as e:  # network, cache or hub errors: one line
        raise KronError(f"could not load {origin} from the hub ({first_line(e)}); pass a local file") from None
    return _from_dataset(dataset, origin)


def looks_like_path(value: str) -> bool:
    """A name that can only be a file or folder: a data suffix, a leading . / ~, or more than one `/` (a hub name
    is `name` or `org/name`)."""
    return (Path(value).suffix.lower() in FILE_SUFFIXES or value.startswith((".", os.sep, "~"))
            or value.count("/") > 1)


def read_source(data: str, split: str, quoting: str | None = None, delimiter: str | None = None) -> tuple[Table, str]:
    """(table, a short name for it) from a file, a saved dataset folder or a datasets name (`NAME:CONFIG`)."""
    path = Path(data).expanduser()
    if path.is_file():
        return read_file(path, quoting, delimiter), path.name
    if path.is_dir():
        table = load_saved(path, split)
        return table, path.name if table.origin == str(path) else f"{path.name}/{split}"
    if looks_like_path(data):
        raise KronError(f"{data}: no such file; pass a CSV/TSV/JSON(lines)/parquet file, a saved dataset folder "
                        f"or a datasets name")
    name, _, config = data.partition(":")
    return load_hub(name, config or None, split), f"{data}/{split}"
