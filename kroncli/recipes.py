"""Recipes: one YAML file describes a whole experiment (teacher, factorize, distill, finetune, eval).

Precedence: command line (`--set section.key=value`) > recipe file > the defaults below. An unknown key or
a value of the wrong type is an error naming the key. Relative corpus/data paths are relative to the
current directory, like the same paths given on the command line. Overriding `data_dir` also moves the recipe
file's corpus entries that lie inside its own `data_dir` (GLUE training sentences as stage-1 text) to the new one.
"""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Union

import yaml

from .errors import KronError, first_line


@dataclass
class FactorizeSection:
    ratio: Optional[float] = None  # teacher params / student params (default 19 when no preset/max_params)
    max_params: Optional[int] = None
    preset: Optional[str] = None  # kroneckerbert8 | kroneckerbert21
    objective: str = "error"
    max_rank: int = 1
    targets: Optional[str] = None
    exclude: Optional[str] = None
    max_layer_ratio: Optional[float] = None
    min_side: int = 1  # shortest side of a Linear factor (2+ rules out one-column factors)
    min_embedding_dim: int = 1  # narrowest per-token embedding factor d/f
    embedding_rank: int = 0  # K > 0: embeddings as a V x K table times a learned K x d matrix
    layers: Optional[list[int]] = None  # teacher layers the student keeps, e.g. [1, 3, 5]; default all
    seed: int = 0  # seed of a random_init teacher
    method: str = "kronecker"  # kronecker | lowrank (truncated SVD) | narrow (dense, narrower; kroncli/narrow.py)
    width: Optional[int] = None  # narrow: the student's hidden size (default: the widest within the budget)


@dataclass
class DistillSection:
    corpus: list[str] = field(default_factory=list)  # empty: skip stage 1 (not recommended)
    max_steps: Optional[int] = None
    epochs: Optional[float] = None
    max_minutes: Optional[float] = None  # steps timed to fill this many minutes; max_steps / epochs cap it
    mixed_precision: str = "no"  # or bf16 / fp16 on a GPU
    batch_size: int = 32
    lr: float = 1e-4
    max_seq_len: int = 128
    weights: dict[str, float] = field(default_factory=lambda: {"embedding_mse": 1.0, "attention_mse": 1.0,
                                                               "hidden_mse": 1.0})
    pairs: bool = True  # [CLS] A [SEP] B [SEP] blocks; false: one segment per block
    attention: str = "scores"  # or probs
    layer_map: Optional[str] = None  # shallower student: uniform or teacher layer indices "1,3,5"
    temperature: float = 1.0  # of logit_kd, a decoder's next-token distillation
    weight_decay: float = 0.01
    warmup_ratio: float = 0.1
    max_grad_norm: float = 1.0
    grad_accum: int = 1
    save_every: int = 500
    keep: int = 2
    log_every: int = 10
    seed: int = 0


@dataclass
class FinetuneSection:
    # task names, or an own-data task as a mapping: {name: tickets, train: data/train.csv, dev: ..., text_columns:
    # subject,body, label_column: queue, kind: ...} (the keys of data.task_files.TaskFiles), checked by kron run
    tasks: list[Any] = field(default_factory=list)
    epochs: float = 3.0
    max_steps: Optional[int] = None
    max_minutes: Optional[float] = None  # each teacher / student stage timed to fill this; max_steps / epochs cap it
    mixed_precision: str = "no"  # or bf16 / fp16 on a GPU
    batch_size: int = 32
    max_seq_len: int = 128
    teacher_lr: float = 2e-5
    lr: float = 1e-4
    lr_per_task: dict[str, float] = field(default_factory=dict)  # student lr per task (paper Table 8)
    teacher_epochs: Optional[float] = None
    weights: Optional[dict[str, float]] = None  # adjusts the task's default terms; 0 drops one
    weights_per_task: dict[str, dict[str, float]] = field(default_factory=dict)  # e.g. {stsb: {logit_mse: 5}}
    temperature: float = 1.0
    limit: Optional[int] = None
    augment: int = 0  # student: teacher-neighbour word-swap copies per training example
    augment_p: float = 0.4
    augment_k: int = 15
    augment_mask: float = 0.0  # student: probability of masking each word of a copy
    augment_ngram: float = 0.0  # student: probability of cutting a copy to one 1-5-word n-gram
    augment_per_task: dict[str, int] = field(default_factory=dict)  # e.g. {cola: 20}; others use `augment`
    rehearse: int = 0  # student: stage-1 text blocks per task example (intermediate losses only)
    rehearse_weight: float = 1.0
    rehearse_corpus: Optional[list[str]] = None  # default: distill.corpus
    init_from: dict[str, str] = field(default_factory=dict)  # e.g. {mrpc: stsb}: MRPC's student starts from STS-B's
    unlabelled_from: dict[str, list[str]] = field(default_factory=dict)  # e.g. {mrpc: [stsb]}: STS-B's inputs added
    layer_map: Optional[str] = None  # shallower student: uniform or teacher layer indices "1,3,5"
    weight_decay: float = 0.01
    warmup_ratio: float = 0.1
    max_grad_norm: float = 1.0
    grad_accum: int = 1
    save_every: int = 500
    keep: int = 2
    log_every: int = 10
    eval_every: Optional[int] = None  # evaluate on dev every N steps (and at the end)
    seed: int = 0


@dataclass
class EvalSection:
    glue: list[str] = field(default_factory=list)  # task names, or ["all"] for every fine-tuned task
    data: list[str] = field(default_factory=list)  # own-data task names (kron eval data), or ["all"] for every one
    speed_batch: list[int] = field(default_factory=lambda: [1, 8])
    speed_seq_len: int = 128
    speed_repeats: int = 10
    speed: bool = True


