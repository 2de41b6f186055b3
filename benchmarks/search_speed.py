"""Shape search + nearest-Kronecker init for all of BERT-base vs scoring the same candidates with full SVDs.

    python benchmarks/search_speed.py                      # default: ratio 19, both baseline dtypes
    python benchmarks/search_speed.py --dtypes float32     # quicker: one baseline dtype
    python benchmarks/search_speed.py --skip-baseline      # kron side only (seconds)
    python benchmarks/search_speed.py --full-baseline      # time the SVD baseline on all 73 matrices (minutes)

kron side: `kroncli.factorize.factorize(FactorizeOptions(random_init=..., ratio=...))`, i.e. exactly what
`kron factorize --random-init bert-base --ratio 19` runs; `search.score_candidates` is wrapped to time it
and to capture the candidate set and its search-grade (fp32 Gram) errors.

Baseline: the same candidates (same targets, same `candidate_shapes`, same ratio cap) scored with
`numpy.linalg.svd(R, compute_uv=False)` of the rearranged matrix R (numpy does the rearrangement too, so no
torch <-> OpenBLAS thread hand-over sits inside the timed loop). One SVD per (m1, n1) gives every rank.
By default it runs on ONE matrix of each distinct shape and is multiplied by the number of matrices of that
shape (for a given shape the SVD cost depends only on the shape, not the values); --full-baseline times
every matrix instead.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from collections import defaultdict

import numpy as np
import torch

import kroncli.factorize as kfactorize
from kroncli.kron import search
from kroncli.kron.nearest import rearrange, squared_singular_values


from machine import Contention, machine_line, quiet_run  # noqa: E402  (benchmarks/machine.py)

# ---------------------------------------------------------------- kron side
def run_kron(config: str, ratio: float, seed: int):
    """One `factorize` run with score_candidates wrapped; returns timings and the captured candidates."""
    captured = {}
    original = search.score_candidates

    def wrapped(targets, max_rank=1, ratio_cap=search.DEFAULT_LAYER_RATIO_CAP, progress=None, **options):
        t0 = time.perf_counter()  # options: min_side, min_embedding_dim, embedding_rank, passed through as given
        out = original(targets, max_rank, ratio_cap, progress=progress, **options)
        captured.update(score=time.perf_counter() - t0, targets=list(targets), cands=out, cap=ratio_cap,
                        max_rank=max_rank)
        return out

    marks: dict[str, list[float]] = defaultdict(list)

    class Marks:  # a `progress_factory`: factorize calls adv(1) after each scored target / initialised layer
        def __init__(self, label, total):
            self.label = label

        def __enter__(self):
            marks[self.label].append(time.perf_counter())
            return lambda n=1: marks[self.label].append(time.perf_counter())

        def __exit__(self, *exc):
            return False

    search.score_candidates = wrapped
    try:
        with Contention() as cont:
            t0 = time.perf_counter()
            result, _model, _tok = kfactorize.factorize(kfactorize.FactorizeOptions(
                random_init=config, ratio=ratio, seed=seed), progress_factory=Marks)
            total = time.perf_counter() - t0
    finally:
        search.score_candidates = original
    if "score" not in captured:
        raise SystemExit("factorize did not call score_candidates (a preset?)")
    tm = result.timings
    per = {}
    for label, key in (("searching shapes", "score"), ("initialising factors", "init")):
        ts = marks.get(label, [])
        per[key] = [b - a for a, b in zip(ts, ts[1:])]
    by_name = {t.name: (t.kind, t.shape) for t in captured["targets"]}
    captured["per_target"] = {"score": dict(zip([t.name for t in captured["targets"]], per["score"])),
                              "init": dict(zip([c.name for c in result.choices if c.rank > 0], per["init"]))}
    captured["by_name"] = by_name
    return {"load": tm["load"], "search": tm["search"], "init": tm["init"], "score": captured["score"],
            "allocate": tm["search"] - captured["score"], "total": total, "compression": result.compression,
            "other_load": cont.other}, captured


# ---------------------------------------------------------------- baseline
def np_rearrange(w: np.ndarray, m1: int, n1: int) -> np.ndarray:
    m, n = w.shape
    m2, n2 = m // m1, n // n1
    return np.ascontiguousarray(w.reshape(m1, m2, n1, n2).transpose(0, 2, 1, 3)).reshape(m1 * n1, m2 * n2)


def svd_baseline(weight: torch.Tensor, cands: list[tuple[int, int, int]], dtype) -> tuple[float, dict]:
    """Seconds to score `cands` of one matrix by full SVDs, and {(m1, n1, r): rel_error}."""
    ranks: dict[tuple[int, int], list[int]] = defaultdict(list)
    for m1, n1, r in cands:
        ranks[(m1, n1)].append(r)
    src = weight.detach().cpu().numpy()
    errors = {}
    t0 = time.perf_counter()
    w = src.astype(dtype)
    energy = float((w.astype(np.float64) ** 2).sum()) or 1e-30
    for (m1, n1), rs in ranks.items():
        s = np.linalg.svd(np_rearrange(w, m1, n1), compute_uv=False)
        kept = np.cumsum(s.astype(np.float64) ** 2)
        for r in rs:
            errors[(m1, n1, r)] = math.sqrt(max(1 - kept[min(r, len(kept)) - 1] / energy, 0.0))
    return time.perf_counter() - t0, errors


# ---------------------------------------------------------------- --profile: where kron's scoring time goes
def _best_of(fn, n: int = 3):
    best, out = math.inf, None
    for _ in range(n):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def _maxima(shapes: set) -> list:
    """Shapes not dividing (elementwise) any other shape of the set."""
    return [s for s in shapes if not any(o != s and o[0] % s[0] == 0 and o[1] % s[1] == 0 for o in shapes)]


def lattice_scores(w: torch.Tensor, pairs: list[tuple[int, int]], rank: int) -> dict:
    """PROTOTYPE for a proposal (kron does not use it): top-`rank` squared singular values of R(W) for every
    (m1, n1) in `pairs`, from a few shared "fine" Gram matrices.

    If m1 | M1 and n1 | N1, every block of the (m1, n1) partition is a union of blocks of the (M1, N1) one, so
    the coarse Gram R R^T is a sum of entries of the fine Gram:
        G[(i1, j1), (k1, l1)] = sum_{p<a, q<b} G'[(i1*a+p, j1*b+q), (k1*a+p, l1*b+q)],  a = M1/m1, b = N1/n1;
    likewise for the B-side Gram R^T R of a (m2, n2) B-block inside a (M2, N2) one. One GEMM per maximal
    candidate (under divisibility) replaces one GEMM + one rearrangement copy per candidate, and each
    accumulation runs over fewer terms (fp32-accurate where a 2 x 1.2M Gram is not).
    """
    m, n = w.shape
    a_side = {(m1, n1) for m1, n1 in pairs if m1 * n1 <= (m // m1) * (n // n1)}
    b_side = {(m // m1, n // n1) for m1, n1 in pairs if m1 * n1 > (m // m1) * (n // n1)}
    out = {}
    for side, shapes in (("A", a_side), ("B", b_side)):
        left = set(shapes)
        for big in sorted(_maxima(shapes), key=lambda s: -s[0] * s[1]):
            under = [s for s in left if big[0] % s[0] == 0 and big[1] % s[1] == 0]
            if not under:
                continue
            left -= set(under)
            if side == "A":
                r = rearrange(w, big[0], big[1])
                g = r @ r.t()
            else:
                r = rearrange(w, m // big[0], n // big[1])
                g = r.t() @ r
            for s0, s1 in under:
                a, b = big[0] // s0, big[1] // s1
                if side == "A":
                    gc = torch.einsum("ipjqkplq->ijkl", g.view(s0, a, s1, b, s0, a, s1, b))
                    key = (s0, s1)
                else:
                    gc = torch.einsum("piqjpkql->ijkl", g.view(a, s0, b, s1, a, s0, b, s1))
                    key = (m // s0, n // s1)
                eig = torch.linalg.eigvalsh(gc.reshape(s0 * s1, s0 * s1))
                out[key] = eig[-min(rank, eig.shape[0]):].flip(0).clamp_min(0)
    return out


def profile_scoring(groups: dict, shape_cands: dict, max_rank: int) -> None:
    """One matrix per shape: kron's per-candidate steps, and the shared-Gram prototype, both vs float64 SVD."""
    print("\n== --profile: kron scoring of one matrix per shape, split by step (best of 3, seconds) ==")
    print(f"{'shape':>16} {'cands':>5} {'rearrange':>9} {'Gram mm':>8} {'GFLOP/s':>7} {'eigvalsh':>8} "
          f"{'score':>7} | "
          f"{'shared-Gram':>11} {'x':>5} {'GEMMs':>5} | {'max|err-SVD64|: kron':>21} {'shared':>8}")
    for k, ts in groups.items():
        t = ts[0]
        w = t.weight.detach().float()
        w_t = w.t().contiguous()
        m, n = w.shape
        pairs = sorted({(m1, n1) for m1, n1, _ in shape_cands[k]})
        steps = defaultdict(float)
        macs = sum(min(m1 * n1, (m // m1) * (n // n1)) * m * n for m1, n1 in pairs)  # Gram multiply-adds
        for m1, n1 in pairs:
            if m // m1 > n // n1:
                rr = lambda: rearrange(w_t, n1, m1).contiguous()  # noqa: E731 (as squared_singular_values)
            else:
                rr = lambda: rearrange(w, m1, n1).contiguous()  # noqa: E731
            dt, r = _best_of(rr)
            steps["rearrange"] += dt
            dt, g = _best_of(lambda: r @ r.t() if r.shape[0] <= r.shape[1] else r.t() @ r)
            steps["gram"] += dt
            steps["eig"] += _best_of(lambda: torch.linalg.eigvalsh(g))[0]
        kron_t, kron_s = _best_of(lambda: {p: squared_singular_values(w, p[0], p[1], max_rank, w_t) for p in pairs})
        lat_t, lat_s = _best_of(lambda: lattice_scores(w, pairs, max_rank))
        a_max = _maxima({p for p in pairs if p[0] * p[1] <= (m // p[0]) * (n // p[1])})
        b_max = _maxima({(m // p[0], n // p[1]) for p in pairs if p[0] * p[1] > (m // p[0]) * (n // p[1])})
        w64 = w.double().numpy()
        energy = float((w64 ** 2).sum())
        err = lambda s: math.sqrt(max(1 - float(s[0]) / energy, 0.0))  # noqa: E731
        d_kron = d_lat = 0.0
        for p in pairs:
            exact = np.linalg.svd(np_rearrange(w64, *p), compute_uv=False)[0] ** 2
            d_kron = max(d_kron, abs(err(kron_s[p]) - err([exact])))
            d_lat = max(d_lat, abs(err(lat_s[p]) - err([exact])))
        print(f"{k[0][:3] + ' ' + f'{m}x{n}':>16} {len(pairs):5d} {steps['rearrange']:9.3f} {steps['gram']:8.3f} "
              f"{2 * macs / steps['gram'] / 1e9:7.0f} {steps['eig']:8.3f} {kron_t:7.3f} | {lat_t:11.3f} "
              f"{kron_t / lat_t:4.1f}x {len(a_max) + len(b_max):5d} | "
              f"{d_kron:21.1e} {d_lat:8.1e}")
    print("(GFLOP/s = 2 x the Gram products' multiply-adds (sum over candidates of short side x m x n) / "
          "'Gram mm'; "
          "score = squared_singular_values over all candidate shapes, as score_candidates calls it; "
          "shared-Gram = the lattice_scores prototype in this file; x = score / shared-Gram; "
          "GEMMs = fine Grams it computes instead of one per candidate)")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="bert-base", help="random-init config (kroncli.sources.RANDOM_CONFIGS)")
    p.add_argument("--ratio", type=float, default=19.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--repeats", type=int, default=1, help="factorize runs on the kron side (median reported)")
    p.add_argument("--dtypes", default="float32,float64",
                   help="comma list of baseline SVD dtypes (float32, float64)")
    p.add_argument("--full-baseline", action="store_true", help="SVD-score every matrix instead of one per shape")
    p.add_argument("--skip-baseline", action="store_true")
    p.add_argument("--profile", action="store_true",
                   help="split kron's scoring time by step and time the shared-Gram prototype (one matrix per shape)")
    p.add_argument("--wait-quiet", type=float, default=30.0,
                   help="before each timed block wait up to this many seconds for the machine to be idle")
    p.add_argument("--retries", type=int, default=2,
                   help="re-time a block (up to this many times) when other processes took > --max-other of "
                        "the CPUs while it ran")
    p.add_argument("--max-other", type=float, default=0.1)
    p.add_argument("--goal-speedup", type=float, default=25.0)
    p.add_argument("--goal-seconds", type=float, default=15.0)
    args = p.parse_args(argv)

    print("machine: " + machine_line(f", numpy {np.__version__}"))
    print(f"command: python {' '.join([os.path.relpath(sys.argv[0])] + sys.argv[1:])}")
    runs = []
    for i in range(args.repeats):
        (t, cap), _ = quiet_run(lambda: run_kron(args.config, args.ratio, args.seed), args.wait_quiet,
                                args.retries, args.max_other)
        runs.append(t)
        print(f"kron run {i + 1}/{args.repeats}: score_candidates {t['score']:.2f} s, allocate "
              f"{t['allocate']:.2f} s, init {t['init']:.2f} s (load {t['load']:.2f} s, compression "
              f"{t['compression']:.2f}x, other processes used {100 * t['other_load']:.0f}% of the CPUs)")
    med = {k: float(np.median([r[k] for r in runs])) for k in runs[0]}
    targets, cands, ratio_cap = cap["targets"], cap["cands"], cap["cap"]

    # The candidate set, grouped by distinct matrix shape.
    groups: dict[tuple, list] = defaultdict(list)
    for t in targets:
        groups[(t.kind, t.shape)].append(t)
    shape_cands = {k: search.candidate_shapes(ts[0], cap["max_rank"], ratio_cap) for k, ts in groups.items()}
    n_cand = sum(len(shape_cands[k]) * len(ts) for k, ts in groups.items())
    print(f"\ntargets: {len(targets)} matrices ({sum(1 for t in targets if t.kind == 'linear')} linear + "
          f"{sum(1 for t in targets if t.kind == 'embedding')} embedding), ratio cap used by factorize: "
          f"{ratio_cap:g}, max rank {cap['max_rank']}, candidates scored: {n_cand} "
          f"(+1 dense choice per matrix)")
    for k, ts in groups.items():
        scored = len(cands[ts[0].name]) - 1
        assert scored == len(shape_cands[k]), (k, scored, len(shape_cands[k]))

    kron_score, kron_e2e = med["score"], med["search"] + med["init"]
    dtypes = [] if args.skip_baseline else [d.strip() for d in args.dtypes.split(",") if d.strip()]
    rows, totals, diffs = {}, {}, {}
    for dt in dtypes:
        np_dt = {"float32": np.float32, "float64": np.float64}[dt]
        total, measured_all, worst_other = 0.0, True, 0.0
        worst: dict[str, tuple] = {}  # per kind: (diff, where)
        for k, ts in groups.items():
            timed = ts if args.full_baseline else ts[:1]
            secs, shape_other = [], 0.0
            for t in timed:
                (s, errs), other = quiet_run(lambda: svd_baseline(t.weight, shape_cands[k], np_dt),
                                             args.wait_quiet, args.retries, args.max_other)
                secs.append(s)
                worst_other, shape_other = max(worst_other, other), max(shape_other, other)
                kron_err = {(c.m1, c.n1, c.rank): c.rel_error for c in cands[t.name] if c.rank > 0}
                for key, e in errs.items():
                    d = abs(e - kron_err[key])
                    if d >= worst.get(t.kind, (-1.0,))[0]:
                        worst[t.kind] = (d, (t.name, key, e, kron_err[key]))
            per_matrix = float(np.mean(secs))
            est = per_matrix * len(ts) if not args.full_baseline else float(np.sum(secs))
            measured_all &= len(timed) == len(ts)
            total += est
            rows[(dt, k)] = (per_matrix, len(timed), est)
            print(f"baseline {dt} {k[0]} {k[1][0]}x{k[1][1]}: {len(shape_cands[k])} candidates, "
                  f"{per_matrix:.2f} s/matrix (timed on {len(timed)} of {len(ts)}) -> {est:.1f} s; other processes "
                  f"used {100 * shape_other:.0f}% of the CPUs", flush=True)
        totals[dt] = (total, measured_all, worst_other)
        diffs[dt] = worst

    per_t = cap["per_target"]
    print("\n== per shape: kron (this factorize run, mean s per matrix) vs full-SVD baseline (s per matrix) ==")
    print(f"{'shape':>16} {'count':>5} {'cands':>5} {'kron score':>10} {'kron init':>9}"
          + "".join(f" {'SVD ' + dt[5:]:>8} {'timed':>5} {'speed-up':>8}" for dt in dtypes))
    for k, ts in groups.items():
        ks = float(np.mean([per_t["score"].get(t.name, float("nan")) for t in ts]))
        ki = float(np.mean([per_t["init"].get(t.name, float("nan")) for t in ts]))
        line = (f"{k[0][:3] + ' ' + f'{k[1][0]}x{k[1][1]}':>16} {len(ts):5d} {len(shape_cands[k]):5d} "
                f"{ks:10.3f} {ki:9.3f}")
        for dt in dtypes:
            per, timed, _ = rows[(dt, k)]
            line += f" {per:8.3f} {timed:5d} {per / ks:7.1f}x"
        print(line)
    print("(speed-up here = baseline s/matrix / kron score s/matrix; 'SVD 32'/'SVD 64' = numpy float32/float64; "
          "baseline totals = s/matrix x count" + (")" if not args.full_baseline else ", every matrix timed)"))

    print("\n== search speed: all of %s at --ratio %g (%d candidates) ==" % (args.config, args.ratio, n_cand))
    print(f"kron  score_candidates (fp32 Gram)          {kron_score:8.2f} s")
    print(f"kron  allocate (knapsack)                   {med['allocate']:8.2f} s")
    print(f"kron  init of chosen shapes (float64 fit)   {med['init']:8.2f} s")
    print(f"kron  search + init                         {kron_e2e:8.2f} s   (goal < {args.goal_seconds:g} s: "
          + ("met" if kron_e2e < args.goal_seconds else
             f"MISSED by {kron_e2e - args.goal_seconds:.2f} s / {100 * (kron_e2e / args.goal_seconds - 1):.0f}%")
          + ")")
    for dt, (total, measured_all, other) in totals.items():
        how = "measured on every matrix" if measured_all else "one matrix per shape x count"
        sp_score, sp_e2e = total / kron_score, total / kron_e2e
        print(f"full SVD {dt:7} baseline scoring           {total:8.1f} s   ({how}; other processes used "
              f"{100 * other:.0f}% of the CPUs)")
        print(f"  speed-up, scoring only (baseline / score_candidates):        {sp_score:6.1f}x")
        print(f"  speed-up, end to end (baseline / (kron search + init)):      {sp_e2e:6.1f}x   (goal >= "
              f"{args.goal_speedup:g}x: "
              + ("met" if sp_e2e >= args.goal_speedup else
                 f"MISSED by {args.goal_speedup - sp_e2e:.1f}x / {100 * (1 - sp_e2e / args.goal_speedup):.0f}%")
              + ")")
        for kind, (d, where) in sorted(diffs[dt].items()):
            name, key, e, ke = where
            print(f"  max |rel_error(kron fp32 Gram) - rel_error(SVD {dt})|, {kind:9}: {d:.2e} "
                  f"(at {name} A={key[0]}x{key[1]} r{key[2]}: {ke:.6f} vs {e:.6f}; "
                  f"on {'all' if args.full_baseline else 'the timed'} matrices)")
    if args.profile:
        profile_scoring(groups, shape_cands, cap["max_rank"])
    other = max([r["other_load"] for r in runs] + [v[2] for v in totals.values()])
    if other > 0.1:
        print(f"WARNING: other processes used up to {100 * other:.0f}% of the CPUs during a timed block; "
              "rerun on a quiet machine for clean figures")
    return 0


if __name__ == "__main__":
    sys.exit(main())
