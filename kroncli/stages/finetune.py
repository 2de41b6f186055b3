"""Stage 2, task distillation: fine-tune the teacher on a task (GLUE's or the user's own), then distil it into the
student. A teacher factorized from a fine-tuned classifier whose labels are the task's is taken as the task
teacher as it is (`adopt_teacher`), scored on dev, not fine-tuned again.

Workspace layout per task: tasks/<task>/teacher (a plain transformers folder), tasks/<task>/student (a
Kronecker student with its task head), tasks/<task>/task.json (an own task's definition),
metrics/finetune-<task>[-teacher].csv, checkpoints/<stage>/.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import torch

from .. import families, narrow, sources
from ..data.encode import Collate, encode
from ..data.glue import Task, load_split
from ..data.tasks import save_definition
from ..data.overlap import seen_mask
from ..data.rehearsal import REHEARSAL_KEY, Rehearsal, RehearsalCollate
from ..distill.capture import Capture
from ..distill.losses import INTERMEDIATE_LOSSES, DistillLoss, check_temperature, check_weights
from ..errors import KronError
from ..integrity import check_folder
from ..evaluate import score
from ..metrics import majority_baseline
from ..student import choices_from_config, load_student, model_dir_write, read_kron_config, save_student, \
    task_seq_len
from ..train import TrainConfig, budget_plan, train
from ..workspace import Workspace
from .common import (check_same_architecture, require_student, shapes_fingerprint, student_layer_map,
                     teacher_source)
from .distill import check_layer_map, parse_layer_map


def default_weights(task: Task) -> dict[str, float]:
    """The paper's stage 2: intermediate layers + logits + labels, summed."""
    logit = "logit_mse" if task.float_labels else "logit_kd"  # multi-label: no softmax over the labels
    return {"embedding_mse": 1.0, "attention_mse": 1.0, "hidden_mse": 1.0, logit: 1.0, "supervised": 1.0}


@dataclass
class FinetuneOptions:
    task: Task  # resolved at the CLI / recipe edge (data.tasks.resolve_task)
    data_dir: str | None = None
    max_seq_len: int = 128
    teacher_only: bool = False
    weights: dict[str, float] | None = None
    temperature: float = 1.0
    teacher: str | None = None
    layer_map: str | None = None
    eval_batch_size: int = 64
    limit: int | None = None  # first N training examples (quick runs, tests)
    augment: int = 0  # student stage: unlabelled variants per training example (teacher-neighbour word swaps)
    augment_p: float = 0.4  # probability of swapping each eligible word
    augment_k: int = 15  # nearest neighbours to draw a swap from
    augment_mask: float = 0.0  # probability of masking each word (Tang et al. 2019 use 0.1)
    augment_ngram: float = 0.0  # probability of cutting a text to one random 1-5-word n-gram (theirs: 0.25)
    rehearse: int = 0  # student stage: blocks of stage-1 text per task example, intermediate losses only
    rehearse_corpus: list[str] | None = None  # default: the corpus stage 1 used (from the manifest)
    rehearse_weight: float = 1.0  # scales the rehearsal's intermediate losses
    init_from: Task | None = None  # student stage: start from this workspace's student for another task (STILTs)
    unlabelled_from: list[Task] | None = None  # student stage: other tasks' training inputs, labelled by the teacher
    extra: dict = field(default_factory=dict)


def _task_config(config, task: Task):
    cfg = copy.deepcopy(config)
    cfg.num_labels = task.num_labels
    cfg.problem_type = ("regression" if task.is_regression else "multi_label_classification" if task.is_multilabel
                        else "single_label_classification")
    if task.names:  # what each class id means, for kron predict and any transformers pipeline
        cfg.id2label = {i: n for i, n in enumerate(task.names)}
        cfg.label2id = {n: i for i, n in enumerate(task.names)}
    cfg.architectures = None
    return cfg


