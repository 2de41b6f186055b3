"""The one training loop used by `kron distill` and `kron finetune`, on Hugging Face accelerate.

accelerate owns devices, DDP (`accelerate launch` / `torchrun`), mixed precision, gradient accumulation
and checkpoint state; this module adds what a long CPU/GPU run needs around it: atomic, pruned
checkpoints with the data position, exact mid-epoch resume, a save on Ctrl-C / SIGTERM, a stop with the
step number on a non-finite loss, CSV metrics and a progress bar. Only the main process logs and writes.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import time
from dataclasses import asdict
from pathlib import Path
from typing import Callable

import torch
from safetensors import SafetensorError

from . import metrics_csv as csvlog
from .errors import KronError, first_line
from .integrity import folder_problem, guard, json_problem, read_json_object, warn
from .train_config import (  # noqa: F401 (re-exported: the stages and kron run import them here)
    AT_LEAST_ONE, MIXED_PRECISION, RESUMABLE, TrainConfig, check_training_values, cli_flag, first_change)

STEP_PREFIX = "step_"


def changed_on_resume(meta: dict, cfg: TrainConfig, made: dict | None, now: dict | None) -> str | None:
    """`--lr was 0.0003, now 0.001`: what this run would change in the stage a checkpoint belongs to (the TrainConfig
    fields but RESUMABLE, and `made`/`now`: the settings the stage passes in its fingerprint, such as loss weights and
    temperature); None when nothing does."""
    old = {**{k: meta[k] for k in ("batch_size", "grad_accum") if k in meta}, **(meta.get("config") or {}),
           **(made or {})}
    change = first_change(old, {**json.loads(json.dumps(asdict(cfg))), **(now or {})}, lambda k: k in RESUMABLE)
    if change is None:
        return None
    key, was, new = change
    name, _, entry = key.partition(" ")

    def shown(v):
        return "unset" if v is None else repr(v)

    return f"{cli_flag(name)}{' ' + entry if entry else ''} was {shown(was)}, now {shown(new)}"


def budget_plan(summary: dict) -> dict:
    """The plan of a --max-minutes run (total steps, timed seconds per step) for a manifest entry; {} otherwise."""
    return {k: summary[k] for k in ("total_steps", "seconds_per_step") if k in summary}


class NonFiniteLoss(KronError):
    pass


class Interrupted(KronError):
    """Stopped by a signal with a checkpoint saved: exit 128 + the signal (130 Ctrl-C, 143 SIGTERM), not the 2 of bad
    input, so a script can tell "resume me" from "fix the command"."""

    def __init__(self, message: str, signum: int | None = None):
        super().__init__(message)
        self.exit_code = 128 + (signum or signal.SIGINT)


def checkpoints(stage_dir: Path) -> list[tuple[int, Path]]:
    """Complete checkpoints (with meta.json), oldest first."""
    if not stage_dir.is_dir():
        return []
    out = []
    for d in stage_dir.iterdir():
        if d.name.startswith(STEP_PREFIX) and (d / "meta.json").is_file():
            try:
                out.append((int(d.name[len(STEP_PREFIX):]), d))
            except ValueError:
                continue
    return sorted(out)


# what load_state cannot do without (the scheduler is a custom checkpoint); checked where a checkpoint lists no files
ACCELERATE_FILES = ("model", "optimizer", "custom_checkpoint")


def checkpoint_problem(ckpt: Path) -> str | None:
    """Why a checkpoint cannot be resumed from, or None when it is intact.

    Intact, checked cheaply (no tensor is read): meta.json parses; every file it lists is there with the size it was
    saved with (checkpoints older than that list: accelerate's model and optimizer files are there); each
    safetensors header parses and covers its file; each torch file (.bin, .pkl) has its zip directory.
    """
    problem = json_problem(ckpt / "meta.json")
    if problem:
        return f"meta.json: {problem}"
    try:
        problem = _files_problem(ckpt, json.loads((ckpt / "meta.json").read_text()).get("files"))
    except (OSError, AttributeError) as e:  # removed meanwhile; a meta.json that is no object
        problem = first_line(e)
    if problem:
        return problem
    found = folder_problem(ckpt, torch_files=True)
    return f"{found[0].name}: {found[1]}" if found else None


def _files_problem(ckpt: Path, files: dict | None) -> str | None:
    if files is None:
        names = [p.name for p in ckpt.iterdir()]
        missing = [n for n in ACCELERATE_FILES if not any(m.startswith(n) for m in names)]
        return f"no {missing[0]} file" if missing else None
    for name, size in files.items():
        if not (ckpt / name).is_file():
            return f"{name} is missing"
        if (ckpt / name).stat().st_size != size:
            return f"{name} has {(ckpt / name).stat().st_size:,} bytes, {size:,} were saved"
    return None


def resume_point(stage_dir: Path, main: bool) -> tuple[int, Path, dict] | None:
    """(step, folder, meta) of the newest intact checkpoint (see checkpoint_problem), None when there is none. A
    damaged newer one is named and (by the main process) removed: the resumed run trains its steps again and saves
    them anew."""
    found = checkpoints(stage_dir)
    damaged = []
    for step, ckpt in reversed(found):
        problem = checkpoint_problem(ckpt)
        if problem is None:
            if damaged and main:
                warn(f"checkpoint {'; '.join(damaged)}: resuming from {ckpt} instead (the damaged one is removed, its "
                     "steps are trained again)")
                for _, bad in found[found.index((step, ckpt)) + 1:]:
                    shutil.rmtree(bad, ignore_errors=True)
            return step, ckpt, read_json_object(ckpt / "meta.json")
        damaged.append(f"{ckpt} is damaged ({problem})")
    if damaged:
        raise KronError(f"checkpoint {'; '.join(damaged)}; no checkpoint of {stage_dir.name} is intact: start the "
                        "stage again with --restart")
    return None


def _remove_partial_saves(stage_dir: Path) -> None:
    """Checkpoint folders a killed save left half written (.step_N.tmp): only the workspace's lock holder trains."""
    for tmp in stage_dir.glob(f".{STEP_PREFIX}*.tmp") if stage_dir.is_dir() else ():
        shutil.rmtree(tmp, ignore_errors=True)


class _StopFlag:
    """SIGINT/SIGTERM set a flag; the loop saves a checkpoint at the end of the step and exits."""

    def __init__(self):
        self.signal: int | None = None
        self._old = {}

    def __enter__(self):
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                self._old[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread
                pass
        return self

    def _handle(self, signum, frame):
        self.signal = signum

    def __exit__(self, *exc):
        for sig, old in self._old.items():
            signal.signal(sig, old)
        return False


def _test_signal(step: int) -> None:
    """KRON_TEST_SIGNAL_AT=N:KILL (or N:TERM, N:INT) sends this process that signal once step N (and its checkpoint,
    when one is due) is done: tests stop a run at a known step instead of polling for files against the clock."""
    at, _, name = os.environ.get("KRON_TEST_SIGNAL_AT", "").partition(":")
    if at.strip() == str(step):
        os.kill(os.getpid(), getattr(signal, f"SIG{name.strip().upper() or 'TERM'}"))


def tolerant(log: Callable[[str], None]) -> Callable[[str], None]:
    """A log that survives a closed stream: when the parent that read stderr is gone (a killed pipeline, a
    closed terminal) a log line must not end the run before its next checkpoint."""
    def write(msg: str) -> None:
        try:
            log(msg)
        except (BrokenPipeError, ValueError, OSError):
            pass

    return write


class Checkpointer:
    """The checkpoints of one stage in `stage_dir`: which one a run starts from (refusing one made by another student,
    on other data or with other settings), the clean-up of a fresh start, atomic saves with their meta.json, pruning
    to `cfg.keep`. Every process calls it; only the main one writes."""

    def __init__(self, accelerator, cfg: TrainConfig, stage_dir: Path, metrics_csv: Path, fingerprint: dict,
                 log: Callable[[str], None]):
        self.accelerator, self.cfg, self.stage_dir = accelerator, cfg, stage_dir
        self.metrics_csv, self.fingerprint, self.log = metrics_csv, fingerprint, log
        self.main = accelerator.is_main_process
        self.existing: list[tuple[int, Path]] = []
        self.total = 0

    def find(self) -> tuple[int, Path, dict] | None:
        """(step, folder, meta) to resume from, None for a fresh start; refuses a start over checkpoints without
        --resume or --restart. Half-written saves of a killed run are removed."""
        cfg = self.cfg
        self.existing = checkpoints(self.stage_dir)
        if self.existing and not cfg.resume and not cfg.restart:
            raise KronError(f"{self.stage_dir} already has checkpoints; pass --resume to continue or --restart to "
                            "start this stage again")
        if self.main:
            _remove_partial_saves(self.stage_dir)
        return resume_point(self.stage_dir, self.main) if cfg.resume and self.existing else None

    def start(self, point: tuple[int, Path, dict] | None, total: int) -> tuple[int, float]:
        """(step, seconds trained before) of the run: the resumed checkpoint loaded (its later metrics rows dropped),
        or a fresh start (this stage's old checkpoints and rows removed, also when its checkpoints are gone)."""
        self.total = total
        if point is None:
            if self.main:
                if self.cfg.resume:
                    self.log(f"--resume: {self.cfg.stage} has no checkpoint in {self.stage_dir}; starting from step 0")
                for _, ckpt in self.existing:
                    shutil.rmtree(ckpt, ignore_errors=True)
                csvlog.truncate_after(self.metrics_csv, 0)
                if self.existing:
                    self.log(f"--restart: removed {len(self.existing)} checkpoint(s) of {self.cfg.stage}")
            self.accelerator.wait_for_everyone()
            return 0, 0.0
        step, ckpt, meta = point
        check_resumable(meta, ckpt, self.cfg, self.fingerprint)
        with guard(ckpt, torch_files=True):  # damage the cheap check cannot see: one line naming the file
            self.accelerator.load_state(str(ckpt))
        if self.main:
            csvlog.truncate_after(self.metrics_csv, step)
            self.log(f"resumed {self.cfg.stage} from {ckpt} (step {step}/{total})")
        return step, meta.get("elapsed", 0.0)

    def save(self, at: int, elapsed: float) -> Path:
        """step_<at>, written as .step_<at>.tmp and renamed into place; the oldest beyond `keep` go. A save the disk
        cannot take is one line naming the previous checkpoint, and leaves no partial folder."""
        final = self.stage_dir / f"{STEP_PREFIX}{at}"
        tmp = self.stage_dir / f".{STEP_PREFIX}{at}.tmp"
        try:
            if self.main:
                shutil.rmtree(tmp, ignore_errors=True)
                self.stage_dir.mkdir(parents=True, exist_ok=True)
            self.accelerator.wait_for_everyone()
            self.accelerator.save_state(str(tmp))
            self.accelerator.wait_for_everyone()
            if self.main:
                self._publish(at, elapsed, tmp, final)
        except BaseException as e:
            if self.main:  # a partial save must not keep the disk full
                shutil.rmtree(tmp, ignore_errors=True)
            # a full disk reaches here as OSError, as torch's zip writer's RuntimeError ("unexpected pos", "file write
            # failed") or as safetensors' SafetensorError: all of them a checkpoint that could not be written
            if not isinstance(e, (OSError, RuntimeError, SafetensorError)):
                raise
            kept = f"; the previous checkpoint {self.last()} is intact" if self.last() else ""
            reason = (e.strerror if isinstance(e, OSError) else None) or first_line(e)
            raise KronError(f"could not write checkpoint at step {at} ({reason}){kept}") from None
        self.accelerator.wait_for_everyone()
        return final

    def _publish(self, at: int, elapsed: float, tmp: Path, final: Path) -> None:
        cfg = self.cfg
        meta = {"step": at, "total": self.total, "fingerprint": self.fingerprint, "config": asdict(cfg),
                "batch_size": cfg.batch_size, "grad_accum": cfg.grad_accum, "elapsed": elapsed,
                "files": {p.name: p.stat().st_size for p in sorted(tmp.iterdir()) if p.is_file()}}
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2, default=str))
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        for _, old in checkpoints(self.stage_dir)[:-cfg.keep]:
            shutil.rmtree(old, ignore_errors=True)

    def last(self) -> Path | None:
        found = checkpoints(self.stage_dir)
        return found[-1][1] if found else None

    def non_finite(self, loss, step: int):
        where = f"; the last good checkpoint is {self.last()}" if self.last() else ""
        raise NonFiniteLoss(f"the {self.cfg.stage} loss became {loss.item()} at step {step}{where}; "
                            "lower --lr or check the data")


