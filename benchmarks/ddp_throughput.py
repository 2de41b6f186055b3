"""Examples/s of `kron distill` with one process vs two torchrun (gloo, CPU) processes, same per-process batch.

Both runs distil the same 19x student of all-MiniLM-L6-v2 for the same number of steps on the same corpus;
examples/s is the median of the logged rows after the first (warm-up). One process uses all cores
(torch threads = cores); each of the N DDP processes gets cores/N threads (OMP_NUM_THREADS), so the
comparison is at equal hardware.

    python benchmarks/ddp_throughput.py --steps 12 --batch 16
Goal (issue 3): two processes >= 1.5x the examples/s of one.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pandas as pd
from machine import Contention, load_line, machine_line  # noqa: E402  (benchmarks/machine.py)


def corpus_file(folder: Path) -> Path:
    glue = Path(os.environ.get("KRON_GLUE_DIR", Path(__file__).resolve().parents[2] / "shared" / "glue"))
    lines = []
    for task, col in (("CoLA/train.tsv", 3), ("MRPC/train.tsv", 3), ("STS-B/train.tsv", 7)):
        path = glue / task
        if path.is_file():
            lines += [row.split("\t")[col] for row in path.read_text(encoding="utf-8-sig").splitlines()[1:]
                      if len(row.split("\t")) > col]
    if not lines:
        lines = ["the quick brown fox jumps over the lazy dog"] * 5000
    out = folder / "corpus.txt"
    out.write_text("\n".join(lines))
    return out


def run(cmd: list[str], env: dict) -> None:
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode:
        sys.exit(f"failed: {' '.join(cmd)}\n{proc.stderr[-3000:]}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="all-MiniLM-L6-v2")
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--seq-len", type=int, default=128)
    ap.add_argument("--procs", type=int, default=2)
    args = ap.parse_args()
    cores = os.cpu_count() or 1
    with tempfile.TemporaryDirectory() as tmp, Contention() as load:
        tmp = Path(tmp)
        corpus = corpus_file(tmp)
        results = {}
        for n in (1, args.procs):
            ws = tmp / f"ws{n}"
            env = {**os.environ, "OMP_NUM_THREADS": str(max(cores // n, 1))}
            run([sys.executable, "-m", "kroncli", "factorize", args.model, "--ratio", "19", "-w", str(ws), "--json"],
                env)
            launch = [sys.executable, "-m", "kroncli"] if n == 1 else \
                [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(n), "-m", "kroncli"]
            run(launch + ["distill", "-w", str(ws), "--corpus", str(corpus), "--max-steps", str(args.steps),
                          "--batch-size", str(args.batch), "--max-seq-len", str(args.seq_len), "--log-every", "1",
                          "--save-every", str(10 ** 6)], env)
            df = pd.read_csv(ws / "metrics" / "distill.csv")
            results[n] = df.examples_per_s.iloc[1:].median()
    print(f"machine: {machine_line()}")
    print(f"{args.model} 19x student, per-process batch {args.batch}x{args.seq_len}, {cores} cores")
    for n, eps in results.items():
        print(f"{n} process(es): {eps:8.1f} examples/s (threads per process {max(cores // n, 1)})")
    print(f"speed-up {args.procs} vs 1 process: {results[args.procs] / results[1]:.2f}x (goal >= 1.5x)")
    print(load_line(load.other))


if __name__ == "__main__":
    main()
