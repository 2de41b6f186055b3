"""Cost of one distillation step vs one plain fine-tuning step of the dense teacher, side by side.

Distillation step: teacher forward under inference_mode (attention scores + hidden states captured in the
same pass) + student forward/backward + AdamW step. Fine-tuning step: the dense teacher's forward/backward +
AdamW step on the same batch. Both are timed alternately in one process; medians are reported.

    python benchmarks/distill_step.py --batch 32 --seq-len 128 --repeats 5
Goal (issue 3): distillation step <= 1.5x the fine-tuning step, all-MiniLM-L6-v2 -> 19x student, 32x128.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from machine import Contention, load_line, machine_line  # noqa: E402  (benchmarks/machine.py)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="all-MiniLM-L6-v2")
    ap.add_argument("--ratio", type=float, default=19)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--seq-len", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()

    from kroncli import sources
    from kroncli.distill.capture import Capture
    from kroncli.distill.losses import DistillLoss
    from kroncli.factorize import FactorizeOptions, factorize
    from kroncli.stages.distill import DEFAULT_WEIGHTS

    torch.manual_seed(0)
    result, student, _ = factorize(FactorizeOptions(model=args.model, ratio=args.ratio))
    teacher, _ = sources.load_model(sources.resolve(args.model))
    tuned, _ = sources.load_model(sources.resolve(args.model))  # the dense model being fine-tuned
    teacher.eval().requires_grad_(False)
    student.train()
    tuned.train()
    vocab = teacher.config.vocab_size
    batch = {"input_ids": torch.randint(1000, vocab, (args.batch, args.seq_len)),
             "attention_mask": torch.ones(args.batch, args.seq_len, dtype=torch.long)}

    loss_fn = DistillLoss(DEFAULT_WEIGHTS)
    t_cap, s_cap = Capture(teacher, "scores"), Capture(student, "scores")
    s_opt = torch.optim.AdamW(student.parameters(), lr=1e-5)
    d_opt = torch.optim.AdamW(tuned.parameters(), lr=1e-5)

    def distill_step():
        with torch.inference_mode():
            t = t_cap(**batch)
        loss, _ = loss_fn(s_cap(**batch), t, batch)
        loss.backward()
        s_opt.step()
        s_opt.zero_grad()

    def finetune_step():
        out = tuned(**batch).last_hidden_state
        loss = out.float().pow(2).mean()  # a stand-in task loss: the same backward through every layer
        loss.backward()
        d_opt.step()
        d_opt.zero_grad()

    times = {"distill": [], "finetune": []}
    for fn in (distill_step, finetune_step):  # warm-up
        fn()
    with Contention() as load:
        for _ in range(args.repeats):
            for name, fn in (("distill", distill_step), ("finetune", finetune_step)):
                t0 = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - t0)
    d, f = statistics.median(times["distill"]), statistics.median(times["finetune"])
    print(f"machine: {machine_line()}")
    print(f"model {args.model}, student {result.compression:.1f}x, batch {args.batch}x{args.seq_len}, "
          f"threads {torch.get_num_threads()}, torch {torch.__version__}")
    print(f"{'step':<34}{'median s':>10}")
    print(f"{'distillation (teacher fwd + student)':<34}{d:>10.3f}")
    print(f"{'dense fine-tuning (fwd+bwd+AdamW)':<34}{f:>10.3f}")
    print(f"ratio distill/finetune: {d / f:.2f}x (goal <= 1.5x)")
    print(load_line(load.other))


if __name__ == "__main__":
    main()
