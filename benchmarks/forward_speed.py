"""Forward latency and peak memory: Kronecker-compressed BERT-base students vs the dense teacher.

    python benchmarks/forward_speed.py                         # teacher, --objective error/speed, presets
    python benchmarks/forward_speed.py --models teacher,error --repeats 5     # quick
    python benchmarks/forward_speed.py --models speed --profile               # per-layer breakdown

Every model is built and measured in its own fresh subprocess (`--worker`), one after the other, so that
their memory figures do not mix: the teacher is `BertModel(BertConfig())` with random weights (seed 0), a
student is `kroncli.factorize.factorize(FactorizeOptions(random_init="bert-base", ratio=19, objective=...))`
(or preset=...). Latency: torch.inference_mode, fp32, CPU, `model(input_ids=...)` on (batch, seq) random
token ids (no attention mask unless --mask), median of --repeats timed calls after --warmup calls.
Memory: the process's resident set (VmRSS) with the model built (after gc + malloc_trim), and the peak
resident set while the forward calls ran (the kernel's VmHWM high-water mark, reset just before the first
warm-up call by writing 5 to /proc/self/clear_refs); "fwd" is that peak minus the RSS before it, i.e. the
activations, temporaries and allocator overhead of the forward pass (process memory, not live-tensor bytes).

--profile times every KroneckerLinear of a student alone (same input shape as in the model) in each of the
four contraction plans of layers.py, next to an nn.Linear of the same shape, and prints where time goes.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import subprocess
import sys
import time

import torch

ORDERS = ("a_bmm", "a_flat", "b_bmm", "b_flat")


from machine import load_line, machine_line, quiet_run  # noqa: E402  (benchmarks/machine.py)

def _status_kb(field: str) -> int | None:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return None


def _malloc_trim() -> bool:
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
        return True
    except (OSError, AttributeError):
        return False


def _reset_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


# ---------------------------------------------------------------- worker (one model, fresh process)
def build(model_name: str, ratio: float, seed: int):
    from kroncli.factorize import FactorizeOptions, factorize
    from kroncli.sources import load_model, resolve

    if model_name == "teacher":
        model, _ = load_model(resolve(None, "bert-base"), seed=seed)
        return model, {"compression": 1.0}
    kw = {"preset": model_name} if model_name.startswith("kronecker") else {"ratio": ratio, "objective": model_name}
    result, model, _ = factorize(FactorizeOptions(random_init="bert-base", seed=seed, **kw))
    return model, {"compression": result.compression, "rel_error_mean": result.rel_error_mean}


def _times_ms(fn, warmup: int, repeats: int) -> list[float]:
    for _ in range(warmup):
        fn()
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        ts.append(1e3 * (time.perf_counter() - t0))
    return ts


def _median_ms(fn, warmup: int, repeats: int) -> float:
    return statistics.median(_times_ms(fn, warmup, repeats))


def profile_layers(model, batch: int, seq: int, warmup: int, repeats: int, args) -> dict:
    """Per KroneckerLinear: time of each plan and of nn.Linear of the same shape, aggregated by shape."""
    from kroncli.kron.layers import KroneckerEmbedding, KroneckerLinear

    by_shape: dict[tuple, dict] = {}
    linear_cache: dict[tuple, float] = {}
    gen = torch.Generator().manual_seed(0)
    for name, mod in model.named_modules():
        if not isinstance(mod, KroneckerLinear):
            continue
        key = (mod.m1, mod.n1, mod.m2, mod.n2, mod.rank)
        if key in by_shape:
            by_shape[key]["count"] += 1
            continue
        x = torch.randn(batch, seq, mod.in_features, generator=gen)
        current = mod.order
        lk = (mod.in_features, mod.out_features)

        def measure():
            plans = {}
            for order in ORDERS:
                mod.order = order
                plans[order] = _median_ms(lambda: mod(x), warmup, repeats)
            mod.order = current
            if lk not in linear_cache:
                lin = torch.nn.Linear(mod.in_features, mod.out_features)
                linear_cache[lk] = _median_ms(lambda: lin(x), warmup, repeats)
            return plans

        plans, other = quiet_run(measure, args.wait_quiet, args.retries, args.max_other, wait_first=False)
        by_shape[key] = {"count": 1, "order": current, "plans": plans, "linear": linear_cache[lk],
                         "other_load": other}
    emb = {}
    for name, mod in model.named_modules():
        if isinstance(mod, KroneckerEmbedding):
            ids = torch.randint(0, mod.num_embeddings, (batch, seq), generator=gen)
            dense = torch.nn.Embedding(mod.num_embeddings, mod.embedding_dim)
            emb = {"kron": _median_ms(lambda: mod(ids), warmup, repeats),
                   "dense": _median_ms(lambda: dense(ids), warmup, repeats), "f": mod.f}
    return {"shapes": [{"shape": list(k), **v} for k, v in by_shape.items()], "embedding": emb}


def worker(args) -> dict:
    torch.manual_seed(args.seed)
    model, info = build(args.worker, args.ratio, args.seed)
    model.eval()
    gc.collect()
    trimmed = _malloc_trim()  # hand the freed teacher weights (students are built from one) back to the OS
    params = sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())
    out = {"model": args.worker, "params": params, "param_mb": params * 4 / 2**20, **info,
           "rss_model_mb": _status_kb("VmRSS") / 1024, "malloc_trim": trimmed, "batches": {},
           "threads": torch.get_num_threads()}
    gen = torch.Generator().manual_seed(args.seed)
    with torch.inference_mode():
        for b in args.batches:
            ids = torch.randint(1000, 30000, (b, args.seq_len), generator=gen)
            kw = {"attention_mask": torch.ones_like(ids)} if args.mask else {}
            gc.collect()
            _malloc_trim()
            rss0 = _status_kb("VmRSS")

            def timed():
                reset = _reset_peak()
                times = _times_ms(lambda: model(input_ids=ids, **kw), args.warmup, args.repeats)
                return times, reset, _status_kb("VmHWM")

            (times, reset, peak), other = quiet_run(timed, args.wait_quiet, args.retries, args.max_other)
            out["batches"][str(b)] = {"median_ms": statistics.median(times), "min_ms": min(times),
                                      "rss_before_mb": rss0 / 1024, "peak_mb": peak / 1024,
                                      "fwd_peak_mb": (peak - rss0) / 1024 if reset else None,
                                      "other_load": other}
        if args.profile and args.worker != "teacher":
            out["profile"] = {str(b): profile_layers(model, b, args.seq_len, 2, max(5, args.repeats), args)
                              for b in args.batches}
            out["profile_total_ms"] = {str(b): out["batches"][str(b)]["median_ms"] for b in args.batches}
    out["maxrss_mb"] = __import__("resource").getrusage(__import__("resource").RUSAGE_SELF).ru_maxrss / 1024
    return out


# ---------------------------------------------------------------- parent
def print_profile(res: dict) -> None:
    for b, prof in res["profile"].items():
        total = res["profile_total_ms"][b]
        rows = []
        for s in prof["shapes"]:
            cur = s["plans"][s["order"]]
            best = min(s["plans"], key=s["plans"].get)
            rows.append((cur * s["count"], s, cur, best))
        rows.sort(key=lambda r: -r[0])
        kron_sum = sum(r[0] for r in rows)
        best_sum = sum(r[1]["plans"][r[3]] * r[1]["count"] for r in rows)
        lin_sum = sum(r[1]["linear"] * r[1]["count"] for r in rows)
        print(f"\n-- per-layer profile: {res['model']}, batch {b}x{args_seq}: each KroneckerLinear alone, "
              f"median ms (plan chosen by choose_order marked *) --")
        print(f"{'A (m1xn1) (x) B (m2xn2)':>26} {'n':>3} " + " ".join(f"{o:>8}" for o in ORDERS)
              + f" {'Linear':>8} {'n*cur':>7} {'best':>7}")
        for tot, s, cur, best in rows:
            m1, n1, m2, n2, r = s["shape"]
            cells = " ".join(f"{s['plans'][o]:7.3f}" + ("*" if o == s["order"] else " ") for o in ORDERS)
            busy = " ~" if s.get("other_load", 0) > 0.1 else ""
            print(f"{f'{m1}x{n1} (x) {m2}x{n2}' + (f' r{r}' if r > 1 else ''):>26} {s['count']:3d} {cells} "
                  f"{s['linear']:8.3f} {tot:7.2f} {best:>7}{busy}")
        if any(s.get("other_load", 0) > 0.1 for s in prof["shapes"]):
            print("(~ = other processes took > 10% of the CPUs while that row was timed, even after retries)")
        print(f"sum over Kronecker linears: current plans {kron_sum:.1f} ms, best plan per shape {best_sum:.1f} ms, "
              f"nn.Linear of the same shapes {lin_sum:.1f} ms; whole student forward {total:.1f} ms "
              f"(so ~{max(total - kron_sum, 0):.1f} ms outside the Kronecker linears)")
        if prof["embedding"]:
            e = prof["embedding"]
            print(f"embedding (f={e['f']}): Kronecker {e['kron']:.3f} ms vs nn.Embedding {e['dense']:.3f} ms")


args_seq = 128


def main(argv=None) -> int:
    global args_seq
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default="teacher,error,speed,kroneckerbert8,kroneckerbert21",
                   help="comma list: teacher, error, speed (objectives at --ratio), kroneckerbert8/21 (presets)")
    p.add_argument("--ratio", type=float, default=19.0)
    p.add_argument("--batches", default="1,8", help="comma list of batch sizes")
    p.add_argument("--seq-len", type=int, default=128)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--mask", action="store_true", help="also pass attention_mask=ones (as `kron eval speed` does)")
    p.add_argument("--profile", action="store_true", help="per-layer breakdown of each student (slower)")
    p.add_argument("--goals", default="error:3,2;speed:4,3",
                   help="speed-up goals per model at the batches, e.g. error:3,2;speed:4,3")
    p.add_argument("--wait-quiet", type=float, default=30.0,
                   help="before each timed block wait up to this many seconds for the machine to be idle")
    p.add_argument("--retries", type=int, default=2,
                   help="re-time a block (up to this many times) when other processes took > --max-other of "
                        "the CPUs while it ran")
    p.add_argument("--max-other", type=float, default=0.1)
    p.add_argument("--worker", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    args.batches = [int(b) for b in str(args.batches).split(",")]
    args_seq = args.seq_len
    if args.worker:
        print(json.dumps(worker(args)))
        return 0

    print(f"machine: {machine_line()}")
    print(f"command: python {' '.join([os.path.relpath(sys.argv[0])] + sys.argv[1:])}")
    print("memory: each model in a fresh subprocess; RSS = VmRSS with the model built (after gc + malloc_trim: a "
          "student's process built the dense teacher first); peak = VmHWM over the "
          "warm-up + timed forwards (reset via /proc/self/clear_refs); fwd = peak - RSS before the forwards")
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    if "teacher" not in models:
        models = ["teacher"] + models
    results = {}
    for m in models:
        cmd = [sys.executable, os.path.abspath(__file__), "--worker", m, "--ratio", str(args.ratio),
               "--batches", ",".join(map(str, args.batches)), "--seq-len", str(args.seq_len),
               "--warmup", str(args.warmup), "--repeats", str(args.repeats), "--seed", str(args.seed),
               "--wait-quiet", str(args.wait_quiet), "--retries", str(args.retries),
               "--max-other", str(args.max_other)]
        if args.profile:
            cmd.append("--profile")
        if args.mask:
            cmd.append("--mask")
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode:
            print(proc.stderr[-3000:], file=sys.stderr)
            raise SystemExit(f"worker {m} failed")
        results[m] = json.loads(proc.stdout.strip().splitlines()[-1])
        r = results[m]
        lat = ", ".join(f"{b}x{args.seq_len}: {v['median_ms']:.1f} ms" for b, v in r["batches"].items())
        print(f"  {m:16} {r['compression']:6.2f}x smaller  {lat}  ({time.perf_counter() - t0:.0f} s)", flush=True)

    goals = {}
    for part in args.goals.split(";"):
        if ":" in part:
            name, vals = part.split(":")
            goals[name.strip()] = [float(v) for v in vals.split(",")]
    teacher = results["teacher"]
    print(f"\n== forward latency, {args.seq_len} tokens per sequence, median of {args.repeats} after "
          f"{args.warmup} warm-up (torch.inference_mode, fp32, {teacher['threads']} threads) ==")
    head = (f"{'model':16} {'ratio':>6} {'params':>11} {'param MiB':>9} {'RSS MiB':>7}  "
            + "  ".join(f"{f'{b}x{args.seq_len} ms':>10} {'speed-up':>8} {'peak MiB':>8} {'fwd MiB':>7}"
                        for b in args.batches) + "  other-load")
    print(head)
    misses = []
    for m, r in results.items():
        cells = []
        for i, b in enumerate(args.batches):
            v = r["batches"][str(b)]
            sp = teacher["batches"][str(b)]["median_ms"] / v["median_ms"]
            goal = goals.get(m, [None] * len(args.batches))
            g = goal[i] if i < len(goal) else None
            mark = "" if g is None else ("  " if sp >= g else " !")
            if g is not None and sp < g:
                misses.append(f"{m} at {b}x{args.seq_len}: {sp:.2f}x vs goal {g:g}x (short by {g - sp:.2f}x, "
                              f"{100 * (1 - sp / g):.0f}%)")
            fwd = "n/a" if v["fwd_peak_mb"] is None else f"{v['fwd_peak_mb']:.0f}"
            cells.append(f"{v['median_ms']:10.1f} {sp:7.2f}x{mark[-1:] or ' '}{v['peak_mb']:8.0f} {fwd:>7}")
        load = max(v["other_load"] for v in r["batches"].values())
        print(f"{m:16} {r['compression']:5.2f}x {r['params']:11,d} {r['param_mb']:9.1f} {r['rss_model_mb']:7.0f}  "
              + "  ".join(cells) + f"  {100 * load:5.0f}%")
    print("(speed-up = teacher median / model median, both measured in this run; '!' = below its goal; "
          "other-load = CPU share used by other processes during the timed forwards)")
    print("fastest repeat (min ms) and speed-up from it: " + "; ".join(
        f"{m} " + ", ".join(f"{b}x{args.seq_len} {r['batches'][str(b)]['min_ms']:.1f} ms "
                            f"({teacher['batches'][str(b)]['min_ms'] / r['batches'][str(b)]['min_ms']:.2f}x)"
                            for b in args.batches) for m, r in results.items()))
    # judged: only the goals of models that ran, at the batches that ran; the rest said to be not measured
    judged = {k: v[:len(args.batches)] for k, v in goals.items() if k in results}
    unmeasured = [k for k in goals if k not in results]
    goal_txt = "; ".join(f"{k}: " + "/".join(f"{g:g}x" for g in v) for k, v in judged.items()) or "none"
    verdict = "nothing judged" if not judged else "all met" if not misses else "MISSED: " + "; ".join(misses)
    print(f"goals ({goal_txt} at batches {'/'.join(map(str, args.batches))}): {verdict}"
          + (f"; not measured: {', '.join(unmeasured)}" if unmeasured else ""))
    print(load_line(max((v["other_load"] for r in results.values() for v in r["batches"].values()), default=0.0),
                    args.max_other))
    for m, r in results.items():
        if "profile" in r:
            print_profile(r)
    return 0


if __name__ == "__main__":
    sys.exit(main())
