"""`kron run RECIPE`: every stage of an experiment in order, through the same code as each subcommand.

A stage recorded as done in manifest.json is skipped; a stage with checkpoints but not done resumes from
the newest one; so a killed `kron run` started again finishes the experiment, losing at most the steps
since the last checkpoint. Everything the recipe names is checked before the first stage runs.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from . import sources
from .data.glue import Task, find_task
from .data.tasks import resolve_task
from .errors import KronError
from .recipes import Recipe
from .train import TrainConfig, check_training_values, checkpoints, first_change
from .workspace import Workspace


@dataclass
class Stage:
    name: str
    kind: str  # factorize | distill | teacher | finetune | eval-glue | eval-data | eval-speed
    task: Task | None = None  # parsed once, from the recipe's spelling, in `stages`


def stages(recipe: Recipe) -> list[Stage]:
    out = [Stage("factorize", "factorize")]
    if recipe.distill.corpus:
        out.append(Stage("distill", "distill"))
    for task in sources_first(recipe_tasks(recipe), recipe.finetune.init_from):
        name = task.name.lower()
        out += [Stage(f"teacher-{name}", "teacher", task), Stage(f"finetune-{name}", "finetune", task)]
    if recipe.eval.glue:
        out.append(Stage("eval-glue", "eval-glue"))
    if recipe.eval.data:
        out.append(Stage("eval-data", "eval-data"))
    if recipe.eval.speed:
        out.append(Stage("eval-speed", "eval-speed"))
    return out


def recipe_tasks(recipe: Recipe, ws: Workspace | None = None) -> list[Task]:
    """finetune.tasks as Task objects, each task once: the recipe edge, where its spellings are parsed and an own
    task's files read and checked (once per recipe object: the result is kept on it)."""
    cached = getattr(recipe, "_tasks", None)
    if cached is not None and (ws is None or cached[0] is not None):
        return cached[1]
    tasks = [_recipe_key(f"finetune.tasks[{i}]", _recipe_task, t, ws) for i, t in enumerate(recipe.finetune.tasks)]
    tasks = list({t.name: t for t in tasks}.values())
    recipe._tasks = (ws, tasks)
    return tasks


def _recipe_task(entry, ws: Workspace | None) -> Task:
    from .data.task_files import files_from_mapping
    from .stages.finetune import classifier_labels

    if isinstance(entry, str):
        return resolve_task(entry, ws)
    if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
        raise KronError(f"expected a task name or a mapping with a name and its files (name: tickets, train: "
                        f"train.csv, dev: dev.csv), got {entry!r}")
    files = files_from_mapping(entry, "the task")
    order = classifier_labels(ws) if ws is not None and ws.is_workspace() else None
    return resolve_task(entry["name"], ws, files, label_order=order)


def task_named(recipe: Recipe, name: str) -> Task:
    """A task a recipe key names (init_from, unlabelled_from, eval.data, per-task keys): one of finetune.tasks under
    any spelling, else a GLUE task."""
    for t in recipe_tasks(recipe):
        if _same(name, t):
            return t
    return resolve_task(name)


def _same(name: str, task: Task) -> bool:
    found = find_task(name)
    return (found.name if found else name).lower() == task.name.lower()


def sources_first(tasks: list[Task], init_from: dict[str, str]) -> list[Task]:
    """The recipe's task order, except that a task whose student starts from another task's (`init_from`) comes
    after that task. Names that are no task, and cycles, are left for `validate` to name."""

    def name(t):
        task = find_task(t)
        return task.name if task else getattr(t, "name", t)

    source = {name(k): name(v) for k, v in init_from.items()}
    ordered: list[str] = []
    visiting: set[str] = set()
    by_name = {name(t): t for t in tasks}

    def place(t):
        n = name(t)
        if n in map(name, ordered) or n in visiting:
            return
        visiting.add(n)
        if source.get(n) in by_name:
            place(by_name[source[n]])
        visiting.discard(n)
        ordered.append(t)

    for t in tasks:
        place(t)
    return ordered


