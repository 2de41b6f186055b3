"""`kron report`: one comparison table over workspaces, read from their manifests and CSVs with pandas.

Missing pieces are empty cells, never errors: a workspace that has only been factorized still gets a row.
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Callable

import pandas as pd

from .errors import KronError
from .workspace import Workspace

BASE_COLUMNS = ["workspace", "model", "method", "table", "split", "params", "teacher_params", "compression", "size_mib"]
MIB = 2 ** 20  # sizes in MiB, as kron eval speed gives them
DEFAULT_METHOD = "kronecker"  # a student whose kron.json names no `method` (every workspace before there were others)


def _read_csv(path: Path) -> pd.DataFrame | None:
    """A metrics CSV's whole rows; damaged rows are left out with a warning (metrics_csv.read)."""
    from .metrics_csv import read

    return read(path, tolerant=True)


def _primary(task: str, own: dict | None = None) -> str:
    from .data.glue import normalize_task
    from .metrics import primary_metric

    if own and str(task) in own:
        return own[str(task)].primary
    try:
        return primary_metric(normalize_task(task))
    except KronError:
        return "f1"  # SQuAD and friends


def _own_tasks(ws: Workspace) -> dict:
    """The workspace's own-data tasks by name (their primary metric and metric list), skipping a damaged one."""
    from .data.tasks import stored_task

    out = {}
    for path in sorted(ws.tasks_dir.glob("*/task.json")):
        try:
            task = stored_task(ws, path.parent.name)
        except KronError:
            continue
        if task is not None:
            out[task.name] = task
    return out


def _latest(evals: pd.DataFrame, model: str) -> pd.DataFrame:
    sub = evals[evals["model"] == model].sort_values("timestamp")
    return sub.groupby(["task", "split", "metric"], as_index=False).last()


def _column(task: str, split: str) -> str:
    """A dev score's column: the task's name; MNLI's two dev sets under their GLUE names, MNLI-m and MNLI-mm (the
    paper's columns too)."""
    from .evaluation.predictions import _MNLI_FILES

    if split in ("dev", "validation"):
        return task
    if task.upper().startswith("MNLI") and split in _MNLI_FILES:
        return _MNLI_FILES[split]
    return f"{task}-{split.split('_')[-1][:2]}"


