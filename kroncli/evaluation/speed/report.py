"""metrics/speed.csv: the columns a row keeps, older files' column names, and the load warnings of a run."""

from __future__ import annotations

from pathlib import Path

from ... import metrics_csv
from ...machine import load_warning
from ...workspace import Workspace

CSV_NAME = "speed.csv"  # Workspace.speed_csv
CSV_COLUMNS = ("timestamp", "model", "device", "batch", "seq_len", "latency_ms", "throughput_seq_s", "tokens_s",
               "speedup", "params", "size_mib", "peak_mem_mib", "threads", "other_load")
DECODER_COLUMNS = ("phase", "new_tokens")  # a decoder's rows: prefill (one forward) or generate (KV cache)
OLD_CSV_NAMES = {"size_mb": "size_mib", "peak_mem_mb": "peak_mem_mib"}  # older files: the same unit, misnamed


def load_warnings(rows: list[dict]) -> list[str]:
    """One warning per device and batch size timed while other processes took more than THRESHOLD of the CPUs."""
    seen, out = set(), []
    for r in rows:
        key = (r["device"], r["batch"])
        text = load_warning(r["other_load"])
        if text and key not in seen:
            seen.add(key)
            out.append(f"{r['device']} batch {r['batch']}: {text}; its speed-ups are not a result")
    return out


def rename_old_columns(path: Path) -> None:
    """An older speed.csv names its MiB columns size_mb / peak_mem_mb: renamed in place, so old and new rows share
    one column. A file that cannot be parsed is left to the append, which reports it."""
    import pandas as pd

    from ...workspace import atomic_write_text

    if not path.is_file() or not path.stat().st_size:
        return
    with open(path, encoding="utf-8", errors="replace") as f:
        header = f.readline().rstrip("\r\n").split(",")
    if not set(OLD_CSV_NAMES) & set(header):
        return
    try:
        df = pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError):
        return
    for old, new in OLD_CSV_NAMES.items():
        if old in df and new in df:  # both (widened by a newer append): one column
            df = df.assign(**{new: df[new].fillna(df[old])}).drop(columns=old)
        elif old in df:
            df = df.rename(columns={old: new})
    atomic_write_text(path, df.to_csv(index=False))


def append_rows(ws: Workspace, rows: list[dict]) -> Path:
    """The run's rows (CSV_COLUMNS of each) appended to WS/metrics/speed.csv, older column names renamed first."""
    csv_path = ws.speed_csv
    csv_path.parent.mkdir(parents=True, exist_ok=True)
    rename_old_columns(csv_path)
    metrics_csv.append(csv_path, [{k: r[k] for k in (*CSV_COLUMNS, *DECODER_COLUMNS) if k in r} for r in rows])
    return csv_path
