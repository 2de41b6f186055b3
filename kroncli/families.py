"""The model-family table: the one place that knows how a Transformer family is laid out.

An entry (`Family`, keyed by `config.model_type`) says which modules are the word / position / token-type
embeddings, attention q, k, v, o, FFN in / out, pooler and heads (name patterns relative to the model, matched
with `re.fullmatch` under any wrapper prefix, as peft does), which module types can be factored and how their
weights are oriented, how to build a random-init teacher by name, which head class serves each task kind, how a
stage-1 block is packed, what distillation captures and which export template ships the student. Everything
else (surgery, sources, the stages, capture, export) asks the table instead of assuming BERT.

Adding a family is one entry in FAMILIES plus its tests (tests/test_families.py). A model type the table lacks is
a one-line KronError naming it and the families known; `kron factorize --targets REGEX` still factors it.
"""

from __future__ import annotations

import importlib
import json
import re
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Mapping

from .errors import KronError


# -------------------------------------------------------------------------------------------- module types

@dataclass(frozen=True)
class ModuleKind:
    """A module type surgery can factor: its class, what it becomes and how its weight is laid out.

    `weight`: "out_in" (nn.Linear: out x in), "in_out" (transformers' Conv1D, GPT-2: in x out, factored as its
    transpose) or "rows" (nn.Embedding: one row per token).
    """

    cls: str  # import path, resolved lazily (transformers is slow to import)
    kind: str  # "linear" -> KroneckerLinear | "embedding" -> KroneckerEmbedding
    weight: str = "out_in"

    def resolve(self) -> type:
        module, _, name = self.cls.rpartition(".")
        return getattr(importlib.import_module(module), name)

    def matrix(self, module):
        """The weight as the matrix that is factored (out x in for a linear map, V x d for a table)."""
        return module.weight.t() if self.weight == "in_out" else module.weight


LINEAR = ModuleKind("torch.nn.Linear", "linear", "out_in")
CONV1D = ModuleKind("transformers.pytorch_utils.Conv1D", "linear", "in_out")
EMBEDDING = ModuleKind("torch.nn.Embedding", "embedding", "rows")
MODULE_KINDS = (LINEAR, CONV1D, EMBEDDING)  # every type surgery knows; --targets on an unknown family uses these


def module_kind(module, kinds: tuple[ModuleKind, ...] = MODULE_KINDS) -> ModuleKind | None:
    """The entry of `kinds` for this module's exact type (a subclass, e.g. a Kronecker module, is not one)."""
    for k in kinds:
        if type(module) is k.resolve():
            return k
    return None


# ------------------------------------------------------------------------------------------ what an entry holds

# Layer types an entry may name. The first seven are factored by default (KroneckerBERT: embeddings, Q/K/V/O, FFN);
# a decoder entry adds GPT-2's fused q/k/v projection (attn_qkv) or a gated FFN's gate projection (ffn_gate).
FACTORED = ("embedding", "attn_q", "attn_k", "attn_v", "attn_out", "ffn_in", "ffn_out")
LAYER_TYPES = (*FACTORED, "attn_qkv", "ffn_gate", "position_embedding", "type_embedding", "embedding_project",
               "pooler", "head")
TASK_KINDS = ("classification", "regression", "question_answering", "causal_lm")
ENCODER_HEADS = {"classification": "AutoModelForSequenceClassification",
                 "regression": "AutoModelForSequenceClassification",
                 "question_answering": "AutoModelForQuestionAnswering"}
DECODER_HEADS = {"causal_lm": "AutoModelForCausalLM"}  # a decoder serves language modelling, not GLUE heads
BLOCK_KINDS = ("pairs", "causal")


@dataclass(frozen=True)
class Block:
    """How stage 1 packs unlabeled text. "pairs": [CLS] A [SEP] B [SEP] blocks (BERT's pre-training layout);
    "causal": contiguous blocks of running text for a decoder (no [CLS]/[SEP]). `token_types`: the model takes segment
    ids (token_type_ids), derived from the separators."""

    kind: str = "pairs"
    token_types: bool = True


@dataclass(frozen=True)
class CaptureSpec:
    """What distillation reads: the config attribute holding the layer count, the self-attention modules (a
    pattern like the entry's modules; one per layer, in order), and how their scores are reached ("interface":
    the module calls transformers' AttentionInterface, see kroncli/distill/capture.py)."""

    layers_attr: str = "num_hidden_layers"
    attention: str = r"encoder\.layer\.\d+\.attention\.self"
    hook: str = "interface"


