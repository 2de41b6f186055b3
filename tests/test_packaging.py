"""Packaging: pyproject states the ranges the code needs, constraints.txt the exact tested releases (the small CPU
torch wheel), and the README's set-up commands and .ci/run install through those constraints."""

from __future__ import annotations

import re

from packaging.requirements import Requirement

from conftest import REPO

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    from pip._vendor import tomli as tomllib


def requirements() -> list[Requirement]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    extras = [r for reqs in project["optional-dependencies"].values() for r in reqs]
    return [Requirement(r) for r in project["dependencies"] + extras]


def constraints() -> dict[str, str]:
    lines = [ln.split("#")[0].strip() for ln in (REPO / "constraints.txt").read_text().splitlines()]
    return dict(ln.split("==") for ln in lines if ln)


def readme_commands() -> list[str]:
    """The two set-up commands: the ```bash blocks of the README's "Set up" section."""
    setup = (REPO / "README.md").read_text().split("## Set up", 1)[1].split("\n## ", 1)[0]
    return [block.strip() for block in re.findall(r"```bash\n(.*?)```", setup, re.S)]


def test_requirements_are_ranges_and_the_constraints_pin_within_them():
    reqs = requirements()
    assert not [str(r) for r in reqs if any(s.operator in ("==", "===") for s in r.specifier)]
    pins = constraints()
    assert pins["torch"] == "2.13.0" and {"onnx", "onnxruntime"} <= set(pins)
    for name, version in pins.items():
        wanted = [r for r in reqs if r.name == name]
        assert wanted and all(r.specifier.contains(version) for r in wanted), (name, version)


def test_readme_setup_and_ci_install_through_the_constraints():
    commands = readme_commands()
    assert len(commands) == 2  # install + the main job; the tests
    for command in commands:
        assert command.startswith("pip install -c constraints.txt -e "), command
    ci = (REPO / ".ci" / "run").read_text()
    assert commands[1] in ci.splitlines()  # .ci/run runs exactly the README's test command
    assert "pytest" in commands[1]


def test_every_data_file_of_the_package_is_shipped():
    """A file the code reads at run time that package-data does not name is left out of a built wheel: paper.json
    was, so `kron report --paper` failed on an installed (not editable) kron."""
    from fnmatch import fnmatch

    shipped = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    root = REPO / "kroncli"
    files = [p for p in root.rglob("*") if p.is_file() and p.suffix not in (".py", ".pyc")
             and "__pycache__" not in p.parts]
    assert files  # the test sees the package's data
    for path in files:
        package = ".".join(("kroncli", *path.parent.relative_to(root).parts))
        owners = {pkg: pats for pkg, pats in shipped.items() if package == pkg or package.startswith(pkg + ".")}
        assert any(fnmatch(str(path.relative_to(REPO / pkg.replace(".", "/"))), pat)
                   for pkg, pats in owners.items() for pat in pats), f"{path.relative_to(REPO)} is not in package-data"
