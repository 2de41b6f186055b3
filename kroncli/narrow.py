"""`kron factorize --method narrow`: a dense student with a narrower hidden size and FFN (TinyBERT-style).

The student keeps the teacher's attention-head count (so stage 1 and 2 match attention scores head by head, as
TinyBERT does) and a hidden size d' that is a multiple of it; the budget (--ratio / --max-params) picks the widest d'
whose FFN at the teacher's FFN / hidden ratio fits, then widens the FFN (up to the teacher's) into what is left;
`--width` fixes d'. `--layers` picks the layers.

It is initialised from the teacher by keeping, not by training (docs/method.md, "Narrow students"):
- hidden: one set of d' dimensions for every layer (the residual stream is shared), the ones carrying the most of
  the teacher's weight energy (each matrix counted by its relative energy, so the big embedding table does not
  decide alone);
- attention: in every head the d'/H query/key coordinates with the largest |W_q row| |W_k row| (they add to q.k),
  the value/output coordinates with the largest |W_v row| |W_o column|; queries are scaled by sqrt(d_k / d_k')
  so that the scores keep their magnitude;
- FFN: per layer the neurons with the largest |W_in row| |W_out column|.

Distillation compares the student's hidden states with the teacher's through learned maps into the teacher's width
(TinyBERT's W_e and W_h, `Projection`), initialised to put each kept dimension back where it came from. They train
with the student and live in the student folder's projection.safetensors, apart from model.safetensors, so the
deployable model (export, eval, speed, sizes) is the student alone.
"""

from __future__ import annotations

import copy
import math
import re
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from . import families
from .errors import KronError
from .kron.search import Choice

# (hidden, heads, FFN) config keys of the families narrow supports; their layouts have one hidden width throughout
WIDTH_KEYS = {"bert": ("hidden_size", "num_attention_heads", "intermediate_size"),
              "roberta": ("hidden_size", "num_attention_heads", "intermediate_size"),
              "distilbert": ("dim", "n_heads", "hidden_dim")}
PROJECTION_FILE = "projection.safetensors"
PROJECTION_ATTR = "kron_projection"


@dataclass
class Widths:
    hidden: int
    heads: int
    ffn: int


def width_keys(config) -> tuple[str, str, str]:
    keys = WIDTH_KEYS.get(getattr(config, "model_type", None))
    if keys is None:
        raise KronError(f"--method narrow supports {', '.join(WIDTH_KEYS)} models, not {config.model_type}; use "
                        "--method kronecker or lowrank")
    return keys


def widths_of(config) -> Widths:
    h, a, f = width_keys(config)
    return Widths(getattr(config, h), getattr(config, a), getattr(config, f))


def scaled(teacher: Widths, hidden: int) -> Widths:
    """The student at hidden size `hidden`: the teacher's heads, its FFN / hidden ratio."""
    return Widths(hidden, teacher.heads, max(1, round(teacher.ffn * hidden / teacher.hidden)))


def narrow_config(config, w: Widths):
    h, a, f = width_keys(config)
    out = copy.deepcopy(config)
    setattr(out, h, w.hidden)
    setattr(out, a, w.heads)
    setattr(out, f, w.ffn)
    return out


def count_at(model: nn.Module, w: Widths) -> int:
    """Parameters of `model`'s architecture at widths `w` (built on the meta device: no memory, no init)."""
    with torch.device("meta"):
        student = type(model)(narrow_config(model.config, w))
    return sum(p.numel() for p in {id(p): p for p in student.parameters()}.values())