def check_resumable(meta: dict, ckpt: Path, cfg: TrainConfig, fingerprint: dict) -> None:
    """A one-line refusal to resume from a checkpoint of another student, other data or other settings (see train)."""
    made, now_ = meta.get("fingerprint") or {}, json.loads(json.dumps(fingerprint))
    made_data, now_data = made.pop("data", None), now_.pop("data", None)  # absent from older checkpoints
    made_settings, now_settings = made.pop("settings", None), now_.pop("settings", None)  # likewise
    if made != now_:
        raise KronError(f"cannot resume from {ckpt}: it was trained with a different student (factor shapes "
                        "or architecture changed); start again without --resume or restore the old student")
    if made_data is not None and made_data != now_data:
        changed = ", ".join(f"{k} {made_data.get(k)} -> {(now_data or {}).get(k)}" for k in sorted(made_data)
                            if made_data.get(k) != (now_data or {}).get(k))
        raise KronError(f"cannot resume from {ckpt}: it was trained on other data ({changed}); pass the values it "
                        "was made with, or start again with --restart")
    change = changed_on_resume(meta, cfg, made_settings, now_settings)
    if change:
        raise KronError(f"cannot resume {cfg.stage} from {ckpt}: {change}; pass the value it started with, or "
                        "start the stage again with --restart")


