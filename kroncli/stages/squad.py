"""Stage 2 on SQuAD v1.1 / v2.0: fine-tune a question-answering teacher, distil it into the student, evaluate.

Workspace layout: tasks/squad[_v2]/teacher (a transformers *ForQuestionAnswering folder), tasks/squad[_v2]/student
(a Kronecker student with the span head, kron.json records max_seq_len and doc_stride), metrics/finetune-squad[_v2]
[-teacher].csv, checkpoints/<stage>/; `kron eval squad` adds metrics/eval.csv rows and predictions/squad[_v2]-<model>.json.

The student's loss is the paper's stage 2 adapted to a span head: embedding / attention / hidden-state MSE to the
teacher, KD on the start and the end logits (`qa_logit_kd`: the mean of the two softmax-over-positions KL terms,
padding excluded) and the supervised span loss (`qa_supervised`: mean cross-entropy of the gold start and end),
both registered with the other losses (kroncli/distill/qa_losses.py).
`--weight logit_kd=..` / `supervised=..` are accepted as the QA terms.
"""

from __future__ import annotations

import copy
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from .. import families, metrics_csv, narrow, sources
from ..data.squad import SQUAD_TASKS, SquadCollate, SquadExample, SquadFeatures, load_squad, prepare_features, task_name
from ..distill.capture import Capture
from ..distill.losses import DistillLoss
from ..errors import KronError
from ..integrity import check_folder
from ..squad_metrics import postprocess, squad_evaluate
from ..student import (KRON_CONFIG, choices_from_config, load_student, model_dir_write, read_kron_config,
                       save_student)
from ..train import TrainConfig, check_training_values, train
from ..workspace import Workspace, atomic_write_json, now
from .common import (check_same_architecture, require_student, shapes_fingerprint, student_layer_map,
                     teacher_source)
from .distill import check_layer_map, parse_layer_map
from .finetune import FinetuneOptions, _load_tokenizer

DEFAULT_MAX_SEQ_LEN = 384
DEFAULT_DOC_STRIDE = 128
MODELS = ("student", "teacher")
EVAL_COLUMNS = ["workspace", "model", "task", "split", "metric", "value", "n", "seconds", "timestamp"]


@dataclass
class SquadOptions(FinetuneOptions):
    """`kron finetune --task squad|squad_v2` options (FinetuneOptions + the SQuAD ones); `task` is the SquadTask."""

    max_seq_len: int = DEFAULT_MAX_SEQ_LEN
    doc_stride: int = DEFAULT_DOC_STRIDE
    train_file: str | None = None
    dev_file: str | None = None
    null_threshold: float = 0.0
    n_best: int = 20
    max_answer_len: int = 30

    @property
    def version(self) -> int:
        return self.task.version


def default_weights() -> dict[str, float]:
    return {"embedding_mse": 1.0, "attention_mse": 1.0, "hidden_mse": 1.0, "qa_logit_kd": 1.0,
            "qa_supervised": 1.0}


def squad_model_dir(ws: Workspace, version: int, which: str) -> Path:
    return ws.task_model_dir(SQUAD_TASKS[version], which)


_RENAMES = {"logit_kd": "qa_logit_kd", "supervised": "qa_supervised"}


def resolve_weights(weights: dict[str, float] | None) -> dict[str, float]:
    """SQuAD loss weights: the defaults, with logit_kd / supervised read as their span-head versions."""
    out: dict[str, float] = {}
    for name, w in (weights or default_weights()).items():
        if name in ("logit_mse", "mlm"):
            raise KronError(f"--weight {name}: not a SQuAD loss; use embedding_mse, attention_mse, hidden_mse, "
                            "qa_logit_kd (logit_kd) or qa_supervised (supervised)")
        out[_RENAMES.get(name, name)] = w
    return out


# ------------------------------------------------------------------------------------------------ data

def _qa_config(config):
    cfg = copy.deepcopy(config)
    cfg.num_labels = 2
    cfg.architectures = None
    cfg.problem_type = None
    return cfg


def load_examples(version: int, split: str, data_dir=None, file=None, limit: int | None = None
                  ) -> list[SquadExample]:
    examples = load_squad(version, split, data_dir, file)
    return examples[:limit] if limit else examples