def _data(task: Task, tokenizer, opts: FinetuneOptions, augmenter=None, unlabelled: pd.DataFrame | None = None,
          log=None):
    """(training set, encoded eval splits, their majority-class floor keyed as the stage's eval: the whole
    training set's most common label, --limit or not, as `kron eval glue` scores it). `unlabelled` rows (other
    tasks' inputs) join the training set after augmentation, once each."""
    train_df = load_split(task, "train", opts.data_dir)
    frames = {s: load_split(task, s, opts.data_dir) for s in task.eval_splits}
    floor = _keyed(task, {s: majority_baseline(task, train_df["label"], f["label"]) for s, f in frames.items()})
    if opts.limit:
        train_df = train_df.iloc[: opts.limit]
    if augmenter is not None:
        train_df = augmenter.expand(train_df, task.is_regression, opts.augment)
    if unlabelled is not None:
        train_df = pd.concat([train_df, unlabelled], ignore_index=True)
    train_set = encode(task, train_df, tokenizer, opts.max_seq_len)
    evals = {s: encode(task, f, tokenizer, opts.max_seq_len) for s, f in frames.items()}
    cut = {name: d.truncated for name, d in {"training": train_set, **evals}.items() if d.truncated}
    if cut and log is not None:
        log(f"{task.name}: " + ", ".join(f"{n:,} of {len(train_set if k == 'training' else evals[k]):,} {k} inputs"
                                         for k, n in cut.items())
            + f" are longer than --max-seq-len {opts.max_seq_len} tokens and were truncated")
    return train_set, evals, floor


def _own_inputs(task: Task, data_dir) -> pd.DataFrame:
    """Every input of the task's own splits, test included where the data has it."""
    frames = [load_split(task, split, data_dir) for split in ("train", *task.eval_splits)]
    for split in task.test_splits:
        try:
            frames.append(load_split(task, split, data_dir))
        except KronError:  # a folder without test files: nothing there to keep out
            pass
    return pd.concat(frames, ignore_index=True)


def unlabelled_rows(task: Task, opts: FinetuneOptions) -> tuple[pd.DataFrame, dict[str, int]]:
    """Other tasks' training inputs without their labels (-100 / NaN): more inputs of the same form on which the
    student learns the teacher's answers through the distillation losses (TinyBERT's point that a small task set
    is too little to transfer through). Inputs found in any of the task's own splits are dropped, an eval or test
    input so that it never reaches training, a training input because it is there already; `--limit` takes the
    first N of each source. Returns the rows and how many each source lost to that filter."""
    own = _own_inputs(task, opts.data_dir)
    frames, dropped = [], {}
    for source in {t.name: t for t in opts.unlabelled_from or []}.values():  # each source once
        frame = load_split(source, "train", opts.data_dir)
        if opts.limit:
            frame = frame.iloc[: opts.limit]
        seen = seen_mask(frame, own)
        dropped[source.name] = int(seen.sum())
        keep = frame[~seen]
        frames.append(pd.DataFrame({"text_a": keep["text_a"].to_numpy(), "text_b": keep["text_b"].to_numpy(),
                                    "label": float("nan") if task.is_regression else -100,
                                    "idx": keep["idx"].to_numpy()}))
    return pd.concat(frames, ignore_index=True), dropped


def _keyed(task: Task, per_split: dict[str, dict]) -> dict:
    """One flat dict of metrics, names prefixed by the split where the task has several (MNLI)."""
    prefix = (lambda split: "") if len(task.eval_splits) == 1 else (lambda split: f"{split}_")
    return {f"{prefix(split)}{k}": v for split, res in per_split.items() for k, v in res.items()
            if k not in ("seconds", "examples_per_s")}


def _eval_fn(task: Task, evals: dict, tokenizer, batch_size: int):
    def run(model):
        return _keyed(task, {split: score(model, task, data, tokenizer, batch_size) for split, data in evals.items()})

    return run


def _load_tokenizer(path):
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(path)
    except (OSError, ValueError):
        raise KronError(f"no tokenizer in {path}; factorize a model folder that has one") from None


def _fits_positions(config, opts: FinetuneOptions) -> None:
    """--max-seq-len within the model's positions, checked as `kron eval glue` and `kron export` check it (the value
    is recorded with the model and read back by both)."""
    task_seq_len(Path(), config, opts.max_seq_len)