class _Metrics:
    """In-loop bookkeeping: a metrics row every `log_every` steps (to the CSV, and a log line when no bar shows),
    an evaluation every `eval_every` steps and at the end, the run's clock. Only the main process writes."""

    def __init__(self, accelerator, cfg: TrainConfig, metrics_csv: Path, steps_per_epoch: int, total: int,
                 elapsed_before: float, eval_fn: Callable | None, quiet: bool, log: Callable[[str], None]):
        self.accelerator, self.cfg, self.metrics_csv = accelerator, cfg, metrics_csv
        self.steps_per_epoch, self.total, self.elapsed_before = steps_per_epoch, total, elapsed_before
        self.eval_fn, self.quiet, self.log = eval_fn, quiet, log
        self.main = accelerator.is_main_process
        self.t_start = self.window_t = time.perf_counter()
        self.window_n = 0
        self.rows: list[dict] = []
        self.evals: dict = {}

    def elapsed(self, now: float | None = None) -> float:
        """Seconds of training in this stage, earlier runs of it included."""
        return self.elapsed_before + (time.perf_counter() if now is None else now) - self.t_start

    def count(self, batch) -> None:
        self.window_n += len(next(iter(batch.values()))) * self.accelerator.num_processes

    def after_step(self, step: int, loss: float, terms: dict, lr: float, model) -> None:
        cfg = self.cfg
        if step % cfg.log_every == 0 or step == self.total:
            now = time.perf_counter()
            row = {"step": step, "epoch": round(step / self.steps_per_epoch, 4), **terms, "total": loss, "lr": lr,
                   "examples_per_s": self.window_n / max(now - self.window_t, 1e-9), "elapsed": self.elapsed(now)}
            self.window_t, self.window_n = now, 0
            self.rows.append(row)
            if self.main:
                csvlog.append(self.metrics_csv, [row])
                if not self.quiet:
                    self.log(f"{cfg.stage} step {step}/{self.total} loss {loss:.4f} "
                             f"({row['examples_per_s']:.1f} ex/s)")
        if self.eval_fn and cfg.eval_every and step % cfg.eval_every == 0 and step != self.total:
            self.evaluate(step, model)

    def evaluate(self, step: int, model) -> None:
        self.evals = _evaluate(self.accelerator, model, self.eval_fn, step, self.steps_per_epoch, self.metrics_csv,
                               self.main)

    def final_loss(self) -> float | None:
        return self.rows[-1]["total"] if self.rows else _last_logged_loss(self.metrics_csv)