def check_init_from(recipe: Recipe, ws: Workspace, planned: list[Stage]) -> None:
    """Each `finetune.init_from` entry names two different tasks, without a cycle, and the source's student is
    trained earlier in the run or is in the workspace already."""

    f = recipe.finetune
    source = {}
    for task, src in f.init_from.items():
        key = f"finetune.init_from.{task}"
        t, s = _recipe_key(key, task_named, recipe, task), _recipe_key(key, task_named, recipe, src)
        if t.name == s.name:
            raise KronError(f"recipe key {key}: a task cannot start from its own student; name another task")
        source[t.name] = s
    for t in source:  # a -> b -> a: neither could start
        path, n = [t], source[t].name
        while n in source:
            if n in path:
                raise KronError(f"recipe key finetune.init_from: {' -> '.join([*path, n])} is a cycle; each task "
                                "starts from a task that does not start from it")
            path.append(n)
            n = source[n].name
    trained = {s.task.name for s in planned if s.kind == "finetune"}
    for stage in planned:
        if stage.kind != "finetune" or stage.task.name not in source:
            continue
        src = source[stage.task.name]
        if src.name not in trained and not (ws.task_model_dir(src, "student") / "config.json").is_file():
            raise KronError(f"recipe key finetune.init_from.{stage.task.name.lower()}: {src.name} is not among the stages this run "
                            f"trains ({', '.join(f.tasks) or 'none'}) and the workspace has no {src.name} student; "
                            "add it to finetune.tasks or drop the key")


def status(ws: Workspace, stage: Stage, recipe: Recipe | None = None) -> str:
    """pending, resume, done, or (given the recipe) changed: an evaluation done with other settings, run again."""
    done = ws.read_manifest().get("stages", {}).get(stage.name, {}).get("done")
    if done:
        if recipe is not None and stage.kind.startswith("eval") and changed_setting(recipe, ws, stage):
            return "changed"
        return "done"
    if checkpoints(ws.stage_checkpoints(stage.name)):
        return "resume"
    return "pending"


def select(all_stages: list[Stage], until: str | None, only: str | None) -> list[Stage]:
    names = [s.name for s in all_stages]
    if until and only:
        raise KronError(f"--until {until} and --only {only} ask for two plans; pass one")
    for flag, value in (("--until", until), ("--only", only)):
        if value and value not in names:
            raise KronError(f"{flag} {value!r} is not a stage of this recipe; stages: {', '.join(names)}")
    if only:
        return [s for s in all_stages if s.name == only]
    if until:
        return all_stages[: names.index(until) + 1]
    return all_stages


class Needs:
    """What the planned stages still lack. A real run raises the first missing input (the teacher, a corpus, a GLUE
    file); a dry run (`collect`) records it against the stages that read it and goes on, so the plan prints whole.
    Recipe mistakes (a bad value, an impossible ratio) are errors either way."""

    def __init__(self, collect: bool = False):
        self.collect = collect
        self.by_stage: dict[str, list[str]] = {}

    def check(self, stage_names: list[str], what: str, check: Callable, *args):
        """`check(*args)`'s result; its KronError raised, or (collecting) noted for `stage_names`, in full for the
        first and as `what` (see the first) for the others; None returned."""
        try:
            return check(*args)
        except KronError as e:
            if not self.collect or not stage_names:
                raise
            first, *others = stage_names
            self.by_stage.setdefault(first, []).append(str(e))
            for name in others:
                self.by_stage.setdefault(name, []).append(f"{what} (see {first})")
            return None


def _readers(planned: list[Stage], kinds: tuple[str, ...], task: Task | None = None) -> list[str]:
    """The planned stages of these kinds (those of `task` only, given one): the ones a missing input holds up."""
    return [s.name for s in planned if s.kind in kinds and (task is None or s.task.name == task.name)]