def _data(opts: SquadOptions, tokenizer):
    train_ex = load_examples(opts.version, "train", opts.data_dir, opts.train_file, opts.limit)
    dev_ex = load_examples(opts.version, "dev", opts.data_dir, opts.dev_file)
    train_set = prepare_features(train_ex, tokenizer, opts.max_seq_len, opts.doc_stride, train=True)
    dev_set = prepare_features(dev_ex, tokenizer, opts.max_seq_len, opts.doc_stride, train=False)
    return train_ex, train_set, dev_ex, dev_set


def _data_fingerprint(opts: SquadOptions) -> dict:
    """What the training windows are cut with: a checkpoint resumes only on the same ones (train)."""
    return {"max_seq_len": opts.max_seq_len, "doc_stride": opts.doc_stride, "limit": opts.limit}


def _check_positions(config, max_seq_len: int) -> None:
    limit = families.max_positions(config)
    if limit and max_seq_len > limit:
        raise KronError(f"--max-seq-len {max_seq_len} is longer than the model's {limit} positions; pass "
                        f"--max-seq-len {limit} or less (and a smaller --doc-stride)")


# ------------------------------------------------------------------------------------------------ evaluation

@torch.no_grad()
def predict_spans(model, features: SquadFeatures, tokenizer, batch_size: int = 64,
                  advance: Callable[[int], None] | None = None) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Start and end logits of every window (trimmed to its own length)."""
    model.eval()
    device = next(model.parameters()).device
    loader = torch.utils.data.DataLoader(features, batch_size=batch_size, shuffle=False,
                                         collate_fn=SquadCollate(tokenizer))
    starts, ends = [], []
    k = 0
    for batch in loader:
        batch = {key: v.to(device) for key, v in batch.items() if key not in ("start_positions", "end_positions")}
        out = model(**batch)
        s, e = out.start_logits.float().cpu().numpy(), out.end_logits.float().cpu().numpy()
        for row in range(s.shape[0]):
            n = len(features.items[k]["input_ids"])
            starts.append(s[row, :n])
            ends.append(e[row, :n])
            k += 1
        if advance:
            advance(s.shape[0])
    return starts, ends


def gold_answers(examples: list[SquadExample]) -> dict[str, list[str]]:
    return {ex.id: list(ex.answers) for ex in examples}


def score_model(model, examples: list[SquadExample], features: SquadFeatures, tokenizer, version: int,
                batch_size: int = 64, null_threshold: float = 0.0, n_best: int = 20, max_answer_len: int = 30,
                advance=None) -> tuple[dict, dict[str, str], dict[str, float]]:
    """(official scores with n and seconds, predictions id -> text, null-score differences id -> float)."""
    t0 = time.perf_counter()
    starts, ends = predict_spans(model, features, tokenizer, batch_size, advance)
    preds, best, odds = postprocess(examples, features.example_index, features.offsets, starts, ends,
                                    version=version, cls_index=features.cls_index, n_best=n_best,
                                    max_answer_len=max_answer_len, null_threshold=null_threshold)
    if version == 2:
        result = squad_evaluate(gold_answers(examples), best, 2, na_probs=odds, na_prob_thresh=null_threshold)
    else:
        result = squad_evaluate(gold_answers(examples), preds, 1)
    result["n"] = len(examples)
    result["seconds"] = time.perf_counter() - t0
    return result, preds, odds


def _eval_fn(opts: SquadOptions, dev_ex, dev_set, tokenizer):
    def run(model):
        res, _, _ = score_model(model, dev_ex, dev_set, tokenizer, opts.version, opts.eval_batch_size,
                                opts.null_threshold, opts.n_best, opts.max_answer_len)
        return {k: v for k, v in res.items() if k != "seconds" and not k.endswith("total")}

    return run


# ------------------------------------------------------------------------------------------------ stage 2

def finetune_squad_teacher(ws: Workspace, opts: SquadOptions, cfg: TrainConfig, progress: bool, log) -> dict:
    """Fine-tune the dense teacher with a span head; saved as tasks/squad[_v2]/teacher."""
    name = task_name(opts.version)
    require_student(ws, "question_answering")
    source = teacher_source(ws, opts.teacher)
    base, _ = sources.load_model(source)
    tokenizer = _load_tokenizer(ws.student_dir)
    config = _qa_config(base.config)
    _check_positions(config, opts.max_seq_len)
    train_ex, train_set, dev_ex, dev_set = _data(opts, tokenizer)
    from accelerate.utils import set_seed

    set_seed(cfg.seed)  # the new QA head is drawn here, before the training loop seeds its own RNG
    head = families.family_of(config).head_class("question_answering")
    if source.kind == "random":
        model = head.from_config(config)
        getattr(model, model.base_model_prefix).load_state_dict(base.state_dict(), strict=False)
    else:
        model = head.from_pretrained(source.path, config=config)
    log(f"{name}: {len(train_ex):,} questions, {len(train_set):,} windows; fine-tuning the teacher")

    def step(m, batch):
        out = m(**batch)
        return out.loss, {"supervised": float(out.loss.detach())}

    summary = train(cfg, model, train_set, SquadCollate(tokenizer), step, ws.stage_checkpoints(cfg.stage),
                    ws.metrics_csv(f"finetune-{name}-teacher"),
                    {"teacher": source.requested, "task": name, "data": _data_fingerprint(opts)},
                    _eval_fn(opts, dev_ex, dev_set, tokenizer), progress=progress, log=log)
    if summary["is_main"]:
        with model_dir_write(squad_model_dir(ws, opts.version, "teacher")) as tmp:
            summary["model"].save_pretrained(tmp)
            tokenizer.save_pretrained(tmp)
        ws.record_stage(cfg.stage, {"task": name, "steps": summary["steps"], "eval": summary["eval"],
                                    "max_seq_len": opts.max_seq_len, "doc_stride": opts.doc_stride,
                                    "seconds": summary["seconds"]})
    return summary


def build_squad_student(ws: Workspace, teacher) -> tuple[torch.nn.Module, list]:
    """General student + the fine-tuned teacher's span head (qa_outputs); the pooler is dropped (unused)."""
    folder = ws.student_dir
    general = load_student(folder, projection=True)
    base = general.base_model
    head = families.family_of(general.config).head_class("question_answering")
    model = head.from_config(_qa_config(general.config))
    prefix = model.base_model_prefix
    if getattr(base, "pooler", None) is not None:
        base.pooler = None  # a span head reads token states only; the saved student must not carry it
    setattr(model, prefix, base)
    own = narrow.head_state({k: v for k, v in teacher.state_dict().items() if not k.startswith(prefix + ".")},
                            folder)
    _, unexpected = model.load_state_dict(own, strict=False)
    if unexpected:
        raise KronError(f"the SQuAD teacher's head does not fit the student: {unexpected[:3]}")
    choices = choices_from_config(read_kron_config(folder))
    if type(general) is not type(base):  # saved with a head: names carry its prefix
        for c in choices:
            c.name = c.name.split(".", 1)[1]
    choices = [c for c in choices if not c.name.startswith("pooler.")]
    for c in choices:
        c.name = f"{prefix}.{c.name}"
    return model, choices


