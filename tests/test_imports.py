"""Imports run one way: each module imports only from its own layer or the layers below (docs/method.md).

Every `import` / `from ... import` of the package is read with ast, those inside functions included (a lazy import
is still a dependency), so a module that reaches back up the order fails here rather than in a circular import
that shows only on some command's path.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "kroncli"

# Bottom first. A unit is a sub-package (kroncli/data/) or a top-level module (kroncli/train.py); the package itself
# (kroncli/__init__.py, __main__) is the top.
LAYERS: list[tuple[str, set[str]]] = [
    ("core", {"kron", "errors"}),
    ("foundation", {"integrity", "families", "console", "workspace", "metrics_csv", "surgery", "sources", "student",
                    "squad_metrics", "machine", "narrow"}),
    ("data", {"data", "distill", "metrics", "evaluate"}),
    ("training", {"train", "train_config", "factorize"}),
    ("stages", {"stages"}),
    ("results", {"evaluation", "export", "predict"}),
    ("experiments", {"recipes", "run", "report", "plots"}),
    ("cli", {"cli", "__main__", "kroncli"}),
]
LAYER_OF = {unit: i for i, (_, units) in enumerate(LAYERS) for unit in units}
# each other's private names stay private: both read the workspace through public functions of a lower layer
NO_PRIVATE_BETWEEN = {"evaluation", "export"}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def unit(module: str) -> str:
    parts = module.split(".")
    if len(parts) == 1:
        return "kroncli"
    return parts[1] if (PACKAGE / parts[1]).is_dir() or (PACKAGE / f"{parts[1]}.py").is_file() else "kroncli"


def imports(source: str, module: str, is_package: bool) -> list[tuple[int, str, str]]:
    """(line, imported module, imported name or '') for every import of the package in `source`."""
    package = module if is_package else module.rpartition(".")[0]
    out = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name, "") for a in node.names if a.name.split(".")[0] == "kroncli"]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] == "kroncli":
                out += [(node.lineno, target, a.name) for a in node.names]
    return out


def violations(source: str, module: str, is_package: bool = False) -> list[str]:
    """What in `source` (the text of `module`) runs back up the layer order or takes another's private name."""
    me, found = unit(module), []
    for line, target, name in imports(source, module, is_package):
        other = unit(f"{target}.{name}" if name and unit(target) == "kroncli" else target)
        if other == me:
            continue
        if LAYER_OF[other] > LAYER_OF[me]:
            found.append(f"{module}:{line} imports {target} ({LAYERS[LAYER_OF[other]][0]} layer) from the "
                         f"{LAYERS[LAYER_OF[me]][0]} layer below it")
        if {me, other} == NO_PRIVATE_BETWEEN and name.startswith("_"):
            found.append(f"{module}:{line} imports the private {target}.{name}")
    return found


MODULES = sorted(PACKAGE.rglob("*.py"))


def test_every_unit_has_a_layer():
    units = {unit(module_name(p)) for p in MODULES}
    assert units - set(LAYER_OF) == set(), "add the new module to a layer in LAYERS (and docs/method.md)"


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_run_down_the_layers(path):
    assert violations(path.read_text(), module_name(path), path.name == "__init__.py") == []


@pytest.mark.parametrize("source, module", [
    ("def bar():\n    from .cli.common import err_console\n", "kroncli.train"),  # a lazy import counts
    ("from kroncli.cli import app\n", "kroncli.stages.finetune"),
    ("from .stages.finetune import task_dir\n", "kroncli.workspace"),
    ("from ..evaluation.glue_eval import _max_seq_len\n", "kroncli.export.quantize"),
    ("from .. import run\n", "kroncli.evaluation.glue_eval"),
])
def test_a_backward_import_is_caught(source, module):
    assert violations(source, module)


def test_a_downward_import_passes():
    assert violations("from ..workspace import Workspace\nfrom ..data.glue import Task\n",
                      "kroncli.stages.finetune") == []