def _accelerator(cfg: TrainConfig):
    from accelerate import Accelerator
    from accelerate.utils import DataLoaderConfiguration, DistributedDataParallelKwargs

    # cpu=True is what makes accelerate treat torchrun's processes as one gloo job when there is no GPU
    return Accelerator(cpu=not torch.cuda.is_available(), mixed_precision=cfg.mixed_precision,
                       gradient_accumulation_steps=cfg.grad_accum,
                       dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True, data_seed=cfg.seed),
                       # heads unused by a stage's losses (the pooler in stage 1) get no gradient
                       kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)])


def _optimizer(model: torch.nn.Module, cfg: TrainConfig):
    """AdamW; no weight decay on biases and LayerNorm weights (the 1-d parameters)."""
    decay = [p for n, p in model.named_parameters() if p.requires_grad and p.ndim > 1]
    no_decay = [p for n, p in model.named_parameters() if p.requires_grad and p.ndim <= 1]
    return torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                              {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr)


def _plan(cfg: TrainConfig, point, steps_per_epoch: int, time_it: Callable[[], float],
          log: Callable[[str], None]) -> tuple[int, float | None]:
    """(the step the schedule ends on, seconds per step when --max-minutes timed it)."""
    cap = cfg.max_steps or (math.ceil(cfg.epochs * steps_per_epoch) if cfg.epochs else None)
    meta, done = (point[2], point[0]) if point else (None, 0)
    if not cfg.max_minutes:
        return cap or steps_per_epoch, None
    if meta and done < meta.get("total", 0):
        return int(meta["total"]), None  # an interrupted timed run keeps the schedule it was planned with
    # a fresh run, or a finished one continued for another budget; the timing's dropout draws do not reach training:
    # the loop seeds every micro-batch itself (step_seed)
    seconds_per_step = time_it()
    total = steps_for_budget(cfg.max_minutes * 60, seconds_per_step, cap, start=done)
    log(f"{cfg.stage}: {seconds_per_step:.4f} s per step measured; {total - done} steps fill "
        f"--max-minutes {cfg.max_minutes:g}" + (f" (capped at {cap})" if total == cap else ""))
    return total, seconds_per_step