def _teacher_hint(ws: Workspace, version: int) -> str:
    return f"kron finetune --workspace {ws.root} --task {task_name(version)} --teacher-only"


def finetune_squad_student(ws: Workspace, opts: SquadOptions, cfg: TrainConfig, progress: bool, log) -> dict:
    """Distil the fine-tuned QA teacher into the student (intermediate + start/end logits + gold spans)."""
    from transformers import AutoModelForQuestionAnswering

    name = task_name(opts.version)
    require_student(ws, "question_answering")
    teacher_path = squad_model_dir(ws, opts.version, "teacher")
    if not (teacher_path / "config.json").is_file():
        raise KronError(f"no fine-tuned {name} teacher in {ws.root}; run {_teacher_hint(ws, opts.version)} first")
    check_folder(teacher_path)
    teacher = AutoModelForQuestionAnswering.from_pretrained(teacher_path).eval().requires_grad_(False)
    student, choices = build_squad_student(ws, teacher)
    layers = student_layer_map(ws.student_dir, opts.layer_map)
    check_same_architecture(teacher.config, student.config, allow_shallower=bool(layers),
                            narrower=narrow.projection_of(student) is not None)
    check_layer_map(layers, teacher.config, student.config)
    _check_positions(student.config, opts.max_seq_len)
    tokenizer = _load_tokenizer(ws.student_dir)
    train_ex, train_set, dev_ex, dev_set = _data(opts, tokenizer)
    weights = resolve_weights(opts.weights)
    try:
        loss = DistillLoss(weights, temperature=opts.temperature, layer_map=parse_layer_map(layers))
    except ValueError as e:
        raise KronError(str(e)) from None
    attention = loss.attention
    t_capture = Capture(teacher, attention=attention)
    s_captures: dict = {}
    targets = ("start_positions", "end_positions")

    def step(model, batch):
        if id(model) not in s_captures:
            s_captures[id(model)] = Capture(getattr(model, "module", model), attention=attention, runner=model)
        device = next(model.parameters()).device
        if next(teacher.parameters()).device != device:
            teacher.to(device)
        inputs = {k: v for k, v in batch.items() if k not in targets}
        t_out = None
        if loss.needs_teacher:
            with torch.inference_mode():
                t_out = t_capture(**inputs)
        return loss(s_captures[id(model)](**inputs), t_out, batch)

    log(f"{name}: {len(train_ex):,} questions, {len(train_set):,} windows; distilling the student")
    eval_fn = _eval_fn(opts, dev_ex, dev_set, tokenizer)
    before = eval_fn(student)
    summary = train(cfg, student, train_set, SquadCollate(tokenizer), step, ws.stage_checkpoints(cfg.stage),
                    ws.metrics_csv(f"finetune-{name}"),
                    {**shapes_fingerprint(ws.student_dir), "task": name, "data": _data_fingerprint(opts),
                     "settings": {"weight": weights, "temperature": opts.temperature,  # a resumed run keeps them
                                  "layer_map": parse_layer_map(layers)}},
                    eval_fn, progress=progress, log=log)
    if summary["is_main"]:
        save_student(summary["model"], choices, squad_model_dir(ws, opts.version, "student"), tokenizer,
                     extra={"task": name, "max_seq_len": opts.max_seq_len, "doc_stride": opts.doc_stride})
        ws.record_stage(cfg.stage, {"task": name, "steps": summary["steps"], "eval": summary["eval"],
                                    "eval_before": before, "weights": weights, "max_seq_len": opts.max_seq_len,
                                    "doc_stride": opts.doc_stride, "seconds": summary["seconds"]})
    summary["eval_before"] = before
    summary["weights"] = weights
    return summary