def validate(recipe: Recipe, ws: Workspace, plan: list[Stage] | None = None, needs: Needs | None = None) -> None:
    """Fail before any stage: the teacher, the data and the ratio that the planned stages need (all by default),
    so that `--until factorize` does not ask for a corpus it will not read. Given collecting `needs` (a dry run),
    missing inputs and done stages made with other settings are noted there instead."""
    from .data.corpus import corpus_files
    from .data.glue import load_split
    from .factorize import _validate
    from .stages.distill import check_stage1_weights
    from .stages.finetune import FinetuneOptions, check_student_options

    recipe_tasks(recipe, ws)  # own tasks' files read and checked against the workspace's definitions
    planned = stages(recipe) if plan is None else plan
    needs = needs or Needs()
    kinds = {s.kind for s in planned}
    check_init_from(recipe, ws, planned)  # first: the done stages' settings are compared through its task names
    if not needs.collect:
        check_done_stages(recipe, ws)
    factorized = ws.read_manifest().get("stages", {}).get("factorize", {}).get("done")
    if not factorized:  # every later stage starts from the factorized student
        teacher_readers = _readers(planned, ("factorize", "distill", "teacher")) or [s.name for s in planned]
        source = needs.check(teacher_readers, f"the teacher {recipe.teacher}", sources.resolve, recipe.teacher,
                             recipe.random_init)
        opts = _factorize_options(recipe)
        _validate(opts)
        if source and (recipe.factorize.ratio or recipe.factorize.max_params):
            _check_ratio(recipe, opts, source)
    if "distill" in kinds:
        _recipe_key("distill.weights", check_stage1_weights, recipe_stage1_weights(recipe))
    if recipe.distill.corpus and "distill" in kinds:
        needs.check(["distill"], "the corpus", _recipe_key, "distill.corpus", _with_data_dir_hint, recipe,
                    corpus_files, recipe.distill.corpus)
        check_training_values(vars(recipe.distill), lambda key: f"recipe key distill.{key}")
        if recipe.distill.attention not in ("scores", "probs"):
            raise KronError(f"recipe key distill.attention: {recipe.distill.attention!r}: choose scores or probs")
    f = recipe.finetune
    if kinds & {"teacher", "finetune"}:
        check_training_values(vars(f), lambda key: f"recipe key finetune.{key}")
        for task, lr in f.lr_per_task.items():
            check_training_values({"lr": lr}, lambda key: f"recipe key finetune.lr_per_task.{task}")
    for key in ("lr_per_task", "augment_per_task", "weights_per_task", "unlabelled_from"):
        for name in getattr(f, key):
            _recipe_key(f"finetune.{key}", task_named, recipe, name)
    for t in _each(s.task for s in planned if s.kind == "finetune"):
        key = t.name.lower()
        check_student_options(FinetuneOptions(task=t, temperature=f.temperature))
        extra = _recipe_key(f"finetune.unlabelled_from.{key}", unlabelled_sources, recipe, t)
        if extra:
            _recipe_key(f"finetune.unlabelled_from.{key}", check_student_options,
                        FinetuneOptions(task=t, unlabelled_from=extra))
            for src in extra:  # a source missing from the data folder fails now, not after the stages before it
                needs.check(_readers(planned, ("finetune",), t), f"{src.name}'s data", _with_data_dir_hint, recipe,
                            load_split, src, "train", recipe.data_dir)
        weights = task_weights(f, t)
        if weights is not None:
            keys = ["finetune.weights"] if f.weights else []
            if per_task(f.weights_per_task, t, None):
                keys.append(f"finetune.weights_per_task.{key}")
            _recipe_key(" / ".join(keys), check_student_options, FinetuneOptions(task=t, weights=weights))
    if "finetune" in kinds:
        for augment in {f.augment, *f.augment_per_task.values()}:
            check_student_options(FinetuneOptions(task=None, augment=augment, augment_p=f.augment_p,
                                                  augment_k=f.augment_k, augment_mask=f.augment_mask,
                                                  augment_ngram=f.augment_ngram, rehearse=f.rehearse,
                                                  rehearse_weight=f.rehearse_weight))
        if f.rehearse_corpus:
            needs.check(_readers(planned, ("finetune",)), "the rehearsal corpus", _recipe_key,
                        "finetune.rehearse_corpus", corpus_files, f.rehearse_corpus)
    if "eval-glue" in kinds:  # a task scored but never fine-tuned would fail after every other stage had run
        from .evaluation.glue_eval import model_task

        tuned = {t.name for t in recipe_tasks(recipe)}  # MNLI-m, MNLI-mm and AX are scored by the MNLI models
        for t in recipe.eval.glue:
            task = None if t.lower() == "all" else _recipe_key("eval.glue", resolve_task, t)
            if task and model_task(task).name not in tuned and not _has_task_model(ws, task):
                raise KronError(f"recipe key eval.glue: {t} is not among finetune.tasks ({', '.join(f.tasks) or 'none'})"
                                " and the workspace has no model for it; add it to finetune.tasks or drop it")
    if "eval-data" in kinds:
        tuned = {t.name for t in recipe_tasks(recipe) if hasattr(t, "load") and t.kind}
        for t in recipe.eval.data:
            if t.lower() != "all" and not any(_same(t, task) for task in recipe_tasks(recipe) if task.name in tuned):
                raise KronError(f"recipe key eval.data: {t} is not an own-data task of finetune.tasks; name one of "
                                f"{', '.join(sorted(tuned)) or 'none (define it as a mapping in finetune.tasks)'}")
    glue_tasks = _each(s.task for s in planned if s.task)
    if glue_tasks and recipe.data_dir and not Path(recipe.data_dir).expanduser().is_dir():
        needs.check([s.name for s in planned if s.task], "the GLUE folder", _no_data_dir, recipe)
    else:
        for task in glue_tasks:  # says what to pass
            needs.check(_readers(planned, ("teacher", "finetune"), task), f"{task.name} data", _with_data_dir_hint,
                        recipe, load_split, task, task.eval_splits[0], recipe.data_dir)