def train(cfg: TrainConfig, model: torch.nn.Module, dataset, collate: Callable, step_fn: Callable,
          stage_dir: Path, metrics_csv: Path, fingerprint: dict, eval_fn: Callable | None = None,
          progress: bool = False, log: Callable[[str], None] = print) -> dict:
    """Train `model` with `step_fn(model, batch) -> (loss, {term: float})`; returns a summary dict.

    `fingerprint` (e.g. the student's factor shapes) is stored in each checkpoint; resuming with a
    different one is refused, naming what changed in its `data` (what the dataset was built with) and `settings`
    (loss weights, temperature, ... by option name) entries and in `cfg`, whose budget alone may grow (RESUMABLE).
    `eval_fn(model) -> {metric: value}` runs at `eval_every` and at the end.
    """
    from accelerate.utils import set_seed
    from transformers import get_scheduler

    log = tolerant(log)
    accelerator = _accelerator(cfg)
    set_seed(cfg.seed)
    main = accelerator.is_main_process
    loader = torch.utils.data.DataLoader(dataset, batch_size=cfg.batch_size, shuffle=True, collate_fn=collate)
    if len(loader) == 0:
        raise KronError("the training data is empty")
    optimizer = _optimizer(model, cfg)
    model, optimizer, loader = accelerator.prepare(model, optimizer, loader)
    steps_per_epoch = max(len(loader) // cfg.grad_accum, 1)
    ckpt = Checkpointer(accelerator, cfg, stage_dir, metrics_csv, fingerprint, log)
    point = ckpt.find()
    total, seconds_per_step = _plan(
        cfg, point, steps_per_epoch,
        lambda: time_steps(accelerator, model, optimizer, step_fn, dataset, collate, cfg),
        log if main else (lambda msg: None))
    scheduler = get_scheduler("linear", optimizer, num_warmup_steps=int(cfg.warmup_ratio * total),
                              num_training_steps=total)
    # Not prepared: accelerate would step it once per process; the schedule is in optimizer steps.
    accelerator.register_for_checkpointing(scheduler)
    step, elapsed_before = ckpt.start(point, total)

    bar = _Bar(progress and main, cfg.stage, total, step)
    metrics = _Metrics(accelerator, cfg, metrics_csv, steps_per_epoch, total, elapsed_before, eval_fn, bar.enabled,
                       log)
    last_terms: dict = {}
    with _StopFlag() as stop, bar:
        epoch = step // steps_per_epoch
        micro = 0  # micro-batches into the current optimizer step
        while step < total:
            loader.set_epoch(epoch)
            skip = (step - epoch * steps_per_epoch) * cfg.grad_accum
            for batch in accelerator.skip_first_batches(loader, skip) if skip else loader:
                torch.manual_seed(step_seed(cfg.seed, step, micro))
                micro += 1
                loss, terms, stopping = _micro_step(accelerator, model, optimizer, scheduler, step_fn, batch, cfg,
                                                    stop.signal is not None,
                                                    lambda bad: ckpt.non_finite(bad, step + 1))
                metrics.count(batch)
                if not accelerator.sync_gradients:
                    continue
                step, micro = step + 1, 0
                last_terms = {k: float(v) for k, v in terms.items()}
                total_loss = accelerator.reduce(loss.detach().float(), "mean").item()
                bar.update(step, total_loss)
                metrics.after_step(step, total_loss, last_terms, scheduler.get_last_lr()[0], model)
                if step % cfg.save_every == 0 or step == total:
                    ckpt.save(step, metrics.elapsed())
                _test_signal(step)
                if stopping:
                    if step % cfg.save_every and step != total:
                        ckpt.save(step, metrics.elapsed())
                    raise Interrupted(f"{cfg.stage} interrupted at step {step}; checkpoint saved, continue with "
                                      "--resume", stop.signal)
                if step >= total:
                    break
            epoch += 1
    if eval_fn:
        metrics.evaluate(step, model)
    return {"stage": cfg.stage, "steps": step, "total_steps": total, "final_loss": metrics.final_loss(),
            "terms": last_terms, "eval": metrics.evals, "seconds": round(time.perf_counter() - metrics.t_start, 3),
            "model": accelerator.unwrap_model(model), "is_main": main, "num_processes": accelerator.num_processes,
            **({"seconds_per_step": seconds_per_step} if seconds_per_step else {})}


def step_seed(seed: int, step: int, micro: int) -> int:
    """The seed of one micro-batch's random draws (dropout, MLM masks), fixed by (seed, optimizer step, micro-batch).

    Reseeding per micro-batch makes a resumed run draw what the uninterrupted run drew: continuing the global
    generator from a checkpoint does not, since a data loader restarted mid-epoch draws its own base seed from
    it (and accelerate's loader fetches one batch ahead).
    """
    base = seed * 1_000_003 + step
    if micro < 64:
        return base * 64 + micro
    return (1 << 62) + ((base << 32) + micro) % (1 << 62)  # --grad-accum above 64: a range of their own


def steps_for_budget(seconds: float, seconds_per_step: float, cap: int | None = None, start: int = 0) -> int:
    """The step a schedule planned at step `start` ends on: `start` plus the optimizer steps that fit `seconds` at
    the measured speed (at least 1), at most `cap`."""
    end = start + max(1, int(seconds // max(seconds_per_step, 1e-9)))
    return min(end, cap) if cap else end


def _micro_step(accelerator, model, optimizer, scheduler, step_fn, batch, cfg: TrainConfig, stopping: bool,
                on_non_finite: Callable) -> tuple:
    """One forward/backward of the loop (an optimizer step when the accumulation window closes); the timing
    passes run this same code so that the plan sees every synchronisation a real step has."""
    model.train()
    with accelerator.accumulate(model):
        loss, terms = step_fn(model, batch)
        flags = accelerator.reduce(torch.tensor([0.0 if torch.isfinite(loss) else 1.0, float(stopping)],
                                                device=accelerator.device), "max")
        if flags[0] > 0:
            on_non_finite(loss)
        accelerator.backward(loss)
        if accelerator.sync_gradients and cfg.max_grad_norm:
            accelerator.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        optimizer.zero_grad()
    return loss, terms, bool(flags[1] > 0)


def time_steps(accelerator, model, optimizer, step_fn, dataset, collate, cfg: TrainConfig, warmup: int = 2,
               timed: int = 5) -> float:
    """Seconds per optimizer step, from full training steps on the first batch that change nothing.

    Each timed step is a real one (collate, forward, backward, clipping, AdamW) at learning rate 0, which leaves
    every weight bit for bit as it was; the optimizer's moments (and a loss scaler's state) are reset afterwards.
    Evaluations and checkpoints are extra. With several processes the slowest one sets the pace, so every process
    plans the same number of steps.
    """
    from accelerate.utils import send_to_device

    rows = [dataset[i] for i in range(min(cfg.batch_size, len(dataset)))]
    scaler = getattr(accelerator, "scaler", None)
    scaler_state = scaler.state_dict() if scaler is not None else None
    rates = [group["lr"] for group in optimizer.param_groups]
    for group in optimizer.param_groups:
        group["lr"] = 0.0

    def fail(loss):
        raise NonFiniteLoss(f"the {cfg.stage} loss is {loss.item()} on the first batch; lower --lr or check the data")

    try:
        for i in range(warmup + timed):
            if i == warmup:
                _synchronize(accelerator.device)
                start = time.perf_counter()
            for _ in range(cfg.grad_accum):  # whole accumulation windows keep the loop's phase
                batch = send_to_device(collate(rows), accelerator.device)
                loss, terms, _ = _micro_step(accelerator, model, optimizer, None, step_fn, batch, cfg, False, fail)
            _ = {k: float(v) for k, v in terms.items()}  # the loop reads these every step: a synchronisation
            accelerator.reduce(loss.detach().float(), "mean").item()
        _synchronize(accelerator.device)
        per_step = (time.perf_counter() - start) / timed
    finally:
        for group, lr in zip(optimizer.param_groups, rates):
            group["lr"] = lr
        optimizer.state.clear()
        if scaler_state is not None:
            scaler.load_state_dict(scaler_state)
    slowest = accelerator.gather(torch.tensor([per_step], device=accelerator.device)).max()
    return float(slowest)


def _synchronize(device) -> None:
    if getattr(device, "type", str(device)) == "cuda":
        torch.cuda.synchronize(device)


def _last_logged_loss(metrics_csv: Path) -> float | None:
    """The loss of the newest training row already in the CSV: what a resumed run that had no step left reports."""
    rows = csvlog.read(metrics_csv)
    if rows is None or "total" not in rows:
        return None
    losses = rows["total"].dropna()
    return float(losses.iloc[-1]) if len(losses) else None


def _evaluate(accelerator, model, eval_fn, step, steps_per_epoch, metrics_csv, main) -> dict:
    model.eval()
    with torch.no_grad():
        result = eval_fn(accelerator.unwrap_model(model))
    if main:
        csvlog.append(metrics_csv, [{"step": step, "epoch": round(step / steps_per_epoch, 4),
                                     **{f"eval_{k}": v for k, v in result.items()}}])
    return result


class _Bar:
    """A rich progress bar with loss and ETA on a TTY; nothing otherwise."""

    def __init__(self, enabled: bool, stage: str, total: int, start: int):
        self.enabled, self.stage, self.total, self.start = enabled, stage, total, start
        self._progress = None

    def __enter__(self):
        if self.enabled:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            from .console import err_console

            self._progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                                      TextColumn("loss {task.fields[loss]}"), TimeRemainingColumn(),
                                      console=err_console, transient=False)
            self._progress.__enter__()
            self._task = self._progress.add_task(self.stage, total=self.total, completed=self.start, loss="-")
        return self

    def update(self, step: int, loss: float) -> None:
        if self._progress:
            self._progress.update(self._task, completed=step, loss=f"{loss:.4f}")

    def __exit__(self, *exc):
        if self._progress:
            self._progress.__exit__(*exc)
        return False