def finetune_teacher(ws: Workspace, opts: FinetuneOptions, cfg: TrainConfig, progress: bool, log) -> dict:
    """Fine-tune the dense teacher on the task; saved as tasks/<task>/teacher."""
    task = opts.task
    require_student(ws, families.task_kind(task))
    source = teacher_source(ws, opts.teacher)
    log(f"{task.name}: loading the teacher {source.requested}")
    base, _ = sources.load_model(source)
    tokenizer = _load_tokenizer(ws.student_dir)
    config = _task_config(base.config, task)
    _fits_positions(config, opts)
    from accelerate.utils import set_seed

    set_seed(cfg.seed)  # the new classifier head is drawn here, before the training loop seeds its own RNG
    head = families.family_of(config).head_class(families.task_kind(task))
    if source.kind == "random":
        model = head.from_config(config)
        getattr(model, model.base_model_prefix).load_state_dict(base.state_dict(), strict=False)
    else:  # a fine-tuned classifier with the task's labels keeps its head; any other gets a new one
        model = head.from_pretrained(source.path, config=config, ignore_mismatched_sizes=True)
    log(f"{task.name}: reading and tokenising the training and dev sets")
    train_set, evals, floor = _data(task, tokenizer, opts, log=log)
    save_definition(ws, task)
    log(f"{task.name}: {len(train_set):,} training examples; fine-tuning the teacher")

    def step(m, batch):
        out = m(**batch)
        return out.loss, {"supervised": float(out.loss.detach())}

    summary = train(cfg, model, train_set, Collate(tokenizer, task.float_labels), step,
                    ws.stage_checkpoints(cfg.stage), ws.metrics_csv(f"finetune-{task.name.lower()}-teacher"),
                    {"teacher": source.requested, "task": task.name,
                     "data": {"max_seq_len": opts.max_seq_len, "limit": opts.limit}},
                    _eval_fn(task, evals, tokenizer, opts.eval_batch_size),
                    progress=progress, log=log)
    if summary["is_main"]:
        with model_dir_write(ws.task_model_dir(task, "teacher")) as tmp:
            summary["model"].save_pretrained(tmp)
            tokenizer.save_pretrained(tmp)
        ws.record_stage(cfg.stage, {"task": task.name, "steps": summary["steps"], "eval": summary["eval"],
                                    "majority": floor, "seconds": summary["seconds"], **budget_plan(summary)})
    return summary


def classifier_labels(ws: Workspace) -> tuple[str, ...] | None:
    """The label names, by id, of the model `kron factorize` read when it was a fine-tuned sequence classifier (its
    config names a *ForSequenceClassification architecture); None for a base model."""
    from ..integrity import read_json_object

    teacher = ws.read_manifest().get("teacher") or {}
    path = Path(teacher.get("path") or "") / "config.json"
    if not teacher.get("path") or not path.is_file():
        return None
    config = read_json_object(path)
    if not any(a.endswith("ForSequenceClassification") for a in config.get("architectures") or []):
        return None
    id2label = config.get("id2label") or {}
    n = config.get("num_labels") or len(id2label) or 2
    return tuple(str(id2label.get(str(i), id2label.get(i, f"LABEL_{i}"))) for i in range(n))


def adoptable(ws: Workspace, task: Task) -> bool:
    """Whether the factorized model is a classifier fine-tuned on this task's labels, so it serves as the task
    teacher without another fine-tuning (an own task's label order was taken from it when the task was defined)."""
    labels = classifier_labels(ws)
    if labels is None or task.is_regression != (len(labels) == 1):
        return False
    if task.is_regression:
        return True
    import re

    defaults = all(re.fullmatch(r"LABEL_\d+", n) for n in labels)
    return len(labels) == task.num_labels and (defaults or [n.lower() for n in labels] == [n.lower() for n in task.names])