@dataclass(frozen=True)
class Family:
    """One model family (see the module docstring)."""

    name: str  # for people: "BERT"
    model_type: str  # config.model_type, the key
    modules: Mapping[str, str]  # layer type -> name pattern relative to the model
    random_configs: Mapping[str, Mapping[str, Any]]  # --random-init NAME -> config keyword overrides
    arch_keys: tuple[str, ...]  # config fields a teacher and its student must share
    module_kinds: tuple[ModuleKind, ...] = (LINEAR, EMBEDDING)
    default_targets: tuple[str, ...] = FACTORED
    heads: Mapping[str, str] = field(default_factory=lambda: dict(ENCODER_HEADS))  # task kind -> transformers class
    block: Block = Block()
    capture: CaptureSpec = CaptureSpec()
    export_template: str = "hf_template"  # folder under kroncli/export/
    positions_after_padding: bool = False  # RoBERTa numbers positions from pad_token_id + 1
    base_class: str = "AutoModel"  # what a teacher loads as; a decoder always gets its LM head (tied or not)

    def __post_init__(self):
        unknown = set(self.modules) - set(LAYER_TYPES)
        if unknown or set(self.default_targets) - set(self.modules):
            raise ValueError(f"family {self.name}: layer types {sorted(unknown) or list(self.default_targets)} "
                             f"are not among {LAYER_TYPES} or not named in its modules")
        if not self.heads or set(self.heads) - set(TASK_KINDS) or self.block.kind not in BLOCK_KINDS:
            raise ValueError(f"family {self.name}: heads must be some of {TASK_KINDS}, block.kind one of "
                             f"{BLOCK_KINDS}")

    @property
    def is_decoder(self) -> bool:
        """A causal language model: stage 1 on causal blocks, perplexity instead of GLUE."""
        return self.block.kind == "causal"

    # ------------------------------------------------------------------------------------------ module names
    @cached_property
    def _compiled(self) -> dict[str, re.Pattern]:
        return {t: _relative(p) for t, p in self.modules.items()}

    def layer_type(self, name: str) -> str:
        """The layer type a module name has in this family, "other" when the entry does not name it."""
        return next((t for t, p in self._compiled.items() if p.fullmatch(name)), "other")

    def targets(self) -> str:
        """The default `--targets` regex: the entry's default layer types."""
        return "|".join(f"(?:{_relative(self.modules[t]).pattern})" for t in self.default_targets)

    def attention_modules(self, model) -> list:
        """The self-attention modules distillation captures, in layer order (one per layer)."""
        pattern = _relative(self.capture.attention)
        found = [m for name, m in model.named_modules() if pattern.fullmatch(name)]
        layers = num_layers(model.config)
        if layers is not None and len(found) != layers:
            raise KronError(f"{type(model).__name__} has {len(found)} self-attention modules matching the "
                            f"{self.name} family's {self.capture.attention!r}, not one per layer ({layers})")
        return found

    # --------------------------------------------------------------------------------------------- configs
    def random_config(self, name: str):
        """A transformers config of this family for `--random-init NAME`."""
        from transformers import AutoConfig

        return AutoConfig.for_model(self.model_type, **self.random_configs[name])

    def max_positions(self, config) -> int | None:
        """Longest input the position table takes (RoBERTa keeps pad_token_id + 1 slots before the first)."""
        limit = getattr(config, "max_position_embeddings", None)
        if limit and self.positions_after_padding:
            limit -= (getattr(config, "pad_token_id", None) or 0) + 1
        return limit

    @property
    def inputs(self) -> tuple[str, ...]:
        """The tokenizer outputs the model takes."""
        return ("input_ids", "token_type_ids", "attention_mask") if self.block.token_types else \
            ("input_ids", "attention_mask")

    # ----------------------------------------------------------------------------------------------- heads
    def head_class(self, kind: str):
        """The transformers (Auto) class that builds this family's model for a task kind."""
        import transformers

        if kind not in self.heads:
            what = ("a decoder (causal language model): it is measured by kron eval ppl, not fine-tuned on "
                    "GLUE or SQuAD" if self.is_decoder else
                    "an encoder: language modelling (kron eval ppl) needs a decoder family such as gpt2 or llama")
            raise KronError(f"the {self.name} family has no {kind} head: {type_name(self)} is {what}")
        return getattr(transformers, self.heads[kind])

    def head_model_class(self, kind: str, config) -> type:
        """The concrete class `head_class(kind)` builds for `config` (e.g. BertForSequenceClassification)."""
        cls = self.head_class(kind)
        mapping = getattr(cls, "_model_mapping", None)
        return mapping[type(config)] if mapping is not None else cls

    def require_block(self, kind: str = "pairs") -> Block:
        """The packing a caller builds, checked against the family's (a GLUE pair on a decoder is refused)."""
        if self.block.kind != kind:
            raise KronError(f"this step packs {kind} blocks; the {self.name} family needs {self.block.kind} blocks "
                            f"({type_name(self)} is {'a decoder' if self.is_decoder else 'an encoder'})")
        return self.block

    def base_model_class(self):
        """The transformers Auto class a teacher of this family is built or loaded with."""
        import transformers

        return getattr(transformers, self.base_class)