@dataclass
class Recipe:
    teacher: str = "all-MiniLM-L6-v2"
    random_init: Optional[str] = None
    data_dir: Optional[str] = None
    factorize: FactorizeSection = field(default_factory=FactorizeSection)
    distill: DistillSection = field(default_factory=DistillSection)
    finetune: FinetuneSection = field(default_factory=FinetuneSection)
    eval: EvalSection = field(default_factory=EvalSection)
    description: str = ""

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _check(value: Any, tp: Any, key: str) -> Any:
    """Validate (and gently coerce int -> float) a YAML value against a type hint."""
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None:
            return None
        return _check(value, args[0], key)
    if origin is list:
        if not isinstance(value, list):
            value = [value] if isinstance(value, (str, int, float)) else value
        if not isinstance(value, list):
            raise KronError(f"recipe key {key}: expected a list, got {type(value).__name__}")
        (inner,) = typing.get_args(tp)
        return [_check(v, inner, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise KronError(f"recipe key {key}: expected a mapping, got {type(value).__name__}")
        _, inner = typing.get_args(tp)
        return {str(k): _check(v, inner, f"{key}.{k}") for k, v in value.items()}
    if tp is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if tp is float and isinstance(value, str):
        try:
            return float(value)  # YAML reads 1e-4 (no dot) as a string
        except ValueError:
            pass
    if tp in (int, str, bool, float) and (not isinstance(value, tp) or (tp is int and isinstance(value, bool))):
        raise KronError(f"recipe key {key}: expected {tp.__name__}, got {value!r}")
    return value


def _build(cls, data: dict, prefix: str):
    if not isinstance(data, dict):
        raise KronError(f"recipe key {prefix or 'top level'}: expected a mapping of keys, got "
                        f"{type(data).__name__} {data!r}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        where = f"{prefix}.{unknown[0]}" if prefix else unknown[0]
        raise KronError(f"unknown recipe key {where}; known keys{' in ' + prefix if prefix else ''}: "
                        f"{', '.join(sorted(names))}")
    kwargs = {}
    for name, value in data.items():
        key = f"{prefix}.{name}" if prefix else name
        tp = hints[name]
        if dataclasses.is_dataclass(tp):  # `distill:` with nothing under it is an empty section; `distill: []` is not
            kwargs[name] = _build(tp, {} if value is None else value, key)
        else:
            kwargs[name] = _check(value, tp, key)
    return cls(**kwargs)


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    """`section.key=value` pairs (value parsed as YAML) on top of the recipe's dict."""
    for item in overrides:
        path, sep, raw = item.partition("=")
        if not sep or not path:
            raise KronError(f"--set {item!r} is not KEY=VALUE, e.g. --set distill.max_steps=100")
        node = data
        parts = path.split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise KronError(f"--set {item!r}: {p} is not a section")
        node[parts[-1]] = _set_value(item, raw)
    return data


def _set_value(item: str, raw: str):
    """The value of a `--set KEY=VALUE`, read as YAML (`[a, b]`, `1e-4`, `true`); a value YAML cannot read is a
    one-line error naming the --set."""
    try:
        return yaml.safe_load(raw)
    except yaml.YAMLError as e:
        raise KronError(f"--set {item!r}: the value is not YAML ({getattr(e, 'problem', None) or first_line(e)}); "
                        "quote a string, write a list as [a, b]") from None


def load_recipe(path: str | Path, overrides: list[str] | None = None) -> Recipe:
    path = Path(path)
    if not path.is_file():
        raise KronError(f"recipe {path} does not exist; see recipes/ for examples")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as e:
        raise KronError(f"recipe {path} is not UTF-8 text (byte 0x{e.object[e.start]:02x} at offset {e.start}); "
                        "save it as UTF-8") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise KronError(f"recipe {path} does not parse{where}: {getattr(e, 'problem', e)}") from None
    if data is None or data == {}:  # an empty file would plan a whole run of defaults
        raise KronError(f"recipe {path} is empty; a recipe names at least its stages (see recipes/ for examples)")
    if isinstance(data, dict):  # anything else fails in _build, naming the key
        _follow_data_dir(data, overrides or [])
    return _build(Recipe, apply_overrides(data, overrides or []), "")


def _follow_data_dir(data: dict, overrides: list[str]) -> None:
    """Point the recipe file's corpus entries under its `data_dir` at an overriding `data_dir` (in place).

    A recipe that distils on its GLUE folder's training sentences then reads them from the folder the user
    passed (`kron run --data-dir`), not from the one the recipe was written for. Corpus lists given on the
    command line are left as they are: they are applied after this.
    """
    given = [_set_value(o, o.partition("=")[2]) for o in overrides if o.partition("=")[0].strip() == "data_dir"]
    old, new = data.get("data_dir"), given[-1] if given else None
    if not isinstance(old, str) or not isinstance(new, str) or os.path.normpath(old) == os.path.normpath(new):
        return
    root = os.path.normpath(old)

    def moved(entry):
        if not isinstance(entry, str):
            return entry
        rel = os.path.relpath(os.path.normpath(entry), root)
        return entry if rel == os.pardir or rel.startswith(os.pardir + os.sep) else os.path.join(new, rel)

    for section, key in (("distill", "corpus"), ("finetune", "rehearse_corpus")):
        node = data.get(section)
        if isinstance(node, dict) and node.get(key) is not None:
            value = node[key]
            node[key] = [moved(e) for e in value] if isinstance(value, list) else moved(value)
