"""Metrics CSVs (training logs, eval.csv, speed.csv): whole rows or nothing, and one reader for every caller.

An append is one write of whole lines; when it fails part-way (a full disk, a quota) the file is cut back to the
size it had, so no partial row is left. A last row torn anyway (power loss, a kill in the middle of a write) is
left out with a warning by every reader, and cut off the file before the next append, so that an append never
joins it. A file pandas cannot parse otherwise is one error naming it and the way out.
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Callable

import pandas as pd

from .errors import first_line
from .integrity import damaged, warn


def _hint(path: Path) -> str:
    return (f"fix or delete the damaged line, or move the file aside (mv {path} {path}.bad; its rows are then "
            "left out) and run again")


def _whole_lines(path: Path, repair: bool = False) -> bytes:
    """The file's bytes up to its last newline; a torn last row is reported (and, with `repair`, cut off)."""
    data = path.read_bytes() if path.is_file() else b""
    cut = data.rfind(b"\n") + 1
    if cut < len(data):
        torn = data[cut:].decode("utf-8", "replace")
        shown = torn if len(torn) <= 60 else torn[:57] + "..."
        warn(f"{path}: its last row was cut short by an interrupted write and is left out ({shown!r})")
        if repair:
            os.truncate(path, cut)
    return data[:cut]


def _parse(path: Path, data: bytes, tolerant: bool) -> pd.DataFrame | None:
    if not data.strip():
        return None
    try:
        return pd.read_csv(io.BytesIO(data))
    except (pd.errors.ParserError, UnicodeDecodeError) as e:
        if not tolerant:
            raise damaged(path, first_line(e), _hint(path)) from None
    bad: list = []
    frame = pd.read_csv(io.BytesIO(data), engine="python", encoding_errors="replace",
                        on_bad_lines=lambda line: bad.append(line))  # returns None: the line is skipped
    warn(f"{path} is damaged: {len(bad)} row(s) pandas cannot parse are left out")
    return frame


def read(path: Path, tolerant: bool = False) -> pd.DataFrame | None:
    """The whole rows of a metrics CSV (None when it is missing or empty). Damage other than a torn last row is a
    KronError naming the file; with `tolerant` (kron report) the rows that cannot be parsed are left out with a
    warning instead."""
    path = Path(path)
    return _parse(path, _whole_lines(path), tolerant)


def check(path: Path) -> None:
    """Refuse a damaged metrics CSV before a command computes what it appends there (a torn last row is no reason:
    the append cuts it)."""
    path = Path(path)
    data = path.read_bytes() if path.is_file() else b""
    _parse(path, data[: data.rfind(b"\n") + 1], tolerant=False)


def append(path: Path, rows: list[dict]) -> None:
    """Append rows (a header when the file is new; new columns widen the file, written anew)."""
    if not rows:
        return
    path = Path(path)
    new = pd.DataFrame(rows)
    old = _parse(path, _whole_lines(path, repair=True), tolerant=False)
    if old is None:
        _write(path, new)
    elif set(new.columns) <= set(old.columns):
        _append_bytes(path, new.reindex(columns=old.columns).to_csv(index=False, header=False).encode())
    else:
        _write(path, pd.concat([old, new], ignore_index=True))


def keep_rows(path: Path, keep: Callable[[pd.DataFrame], pd.Series]) -> int:
    """Rewrite the file with the rows `keep(frame)` selects (atomically); returns how many rows went."""
    path = Path(path)
    old = read(path)
    if old is None:
        return 0
    mask = keep(old)
    if mask.all():
        return 0
    _write(path, old[mask])
    return int((~mask).sum())


def truncate_after(path: Path, step: int) -> int:
    """Drop the rows a training stage logged after `step` (the checkpoint a resumed run restarts from; 0: all)."""
    return keep_rows(path, lambda df: df["step"] <= step)


def drop_since(path: Path, timestamp: str) -> int:
    """Drop the rows stamped at or after `timestamp` (ISO, as workspace.now writes it): what an interrupted run of an
    evaluation stage wrote, before that stage runs again."""
    return keep_rows(path, lambda df: df["timestamp"].astype(str) < timestamp if "timestamp" in df
                     else pd.Series(True, index=df.index))


def _write(path: Path, frame: pd.DataFrame) -> None:
    from .workspace import atomic_write_text

    atomic_write_text(path, frame.to_csv(index=False))


def _append_bytes(path: Path, data: bytes) -> None:
    """One append of whole lines; a write that fails part-way is undone (the file is cut back to its old size)."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND)
    try:
        size = os.fstat(fd).st_size
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        except BaseException:
            os.ftruncate(fd, size)
            raise
    finally:
        os.close(fd)