def _no_data_dir(recipe: Recipe) -> None:
    raise KronError(f"the recipe's data_dir {recipe.data_dir} is not a directory; pass kron run --data-dir DIR, "
                    "the folder holding GLUE's task folders (MRPC/, CoLA/, ...)")


# finetune-section keys that only the teacher stage reads, and the per-task ones (compared resolved, per task)
TEACHER_KEYS = ("teacher_lr", "teacher_epochs")
PER_TASK_KEYS = ("lr", "lr_per_task", "augment", "augment_per_task", "weights", "weights_per_task", "init_from",
                 "unlabelled_from")
# not compared: what a training stage learns does not depend on them (a time budget, the arithmetic's precision: a
# GPU stage 1 is followed by CPU stages), and the corpus paths move with --data-dir
UNCOMPARED = ("tasks", "save_every", "keep", "log_every", "eval_every", "max_minutes", "mixed_precision", "corpus",
              "rehearse_corpus")


def stage_settings(recipe: Recipe, stage: Stage) -> dict:
    """The recipe values a stage's result depends on, by recipe key."""
    if stage.kind == "factorize":  # the teacher too: every later stage distils from it
        return {"teacher": recipe.teacher, "random_init": recipe.random_init,
                **{f"factorize.{k}": v for k, v in vars(recipe.factorize).items()}}
    if stage.kind == "distill":
        return {f"distill.{k}": v for k, v in vars(recipe.distill).items() if k not in UNCOMPARED}
    f = recipe.finetune
    if stage.kind == "teacher":
        keys = ("max_steps", "batch_size", "max_seq_len", "limit", "seed", "weight_decay", "warmup_ratio",
                "max_grad_norm", "grad_accum")
        return {"finetune.teacher_lr": f.teacher_lr, "finetune.teacher_epochs": f.teacher_epochs or f.epochs,
                **{f"finetune.{k}": getattr(f, k) for k in keys}}
    if stage.kind == "finetune":
        skip, key = (*TEACHER_KEYS, *PER_TASK_KEYS, *UNCOMPARED), stage.task.name.lower()
        return {**{f"finetune.{k}": v for k, v in vars(f).items() if k not in skip},
                f"finetune.lr ({key})": per_task(f.lr_per_task, stage.task, f.lr),
                f"finetune.augment ({key})": per_task(f.augment_per_task, stage.task, f.augment),
                f"finetune.weights ({key})": task_weights(f, stage.task),
                f"finetune.init_from ({key})": _names(init_source(recipe, stage.task)),
                f"finetune.unlabelled_from ({key})": _names(unlabelled_sources(recipe, stage.task))}
    if stage.kind == "eval-glue":
        return {"eval.glue": recipe.eval.glue}
    if stage.kind == "eval-data":
        return {"eval.data": recipe.eval.data}
    return {f"eval.{k}": v for k, v in vars(recipe.eval).items() if k.startswith("speed_")}


