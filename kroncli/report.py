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

BASE_COLUMNS = ["workspace", "model", "params", "teacher_params", "compression", "size_mb"]


def _read_csv(path: Path) -> pd.DataFrame | None:
    if not path.is_file() or not path.stat().st_size:
        return None
    try:
        return pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError):  # damaged: an empty cell
        return None


def _primary(task: str) -> str:
    from .data.glue import normalize_task
    from .metrics import primary_metric

    try:
        return primary_metric(normalize_task(task))
    except KronError:
        return "f1"  # SQuAD and friends


def _latest(evals: pd.DataFrame, model: str) -> pd.DataFrame:
    sub = evals[evals["model"] == model].sort_values("timestamp")
    return sub.groupby(["task", "split", "metric"], as_index=False).last()


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
    student = {"workspace": label, "model": "student", "params": fact.get("student_params"),
               "teacher_params": teacher_params, "compression": fact.get("compression"),
               "size_mb": weights.stat().st_size / 1e6 if weights.is_file() else None}
    teacher = {"workspace": label, "model": "teacher", "params": teacher_params,
               "teacher_params": teacher_params, "compression": 1.0, "size_mb": None}
    evals = _read_csv(ws.metrics_dir / "eval.csv")
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
                elif str(task).lower().startswith("squad"):
                    for m in ("exact", "f1", "exact_match", "em"):
                        if m in metrics:
                            row[f"{task} {m}"] = metrics[m]
                elif split.startswith(("dev", "validation")):
                    key = task if split in ("dev", "validation") else f"{task}-{split.split('_')[-1][:2]}"
                    score = metrics.get(_primary(task))
                    if score is not None:
                        row[key] = score
                        glue_scores[model][key] = score
            if model == "teacher" and len(latest):
                have_teacher = True
    # tasks trained but never run through `kron eval glue`: the dev score stage 2 logged at its end
    for name, info in manifest.get("stages", {}).items():
        model = "teacher" if name.startswith("teacher-") else "student" if name.startswith("finetune-") else None
        task, ev = info.get("task"), info.get("eval") or {}
        if model is None or not task or not info.get("done") or str(task).lower().startswith("squad"):
            continue
        score = ev.get(_primary(task))
        if score is not None and task not in glue_scores[model]:
            (student if model == "student" else teacher)[task] = score
            glue_scores[model][task] = score
            have_teacher = have_teacher or model == "teacher"
        floor = (info.get("majority") or {}).get(_primary(task))
        if floor is not None:
            glue_scores["majority"].setdefault(task, floor)
        # a student started from another task's (--init-from) whose training set held some dev inputs: both
        # models on the dev examples that training never saw (see data/overlap.py); beside, not in the averages
        unseen = info.get("eval_unseen") or {}
        for who, row in (("student", student), ("teacher", teacher)):
            value = (unseen.get(who) or {}).get(_primary(task))
            if value is not None:
                row[f"{task} unseen"] = value
    for model, row in (("student", student), ("teacher", teacher)):
        if glue_scores[model]:
            row["glue_avg"] = sum(glue_scores[model].values()) / len(glue_scores[model])
    student["retention"] = _retention(glue_scores)
    student["gain_retention"] = _retention(glue_scores, floor="majority")
    speed = _read_csv(ws.metrics_dir / "speed.csv")
    if speed is not None and "speedup" in speed:
        last = speed[speed["model"] == "student"].groupby(["batch", "seq_len"]).last()
        for (batch, seq), r in last.iterrows():
            student[f"speedup b{batch}x{seq}"] = r["speedup"]
    return [student] + ([teacher] if have_teacher else [])


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
    data = json.loads(resources.files("kroncli.data").joinpath("paper.json").read_text())
    return [{"workspace": "paper", **{k: v for k, v in r.items() if k != "table"}} for r in data["rows"]]


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
    for col in ("params", "teacher_params"):  # whole numbers, also beside the paper's rows (which lack some)
        if col in df:
            df[col] = pd.to_numeric(df[col]).round().astype("Int64")
    lead = [c for c in BASE_COLUMNS if c in df]
    return df[lead + [c for c in df.columns if c not in lead]]


def render(df: pd.DataFrame, fmt: str) -> str:
    if fmt == "csv":
        return df.to_csv(index=False)
    if fmt == "json":
        return df.to_json(orient="records")
    if fmt == "markdown":
        cols = list(df.columns)
        fmtv = lambda v: "" if pd.isna(v) else (f"{v:,.2f}" if isinstance(v, float) else str(v))  # noqa: E731
        lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
        lines += ["| " + " | ".join(fmtv(v) for v in row) + " |" for row in df.itertuples(index=False)]
        return "\n".join(lines) + "\n"
    raise KronError(f"unknown --format {fmt!r}; choose table, markdown, csv or json")