def adopt_teacher(ws: Workspace, opts: FinetuneOptions, log) -> None:
    """Take the factorized classifier as tasks/<task>/teacher, as it is, and score it on dev (the baseline the
    student is measured against), recorded as the teacher stage."""
    from transformers import AutoModelForSequenceClassification

    task = opts.task
    source = teacher_source(ws)
    log(f"{task.name}: the factorized model {source.requested} is a classifier on the task's labels; taking it as the "
        "task teacher without fine-tuning (kron finetune --teacher-only fine-tunes it further)")
    model = AutoModelForSequenceClassification.from_pretrained(source.path).eval()
    model.config = _task_config(model.config, task)  # problem type and label names as the task has them
    tokenizer = _load_tokenizer(ws.student_dir)
    _fits_positions(model.config, opts)
    train_set, evals, floor = _data(task, tokenizer, opts, log=log)
    scores = _eval_fn(task, evals, tokenizer, opts.eval_batch_size)(model)
    save_definition(ws, task)
    with model_dir_write(ws.task_model_dir(task, "teacher")) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
    ws.record_stage(f"teacher-{task.name.lower()}", {"task": task.name, "steps": 0, "eval": scores, "majority": floor,
                                                     "adopted": source.requested})
    log(f"{task.name}: teacher on dev: " + ", ".join(f"{k} {v:.2f}" for k, v in scores.items()
                                                      if isinstance(v, float)))


def _factored(module) -> bool:
    from ..kron.layers import KroneckerEmbedding, KroneckerLinear

    return module is not None and any(isinstance(m, (KroneckerLinear, KroneckerEmbedding)) for m in module.modules())


def init_student_dir(ws: Workspace, task: Task, init_from: Task | None) -> Path:
    """The student a task's stage 2 starts from: the general one, or (`init_from`) the workspace's distilled student
    of another task, a related one whose training has already taught the encoder what the task needs
    (intermediate-task transfer, Phang et al. 2018: MRPC from STS-B, RTE from MNLI)."""
    if not init_from:
        return ws.student_dir
    source = init_from
    if source.name == task.name:
        raise KronError(f"--init-from {source.name} is the task being trained; name another task whose student "
                        "this one should start from, or leave it out")
    folder = ws.task_model_dir(source, "student")
    if not (folder / "config.json").is_file():
        raise KronError(f"--init-from {source.name}: {ws.root} has no distilled {source.name} student; run kron "
                        f"finetune --workspace {ws.root} --task {source.name.lower()} first")
    return folder


def build_task_student(ws: Workspace, task: Task, teacher, folder: Path | None = None) -> tuple[torch.nn.Module, list]:
    """The general student (or `folder`'s: another task's student) + a task head initialised from the fine-tuned
    teacher's (pooler and classifier)."""
    folder = folder or ws.student_dir
    general = load_student(folder, projection=True)
    base = general.base_model
    head = families.family_of(general.config).head_class(families.task_kind(task))
    model = head.from_config(_task_config(general.config, task))
    prefix = model.base_model_prefix
    t_base = teacher.base_model
    unpooled = getattr(getattr(model, prefix), "pooler", "none") is None  # RoBERTa's head reads no pooler
    if unpooled:
        base.pooler = None  # the saved task student must not carry one its class does not have
    # MLM-pretrained students have no pooler: take the task teacher's. A dense one is replaced by the task
    # teacher's (fine-tuned) pooler; a factored one (--targets with the pooler) stays, and learns in this stage.
    if getattr(t_base, "pooler", None) is not None and not _factored(getattr(base, "pooler", None)):
        base.pooler = narrow.teacher_module(t_base.pooler, getattr(base, "pooler", None), folder)
    setattr(model, prefix, base)
    own = narrow.head_state({k: v for k, v in teacher.state_dict().items() if not k.startswith(prefix + ".")},
                            folder)
    missing, unexpected = model.load_state_dict(own, strict=False)
    if unexpected:
        raise KronError(f"the task teacher's head does not fit the student: {unexpected[:3]}")
    choices = choices_from_config(read_kron_config(folder))
    if type(general) is not type(base):  # the general student was saved with a head: names carry its prefix
        for c in choices:
            c.name = c.name.split(".", 1)[1]
    if unpooled:
        choices = [c for c in choices if not c.name.startswith("pooler.")]
    for c in choices:
        c.name = f"{prefix}.{c.name}"
    return model, choices