# ------------------------------------------------------------------------------------------------ kron eval squad

@dataclass
class SquadEvalOptions:
    version: int = 1
    data_dir: str | None = None
    dev_file: str | None = None
    model: str | None = None  # student | teacher | both; None: the student, and the teacher when present
    limit: int | None = None
    batch_size: int = 64
    max_seq_len: int | None = None  # default: the student's recorded value, else 384
    doc_stride: int | None = None
    null_threshold: float = 0.0
    n_best: int = 20
    max_answer_len: int = 30


def _has(ws: Workspace, version: int, which: str) -> bool:
    folder = squad_model_dir(ws, version, which)
    return (folder / (KRON_CONFIG if which == "student" else "config.json")).is_file()


def _missing(ws: Workspace, version: int, which: str) -> KronError:
    name = task_name(version)
    folder = squad_model_dir(ws, version, which)
    base = f"kron finetune --workspace {ws.root} --task {name}"
    if which == "teacher":
        how = f"{base} --teacher-only"
    elif _has(ws, version, "teacher"):
        how = base
    else:
        how = f"{base} --teacher-only, then {base}"
    return KronError(f"no fine-tuned {name} {which} in {ws.root} ({folder} missing); run {how}")


def select_models(ws: Workspace, version: int, which: str | None) -> list[str]:
    if which is not None and which not in (*MODELS, "both"):
        raise KronError(f"--model {which!r}: choose student, teacher or both")
    if which is None:
        wanted = ["student"] + (["teacher"] if _has(ws, version, "teacher") else [])
    else:
        wanted = list(MODELS) if which == "both" else [which]
    for m in wanted:
        if not _has(ws, version, m):
            raise _missing(ws, version, m)
    return wanted


def _load_model(ws: Workspace, version: int, which: str):
    from transformers import AutoModelForQuestionAnswering

    folder = squad_model_dir(ws, version, which)
    check_folder(folder)
    try:
        model = load_student(folder) if which == "student" else AutoModelForQuestionAnswering.from_pretrained(folder)
    except (OSError, ValueError) as e:
        raise KronError(f"could not load the {task_name(version)} {which} from {folder} "
                        f"({str(e).splitlines()[0]}); re-run kron finetune") from None
    if not hasattr(model, "qa_outputs") and "QuestionAnswering" not in type(model).__name__:
        raise KronError(f"{folder} holds a {type(model).__name__}, not a question-answering model; re-run "
                        f"kron finetune --task {task_name(version)}")
    if torch.cuda.is_available():
        model = model.cuda()
    return model.eval(), _load_tokenizer(folder)


