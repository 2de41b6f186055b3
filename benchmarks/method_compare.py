"""Is Kronecker the best use of the parameters? Every `kron factorize --method` at the same budgets, through the
same pipeline, in one table (issue 28).

For each budget (--ratios, default 19 and 5) and method (kronecker, lowrank, narrow) the teacher is compressed,
distilled on the same text with the same steps, learning rate, loss weights and seed (stage 1), then fine-tuned
on every task in the data dir from one shared fine-tuned teacher (stage 2, same settings for every method), scored
on dev, and exported to int8 ONNX, whose dev score is measured too. Last, the fine-tuned task models of the first
task (teacher, each student in PyTorch fp32, each int8 export) are timed side by side in one run (interleaved,
median), at batch 1 and 8.

    python benchmarks/method_compare.py --out runs/methods                  # ~20-30 min on a quiet 2-core CPU
    python benchmarks/method_compare.py --out /tmp/mc --quick               # smoke test: a few steps, minutes
    python benchmarks/method_compare.py --ratios 19 --tasks mrpc --stage1-steps 800   # one budget, longer

Every setting is an option; the defaults are sized for a 2-core CPU, not for the best scores (docs/results.md has
the long runs). One learning rate per stage serves every method (no per-method search: say so when reading the
table). Rows: the teacher (dense, fine-tuned per task), then method x budget, each fp32 and its int8 export.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

REPO = Path(__file__).resolve().parents[1]
METHODS = ("kronecker", "lowrank", "narrow")
# the README's MiniLM settings for the Kronecker shape search (docs/guide.md); the others have no such knobs
METHOD_ARGS = {"kronecker": ["--min-side", "2", "--embedding-rank", "16"], "lowrank": [], "narrow": []}


def kron(*args) -> dict:
    args = [str(a) for a in args]
    proc = subprocess.run([sys.executable, "-m", "kroncli", *args, "--json"], capture_output=True, text=True)
    if proc.returncode:
        sys.exit(f"kron {' '.join(args)} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def parse() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="all-MiniLM-L6-v2", help="teacher (default: the offline MiniLM)")
    ap.add_argument("--ratios", default="19,5", help="budgets as teacher/student parameter ratios")
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--data-dir", default=os.environ.get("KRON_GLUE_DIR", str(REPO.parent / "shared" / "glue")))
    ap.add_argument("--tasks", default=None, help="comma list (default: every task folder in --data-dir)")
    ap.add_argument("--corpus", default=None, help="stage-1 text (default: the data dir's CoLA/train.tsv)")
    ap.add_argument("--out", default="runs/methods")
    ap.add_argument("--stage1-steps", type=int, default=100)
    ap.add_argument("--stage1-lr", type=float, default=1e-3)
    ap.add_argument("--teacher-epochs", type=float, default=2)
    ap.add_argument("--epochs", type=float, default=1, help="stage 2 epochs (per task)")
    ap.add_argument("--lr", type=float, default=6e-4, help="stage 2 learning rate")
    ap.add_argument("--limit", type=int, default=1000, help="training examples per task (0: all)")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--max-seq-len", type=int, default=64)
    ap.add_argument("--attention-weight", type=float, default=0.02, help="attention_mse weight, both stages")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--speed-seq-len", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=10, help="timed forwards per model and batch")
    ap.add_argument("--quick", action="store_true", help="smoke test: 2 steps per stage, 16 examples, 1 task")
    args = ap.parse_args()
    if args.quick:
        args.stage1_steps, args.limit, args.repeats = 2, 16, 2
        args.tasks = args.tasks or "mrpc"
    return args


def task_list(args) -> list:
    from kroncli.data.glue import TASKS, normalize_task

    data = Path(args.data_dir)
    names = args.tasks.split(",") if args.tasks else [t.name for t in TASKS.values()
                                                       if (data / t.folder / "train.tsv").is_file()]
    tasks = [normalize_task(n) for n in names]
    if not tasks:
        sys.exit(f"no GLUE task in {data} (set --data-dir or KRON_GLUE_DIR)")
    return tasks


def stage2_args(args, task, epochs: float) -> list:
    steps = ["--max-steps", 2] if args.quick else ["--epochs", epochs]
    return ["--task", task.name.lower(), "--data-dir", args.data_dir, "--batch-size", args.batch_size,
            "--max-seq-len", args.max_seq_len, "--seed", args.seed, *steps,
            *(["--limit", args.limit] if args.limit else [])]


def train_teachers(args, tasks, first_ws: Path) -> dict:
    """Fine-tune the dense teacher once per task, in the first workspace; every student distils from it."""
    scores = {}
    for task in tasks:
        kron("finetune", "-w", first_ws, "--teacher-only", *stage2_args(args, task, args.teacher_epochs))
        scores[task.name] = stage_eval(first_ws, "teacher", task)
        print(f"teacher {task.name}: {scores[task.name]}", flush=True)
    return scores


def stage_eval(ws: Path, kind: str, task) -> dict:
    stages = json.loads((ws / "manifest.json").read_text())["stages"]
    return {k: v for k, v in stages[f"{kind}-{task.name.lower()}"]["eval"].items() if k != "n"}


def build_student(args, ws: Path, method: str, ratio: float, corpus: str) -> dict:
    t0 = time.perf_counter()
    made = kron("factorize", args.model, "--ratio", ratio, "--method", method, *METHOD_ARGS[method], "-w", ws)
    kron("distill", "-w", ws, "--corpus", corpus, "--max-steps", args.stage1_steps, "--batch-size",
         args.batch_size, "--max-seq-len", args.max_seq_len, "--lr", args.stage1_lr, "--seed", args.seed,
         "--weight", f"attention_mse={args.attention_weight}")
    print(f"{method} {ratio:g}x: {made['student_params']:,} params ({made['compression']:.2f}x), stage 1 in "
          f"{time.perf_counter() - t0:.0f}s", flush=True)
    return made


def finetune_student(args, ws: Path, first_ws: Path, task, export_dir: Path) -> tuple[dict, dict]:
    """Stage 2 from the shared teacher, then the int8 export with its dev score: (fp32 scores, int8 scores)."""
    folder = Path("tasks") / task.name.lower() / "teacher"
    if not (ws / folder).exists():
        shutil.copytree(first_ws / folder, ws / folder)
    kron("finetune", "-w", ws, *stage2_args(args, task, args.epochs), "--lr", args.lr,
         "--weight", f"attention_mse={args.attention_weight}")
    fp32 = stage_eval(ws, "finetune", task)
    out = kron("export", "-w", ws, "--task", task.name.lower(), "--format", "onnx", "--quantize", "int8",
               "--data-dir", args.data_dir, "--out", export_dir, "--force",
               *(["--eval-limit", 32] if args.quick else []))
    acc = out.get("accuracy", {})
    int8 = {k: v for k, v in acc.get("int8", {}).items()}
    return fp32, int8


def time_side_by_side(args, first_ws: Path, runs: list[dict], task) -> dict:
    """Median ms per forward at batch 1 and 8: teacher, each student (fp32, PyTorch) and its int8 export, interleaved
    in one run so that every model meets the same machine load."""
    import torch
    from transformers import AutoModelForSequenceClassification

    from machine import Contention, load_line

    from kroncli.evaluation.speed.models import ModelRef, load_onnx
    from kroncli.evaluation.speed.timing import make_inputs, time_interleaved
    from kroncli.student import load_student

    lower = task.name.lower()
    models = {"teacher": AutoModelForSequenceClassification.from_pretrained(
        first_ws / "tasks" / lower / "teacher").eval()}
    for r in runs:
        models[r["label"]] = load_student(r["ws"] / "tasks" / lower / "student").float().eval()
        onnx = r["exports"][task.name] / "model.onnx"
        models[r["label"] + " int8"] = load_onnx(ModelRef(r["label"] + " int8", "onnx", "onnx", str(onnx),
                                                          str(onnx.parent)), torch.get_num_threads())
    vocab = models["teacher"].config.vocab_size
    out = {}
    with Contention() as busy:
        for batch in (1, 8):
            inputs = make_inputs(batch, args.speed_seq_len, vocab)
            times = time_interleaved(models, inputs, args.repeats, 2, lambda: None)
            for name, t in times.items():
                out.setdefault(name, {})[f"b{batch}_ms"] = 1000 * statistics.median(t)
    print(load_line(busy.other), flush=True)
    return out


def size_mb(folder: Path, name: str) -> float:
    return (folder / name).stat().st_size / 1e6


def main() -> None:
    args = parse()
    sys.path.insert(0, str(REPO / "benchmarks"))
    from machine import machine_line

    print(machine_line(), flush=True)
    tasks = task_list(args)
    corpus = args.corpus or str(Path(args.data_dir) / "CoLA" / "train.tsv")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    ratios = [float(r) for r in args.ratios.split(",")]
    methods = args.methods.split(",")
    t_start = time.perf_counter()
    runs, first_ws = [], None
    for ratio in ratios:
        for method in methods:
            ws = out / f"{method}-{ratio:g}x"
            if ws.exists():
                shutil.rmtree(ws)
            made = build_student(args, ws, method, ratio, corpus)
            if first_ws is None:
                first_ws = ws
                teacher_scores = train_teachers(args, tasks, first_ws)
            run = {"label": f"{method} {ratio:g}x", "ws": ws, "method": method, "ratio": ratio,
                   "params": made["student_params"], "size_mb": size_mb(ws / "student", "model.safetensors"),
                   "scores": {}, "int8": {}, "exports": {}}
            for task in tasks:
                export_dir = out / "exports" / f"{method}-{ratio:g}x-{task.name.lower()}"
                run["scores"][task.name], run["int8"][task.name] = finetune_student(args, ws, first_ws, task,
                                                                                    export_dir)
                run["exports"][task.name] = export_dir
                run["int8_mb"] = size_mb(export_dir, "model.onnx")
            print(f"{run['label']}: {run['scores']} int8 {run['int8']}", flush=True)
            runs.append(run)
    speed = time_side_by_side(args, first_ws, runs, tasks[0])
    teacher = json.loads((first_ws / "manifest.json").read_text())["teacher"]
    teacher_dir = Path(teacher.get("path") or "")
    teacher_mb = sum(f.stat().st_size for f in teacher_dir.glob("*.safetensors")) / 1e6 if teacher_dir.is_dir() \
        else float("nan")
    rows = [{"model": "teacher", "params": teacher["params"], "size_MB": teacher_mb, **speed["teacher"],
             **{f"{t}:{k}": v for t, s in teacher_scores.items() for k, v in s.items()}}]
    for r in runs:
        rows.append({"model": r["label"], "params": r["params"], "size_MB": r["size_mb"], **speed[r["label"]],
                     **{f"{t}:{k}": v for t, s in r["scores"].items() for k, v in s.items()}})
        rows.append({"model": r["label"] + " int8", "params": r["params"], "size_MB": r["int8_mb"],
                     **speed[r["label"] + " int8"],
                     **{f"{t}:{k}": v for t, s in r["int8"].items() for k, v in s.items()}})
    df = pd.DataFrame(rows)
    pd.set_option("display.width", 250)
    print(f"\nlatency: {tasks[0].name} task models, seq len {args.speed_seq_len}, median of {args.repeats} "
          f"interleaved forwards, {__import__('torch').get_num_threads()} threads; int8 size: the task export's "
          f"model.onnx; dev scores: {', '.join(t.name for t in tasks)}"
          + (" (int8: the first 32 dev examples, --quick)" if args.quick else ""))
    print(df.to_string(index=False, float_format=lambda v: f"{v:.2f}"))
    df.to_csv(out / "method_compare.csv", index=False)
    print(f"\n{time.perf_counter() - t_start:.0f}s in all; table in {out / 'method_compare.csv'}")


if __name__ == "__main__":
    main()