def _relative(pattern: str) -> re.Pattern:
    """A pattern relative to the model: it matches under any wrapper prefix (`bert.`, `model.distilbert.`)."""
    return re.compile(rf"(?:.*\.)?(?:{pattern})")


def type_name(family: Family) -> str:
    return f"model type {family.model_type!r}"


def task_kind(task) -> str:
    """The head kind a GLUE task (kroncli.data.glue.Task) needs."""
    return "regression" if task.is_regression else "classification"


# --------------------------------------------------------------------------------------------------- the table

_ENCODER_LAYER = r"encoder\.layer\.\d+\."
_BERT_LAYOUT = {
    "embedding": r"embeddings\.word_embeddings",
    "position_embedding": r"embeddings\.position_embeddings",
    "type_embedding": r"embeddings\.token_type_embeddings",
    "attn_q": _ENCODER_LAYER + r"attention\.self\.query",
    "attn_k": _ENCODER_LAYER + r"attention\.self\.key",
    "attn_v": _ENCODER_LAYER + r"attention\.self\.value",
    "attn_out": _ENCODER_LAYER + r"attention\.output\.dense",
    "ffn_in": _ENCODER_LAYER + r"intermediate\.dense",
    "ffn_out": _ENCODER_LAYER + r"output\.dense",
}
_BERT_KEYS = ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size", "vocab_size")

BERT = Family(
    name="BERT", model_type="bert",  # also all-MiniLM-L6-v2 (a 6-layer BertModel)
    modules={**_BERT_LAYOUT, "pooler": r"pooler\.dense",
             "head": r"classifier|qa_outputs|cls\.predictions\.(?:transform\.dense|decoder)|cls\.seq_relationship"},
    random_configs={
        "bert-base": {},
        "bert-large": {"hidden_size": 1024, "num_hidden_layers": 24, "num_attention_heads": 16,
                       "intermediate_size": 4096},
        "minilm-l6": {"hidden_size": 384, "num_hidden_layers": 6, "num_attention_heads": 12,
                      "intermediate_size": 1536},
        "tiny": {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 128,
                 "vocab_size": 30522, "max_position_embeddings": 128},
    },
    arch_keys=_BERT_KEYS,
)

ROBERTA = Family(
    name="RoBERTa", model_type="roberta",
    modules={**_BERT_LAYOUT, "pooler": r"pooler\.dense",
             "head": r"classifier\.(?:dense|out_proj)|qa_outputs|lm_head\.(?:dense|decoder)"},
    random_configs={
        "roberta-base": {"vocab_size": 50265, "max_position_embeddings": 514, "type_vocab_size": 1},
        # the MiniLM tokenizer's vocabulary and padding id (random teachers get that tokenizer)
        "roberta-tiny": {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
                         "intermediate_size": 128, "vocab_size": 30522, "max_position_embeddings": 130,
                         "type_vocab_size": 1, "pad_token_id": 0},
    },
    arch_keys=_BERT_KEYS,
    block=Block("pairs", token_types=False),  # one segment id (type_vocab_size 1): none are passed
    positions_after_padding=True,
)

_DISTIL_LAYER = r"transformer\.layer\.\d+\."
DISTILBERT = Family(
    name="DistilBERT", model_type="distilbert",
    modules={
        "embedding": r"embeddings\.word_embeddings",
        "position_embedding": r"embeddings\.position_embeddings",
        "attn_q": _DISTIL_LAYER + r"attention\.q_lin",
        "attn_k": _DISTIL_LAYER + r"attention\.k_lin",
        "attn_v": _DISTIL_LAYER + r"attention\.v_lin",
        "attn_out": _DISTIL_LAYER + r"attention\.out_lin",
        "ffn_in": _DISTIL_LAYER + r"ffn\.lin1",
        "ffn_out": _DISTIL_LAYER + r"ffn\.lin2",
        "head": r"pre_classifier|classifier|qa_outputs|vocab_transform|vocab_projector",
    },
    random_configs={
        "distilbert-base": {},
        "distilbert-tiny": {"dim": 64, "n_layers": 2, "n_heads": 4, "hidden_dim": 128, "vocab_size": 30522,
                            "max_position_embeddings": 128},
    },
    arch_keys=("dim", "n_layers", "n_heads", "hidden_dim", "vocab_size"),
    block=Block("pairs", token_types=False),  # no token-type embeddings
    capture=CaptureSpec(layers_attr="n_layers", attention=_DISTIL_LAYER + "attention"),
)