def _recorded(ws: Workspace, version: int) -> dict:
    path = squad_model_dir(ws, version, "student") / KRON_CONFIG
    try:
        return json.loads(path.read_text()) if path.is_file() else {}
    except (OSError, json.JSONDecodeError):
        return {}


def evaluate_squad(ws: Workspace, opts: SquadEvalOptions, progress=None, log=print) -> dict:
    """Score the task models on the dev set; rows go to metrics/eval.csv, answers to predictions/."""
    if opts.version not in (1, 2):
        raise KronError(f"--version {opts.version!r} is not a SQuAD version; pass 1 (v1.1) or 2 (v2.0)")
    if not ws.root.is_dir():
        raise KronError(f"workspace {ws.root} does not exist; create it with kron factorize MODEL --workspace "
                        f"{ws.root}, then kron finetune --task {task_name(opts.version)}")
    if opts.limit is not None and opts.limit < 1:
        raise KronError(f"--limit {opts.limit} must be a positive number of questions")
    check_training_values({"batch_size": opts.batch_size, "max_seq_len": opts.max_seq_len,
                           "doc_stride": opts.doc_stride, "max_answer_len": opts.max_answer_len})
    name = task_name(opts.version)
    wanted = select_models(ws, opts.version, opts.model)
    metrics_csv.check(ws.eval_csv)  # rows must be able to join it, before any model runs
    recorded = _recorded(ws, opts.version)
    max_seq_len = opts.max_seq_len or int(recorded.get("max_seq_len") or DEFAULT_MAX_SEQ_LEN)
    doc_stride = opts.doc_stride if opts.doc_stride is not None else int(recorded.get("doc_stride")
                                                                         or DEFAULT_DOC_STRIDE)
    examples = load_examples(opts.version, "dev", opts.data_dir, opts.dev_file, opts.limit)
    results, files, rows = {}, {}, []
    features = None
    for which in wanted:
        model, tokenizer = _load_model(ws, opts.version, which)
        _check_positions(model.config, max_seq_len)
        if features is None:  # both models share the student's tokenizer
            features = prepare_features(examples, tokenizer, max_seq_len, doc_stride, train=False)
        bar = progress(f"{name} {which}", len(features)) if progress else None
        with bar if bar is not None else _null() as advance:
            res, preds, odds = score_model(model, examples, features, tokenizer, opts.version, opts.batch_size,
                                           opts.null_threshold, opts.n_best, opts.max_answer_len, advance)
        out = ws.predictions_dir / f"{name}-{which}.json"
        atomic_write_json(out, preds)
        files[which] = str(out)
        if opts.version == 2:
            odds_path = ws.predictions_dir / f"{name}-{which}-null-odds.json"
            atomic_write_json(odds_path, {k: (v if np.isfinite(v) else (1e9 if v > 0 else -1e9))
                                          for k, v in odds.items()})
        results[which] = res
        stamp = now()
        for metric, value in res.items():
            if metric in ("n", "seconds") or metric.endswith("total"):
                continue
            group = metric.split("_", 1)[0] if metric.startswith(("HasAns_", "NoAns_")) else None
            n = res.get(f"{group}_total", 0) if group else res["n"]
            rows.append({"workspace": str(ws.root), "model": which, "task": name, "split": "dev", "metric": metric,
                         "value": value, "n": n, "seconds": round(res["seconds"], 4), "timestamp": stamp})
        log(f"{name} {which}: exact {res['exact']:.2f}, f1 {res['f1']:.2f} ({res['n']} questions)")
    csv = ws.eval_csv
    metrics_csv.append(csv, [{c: r.get(c) for c in EVAL_COLUMNS} for r in rows])
    return {"workspace": str(ws.root), "task": name, "version": opts.version, "split": "dev", "n": len(examples),
            "max_seq_len": max_seq_len, "doc_stride": doc_stride, "null_threshold": opts.null_threshold,
            "results": results, "predictions": files, "eval_csv": str(csv)}


class _null:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False