def check_student_options(opts: FinetuneOptions) -> None:
    """Loss weights, augmentation and rehearsal settings, checked before anything loads (`kron finetune`,
    `kron run`)."""
    try:
        check_temperature(opts.temperature)
    except ValueError as e:
        raise KronError(f"{e} (--temperature, finetune.temperature), e.g. 1") from None
    if opts.weights is not None:
        try:
            check_weights(opts.weights)
        except ValueError as e:
            raise KronError(str(e)) from None
    if opts.rehearse < 0:
        raise KronError(f"--rehearse {opts.rehearse} is negative; pass 0 (off) or the blocks of general text per "
                        "task example, e.g. --rehearse 1")
    if opts.rehearse and opts.rehearse_weight <= 0:
        raise KronError(f"--rehearse-weight {opts.rehearse_weight} must be positive, e.g. --rehearse-weight 1")
    if opts.rehearse and opts.weights is not None and not any(opts.weights.get(k) for k in INTERMEDIATE_LOSSES):
        raise KronError("--rehearse keeps the intermediate losses on general text, but they are all weighted 0; "
                        f"give one of {', '.join(INTERMEDIATE_LOSSES)} a weight, or drop --rehearse")
    if opts.augment < 0:
        raise KronError(f"--augment {opts.augment} is negative; pass 0 (off) or the number of copies, e.g. "
                        "--augment 4")
    if opts.augment:
        from ..data.augment import check_rates

        try:
            check_rates(opts.augment_p, opts.augment_mask, opts.augment_ngram,
                        names=("--augment-p", "--augment-mask", "--augment-ngram"))
        except ValueError as e:
            raise KronError(str(e)) from None
    if opts.task is not None and opts.task.is_multilabel and (opts.augment or opts.unlabelled_from):
        raise KronError(f"--augment and --unlabelled-from are for single-label tasks so far; {opts.task.name} is "
                        "multi-label: drop them")
    for source in opts.unlabelled_from or []:
        task, name = opts.task, source.name
        if source.name == task.name:
            raise KronError(f"--unlabelled-from {name} is the task being trained; its inputs are there already, "
                            "name another task (e.g. --task mrpc --unlabelled-from stsb)")
        if "train" not in source.splits:
            raise KronError(f"--unlabelled-from {name}: {source.name} has no training set (only "
                            f"{', '.join(source.splits)}); name a task that has one")
        if source.is_pair != task.is_pair:
            form = lambda t: "sentence pairs" if t.is_pair else "single sentences"  # noqa: E731
            raise KronError(f"--unlabelled-from {name}: {source.name} has {form(source)}, {task.name} "
                            f"{form(task)}; name a task whose inputs have the same form")
    if opts.augment and opts.augment_k < 1:
        raise KronError(f"--augment-k {opts.augment_k} must be at least 1, e.g. --augment-k 15")


def _augment_fingerprint(opts: FinetuneOptions) -> list:
    """What a resumed run must share with its checkpoint; the rules added later only where they are on, so
    checkpoints written before them still resume."""
    rules = [opts.augment_mask, opts.augment_ngram] if opts.augment_mask or opts.augment_ngram else []
    return [opts.augment, opts.augment_p, opts.augment_k, *rules]


def _unseen_evals(task: Task, source: Task, opts: FinetuneOptions, tokenizer) -> tuple[dict, dict]:
    """The eval splits without the inputs of `source`'s training set, which trained the student's start (see
    data/overlap.py), encoded, and how many examples each split lost; ({}, {}) where nothing overlaps."""
    seen = load_split(source, "train", opts.data_dir)
    unseen, lost = {}, {}
    for split in task.eval_splits:
        frame = load_split(task, split, opts.data_dir)
        mask = seen_mask(frame, seen)
        if mask.any():
            lost[split] = int(mask.sum())
            if not mask.all():
                unseen[split] = encode(task, frame[~mask], tokenizer, opts.max_seq_len)
    return unseen, lost


def _rehearsal_sources(ws: Workspace, opts: FinetuneOptions) -> list:
    """The general text --rehearse reads: --rehearse-corpus, else stage 1's (checked before any model loads)."""
    sources = opts.rehearse_corpus or ws.read_manifest().get("stages", {}).get("distill", {}).get("corpus")
    if not sources:
        raise KronError(f"--rehearse needs general text and {ws.root} records no stage-1 corpus; pass "
                        "--rehearse-corpus FILE (one sentence per line)")
    return sources