def changed_setting(recipe: Recipe, ws: Workspace, stage: Stage, ignore: tuple[str, ...] = ()) -> str | None:
    """`key: old -> new` for the first setting a done stage was made with that the recipe now changes; None when
    they agree or the workspace does not say (made before kron run recorded its recipe, or by hand)."""
    from .recipes import _build
    from .surgery import DEFAULT_TARGETS

    manifest = ws.read_manifest()
    config = manifest.get("recipe", {}).get("config")
    if config:
        try:
            old = stage_settings(_build(Recipe, config, ""), stage)
        except KronError:  # a recipe key this version no longer has
            return None
        now = stage_settings(recipe, stage)
    elif stage.kind == "factorize":  # made by `kron factorize`: its own record says how (defaults resolved)
        made = {**manifest.get("stages", {}).get("factorize", {}).get("args", {})}
        now = {k: v for k, v in vars(_factorize_options(recipe)).items()
               if k not in ("model", "random_init") and v is not None}
        made["targets"] = made.get("targets") or DEFAULT_TARGETS
        now.setdefault("targets", DEFAULT_TARGETS)
        old = {f"factorize.{k}": made[k] for k in now if k in made}
        now = {f"factorize.{k}": v for k, v in now.items()}
    else:
        return None
    change = first_change(old, now, lambda k: _last_part(k) in ignore)
    return f"{change[0]}: {change[1]!r} -> {change[2]!r}" if change else None


# a stage resumed under a longer budget is a supported way to extend it; anything else it learns from is not
BUDGET_KEYS = ("max_steps", "epochs", "teacher_epochs")


def check_done_stages(recipe: Recipe, ws: Workspace) -> None:
    """A training stage done (or half done) with other settings than the recipe's is not skipped or resumed in
    silence: the run stops."""
    for stage, how, change in done_stage_changes(recipe, ws):
        raise KronError(f"stage {stage.name} in {ws.root} is {how} with other settings ({change}); use a new "
                        "--workspace, or the value it was made with")


def done_stage_changes(recipe: Recipe, ws: Workspace):
    """(stage, "done" | "half done (checkpoints)", "key: old -> new") for each training stage the workspace holds
    made with other settings than the recipe's."""
    for stage in stages(recipe):
        state = "eval" if stage.kind.startswith("eval") else status(ws, stage)
        if state not in ("done", "resume"):
            continue
        change = changed_setting(recipe, ws, stage, BUDGET_KEYS if state == "resume" else ())
        if change:
            yield stage, "done" if state == "done" else "half done (checkpoints)", change


# shown in a dry run's plan whatever their value (with those the recipe sets off kron's defaults), by last key part
PLAN_KEYS = {"teacher", "random_init", "preset", "ratio", "max_params", "corpus", "epochs", "max_steps", "lr",
             "batch_size", "max_seq_len", "teacher_lr", "teacher_epochs", "weights", "glue", "data", "speed_batch",
             "speed_seq_len"}


