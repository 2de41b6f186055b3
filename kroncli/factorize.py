"""`kron factorize`: teacher -> shape search -> nearest-Kronecker student -> workspace."""

from __future__ import annotations

import math
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field

import pandas as pd

from . import sources
from .errors import KronError
from .kron import search
from .kron.search import Choice, Target
from .student import save_student
from .surgery import apply_choices, count_params, find_targets, keep_layers
from .workspace import Workspace, atomic_write_text

METHODS = ("kronecker", "lowrank", "narrow")
CSV_COLUMNS = ["name", "layer_type", "kind", "m", "n", "m1", "n1", "m2", "n2", "rank", "params",
               "dense_params", "rel_error", "macs"]


@dataclass
class FactorizeOptions:
    """Everything `kron factorize` takes besides the workspace."""

    model: str | None = None
    random_init: str | None = None
    ratio: float | None = None
    max_params: int | None = None
    preset: str | None = None
    objective: str = "error"
    max_rank: int = 1
    targets: str | None = None
    exclude: str | None = None
    max_layer_ratio: float | None = None
    min_side: int = 1
    min_embedding_dim: int = 1
    embedding_rank: int = 0
    layers: list[int] | None = None  # teacher layers the student keeps (None: all)
    seed: int = 0
    method: str = "kronecker"  # kronecker | lowrank (truncated SVD) | narrow (dense, narrower)
    width: int | None = None  # narrow: the student's hidden size (default: the widest within the budget)


@dataclass
class FactorizeResult:
    teacher_params: int
    student_params: int
    choices: list[Choice]
    source: sources.ModelSource
    timings: dict = field(default_factory=dict)
    method: str = "kronecker"
    record: dict = field(default_factory=dict)  # what kron.json adds for the method (narrow: the widths kept)
    projection: object = None  # narrow: the learned map into the teacher's width (saved beside the student)

    @property
    def compression(self) -> float:
        return self.teacher_params / self.student_params

    @property
    def rel_error_mean(self) -> float:
        factored = [c.rel_error for c in self.choices if c.rank > 0]
        return sum(factored) / len(factored) if factored else 0.0

    def by_type(self) -> list[dict]:
        groups: dict[str, list[Choice]] = defaultdict(list)
        for c in self.choices:
            groups[c.layer_type].append(c)
        rows = []
        for lt, cs in groups.items():
            shapes = Counter(self._shape(c) for c in cs)
            rows.append({"layer_type": lt, "count": len(cs), "shapes": [s for s, _ in shapes.most_common()],
                         "params": sum(c.params for c in cs), "dense_params": sum(c.dense_params for c in cs),
                         "rel_error_mean": sum(c.rel_error for c in cs) / len(cs)})
        return rows

    def _shape(self, c: Choice) -> str:
        if c.rank == 0:
            return f"dense {c.m}x{c.n}" if c.params != c.dense_params else "dense"
        if self.method == "lowrank":
            return f"rank {c.rank}"
        return f"{c.m1}x{c.n1} (x) {c.m2}x{c.n2}" + (f" r{c.rank}" if c.rank > 1 else "")

    def summary(self, workspace: str | None) -> dict:
        return {"teacher": self.source.requested, "method": self.method, "teacher_params": self.teacher_params,
                "student_params": self.student_params, "compression": round(self.compression, 4),
                "rel_error_mean": round(self.rel_error_mean, 6), "workspace": workspace,
                "layers": len([c for c in self.choices if c.rank > 0]), "by_type": self.by_type(),
                "seconds": {k: round(v, 3) for k, v in self.timings.items()}}


def _validate_method(opts: FactorizeOptions) -> None:
    """--method and the options that belong to one method only."""
    if opts.method not in METHODS:
        raise KronError(f"unknown --method {opts.method!r}; choose one of {', '.join(METHODS)}")
    if opts.width is not None and opts.method != "narrow":
        raise KronError(f"--width sets a narrow student's hidden size; add --method narrow (not {opts.method})")
    if opts.method == "kronecker":
        return
    only = {"--preset": opts.preset is not None, "--max-rank": opts.max_rank != 1, "--min-side": opts.min_side != 1,
            "--min-embedding-dim": opts.min_embedding_dim != 1, "--objective speed": opts.objective != "error",
            "--max-layer-ratio": opts.max_layer_ratio is not None and opts.method == "narrow",
            "--embedding-rank": bool(opts.embedding_rank) and opts.method == "narrow",
            "--targets/--exclude": (opts.targets or opts.exclude) is not None and opts.method == "narrow"}
    bad = [k for k, v in only.items() if v]
    if bad:
        raise KronError(f"{bad[0]} does not apply to --method {opts.method}; drop it, or use --method kronecker")


