"""Quality benchmark: the whole pipeline on all-MiniLM-L6-v2 at >= 19x for every task in a GLUE data dir.

For each task found in the data dir (MRPC, STS-B, CoLA, WNLI here; any GLUE task in the original layout),
runs `kron run` on a recipe (default recipes/minilm-19x-glue.yaml) with that task, sharing one stage-1
student across tasks (stage 1 runs once, in the first workspace, and its student is copied), then prints
teacher score, student score, the majority-class floor, retention (student / teacher, and the share of the
teacher's gain over the floor the student keeps) and the wall time of every stage.

    python benchmarks/glue_retention.py --data-dir ../shared/glue --out runs/retention
    python benchmarks/glue_retention.py --set distill.max_steps=300 --set finetune.epochs=2   # quicker

Targets (issue 5, dev, student vs its own fine-tuned teacher at >= 19x): MRPC accuracy within 2 points,
STS-B Pearson within 4 points, CoLA keeps >= 60% of the teacher's Matthews corr.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

REPO = Path(__file__).resolve().parents[1]
TARGETS = {"MRPC": ("accuracy", "gap", 2.0), "STS-B": ("pearson", "gap", 4.0), "CoLA": ("mcc", "keep", 0.60)}


def kron(*args: str) -> dict:
    proc = subprocess.run([sys.executable, "-m", "kroncli", *args, "--json"], capture_output=True, text=True)
    if proc.returncode:
        sys.exit(f"kron {' '.join(args)} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def judge(df: pd.DataFrame) -> None:
    """One line per issue-5 target found in the table: met, MISSED, or not judged (teacher at the floor)."""
    for task, (metric, kind, goal) in TARGETS.items():
        r = df[(df.task == task) & (df.metric == metric)]
        if len(r):
            r = r.iloc[0]
            if r.teacher <= r.majority:  # a teacher that learned nothing makes any student "meet" the goal
                print(f"target {task} {metric}: not judged, the teacher ({r.teacher:.2f}) does not beat the "
                      f"majority class ({r.majority:.2f}); train it longer")
                continue
            ok = r.gap <= goal if kind == "gap" else r.retention >= goal
            what = f"gap {r.gap:.2f} (goal <= {goal})" if kind == "gap" else \
                f"keeps {100 * r.retention:.0f}% (goal >= {100 * goal:.0f}%)"
            print(f"target {task} {metric}: {what} -> {'met' if ok else 'MISSED'}")
            if kind == "gap" and pd.notna(r.unseen_student):  # the start saw some dev inputs
                gap = r.unseen_teacher - r.unseen_student
                print(f"target {task} {metric} on the {int(r.unseen_n)} dev examples no training saw: gap {gap:.2f} "
                      f"(goal <= {goal}) -> {'met' if gap <= goal else 'MISSED'}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", default=os.environ.get("KRON_GLUE_DIR", str(REPO.parent / "shared" / "glue")))
    ap.add_argument("--recipe", default=str(REPO / "recipes" / "minilm-19x-glue.yaml"))
    ap.add_argument("--out", default="runs/retention")
    ap.add_argument("--tasks", default=None, help="comma list (default: every task folder in --data-dir)")
    ap.add_argument("--set", action="append", default=[], help="recipe override, repeatable")
    args = ap.parse_args()

    from kroncli.data.glue import TASKS, normalize_task
    from kroncli.recipes import load_recipe
    from kroncli.run import init_source, sources_first

    data = Path(args.data_dir)
    tasks = args.tasks.split(",") if args.tasks else [t.name for t in TASKS.values()
                                                       if (data / t.folder / "train.tsv").is_file()]
    tasks = [normalize_task(t).name for t in tasks]
    finetune = load_recipe(Path(args.recipe), args.set).finetune
    tasks = sources_first(tasks, finetune.init_from)  # a task whose student starts from another's comes after it
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    common = ["--set", f"data_dir={data}", *[x for s in args.set for x in ("--set", s)]]
    rows, timings = [], []
    general = out / "general"
    t0 = time.perf_counter()
    kron("run", args.recipe, "-w", str(general), "--until", "distill", "--set", "finetune.tasks=[]",
         "--set", "eval.glue=[]", *common)
    manifest = json.loads((general / "manifest.json").read_text())
    for stage in ("factorize", "distill"):
        info = manifest["stages"].get(stage, {})
        timings.append({"task": "(shared)", "stage": stage, "seconds": info.get("seconds")})
    print(f"stage 1 done in {time.perf_counter() - t0:.0f}s: compression "
          f"{manifest['stages']['factorize']['compression']:.2f}x", flush=True)
    for task in tasks:
        ws = out / task.lower()
        if not ws.exists():  # the distilled general student, shared by every task
            shutil.copytree(general, ws, ignore=shutil.ignore_patterns("checkpoints", ".lock", "cache"))
        source = init_source(finetune, task)  # finetune.init_from: the source task's student, from its workspace
        own = []
        if source and source in tasks:
            src = out / source.lower() / "tasks" / source.lower() / "student"
            if not (ws / "tasks" / source.lower() / "student").exists():
                shutil.copytree(src, ws / "tasks" / source.lower() / "student")
        elif source:
            print(f"{task}: finetune.init_from names {source}, which this benchmark does not run; {task}'s student "
                  "starts from the general one", flush=True)
            own = ["--set", "finetune.init_from={}"]
        started = time.perf_counter()
        kron("run", args.recipe, "-w", str(ws), "--set", f"finetune.tasks=[{task}]", "--set",
             f"eval.glue=[{task}]", "--set", "eval.speed=false", *common, *own)
        m = json.loads((ws / "manifest.json").read_text())["stages"]
        for stage in (f"teacher-{task.lower()}", f"finetune-{task.lower()}"):
            timings.append({"task": task, "stage": stage, "seconds": m.get(stage, {}).get("seconds")})
        ev = pd.read_csv(ws / "metrics" / "eval.csv")
        ev = ev[ev.task == TASKS[task].name].sort_values("timestamp").groupby(["model", "metric"]).last()
        # a start from another task whose training set held some dev inputs: both models without them as well
        unseen = m.get(f"finetune-{task.lower()}", {}).get("eval_unseen") or {}
        scores = []
        for metric in TASKS[task].metrics:
            t, s = ev.loc[("teacher", metric), "value"], ev.loc[("student", metric), "value"]
            floor = ev["value"].get(("majority", metric), float("nan"))  # kron eval glue's majority-class row
            rows.append({"task": task, "metric": metric, "teacher": t, "student": s, "majority": floor,
                         "gap": t - s, "retention": s / t if t > 0 else float("nan"),  # as kron report
                         "gain_retention": (s - floor) / (t - floor) if t > floor else float("nan"),
                         "unseen_teacher": (unseen.get("teacher") or {}).get(metric, float("nan")),
                         "unseen_student": (unseen.get("student") or {}).get(metric, float("nan")),
                         "unseen_n": (unseen.get("student") or {}).get("n", float("nan"))})
            scores.append(f"{metric} teacher {t:.2f} student {s:.2f}")
        print(f"{task} done in {time.perf_counter() - started:.0f}s: {'; '.join(scores)}", flush=True)
    df = pd.DataFrame(rows)
    print("\n" + df.to_string(index=False, float_format=lambda v: f"{v:.2f}"))
    print("\nwall time per stage (s):\n" + pd.DataFrame(timings).to_string(index=False))
    judge(df)
    df.to_csv(out / "retention.csv", index=False)


if __name__ == "__main__":
    main()