def plan_settings(recipe: Recipe, stage: Stage) -> dict:
    """A stage's settings as a dry run shows them, by recipe key: the usual ones (PLAN_KEYS) and any other the
    recipe sets off kron's defaults."""
    now = stage_settings(recipe, stage)
    if stage.kind == "distill":
        now["distill.corpus"] = recipe.distill.corpus
    default = stage_settings(Recipe(), stage)
    return {k: v for k, v in now.items() if v not in (None, [], {})
            and (_last_part(k) in PLAN_KEYS or v != default.get(k))}


def _last_part(key: str) -> str:
    """A setting's short name: "finetune.lr (mrpc)" -> "lr"."""
    return key.split(" ")[0].split(".")[-1]


def dry_run(recipe: Recipe, ws: Workspace, plan: list[Stage]) -> list[dict]:
    """The plan without running it: each stage's state, settings and what it still needs (a missing input; for a
    done stage made with other settings, the difference a real run stops at). Only recipe mistakes are errors."""
    needs = Needs(collect=True)
    validate(recipe, ws, plan, needs)
    planned = {s.name for s in plan}
    rows = [{"stage": s.name, "state": status(ws, s, recipe), "differs": None, "settings": plan_settings(recipe, s),
             "needs": list(needs.by_stage.get(s.name, []))} for s in plan]
    for stage, how, change in done_stage_changes(recipe, ws):
        stop = (f"{how} with other settings ({change}); a run stops here: use a new --workspace, or the value it "
                "was made with")
        if stage.name in planned:
            row = next(r for r in rows if r["stage"] == stage.name)
            row["differs"] = change
            row["needs"].insert(0, stop)
        elif rows:  # not planned, but a run of this plan still stops at it
            rows[0]["needs"].insert(0, f"stage {stage.name} is {stop}")
    return rows


def _recipe_key(key: str, check: Callable, *args):
    """Run a stage's own check on a recipe value (its result returned); its error names the recipe key."""
    try:
        return check(*args)
    except KronError as e:
        raise KronError(f"recipe key {key}: {e}") from None


def _each(tasks) -> list[Task]:
    """Each task once, in order (a Task holds dicts: it is compared by name, not hashed)."""
    return list({t.name: t for t in tasks}.values())


def _has_task_model(ws: Workspace, task: Task) -> bool:
    from .evaluation.glue_eval import has_model

    return ws.root.is_dir() and any(has_model(ws, task, m) for m in ("student", "teacher"))


def _with_data_dir_hint(recipe: Recipe, load: Callable, *args) -> None:
    """A file missing from the recipe's own data_dir: say that `--data-dir` points the recipe elsewhere."""
    try:
        load(*args)
    except KronError as e:
        if recipe.data_dir and recipe.data_dir in str(e):
            raise KronError(f"{e} (the recipe's data_dir {recipe.data_dir}; kron run --data-dir DIR reads GLUE from "
                            "DIR)") from None
        raise


def _factorize_options(recipe: Recipe):
    """The recipe's factorize section as `kron factorize` options."""
    from .factorize import FactorizeOptions

    return from_section(FactorizeOptions, recipe.factorize, model=recipe.teacher, random_init=recipe.random_init)


def from_section(cls, section, **given):
    """A stage's options from a recipe section: every field the two share by name, then `given` (what the recipe
    says elsewhere or per task, resolved). No field is copied by hand, so a knob added to both is passed on."""
    shared = {f.name for f in dataclasses.fields(cls)} & {f.name for f in dataclasses.fields(section)}
    return cls(**{**{k: getattr(section, k) for k in shared}, **given})


def _check_ratio(recipe: Recipe, opts, source) -> None:
    """The largest ratio possible needs only parameter counts: no SVD, a second or two."""
    from .factorize import cut_teacher, smallest_student
    from .surgery import count_params, find_targets

    model, _ = sources.load_model(source)
    teacher = cut_teacher(model, opts)
    smallest = smallest_student(find_targets(model, opts.targets, opts.exclude), count_params(model), opts)
    budget = recipe.factorize.max_params or teacher / recipe.factorize.ratio
    if budget < smallest:
        raise KronError(f"the recipe asks for {teacher / budget:.1f}x but the largest ratio possible for "
                        f"{recipe.teacher} is {teacher / smallest:.1f}x")