def workspace_rows(path: Path, label: str | None = None) -> list[dict]:
    """The student row (and the teacher row, when a task teacher was evaluated) of one workspace."""
    ws = Workspace(path)
    manifest = ws.read_manifest()
    if not manifest:
        raise KronError(f"{path} is not a kron workspace (no manifest.json)")
    label = label or ws.root.name
    fact = manifest.get("stages", {}).get("factorize", {})
    teacher_params = manifest.get("teacher", {}).get("params")
    weights = ws.student_dir / "model.safetensors"
    student = {"workspace": label, "model": "student", "method": student_method(ws),
               "params": fact.get("student_params"),
               "teacher_params": teacher_params, "compression": fact.get("compression"),
               "size_mib": weights.stat().st_size / MIB if weights.is_file() else None}
    teacher = {"workspace": label, "model": "teacher", "params": teacher_params,
               "teacher_params": teacher_params, "compression": 1.0, "size_mib": None}
    evals = _read_csv(ws.eval_csv)
    own = _own_tasks(ws)
    have_teacher = False
    # "majority": the majority-class floor that `kron eval glue` and stage 2 record; it gets no row of its own
    glue_scores: dict[str, dict[str, float]] = {"student": {}, "teacher": {}, "majority": {}}
    if evals is not None:
        for model, row in (("student", student), ("teacher", teacher), ("majority", {})):
            latest = _latest(evals, model)
            for (task, split), grp in latest.groupby(["task", "split"]):
                split = str(split)
                metrics = dict(zip(grp["metric"], grp["value"]))
                if split.startswith("ood:"):
                    row[f"ood {task} {split[4:]}"] = metrics.get("accuracy")
                elif split.startswith("data:"):  # kron eval data --data FILE: the task's primary metric on it
                    row[f"{task} {split[5:]}"] = metrics.get(_primary(task, own))
                elif str(task).lower().startswith("squad"):
                    for m in ("exact", "f1", "exact_match", "em"):
                        if m in metrics:
                            row[f"{task} {m}"] = metrics[m]
                elif split.startswith(("dev", "validation")):
                    key = _column(str(task), split)
                    score = metrics.get(_primary(task, own))
                    if score is not None:
                        row[key] = score
                        glue_scores[model][key] = score
                    if str(task) in own and model != "majority":  # own tasks: a column per metric
                        for m in own[str(task)].metrics:
                            if m != _primary(task, own) and m in metrics:
                                row[f"{task} {m}"] = metrics[m]
            if model == "teacher" and len(latest):
                have_teacher = True
    # tasks trained but never run through `kron eval glue`: the dev score stage 2 logged at its end
    for name, info in manifest.get("stages", {}).items():
        model = "teacher" if name.startswith("teacher-") else "student" if name.startswith("finetune-") else None
        task, ev = info.get("task"), info.get("eval") or {}
        if model is None or not task or not info.get("done") or str(task).lower().startswith("squad"):
            continue
        score = ev.get(_primary(task, own))
        if score is not None and task not in glue_scores[model]:
            (student if model == "student" else teacher)[task] = score
            glue_scores[model][task] = score
            have_teacher = have_teacher or model == "teacher"
        floor = (info.get("majority") or {}).get(_primary(task, own))
        if floor is not None:
            glue_scores["majority"].setdefault(task, floor)
        # a student started from another task's (--init-from) whose training set held some dev inputs: both
        # models on the dev examples that training never saw (see data/overlap.py); beside, not in the averages
        unseen = info.get("eval_unseen") or {}
        for who, row in (("student", student), ("teacher", teacher)):
            value = (unseen.get(who) or {}).get(_primary(task, own))
            if value is not None:
                row[f"{task} unseen"] = value
    for model, row in (("student", student), ("teacher", teacher)):
        glue = {t: v for t, v in glue_scores[model].items() if t not in own}
        if glue:  # own tasks have their own columns, outside the GLUE average (retention covers them)
            row["glue_avg"] = sum(glue.values()) / len(glue)
    student["retention"] = _retention(glue_scores)
    student["gain_retention"] = _retention(glue_scores, floor="majority")
    speed = _read_csv(ws.speed_csv)
    if speed is not None and "speedup" in speed:
        last = speed[speed["model"] == "student"].groupby(["batch", "seq_len"]).last()
        for (batch, seq), r in last.iterrows():
            student[f"speedup b{batch}x{seq}"] = r["speedup"]
    if speed is not None and "latency_ms" in speed:  # what `kron report --plot` puts scores against
        for model, row in (("student", student), ("teacher", teacher)):
            last = speed[speed["model"] == model].groupby(["batch", "seq_len"]).last()
            for (batch, seq), r in last.iterrows():
                row[f"{LATENCY}b{batch}x{seq}"] = r["latency_ms"]
    return [student] + ([teacher] if have_teacher else [])


LATENCY = "latency_ms "  # column prefix: "latency_ms b1x128"


def student_method(ws: Workspace) -> str:
    """How the student was made: its kron.json's `method` (kron factorize --method), else kronecker."""
    from .integrity import read_json_object

    path = ws.student_dir / "kron.json"
    try:
        method = read_json_object(path).get("method") if path.is_file() else None
    except KronError:  # damaged: the report still gets its row; loading the student says what is wrong
        method = None
    return str(method or DEFAULT_METHOD)


def _retention(scores: dict[str, dict[str, float]], floor: str | None = None) -> float | None:
    """Student over teacher, averaged over the tasks both were scored on; with `floor`, the share of the
    teacher's gain over that baseline the student keeps, (s - f) / (t - f), over the tasks all three have."""
    tasks = set(scores["student"]) & set(scores["teacher"])
    if floor:
        tasks &= set(scores[floor])
    if not tasks:
        return None
    mean = lambda model: sum(scores[model][t] for t in tasks) / len(tasks)  # noqa: E731
    base = mean(floor) if floor else 0.0
    gain = mean("teacher") - base
    return (mean("student") - base) / gain if gain > 0 else None


def paper_rows() -> list[dict]:
    """Every published figure of the paper (kroncli/data/paper.json): a row per model and table, the `table` column
    naming it (Table 2 GLUE test, Table 4 dev, ...), `split` saying what was scored."""
    data = json.loads(resources.files("kroncli.data").joinpath("paper.json").read_text())
    return [{"workspace": "paper", **r} for r in data["rows"]]