ELECTRA = Family(
    name="ELECTRA", model_type="electra",
    # the word table is V x embedding_size, projected to the hidden size when the two differ (kept dense)
    modules={**_BERT_LAYOUT, "embedding_project": r"embeddings_project",
             "head": r"classifier\.(?:dense|out_proj)|qa_outputs|discriminator_predictions\.dense(?:_prediction)?"
                     r"|generator_predictions\.dense|generator_lm_head"},
    random_configs={
        "electra-small": {},  # ElectraConfig's defaults: the small discriminator (embeddings 128, hidden 256)
        "electra-tiny": {"embedding_size": 32, "hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
                         "intermediate_size": 128, "vocab_size": 30522, "max_position_embeddings": 128},
    },
    arch_keys=(*_BERT_KEYS, "embedding_size"),
)

# ------------------------------------------------------------------------------------------------- decoders
# GPT-2's c_attn is one Conv1D (in x out: d x 3d) computing q, k and v together; it is factored as ONE 3d x d
# matrix (layer type attn_qkv), as it is stored: one Kronecker product keeps the fused GEMM and the checkpoint
# layout, at the cost of q, k and v sharing factor shapes (docs/decoders.md).
_GPT2_LAYER = r"h\.\d+\."
GPT2 = Family(
    name="GPT-2", model_type="gpt2",
    modules={
        "embedding": r"wte",
        "position_embedding": r"wpe",
        "attn_qkv": _GPT2_LAYER + r"attn\.c_attn",
        "attn_out": _GPT2_LAYER + r"attn\.c_proj",
        "ffn_in": _GPT2_LAYER + r"mlp\.c_fc",
        "ffn_out": _GPT2_LAYER + r"mlp\.c_proj",
        "head": r"lm_head|score|qa_outputs|classifier|multiple_choice_head\.summary",
    },
    random_configs={
        "gpt2": {},  # GPT2Config's defaults: GPT-2 small (124M), vocabulary 50257
        "gpt2-tiny": {"n_embd": 64, "n_layer": 2, "n_head": 4, "n_inner": 128, "vocab_size": 30522,
                      "n_positions": 128, "pad_token_id": 0, "bos_token_id": 101, "eos_token_id": 102},
    },
    arch_keys=("n_embd", "n_layer", "n_head", "n_inner", "vocab_size"),
    module_kinds=(CONV1D, EMBEDDING, LINEAR),
    default_targets=("embedding", "attn_qkv", "attn_out", "ffn_in", "ffn_out"),
    heads=DECODER_HEADS,
    block=Block("causal", token_types=False),
    capture=CaptureSpec(layers_attr="n_layer", attention=_GPT2_LAYER + r"attn"),
    base_class="AutoModelForCausalLM",
)

# Llama, Mistral, Qwen2 and Qwen3 (SmolLM is a Llama) share module names: q/k/v/o (k and v narrower under
# grouped-query attention), a gated FFN gate/up/down, embed_tokens, and an lm_head tied to it or not
# (tie_word_embeddings). An untied lm_head stays dense like every head (--targets 'lm_head|...' factors it).
_LLAMA_LAYER = r"layers\.\d+\."
_LLAMA_LAYOUT = {
    "embedding": r"embed_tokens",
    "attn_q": _LLAMA_LAYER + r"self_attn\.q_proj",
    "attn_k": _LLAMA_LAYER + r"self_attn\.k_proj",
    "attn_v": _LLAMA_LAYER + r"self_attn\.v_proj",
    "attn_out": _LLAMA_LAYER + r"self_attn\.o_proj",
    "ffn_gate": _LLAMA_LAYER + r"mlp\.gate_proj",
    "ffn_in": _LLAMA_LAYER + r"mlp\.up_proj",
    "ffn_out": _LLAMA_LAYER + r"mlp\.down_proj",
    "head": r"lm_head|score|qa_outputs",
}
_TINY_DECODER = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
                 "num_key_value_heads": 2, "vocab_size": 30522, "max_position_embeddings": 128,
                 "pad_token_id": 0, "bos_token_id": 101, "eos_token_id": 102}  # MiniLM's [CLS] and [SEP]