def execute(recipe: Recipe, ws: Workspace, chosen: list[Stage], progress: bool, log: Callable[[str], None],
            command: list[str], after_stage: Callable[[], None] = lambda: None) -> list[dict]:
    """Run the chosen stages in order; `after_stage` runs after each one that ran (kron run records its recipe
    there, so a run killed in a later stage still leaves the settings its finished stages were made with)."""
    results = []
    for stage in chosen:
        state = status(ws, stage, recipe)
        if state == "done":
            log(f"[{stage.name}] done, skipped")
            results.append({"stage": stage.name, "status": "skipped"})
            continue
        log(f"[{stage.name}] " + {"resume": "resuming", "changed": "settings changed, running again"}.get(state, "running"))
        out = RUNNERS[stage.kind](recipe, ws, stage, state == "resume", progress, log, command)
        results.append({"stage": stage.name, "status": "done", **(out or {})})
        after_stage()
    return results


def _factorize(recipe, ws, stage, resume, progress, log, command):
    from .factorize import factorize, write_workspace

    opts = _factorize_options(recipe)
    result, model, tok = factorize(opts)
    write_workspace(ws, result, model, tok, vars(opts), command, force=False)
    return {"compression": result.compression, "student_params": result.student_params}


def _distill(recipe, ws, stage, resume, progress, log, command):
    from .stages.distill import DistillOptions, run_distill

    from .data.tasks import save_definition

    for task in recipe_tasks(recipe, ws):  # a corpus entry task:NAME may name an own task of the recipe
        save_definition(ws, task)
    d = recipe.distill
    cfg = from_section(TrainConfig, d, stage="distill", epochs=d.epochs if not d.max_steps else None, resume=resume)
    s = run_distill(ws, from_section(DistillOptions, d, weights=recipe_stage1_weights(recipe)), cfg, progress, log)
    return {"steps": s["steps"], "final_loss": s["final_loss"]}


def per_task(mapping: dict, task: Task, default):
    """A per-task recipe value, whatever spelling the recipe used for the task (stsb, sts-b, STS-B)."""
    return next((v for k, v in mapping.items() if _same(k, task)), default)


def init_source(recipe: Recipe, task: Task) -> Task | None:
    """The task whose student `task`'s student starts from (recipe `finetune.init_from`)."""
    src = per_task(recipe.finetune.init_from, task, None)
    return task_named(recipe, src) if src else None


def unlabelled_sources(recipe: Recipe, task: Task) -> list[Task] | None:
    """The tasks whose training inputs `task`'s student also trains on (recipe `finetune.unlabelled_from`); None
    where the recipe names none."""
    names = per_task(recipe.finetune.unlabelled_from, task, None)
    return [task_named(recipe, n) for n in names] if names else None


def _names(tasks):
    """Tasks as the names a manifest's recorded settings compare (one task, a list, or None)."""
    if tasks is None:
        return None
    return [t.name for t in tasks] if isinstance(tasks, list) else tasks.name


def recipe_stage1_weights(recipe: Recipe) -> dict[str, float]:
    """A recipe's stage-1 weights adjust the defaults, like --weight does."""
    from .stages.distill import DEFAULT_WEIGHTS

    return {**DEFAULT_WEIGHTS, **recipe.distill.weights}


def recipe_task_weights(task, adjust: dict[str, float]) -> dict[str, float]:
    """A recipe's stage-2 weights adjust each task's defaults (0 drops a term), like --weight does. They serve every
    task of the recipe, so `logit_kd` (a softmax over the classes) is left out on a regression task, whose one
    output it would compare as a constant 0."""
    from .stages.finetune import default_weights

    weights = {**default_weights(task), **adjust}
    if task.is_regression:
        weights.pop("logit_kd", None)
    return weights