def build_table(paths: list[str], paper: bool = False, skip: Callable[[str], None] | None = None) -> pd.DataFrame:
    """One row per student and evaluated teacher. A path that is no readable workspace is an error, or, given
    `skip`, reported to it and left out (`kron report runs/*` over a stray file), as long as one workspace is left."""
    if not paths and not paper:
        raise KronError("give at least one workspace, e.g. kron report runs/m19")
    unique, seen = [], set()
    for p in map(Path, paths):  # runs/a, runs/a/ and ./runs/a once
        if p.resolve() not in seen:
            seen.add(p.resolve())
            unique.append(p)
    names = [p.resolve().name for p in unique]
    rows = []
    for p in unique:
        try:  # two workspaces of one name (runs/a, old/a) are told apart by their paths
            rows += workspace_rows(p, str(p) if names.count(p.resolve().name) > 1 else None)
        except KronError as e:
            if skip is None:
                raise
            skip(str(e))
    if paths and not rows:
        raise KronError(f"none of {', '.join(map(str, paths))} is a readable kron workspace")
    if paper:
        rows += paper_rows()
    df = pd.DataFrame(rows)
    whole = {k for r in rows for k, v in r.items() if isinstance(v, int) and not isinstance(v, bool)}
    whole -= {k for r in rows for k, v in r.items() if isinstance(v, float)}
    for col in {"params", "teacher_params", *whole}:  # whole numbers, also beside rows that lack them (NaN)
        if col in df:
            df[col] = pd.to_numeric(df[col]).round().astype("Int64")
    lead = [c for c in BASE_COLUMNS if c in df]
    return df[lead + [c for c in df.columns if c not in lead]]


def cell(value) -> str:
    """A report value as text: empty for a missing one, floats with two decimals (under 0.01, three significant
    digits: a learning rate of 1e-05 is not 0.00), whole numbers as they are."""
    if pd.isna(value):
        return ""
    if isinstance(value, float):
        return f"{value:.3g}" if 0 < abs(value) < 0.01 else f"{value:,.2f}"
    return str(value)


def _wide(df: pd.DataFrame, title: str):
    """One row per model, one column per figure."""
    from rich.table import Column, Table
    from rich.text import Text

    table = Table(*[Column(str(c), overflow="fold") for c in df.columns], title=title)
    for row in df.itertuples(index=False):
        table.add_row(*[Text(cell(v)) for v in row])
    return table


def _tall(df: pd.DataFrame, title: str):
    """The same figures turned on their side: one row per figure, one column per model (workspace over model);
    figures none of these models has are left out."""
    from rich.table import Column, Table
    from rich.text import Text

    heads = [Column(Text(f"{r['workspace']}\n{r['model']}"), overflow="fold", justify="right")
             for _, r in df.iterrows()]
    table = Table(Column("", overflow="fold", style="bold"), *heads, title=title)
    for name in df.columns:
        values = [cell(v) for v in df[name]]
        if name not in ("workspace", "model") and any(values):
            table.add_row(Text(str(name)), *map(Text, values))
    return table


def _width(console, table) -> int:
    """The width the table takes unconstrained: its longest cells, no folding."""
    from rich.measure import Measurement

    return Measurement.get(console, console.options.update_width(1_000_000), table).maximum


def tables(df: pd.DataFrame, console, title: str = "kron report") -> list:
    """The report as rich tables that fit the console and never cut a cell: one wide table (a row per model) when
    it fits; else turned on its side (a row per figure), as many models side by side as fit, the rest in further
    tables below. Cells fold (wrap) rather than end in "…", should even one model not fit."""
    wide = _wide(df, title)
    if _width(console, wide) <= console.width:
        return [wide]
    out, start = [], 0
    while start < len(df):
        end = start + 1
        while end < len(df) and _width(console, _tall(df.iloc[start:end + 1], title)) <= console.width:
            end += 1
        out.append(_tall(df.iloc[start:end], title if not out else ""))
        start = end
    return out


def print_table(df: pd.DataFrame, console, title: str = "kron report") -> None:
    """`kron report`'s table (also printed at the end of `kron run`)."""
    for table in tables(df, console, title):
        console.print(table)


def render(df: pd.DataFrame, fmt: str) -> str:
    if fmt == "csv":
        return df.to_csv(index=False)
    if fmt == "json":
        return df.to_json(orient="records")
    if fmt == "markdown":
        cols = list(df.columns)
        lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
        lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in df.itertuples(index=False)]
        return "\n".join(lines) + "\n"
    raise KronError(f"unknown --format {fmt!r}; choose table, markdown, csv or json")