def _with_rehearsal(ws: Workspace, opts: FinetuneOptions, sources: list, tokenizer, train_set, collate, seed: int,
                    log):
    """The task set and collate wrapped so that each example brings `opts.rehearse` blocks of general text."""
    from ..data.corpus import load_corpus
    from .distill import PackedCollate

    record = ws.read_manifest().get("stages", {}).get("distill", {})
    seq_len = record.get("max_seq_len") or opts.max_seq_len  # stage 1's block length where it is recorded
    block = families.family_of(ws.student_dir).require_block("pairs")
    ids = load_corpus(sources, tokenizer, seq_len, ws.root / "cache", record.get("pairs", True), log=log)
    log(f"rehearsal: {ids.shape[0]:,} blocks of {ids.shape[1]} tokens from {', '.join(map(str, sources))}")
    return (Rehearsal(train_set, ids, opts.rehearse, seed),
            RehearsalCollate(collate, PackedCollate(tokenizer.sep_token_id, block.token_types)))


def finetune_student(ws: Workspace, opts: FinetuneOptions, cfg: TrainConfig, progress: bool, log) -> dict:
    """Distil the fine-tuned teacher into the student on the task (intermediate + logits + labels)."""
    from transformers import AutoModelForSequenceClassification

    check_student_options(opts)

    task = opts.task
    require_student(ws, families.task_kind(task))
    rehearsal = _rehearsal_sources(ws, opts) if opts.rehearse else None
    start = init_student_dir(ws, task, opts.init_from)
    source = opts.init_from
    init = {"init_from": source.name} if source else {}  # for the log, the checkpoint fingerprint and the manifest
    teacher_path = ws.task_model_dir(task, "teacher")
    if not (teacher_path / "config.json").is_file() and adoptable(ws, task):
        adopt_teacher(ws, opts, log)
    if not (teacher_path / "config.json").is_file():
        raise KronError(f"no fine-tuned {task.name} teacher in {ws.root}; run kron finetune --workspace {ws.root} "
                        f"--task {task.name.lower()} --teacher-only first")
    check_folder(teacher_path)
    log(f"{task.name}: loading the fine-tuned teacher ({teacher_path}) and the student")
    teacher = AutoModelForSequenceClassification.from_pretrained(teacher_path).eval().requires_grad_(False)
    _fits_positions(teacher.config, opts)
    student, choices = build_task_student(ws, task, teacher, start)
    if init:
        log(f"{task.name}: starting from the {init['init_from']} student ({start})")
    layers = student_layer_map(ws.student_dir, opts.layer_map)
    check_same_architecture(teacher.config, student.config, allow_shallower=bool(layers),
                            narrower=narrow.projection_of(student) is not None)
    check_layer_map(layers, teacher.config, student.config)
    tokenizer = _load_tokenizer(ws.student_dir)
    augmenter = None
    if opts.augment:
        from ..data.augment import Augmenter

        augmenter = Augmenter.from_model(teacher, tokenizer, k=opts.augment_k, p=opts.augment_p, seed=cfg.seed,
                                         p_mask=opts.augment_mask, p_ngram=opts.augment_ngram)
    rows, extra_inputs = None, {}
    if opts.unlabelled_from:
        rows, dropped = unlabelled_rows(task, opts)
        extra_inputs = {"unlabelled_from": list(dropped), "unlabelled_examples": len(rows)}
        log(f"{task.name}: {len(rows):,} unlabelled training inputs of {', '.join(dropped)} added, for the teacher to "
            f"label ({', '.join(f'{n:,} of {k}' for k, n in dropped.items())} dropped: already in {task.name}'s "
            "own splits)")
    log(f"{task.name}: reading and tokenising the training and dev sets"
        + (f", with {opts.augment} augmented copies of each training example (the teacher's masked-LM writes them: "
           "minutes on a CPU)" if opts.augment else ""))
    train_set, evals, floor = _data(task, tokenizer, opts, augmenter, rows, log=log)
    save_definition(ws, task)
    unseen, lost = _unseen_evals(task, source, opts, tokenizer) if source else ({}, {})
    for split, n in lost.items():
        log(f"{task.name}: {n:,} of the {len(evals[split]):,} {split} examples are in {init['init_from']}'s training "
            "set, which trained the start: the score on the others is recorded too (eval_unseen)")
    weights = opts.weights or default_weights(task)
    rehearse_weights = {k: weights[k] for k in INTERMEDIATE_LOSSES if weights.get(k)}
    collate = Collate(tokenizer, task.float_labels)
    if opts.rehearse:
        train_set, collate = _with_rehearsal(ws, opts, rehearsal, tokenizer, train_set, collate, cfg.seed, log)
    try:
        loss = DistillLoss(weights, temperature=opts.temperature, layer_map=parse_layer_map(layers))
        rehearsal_loss = (DistillLoss(rehearse_weights, layer_map=parse_layer_map(layers))
                          if opts.rehearse else None)
    except ValueError as e:
        raise KronError(str(e)) from None
    attention = loss.attention
    t_capture = Capture(teacher, attention=attention)
    s_captures: dict = {}

    def step(model, batch):
        if id(model) not in s_captures:
            s_captures[id(model)] = Capture(getattr(model, "module", model), attention=attention, runner=model)
        s_capture = s_captures[id(model)]
        device = next(model.parameters()).device
        if next(teacher.parameters()).device != device:
            teacher.to(device)
        general = batch.pop(REHEARSAL_KEY, None)
        inputs = {k: v for k, v in batch.items() if k != "labels"}
        t_out = None
        if loss.needs_teacher:
            with torch.inference_mode():
                t_out = t_capture(**inputs)
        total, terms = loss(s_capture(**inputs), t_out, batch)
        if general is not None:
            with torch.inference_mode():
                t_general = t_capture(**general)
            r_total, _ = rehearsal_loss(s_capture(**general), t_general, general)
            total = total + opts.rehearse_weight * r_total
            terms = {**terms, "rehearsal": float(r_total.detach()), "total": float(total.detach())}
        return total, terms

    log(f"{task.name}: {len(train_set):,} training examples"
        + (f" ({opts.augment} augmented copies of each task example)" if opts.augment else "")
        + (f", {len(rows):,} of them {', '.join(extra_inputs['unlabelled_from'])}'s" if rows is not None else "")
        + (f", each with {opts.rehearse} block(s) of general text" if opts.rehearse else "")
        + "; distilling the student")
    log(f"{task.name}: scoring the student on {', '.join(evals)} before training")
    before = _eval_fn(task, evals, tokenizer, opts.eval_batch_size)(student)
    summary = train(cfg, student, train_set, collate, step,
                    ws.stage_checkpoints(cfg.stage), ws.metrics_csv(f"finetune-{task.name.lower()}"),
                    {**shapes_fingerprint(ws.student_dir), "task": task.name,
                     **init,
                     "data": {"max_seq_len": opts.max_seq_len, "limit": opts.limit},
                     **({"augment": _augment_fingerprint(opts)} if opts.augment else {}),
                     **({"rehearse": [opts.rehearse, opts.rehearse_weight]} if opts.rehearse else {}),
                     **extra_inputs, "settings": {"weight": weights, "temperature": opts.temperature,  # kept on resume
                                                  "layer_map": parse_layer_map(layers)}},
                    _eval_fn(task, evals, tokenizer, opts.eval_batch_size), progress=progress, log=log)
    if summary["is_main"] and lost:
        score_unseen = _eval_fn(task, unseen, tokenizer, opts.eval_batch_size)
        summary["eval_unseen"] = {"student": score_unseen(summary["model"]) if unseen else {},
                                  "teacher": score_unseen(teacher) if unseen else {},
                                  "excluded": lost, "seen_in": init["init_from"]}
    if summary["is_main"]:
        save_student(summary["model"], choices, ws.task_model_dir(task, "student"), tokenizer,
                     extra={"task": task.name, "max_seq_len": opts.max_seq_len})  # eval and export default to it
        ws.record_stage(cfg.stage, {"task": task.name, "steps": summary["steps"], "eval": summary["eval"],
                                    "eval_before": before, "majority": floor, "weights": weights,
                                    "seconds": summary["seconds"],
                                    "train_examples": len(train_set), "augment": opts.augment,
                                    **({"augment_rules": {"swap": opts.augment_p, "mask": opts.augment_mask,
                                                          "ngram": opts.augment_ngram}} if opts.augment else {}),
                                    "rehearse": opts.rehearse, **budget_plan(summary),
                                    **init, **({"eval_unseen": summary["eval_unseen"]} if lost else {}),
                                    **extra_inputs})
    summary["eval_before"] = before
    return summary