def task_weights(f, task: Task) -> dict[str, float] | None:
    """A task's stage-2 weights from the recipe: `weights`, then that task's `weights_per_task` on top; None (the
    task's defaults) when the recipe sets neither."""
    adjust = {**(f.weights or {}), **per_task(f.weights_per_task, task, {})}
    return recipe_task_weights(task, adjust) if adjust else None


def _finetune(recipe, ws, stage, resume, progress, log, command):
    from .stages.finetune import FinetuneOptions, finetune_student, finetune_teacher

    f = recipe.finetune
    teacher = stage.kind == "teacher"
    lr = f.teacher_lr if teacher else per_task(f.lr_per_task, stage.task, f.lr)
    augment = 0 if teacher else per_task(f.augment_per_task, stage.task, f.augment)
    epochs = (f.teacher_epochs or f.epochs) if teacher else f.epochs
    cfg = from_section(TrainConfig, f, stage=stage.name, lr=lr, epochs=epochs if not f.max_steps else None,
                       resume=resume)
    opts = from_section(FinetuneOptions, f, task=stage.task, data_dir=recipe.data_dir, teacher_only=teacher,
                        augment=augment, rehearse=0 if teacher else f.rehearse, weights=task_weights(f, stage.task),
                        init_from=None if teacher else init_source(recipe, stage.task),
                        unlabelled_from=None if teacher else unlabelled_sources(recipe, stage.task))
    s = (finetune_teacher if teacher else finetune_student)(ws, opts, cfg, progress, log)
    return {"steps": s["steps"], "eval": s["eval"]}


def _eval_glue(recipe, ws, stage, resume, progress, log, command):
    from .evaluation.glue_eval import GlueOptions, evaluate_glue

    _replace_rows(ws, stage, ws.eval_csv, log)
    out = evaluate_glue(ws, GlueOptions(task=",".join(recipe.eval.glue), data_dir=recipe.data_dir))
    ws.record_stage(stage.name, {"results": len(out.get("results", []))})
    return {"results": out.get("results", [])}


def _eval_data(recipe, ws, stage, resume, progress, log, command):
    from .evaluation.own_eval import DataOptions, evaluate_data

    _replace_rows(ws, stage, ws.eval_csv, log)
    own = [t for t in recipe_tasks(recipe) if hasattr(t, "load")]
    names = [t.name for t in own] if any(n.lower() == "all" for n in recipe.eval.data) else \
        [task_named(recipe, n).name for n in recipe.eval.data]
    results = []
    for name in names:
        results += evaluate_data(ws, DataOptions(task=name))["results"]
    ws.record_stage(stage.name, {"results": len(results)})
    return {"results": results}


def _eval_speed(recipe, ws, stage, resume, progress, log, command):
    from .evaluation.speed import SpeedOptions, run_speed

    _replace_rows(ws, stage, ws.speed_csv, log)
    batches = ",".join(str(b) for b in recipe.eval.speed_batch)
    out = run_speed(ws, SpeedOptions(batches=batches, seq_len=recipe.eval.speed_seq_len,
                                     repeats=recipe.eval.speed_repeats, warmup=1))
    for warning in out["warnings"]:  # other processes took the CPUs while it timed, ...: as kron eval speed says
        log(f"warning: {warning}")
    ws.record_stage(stage.name, {"rows": len(out.get("results", []))})
    return {"results": out.get("results", [])}


def _replace_rows(ws: Workspace, stage: Stage, csv: Path, log: Callable[[str], None]) -> None:
    """An evaluation stage run again after it was stopped part-way replaces the rows that run wrote (training stages
    do the same through their checkpoints' steps)."""
    from .metrics_csv import drop_since

    earlier = ws.start_stage(stage.name)
    if earlier and (dropped := drop_since(csv, earlier)):
        log(f"[{stage.name}] {dropped} row(s) of its interrupted run (from {earlier}) removed from {csv.name}")


RUNNERS = {"factorize": _factorize, "distill": _distill, "teacher": _finetune, "finetune": _finetune,
           "eval-glue": _eval_glue, "eval-data": _eval_data, "eval-speed": _eval_speed}