def _llama_like(name: str, model_type: str, random_configs: Mapping[str, Mapping[str, Any]]) -> Family:
    return Family(
        name=name, model_type=model_type, modules=_LLAMA_LAYOUT, random_configs=random_configs,
        arch_keys=("hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
                   "intermediate_size", "vocab_size"),
        default_targets=("embedding", "attn_q", "attn_k", "attn_v", "attn_out", "ffn_gate", "ffn_in", "ffn_out"),
        heads=DECODER_HEADS, block=Block("causal", token_types=False),
        capture=CaptureSpec(attention=_LLAMA_LAYER + r"self_attn"), base_class="AutoModelForCausalLM")


LLAMA = _llama_like("Llama", "llama", {
    # Llama 3.2 1B's shape (1.24B parameters, tied embeddings, 8 key/value heads)
    "llama-1b": {"hidden_size": 2048, "intermediate_size": 8192, "num_hidden_layers": 16, "num_attention_heads": 32,
                 "num_key_value_heads": 8, "head_dim": 64, "vocab_size": 128256, "max_position_embeddings": 131072,
                 "rope_theta": 500000.0, "tie_word_embeddings": True, "bos_token_id": 128000,
                 "eos_token_id": 128001},
    "llama-tiny": {**_TINY_DECODER, "tie_word_embeddings": False},
})
MISTRAL = _llama_like("Mistral", "mistral", {"mistral-tiny": {**_TINY_DECODER, "tie_word_embeddings": False}})
# transformers loads the tokenizer of a qwen2 folder as Qwen2Tokenizer whatever its tokenizer_config says, which
# adds <|endoftext|> (id 30522) to MiniLM's vocabulary: the tiny Qwen2 has a row for it
QWEN2 = _llama_like("Qwen2", "qwen2", {"qwen2-tiny": {**_TINY_DECODER, "vocab_size": 30523,
                                                      "tie_word_embeddings": True}})
QWEN3 = _llama_like("Qwen3", "qwen3", {"qwen3-tiny": {**_TINY_DECODER, "head_dim": 16,
                                                      "tie_word_embeddings": True}})

FAMILIES: dict[str, Family] = {f.model_type: f for f in (BERT, ROBERTA, DISTILBERT, ELECTRA, GPT2, LLAMA, MISTRAL,
                                                         QWEN2, QWEN3)}


# ------------------------------------------------------------------------------------------------- look-ups

def _model_type(thing) -> str | None:
    """config.model_type of a config, a model, or a saved folder (its config.json)."""
    if isinstance(thing, (str, Path)):
        try:
            return json.loads((Path(thing) / "config.json").read_text()).get("model_type")
        except (OSError, ValueError):
            return None
    config = getattr(thing, "config", thing)
    return getattr(config, "model_type", None)


def known() -> str:
    return ", ".join(sorted(FAMILIES))


def find(thing) -> Family | None:
    """The family of a config / model / saved folder, None when the table lacks it."""
    return FAMILIES.get(_model_type(thing))


def family_of(thing) -> Family:
    """The family of a config / model / saved folder; a one-line KronError when the table lacks it."""
    family = find(thing)
    if family is None:
        raise KronError(f"model type {_model_type(thing)!r} is not in kron's model-family table (known: {known()}); "
                        "kron factorize --targets REGEX still factors its matrices, the other stages need an entry "
                        "in kroncli/families.py")
    return family


def random_inits() -> dict[str, Family]:
    """--random-init NAME -> its family, every family's names."""
    return {name: f for f in FAMILIES.values() for name in f.random_configs}


def random_config(name: str):
    """The transformers config `--random-init NAME` builds."""
    inits = random_inits()
    if name not in inits:
        raise KronError(f"unknown --random-init {name!r}; choose one of {', '.join(inits)}")
    return inits[name].random_config(name)


def num_layers_attr(config) -> str:
    family = find(config)
    return family.capture.layers_attr if family else "num_hidden_layers"


def num_layers(config) -> int | None:
    return getattr(config, num_layers_attr(config), None)


def max_positions(config) -> int | None:
    """Longest input of a model, by its family (max_position_embeddings for a family the table lacks)."""
    family = find(config)
    return family.max_positions(config) if family else getattr(config, "max_position_embeddings", None)