def _validate(opts: FactorizeOptions) -> None:
    _validate_method(opts)
    given = [k for k in ("ratio", "max_params", "preset") if getattr(opts, k) is not None]
    if len(given) > 1:
        raise KronError("choose one of --ratio, --max-params and --preset")
    if opts.ratio is not None and not math.isfinite(opts.ratio):
        raise KronError(f"--ratio {opts.ratio:g} is not a finite number; pass a ratio >= 1, e.g. --ratio 19")
    if opts.ratio is not None and opts.ratio < 1:
        raise KronError(f"--ratio {opts.ratio:g} is below 1: a student cannot be larger than its teacher; "
                        "pass a ratio >= 1, e.g. --ratio 19")
    if opts.max_layer_ratio is not None and not opts.max_layer_ratio > 1:  # NaN too
        raise KronError(f"--max-layer-ratio {opts.max_layer_ratio:g} leaves no shape to choose: a Kronecker factor "
                        "pair compresses its matrix more than 1x; pass a cap above 1, e.g. --max-layer-ratio 64, "
                        "or leave it out (default max(64, 4 x ratio))")
    if opts.max_params is not None and opts.max_params <= 0:
        raise KronError("--max-params must be a positive number of parameters")
    if opts.preset is not None and opts.preset not in search.PRESETS:
        raise KronError(f"unknown --preset {opts.preset!r}; choose one of {', '.join(search.PRESETS)}")
    if opts.objective not in ("error", "speed"):
        raise KronError(f"unknown --objective {opts.objective!r}; choose error or speed")
    if opts.max_rank < 1:
        raise KronError("--max-rank must be at least 1")
    if opts.min_side < 1:
        raise KronError("--min-side must be at least 1 (1 allows every shape)")
    if opts.min_embedding_dim < 1:
        raise KronError("--min-embedding-dim must be at least 1 (1 allows every shape)")
    if opts.embedding_rank < 0:
        raise KronError("--embedding-rank must be 0 (the paper's a_i (x) b table) or a number of terms >= 1")
    if opts.embedding_rank and opts.preset:
        raise KronError("--embedding-rank applies to the shape search; a --preset fixes the paper's embedding "
                        "shape: drop one of the two")
    if not opts.preset and opts.ratio is None and opts.max_params is None and opts.width is None:
        opts.ratio = 19.0


