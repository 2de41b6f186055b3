"""Pieces shared by the training stages: teacher loading, architecture checks, fingerprints."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from .. import families, sources
from ..errors import KronError
from ..student import read_kron_config, student_dir
from ..workspace import Workspace


def teacher_source(ws: Workspace, override: str | None = None) -> sources.ModelSource:
    """The teacher recorded by `kron factorize` (or --teacher)."""
    if override:
        return sources.resolve(override)
    teacher = ws.read_manifest().get("teacher")
    if not teacher:
        raise KronError(f"{ws.root} has no teacher in manifest.json; run kron factorize first or pass --teacher")
    if teacher["kind"] == "random":
        return sources.ModelSource(teacher["requested"], None, "random")
    return sources.ModelSource(teacher["requested"], teacher["path"], teacher["kind"])


def check_same_architecture(teacher_config, student_config, allow_shallower: bool = False,
                            narrower: bool = False) -> None:
    """Teacher and student must be of one family and match in its architecture keys (depth too unless a layer
    map is used; widths too unless the student is a narrow one, which maps its states into the teacher's width)."""
    from ..narrow import WIDTH_KEYS

    family = families.family_of(student_config)
    if teacher_config.model_type != student_config.model_type:
        raise KronError(f"the teacher is a {teacher_config.model_type} model, the student a {family.model_type} one; "
                        "distil from the teacher the student was factorized from")
    for key in family.arch_keys:
        t, s = getattr(teacher_config, key, None), getattr(student_config, key, None)
        if t is None or s is None or t == s:
            continue
        if allow_shallower and key == family.capture.layers_attr and s < t:
            continue
        if narrower and key in WIDTH_KEYS.get(family.model_type, ()) and s <= t:
            continue
        raise KronError(f"teacher and student differ in {key} ({t} vs {s}); distil from the teacher the student "
                        f"was factorized from (pass --layer-map for a shallower student)")


def student_layer_map(folder: Path, given: str | None) -> str | None:
    """`--layer-map` when given, else the teacher layers the student was cut from (`kron factorize --layers`)."""
    if given:
        return given
    kept = read_kron_config(Path(folder)).get("teacher_layers")
    return ",".join(map(str, kept)) if kept else None


def shapes_fingerprint(folder: Path) -> dict:
    """What a checkpoint must match to be resumed: the factor shapes and the architecture."""
    cfg = read_kron_config(Path(folder))
    layers = {k: [v["m1"], v["n1"], v["m2"], v["n2"], v["rank"]] for k, v in cfg["layers"].items()}
    if cfg.get("narrow"):  # a narrow student has no factored layers: its widths are its shape
        layers["narrow"] = cfg["narrow"]["widths"]
    digest = hashlib.sha256(json.dumps(layers, sort_keys=True).encode()).hexdigest()[:16]
    return {"architecture": cfg["architecture"], "shapes": digest}


def require_student(ws: Workspace, head: str | None = None) -> Path:
    """The workspace's student folder, at the start of every command that trains or measures it; the manifest,
    which such a command records its stage in when it ends, is read now, so that a damaged one stops it before it
    writes anything. `head`: the task kind the command needs (families.TASK_KINDS), refused now for a family that
    has none (a GLUE task on a decoder, perplexity on an encoder)."""
    if not ws.root.exists():
        raise KronError(f"workspace {ws.root} does not exist; create it with kron factorize MODEL --workspace "
                        f"{ws.root}")
    ws.read_manifest()
    folder = student_dir(ws.root)
    if head is not None:
        families.family_of(folder).head_class(head)
    return folder


def require_head(ws: Workspace, head: str) -> None:
    """`require_student`'s head check alone, for a command that may run without a general student (eval glue on
    task folders): a workspace whose student/ is a decoder is refused a task head."""
    family = families.find(ws.student_dir)
    if family is not None:
        family.head_class(head)
