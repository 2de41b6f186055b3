"""Stage 1, general distillation: the pre-trained teacher teaches the factorized student on unlabeled text."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import torch

from .. import families, narrow, sources
from ..data.corpus import corpus_files, load_corpus, token_types
from ..distill.capture import Capture
from ..distill.losses import INTERMEDIATE_LOSSES, LOSSES, DistillLoss, check_weights, fit_layer_map, layer_map
from ..errors import KronError
from ..student import choices_from_config, load_student, read_kron_config, save_student
from ..train import TrainConfig, budget_plan, checkpoints, train
from ..workspace import Workspace
from .common import (check_same_architecture, require_student, shapes_fingerprint, student_layer_map,
                     teacher_source)

# The paper sums the intermediate losses unweighted; stage 1 has no logits.
DEFAULT_WEIGHTS = {"embedding_mse": 1.0, "attention_mse": 1.0, "hidden_mse": 1.0}
STAGE1_LOSSES = (*INTERMEDIATE_LOSSES, "mlm")
# A decoder's stage 1 also matches the next-token distribution at every position (KnGPT2's logit KD), unless
# --weight logit_kd=0; it has no masked-LM head for mlm, and an encoder's stage 1 no LM logits for logit_kd.
CAUSAL_STAGE1_LOSSES = (*INTERMEDIATE_LOSSES, "logit_kd")
CAUSAL_WEIGHTS = {"logit_kd": 1.0}


@dataclass
class DistillOptions:
    corpus: list[str]
    max_seq_len: int = 128
    weights: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_WEIGHTS))
    attention: str = "scores"  # or "probs"
    teacher: str | None = None
    layer_map: str | None = None  # "uniform" for a shallower student
    pairs: bool = True  # two-segment blocks [CLS] A [SEP] B [SEP] (BERT's pre-training layout)
    temperature: float = 1.0  # of logit_kd (a decoder's next-token distributions)


class PackedCorpus(torch.utils.data.Dataset):
    def __init__(self, ids: torch.Tensor):
        self.ids = ids

    def __len__(self):
        return self.ids.shape[0]

    def __getitem__(self, i):
        return self.ids[i]


class PackedCollate:
    """Packed rows -> a batch; segment ids follow the [SEP]s (all 0 for one-segment rows), for a family whose
    model takes them (`token_types`, kroncli/families.py)."""

    def __init__(self, sep_id: int, token_types: bool = True):
        self.sep_id, self.token_types = sep_id, token_types

    def __call__(self, rows: list[torch.Tensor]) -> dict:
        ids = torch.stack(rows).long()
        batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
        if self.token_types:
            batch["token_type_ids"] = token_types(ids, self.sep_id)
        return batch


class MaskingCollate:
    """BERT masking for the optional MLM term: 15% of tokens, of which 80% [MASK], 10% random, 10% kept.

    Both models see the same masked input, so the intermediate targets stay consistent. Training masks in the
    step (`mask`), not in the data loader, so the masks come from the step's seeded generator (a resumed run
    masks as the uninterrupted one did); called as a collate it packs and masks in one go.
    """

    def __init__(self, tokenizer, probability: float = 0.15, token_types: bool = True):
        self.packed = PackedCollate(tokenizer.sep_token_id, token_types)
        self.mask_id, self.vocab = tokenizer.mask_token_id, len(tokenizer)
        self.special = torch.tensor(sorted(set(tokenizer.all_special_ids)))
        self.probability = probability

    def __call__(self, rows: list[torch.Tensor]) -> dict:
        return self.mask(self.packed(rows))

    def mask(self, batch: dict) -> dict:
        """A copy of `batch` with masked input_ids and MLM labels (-100 where nothing is predicted)."""
        ids = batch["input_ids"].clone()
        labels = ids.clone()
        # drawn on the CPU's generator whatever the device, so a run draws the same masks on any machine
        shape = ids.shape

        def coin(p):
            return torch.bernoulli(torch.full(shape, p)).bool().to(ids.device)

        chosen = coin(self.probability) & ~torch.isin(ids, self.special.to(ids.device))
        labels[~chosen] = -100
        replace = chosen & coin(0.8)
        ids[replace] = self.mask_id
        rand = chosen & ~replace & coin(0.5)
        ids[rand] = torch.randint(self.vocab, shape).to(ids.device)[rand]
        return {**batch, "input_ids": ids, "labels": labels}


def parse_layer_map(text: str | None) -> list[int] | None:
    """None/"uniform" -> the default (identity, or uniform for a shallower student); "0,2,4" -> explicit."""
    if not text or text == "uniform":
        return None
    try:
        return [int(x) for x in text.split(",")]
    except ValueError:
        raise KronError(f"--layer-map {text!r} is not 'uniform' or a comma list of teacher layer indices") from None


def check_layer_map(text: str | None, teacher_config, student_config) -> None:
    """--layer-map (or the layers the student was cut from) against both models' depths, before anything trains:
    the loss would otherwise fail at its first step."""
    depth = lambda c: getattr(c, "num_hidden_layers", None) or getattr(c, "n_layers", None)  # noqa: E731
    s, t = depth(student_config), depth(teacher_config)
    if s is None or t is None:
        return
    try:
        fit_layer_map(parse_layer_map(text), s, t)
    except ValueError:
        given = f"--layer-map {text}" if text else "the default layer map"
        example = f"--layer-map {','.join(map(str, layer_map(s, t)))} or " if s <= t else ""
        raise KronError(f"{given} does not fit a {s}-layer student and a {t}-layer teacher: give one teacher layer "
                        f"(0..{t - 1}) per student layer, e.g. {example}--layer-map uniform") from None


def make_step(teacher, weights: dict, attention: str, layer_map: str | None, masker: MaskingCollate | None = None,
              temperature: float = 1.0):
    """A `step_fn` for the loop: (MLM masking,) one teacher forward under inference_mode, one student forward."""
    t_capture = Capture(teacher, attention=attention)
    try:
        loss = DistillLoss(weights, layer_map=parse_layer_map(layer_map), temperature=temperature)
    except ValueError as e:
        raise KronError(str(e)) from None
    s_captures = {}

    def step(student, batch):
        if masker is not None:
            batch = masker.mask(batch)
        key = id(student)
        if key not in s_captures:
            s_captures[key] = Capture(getattr(student, "module", student), attention=attention, runner=student)
        inputs = {k: v for k, v in batch.items() if k != "labels"}
        with torch.inference_mode():
            t_out = t_capture(**inputs)
        s_out = s_captures[key](**inputs)
        return loss(s_out, t_out, batch)

    return step


def check_stage1_weights(weights: dict, family: families.Family | None = None) -> None:
    """Stage 1's loss names and weights, checked before anything loads (`kron distill`, `kron run`); a decoder
    `family` takes logit_kd instead of mlm (an unknown family: an encoder's)."""
    known = CAUSAL_STAGE1_LOSSES if family is not None and family.is_decoder else STAGE1_LOSSES
    unknown = set(weights) - set(known)
    if unknown:
        what = f" ({family.name} is a decoder)" if family is not None and family.is_decoder else ""
        raise KronError(f"stage 1 has no loss {sorted(unknown)[0]!r}{what}; use {', '.join(known)}")
    if not any(weights.values()):
        raise KronError(f"all stage-1 loss weights are zero; give one of {', '.join(known)} a weight")
    try:
        check_weights(weights)
    except ValueError as e:
        raise KronError(str(e)) from None


TASK_CORPUS = "task:"


def task_corpus(ws: Workspace, corpus: list[str]) -> list[str]:
    """The corpus with each `task:NAME` entry replaced by a text file of that task's training inputs (a GLUE task,
    or an own task the workspace or recipe defined), one text a line, written to WS/cache: stage 1 on the very text
    the student will be fine-tuned on, when there is no other."""
    from ..data.glue import load_split
    from ..data.tasks import resolve_task

    out = []
    for source in corpus:
        if not source.startswith(TASK_CORPUS):
            out.append(source)
            continue
        task = resolve_task(source[len(TASK_CORPUS):], ws)
        if not hasattr(task, "is_pair"):
            raise KronError(f"--corpus {source}: {task.name} is not a text-classification task; name one, or a file")
        frame = load_split(task, "train")
        lines = [t for col in ("text_a", "text_b") for t in frame[col].dropna().tolist()]
        path = ws.root / "cache" / f"task-{task.name.lower()}.txt"
        path.parent.mkdir(parents=True, exist_ok=True)
        from ..workspace import atomic_write_text

        atomic_write_text(path, "".join(" ".join(str(t).split()) + "\n" for t in lines if str(t).strip()))
        out.append(str(path))
    return out


def stage1_weights(family: families.Family, weights: dict) -> dict:
    """The weights stage 1 trains with for this family (a decoder adds logit KD by default), checked."""
    if family.is_decoder:
        weights = {**CAUSAL_WEIGHTS, **weights}
    check_stage1_weights(weights, family)
    return weights


def run_distill(ws: Workspace, opts: DistillOptions, cfg: TrainConfig, progress: bool, log) -> dict:
    try:  # the values first, before the workspace; which names stage 1 takes depends on the student's family,
        # so an unknown name is left for check_stage1_weights, which lists stage 1's own
        check_weights({k: v for k, v in opts.weights.items() if k in LOSSES})
    except ValueError as e:
        raise KronError(str(e)) from None
    folder = require_student(ws)
    family = families.family_of(folder)
    opts.weights = stage1_weights(family, opts.weights)
    corpus = task_corpus(ws, opts.corpus)
    kron_cfg = read_kron_config(folder)
    causal = family.is_decoder
    block = family.require_block("causal" if causal else "pairs")
    opts.pairs = opts.pairs and not causal  # a decoder's blocks are running text
    student = load_student(folder, projection=True)
    if opts.weights.get("mlm") and student.get_output_embeddings() is None:
        raise KronError(f"the mlm loss needs a student with a masked-LM head; {type(student).__name__} has "
                        "none (factorize a *ForMaskedLM model such as bert-base-uncased)")
    source = teacher_source(ws, opts.teacher)
    log(f"loading the teacher {source.requested}")
    teacher, _ = sources.load_model(source)
    layers = student_layer_map(folder, opts.layer_map)
    check_same_architecture(teacher.config, student.config, allow_shallower=bool(layers),
                            narrower=narrow.projection_of(student) is not None)
    check_layer_map(layers, teacher.config, student.config)
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(folder)
    except (OSError, ValueError):
        tokenizer = None
    log(corpus_line(corpus, ws))
    ids = load_corpus(corpus, tokenizer, opts.max_seq_len, ws.root / "cache", opts.pairs, log=log, causal=causal)
    positions = families.max_positions(student.config)
    if positions and ids.shape[1] > positions:
        raise KronError(f"--max-seq-len {opts.max_seq_len} exceeds the model's {positions} positions")
    log(f"corpus: {ids.shape[0]:,} sequences of {ids.shape[1]} tokens")
    masker = MaskingCollate(tokenizer, token_types=block.token_types) if opts.weights.get("mlm") else None
    teacher.eval().requires_grad_(False)
    step = make_step(teacher, opts.weights, opts.attention, layers, masker, opts.temperature)
    round_no, earlier = next_round(ws, cfg, log)
    log(f"{cfg.stage}: training starts (a loss line every {cfg.log_every} steps)")
    # the teacher follows the student onto accelerate's device inside the loop
    summary = train(cfg, student, PackedCorpus(ids), PackedCollate(tokenizer.sep_token_id, block.token_types),
                    _on_device(step, teacher),
                    ws.stage_checkpoints(cfg.stage), ws.metrics_csv(cfg.stage),
                    {**shapes_fingerprint(folder), "data": {"max_seq_len": opts.max_seq_len, "pairs": opts.pairs,
                                                            **({"causal": True} if causal else {})},
                     "settings": {"weight": opts.weights, "attention": opts.attention,  # a resumed run keeps them
                                  **({"temperature": opts.temperature} if causal else {}),
                                  "layer_map": parse_layer_map(layers),
                                  "teacher": source.requested}},
                    progress=progress, log=log)
    if summary["is_main"]:
        save_student(summary["model"], choices_from_config(kron_cfg), folder, tokenizer,
                     extra={k: v for k, v in kron_cfg.items() if k not in ("layers", "format_version",
                                                                           "architecture", "kroncli_version")})
        ws.record_stage(cfg.stage, {"steps": summary["steps"], "final_loss": summary["final_loss"],
                                    "terms": summary["terms"], "seconds": summary["seconds"],
                                    "corpus": opts.corpus, "sequences": int(ids.shape[0]), "pairs": opts.pairs,
                                    "max_seq_len": int(ids.shape[1]),
                                    "weights": opts.weights, "config": vars(cfg),
                                    **budget_plan(summary), "round": round_no,
                                    **({"earlier_rounds": earlier} if earlier else {})})
    return summary


def corpus_line(corpus: list[str], ws: Workspace) -> str:
    """What stage 1 reads before its first step, said before it starts: tokenising a large corpus takes minutes
    on a CPU, and without a terminal (no progress bar) nothing else would be printed meanwhile."""
    files = corpus_files(corpus)
    what = f"{len(files)} file(s) in {', '.join(corpus)}" if files is not None else f"the dataset {corpus[0]}"
    return (f"corpus: reading and tokenising {what} (a copy cached in {ws.root / 'cache'} by an earlier run with the "
            "same text and settings is read instead)")


def next_round(ws: Workspace, cfg: TrainConfig, log) -> tuple[int, list[dict]]:
    """Which round of stage 1 this run is, and the earlier rounds' manifest records.

    After a finished stage 1, `student/` holds the distilled weights, so a fresh run (its checkpoints deleted, or
    --restart) trains a second round from them rather than starting over. The earlier round's record and metrics
    (`metrics/distill-roundN.csv`) are kept instead of being overwritten, and the manifest marks the new round as
    running, so an interrupted one resumes as the same round. Continuing from a checkpoint stays in the round.
    """
    manifest = ws.read_manifest()
    record = manifest.get("stages", {}).get(cfg.stage) or {}
    existing = checkpoints(ws.stage_checkpoints(cfg.stage))
    same = not record.get("done") or (cfg.resume and existing) or (existing and not cfg.restart)
    if same or os.environ.get("RANK", "0") != "0":  # only the main process moves files
        return record.get("round", 1), record.get("earlier_rounds", [])
    earlier_no = record.get("round", 1)
    csv = ws.metrics_csv(cfg.stage)
    if csv.exists():
        os.replace(csv, ws.metrics_csv(f"{cfg.stage}-round{earlier_no}"))
    earlier = [*record.pop("earlier_rounds", []), record]
    manifest["stages"][cfg.stage] = {"done": False, "round": earlier_no + 1, "earlier_rounds": earlier,
                                     **{k: record[k] for k in ("corpus", "max_seq_len", "pairs") if k in record}}
    ws.write_manifest(manifest)
    log(f"{cfg.stage}: this workspace's stage 1 already finished ({record.get('steps')} steps); round "
        f"{earlier_no + 1} starts from that distilled student (kron factorize --force starts from scratch)")
    return earlier_no + 1, earlier


def _on_device(step, teacher):
    def wrapped(student, batch):
        device = next(student.parameters()).device
        if next(teacher.parameters()).device != device:
            teacher.to(device)
        return step(student, batch)

    return wrapped