def _preset_plan(targets: list[Target], opts: FactorizeOptions) -> list[Choice]:
    try:
        shapes = search.preset_choices(targets, opts.preset)
    except ValueError as e:
        raise KronError(str(e)) from None
    out = []
    for t, m1, n1 in shapes:
        m, n = t.shape
        params = m1 * n1 + (m // m1) * (n // n1)
        out.append(Choice(t.name, t.kind, t.layer_type, m, n, m1, n1, 1, params, m * n,
                          search.layer_macs(t.kind, m, n, m1, n1, 1), search.estimate_error(t, m1, n1, 1)))
    return out


def cut_teacher(model, opts: FactorizeOptions) -> int:
    """Count the whole teacher, then keep only `opts.layers` (if given) in place; returns the whole count, which
    the ratio is measured against."""
    teacher_params = count_params(model)
    if opts.layers is not None:
        keep_layers(model, opts.layers)
    return teacher_params


def smallest_student(targets: list[Target], model_params: int, opts: FactorizeOptions,
                     cap: float = math.inf) -> int:
    """Fewest parameters a student can have under `opts`' shape rules (and a per-matrix ratio cap): the
    parameters left dense plus each target's smallest candidate. Counts only; no SVD. `model_params` counts the
    model being factored (after `--layers` cut it)."""
    keep = model_params - sum(t.weight.numel() for t in targets)
    return keep + sum(search.smallest_params(t, cap, opts.min_side, opts.min_embedding_dim, opts.embedding_rank,
                                             opts.method) for t in targets)


def budget(opts: FactorizeOptions, teacher_params: int) -> tuple[int | None, str]:
    """(student parameter budget, how it was asked for); None when narrow's --width alone sets the size."""
    if opts.ratio is not None:
        return int(teacher_params / opts.ratio), f"--ratio {opts.ratio:g}"
    if opts.max_params is not None:
        return opts.max_params, f"--max-params {opts.max_params}"
    return None, ""


def _narrow(model, opts: FactorizeOptions, teacher_params: int):
    """(student, projection, choices, record) of `--method narrow`."""
    from . import narrow

    total, asked = budget(opts, teacher_params)
    widths = narrow.choose_widths(model, total, opts.width, asked, teacher_params)
    return narrow.build(model, widths)


def _search_plan(model, targets: list[Target], opts: FactorizeOptions, teacher_params: int,
                 progress=None) -> list[Choice]:
    """Shapes within the budget. The ratio is to the whole teacher, even when `--layers` dropped some of it."""
    model_params = count_params(model)
    keep = model_params - sum(t.weight.numel() for t in targets)
    total, asked = budget(opts, teacher_params)
    ratio = teacher_params / total
    cap = opts.max_layer_ratio or max(search.DEFAULT_LAYER_RATIO_CAP, 4 * ratio)
    smallest = smallest_student(targets, model_params, opts)
    if total < smallest:
        how = "" if opts.method == "kronecker" else f" with --method {opts.method}"
        raise KronError(f"{asked} cannot be met{how}: the largest ratio possible for this model and these targets "
                        f"is {teacher_params / smallest:.1f}x ({smallest:,} parameters; {keep:,} of them are not "
                        "factored)")
    capped = smallest_student(targets, model_params, opts, cap)
    if total < capped and opts.max_layer_ratio is not None:  # a cap the user set is kept, or the run refused
        raise KronError(f"{asked} cannot be met with --max-layer-ratio {opts.max_layer_ratio:g}: under that cap the "
                        f"largest ratio is {teacher_params / capped:.1f}x; raise the cap, lower the ratio, or leave "
                        "--max-layer-ratio out")
    if total < capped:
        cap = math.inf  # the default cap: the budget needs shapes beyond it, open them all
    cands = search.score_candidates(targets, opts.max_rank, cap, progress=progress, min_side=opts.min_side,
                                    min_embedding_dim=opts.min_embedding_dim,
                                    embedding_rank=opts.embedding_rank, method=opts.method)
    return search.allocate(cands, total - keep, opts.objective)


def factorize(opts: FactorizeOptions, plan_only: bool = False, progress_factory=None):
    """Run the search (and, unless plan_only, the nearest-Kronecker init). Returns (result, model, tokenizer)."""
    _validate(opts)
    timings = {}
    t0 = time.perf_counter()
    source = sources.resolve(opts.model, opts.random_init)
    model, tokenizer = sources.load_model(source, seed=opts.seed)
    timings["load"] = time.perf_counter() - t0
    teacher_params = cut_teacher(model, opts)
    if opts.method == "narrow":
        t0 = time.perf_counter()
        student, projection, choices, record = _narrow(model, opts, teacher_params)
        timings["init"] = time.perf_counter() - t0
        return FactorizeResult(teacher_params, count_params(student), choices, source, timings, opts.method, record,
                               projection), student, tokenizer
    targets = find_targets(model, opts.targets, opts.exclude)

    t0 = time.perf_counter()
    if opts.preset:
        choices = _preset_plan(targets, opts)
    else:
        with (progress_factory("searching shapes", len(targets)) if progress_factory else _null()) as adv:
            choices = _search_plan(model, targets, opts, teacher_params, progress=adv)
    timings["search"] = time.perf_counter() - t0
    student_params = count_params(model) - sum(c.dense_params - c.params for c in choices)
    if not plan_only:
        t0 = time.perf_counter()
        with (progress_factory("initialising factors", len(choices)) if progress_factory else _null()) as adv:
            apply_choices(model, choices, init=True, on_layer=(lambda c: adv(1)) if adv else None)
        timings["init"] = time.perf_counter() - t0
        student_params = count_params(model)
    return FactorizeResult(teacher_params, student_params, choices, source, timings, opts.method), model, tokenizer


class _null:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


def write_workspace(ws: Workspace, result: FactorizeResult, model, tokenizer, args: dict, command: list[str],
                    force: bool) -> None:
    """Student, per-layer CSV and manifest; each write atomic."""
    layers = args.get("layers")
    from .narrow import attach_projection

    attach_projection(model, result.projection)  # save_student writes it beside the student
    save_student(model, result.choices, ws.student_dir, tokenizer,
                 extra={"teacher": result.source.describe(), "teacher_params": result.teacher_params,
                        "method": result.method, **({"narrow": result.record} if result.record else {}),
                        **({"teacher_layers": list(layers)} if layers is not None else {})})
    rows = [{**c.row(), "layer_type": c.layer_type} for c in result.choices]
    csv = pd.DataFrame(rows, columns=CSV_COLUMNS).to_csv(index=False)
    atomic_write_text(ws.metrics_csv("factorize"), csv)
    ws.record_stage("factorize", {
        "command": command, "args": args, "student_params": result.student_params,
        "compression": result.compression, "rel_error_mean": result.rel_error_mean,
        "seconds": round(sum(result.timings.values()), 3),
    }, reset=force, top={"teacher": {**result.source.describe(), "params": result.teacher_params}})