def choose_widths(model: nn.Module, budget: int | None, width: int | None, asked: str, teacher_params: int) -> Widths:
    """The widest student within `budget` (or at `width`), with a one-line error for a width or budget it cannot
    meet. `model` is the teacher after --layers cut it; the ratio counts the whole teacher."""
    t = widths_of(model.config)
    if width is not None:
        if width < 1 or width > t.hidden:
            raise KronError(f"--width {width}: choose 1..{t.hidden} (the teacher's hidden size)")
        if width % t.heads:
            lo = max(t.heads, width // t.heads * t.heads)
            raise KronError(f"--width {width} does not divide into the teacher's {t.heads} attention heads; choose "
                            f"a multiple of {t.heads}, e.g. {lo}")
        w = scaled(t, width)
        need = count_at(model, w)
        if budget is None:
            return w
        if need > budget:
            best = _widest(model, t, budget)
            hint = f"the widest within it is {best.hidden}" if best else "no width fits it"
            raise KronError(f"{asked} cannot be met with --width {width} ({need:,} parameters); {hint}")
        return _fill_ffn(model, t, w, budget)
    best = _widest(model, t, budget)
    if best is None:
        least = count_at(model, scaled(t, t.heads))
        raise KronError(f"{asked} cannot be met with --method narrow: the largest ratio possible is "
                        f"{teacher_params / least:.1f}x ({least:,} parameters at width {t.heads}, one dimension per "
                        "head); keep fewer layers (--layers) or use --method kronecker")
    return _fill_ffn(model, t, best, budget)


def _fill_ffn(model, t: Widths, w: Widths, budget: int) -> Widths:
    """`w` with the FFN widened (up to the teacher's) into what the budget leaves: widths move in steps of the head
    count, so the widest hidden size alone can fall well short of the budget (MiniLM at 19x: 789k of 1.19M)."""
    base = count_at(model, w)
    per = count_at(model, Widths(w.hidden, w.heads, w.ffn + 1)) - base  # parameters linear in the FFN width
    ffn = min(t.ffn, w.ffn + max(0, budget - base) // max(per, 1))
    return Widths(w.hidden, w.heads, max(ffn, w.ffn))


def _widest(model, t: Widths, budget: int) -> Widths | None:
    """Bisection over hidden sizes that are multiples of the head count (parameters grow with the width)."""
    lo, hi = 0, t.hidden // t.heads  # in units of heads; lo fits (0: none yet)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if count_at(model, scaled(t, mid * t.heads)) <= budget:
            lo = mid
        else:
            hi = mid - 1
    return scaled(t, lo * t.heads) if lo else None


# ------------------------------------------------------------------------------------------ which to keep

def _layer_no(name: str) -> int | None:
    m = re.search(r"\.(\d+)\.", name)
    return int(m.group(1)) if m else None


def _axes(model: nn.Module, name: str, shape: tuple, hidden: int) -> tuple:
    """Role of each axis of parameter `name`: "hidden", "qk", "vo", "ffn" or None (kept whole)."""
    module_name, _, _ = name.rpartition(".")
    module = model.get_submodule(module_name)
    if isinstance(module, nn.Embedding):
        return (None, "hidden")
    role = families.family_of(model.config).layer_type(module_name)
    out_in = {"attn_q": ("qk", "hidden"), "attn_k": ("qk", "hidden"), "attn_v": ("vo", "hidden"),
              "attn_out": ("hidden", "vo"), "ffn_in": ("ffn", "hidden"), "ffn_out": ("hidden", "ffn")}.get(role)
    if out_in is not None:
        return out_in[:len(shape)]
    return tuple("hidden" if n == hidden else None for n in shape)


def _energy(x: torch.Tensor, axis: int) -> torch.Tensor:
    x = x.detach().double()
    return x.pow(2).sum(dim=[d for d in range(x.dim()) if d != axis]) if x.dim() > 1 else x.pow(2)


def _top(score: torch.Tensor, k: int) -> torch.Tensor:
    return torch.topk(score, k).indices.sort().values


def _per_head(score: torch.Tensor, heads: int, keep: int) -> torch.Tensor:
    """Flat indices of the `keep` best coordinates of every head (heads stay in order)."""
    size = score.numel() // heads
    return torch.cat([_top(s, keep) + h * size for h, s in enumerate(score.view(heads, size))])


def keep_indices(model: nn.Module, s: Widths) -> dict:
    """{"hidden": idx, ("qk"|"vo"|"ffn", layer): idx}: what the student keeps of the (cut) teacher."""
    t = widths_of(model.config)
    params = dict(model.named_parameters())
    hidden = torch.zeros(t.hidden, dtype=torch.float64)
    rows: dict = {}
    for name, p in params.items():
        axes = _axes(model, name, tuple(p.shape), t.hidden)
        for axis, role in enumerate(axes):
            if role == "hidden":
                e = _energy(p, axis)
                hidden += e / e.sum().clamp_min(1e-30)
            elif role is not None and name.endswith("weight"):
                rows[(role, _layer_no(name), name)] = _energy(p, axis).sqrt()
    keep = {"hidden": _top(hidden, s.hidden)}
    for layer in sorted({k[1] for k in rows}):
        score = {role: torch.ones(1, dtype=torch.float64) for role in ("qk", "vo", "ffn")}
        for (role, lay, _), norm in rows.items():
            if lay == layer:
                score[role] = score[role] * norm
        keep[("qk", layer)] = _per_head(score["qk"], t.heads, s.hidden // s.heads)
        keep[("vo", layer)] = _per_head(score["vo"], t.heads, s.hidden // s.heads)
        keep[("ffn", layer)] = _top(score["ffn"], s.ffn)
    return keep


def _slice(model: nn.Module, name: str, tensor: torch.Tensor, keep: dict, hidden: int) -> torch.Tensor:
    for axis, role in enumerate(_axes(model, name, tuple(tensor.shape), hidden)):
        if role is not None:
            idx = keep["hidden"] if role == "hidden" else keep[(role, _layer_no(name))]
            tensor = tensor.index_select(axis, idx.to(tensor.device))
    return tensor


def _record(folder: Path) -> dict | None:
    from .student import read_kron_config

    return read_kron_config(folder).get("narrow")


def head_state(state: dict, folder: Path) -> dict:
    """A fine-tuned teacher's head state (classifier, pooler, span head), cut to the hidden dimensions the student in
    `folder` kept, so that stage 2 starts the narrow student's head from the teacher's as for any other student.
    Every axis of the teacher's hidden size is one of them (a head reads and writes hidden states only)."""
    rec = _record(folder)
    if not rec:
        return state
    idx, width = torch.tensor(rec["hidden_kept"]), rec["teacher_widths"]["hidden"]

    def cut(t: torch.Tensor) -> torch.Tensor:
        for axis, n in enumerate(t.shape):
            if n == width:
                t = t.index_select(axis, idx.to(t.device))
        return t

    return {k: cut(v) for k, v in state.items()}


def teacher_module(teacher_part: nn.Module, student_part: nn.Module | None, folder: Path) -> nn.Module:
    """The fine-tuned teacher's module (a pooler) for the student in `folder`: a copy, or for a narrow student its
    own module loaded with the teacher's weights cut to the kept dimensions."""
    if student_part is None or not _record(folder):
        return copy.deepcopy(teacher_part)
    student_part.load_state_dict(head_state(teacher_part.state_dict(), folder))
    return student_part


# ------------------------------------------------------------------------------------------- the student

class Projection(nn.Module):
    """TinyBERT's learned maps from the student's width to the teacher's: W_e for the embedding output, W_h shared
    by every layer's hidden state. `Capture` applies them to what it captures of a model that has one."""

    def __init__(self, student_width: int, teacher_width: int):
        super().__init__()
        self.embedding = nn.Linear(student_width, teacher_width, bias=False)
        self.hidden = nn.Linear(student_width, teacher_width, bias=False)

    def place(self, hidden_idx: torch.Tensor) -> "Projection":
        """Initialise both maps to put student dimension j back at teacher dimension hidden_idx[j]."""
        with torch.no_grad():
            for lin in (self.embedding, self.hidden):
                lin.weight.zero_()
                lin.weight[hidden_idx, torch.arange(len(hidden_idx))] = 1.0
        return self


def projection_of(model: nn.Module) -> Projection | None:
    base = getattr(model, "base_model", model)
    return getattr(base, PROJECTION_ATTR, None)


def build(model: nn.Module, s: Widths) -> tuple[nn.Module, Projection, list[Choice], dict]:
    """The narrow student of the (cut) teacher `model`, its projection into the teacher's width, one row per matrix
    for the table, and the kron.json section that records what it kept."""
    t = widths_of(model.config)
    keep = keep_indices(model, s)
    student = type(model)(narrow_config(model.config, s)).eval()
    teacher_params = dict(model.named_parameters())
    qk_scale = math.sqrt((t.hidden // t.heads) / (s.hidden // s.heads))
    family = families.family_of(model.config)
    with torch.no_grad():
        for name, p in student.named_parameters():
            value = _slice(model, name, teacher_params[name].detach(), keep, t.hidden)
            if family.layer_type(name.rpartition(".")[0]) == "attn_q":
                value = value * qk_scale
            p.copy_(value)
        for name, b in student.named_buffers():  # position ids and the like: not width-dependent
            b.copy_(model.get_buffer(name))
    projection = Projection(s.hidden, t.hidden).place(keep["hidden"])
    choices = []
    for name, module in student.named_modules():
        if isinstance(module, (nn.Linear, nn.Embedding)):
            w, tw = module.weight.detach(), model.get_submodule(name).weight.detach()
            lost = 1 - float(w.double().pow(2).sum() / tw.double().pow(2).sum().clamp_min(1e-30))
            kind = "embedding" if isinstance(module, nn.Embedding) else "linear"
            choices.append(Choice(name, kind, family.layer_type(name), *w.shape, 1, 1, 0, w.numel(), tw.numel(),
                                  w.numel() if kind == "linear" else w.shape[1], math.sqrt(max(lost, 0.0))))
    record = {"teacher_widths": vars(t), "widths": vars(s), "hidden_kept": keep["hidden"].tolist()}
    return student, projection, choices, record


# ------------------------------------------------------------------------------------------ save and load

def detach_projection(model: nn.Module) -> Projection | None:
    """Remove the projection from the model (to save or export the student alone); returns it."""
    proj = projection_of(model)
    if proj is not None:
        delattr(getattr(model, "base_model", model), PROJECTION_ATTR)
    return proj


def attach_projection(model: nn.Module, proj: Projection | None) -> None:
    if proj is not None:
        setattr(getattr(model, "base_model", model), PROJECTION_ATTR, proj)


def save_projection(proj: Projection, folder: Path) -> None:
    from safetensors.torch import save_file

    save_file({k: v.detach().contiguous() for k, v in proj.state_dict().items()}, str(Path(folder) / PROJECTION_FILE))


def load_projection(model: nn.Module, folder: Path) -> None:
    """Attach the student folder's projection (a narrow student being trained); nothing for other students."""
    path = Path(folder) / PROJECTION_FILE
    if not path.is_file():
        return
    from safetensors.torch import load_file

    state = load_file(str(path))
    teacher_width, student_width = state["hidden.weight"].shape
    proj = Projection(student_width, teacher_width)
    proj.load_state_dict(state)
    attach_projection(model, proj.to(dtype=next(model.parameters()).dtype))
