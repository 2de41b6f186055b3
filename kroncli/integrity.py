"""One place for reading workspace and model files: a damaged file is one line naming it and the way back.

A file cut short by a full disk or a killed copy (a safetensors file without all its tensors, a JSON file ending
mid-object, a torch pickle without its zip directory) would otherwise surface as a long traceback from
safetensors, json, transformers or torch that names neither the file nor what restores it. The checks here are
cheap (headers and directories, no tensor is read), so commands run them before they write anything.
"""

from __future__ import annotations

import contextlib
import json
import pickle
import sys
import zipfile
from pathlib import Path
from typing import Any, Iterator

from .errors import KronError, first_line

# what a file cut short or overwritten with garbage raises when it is read
DAMAGE = (json.JSONDecodeError, UnicodeDecodeError, EOFError, pickle.UnpicklingError, zipfile.BadZipFile)
# torch's zip reader on a file cut short ("PytorchStreamReader failed reading zip archive", "unexpected EOF")
TORCH_DAMAGE = ("PytorchStreamReader", "unexpected EOF", "central directory", "invalid header", "file not fully")


def warn(message: str) -> None:
    """A `warning:` line on stderr, verbatim: something was repaired or left out, and the command goes on."""
    print(f"warning: {message}", file=sys.stderr, flush=True)


def damaged(path: Path, reason: str, hint: str | None = None) -> KronError:
    state = "is missing" if reason == "missing" else f"is damaged ({reason})"
    return KronError(f"{path} {state}; {hint or way_back(path)}")


def read_json(path: Path, hint: str | None = None) -> Any:
    """A JSON file's content; a file that is not valid JSON (cut short, not UTF-8) is a KronError naming it."""
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise damaged(path, _reason(e), hint) from None


def read_json_object(path: Path, hint: str | None = None) -> dict:
    """read_json for files that hold one JSON object (manifest, kron.json, meta.json, config.json)."""
    obj = read_json(path, hint)
    if not isinstance(obj, dict):
        raise damaged(path, f"a JSON {type(obj).__name__}, not an object", hint)
    return obj


def _reason(e: BaseException) -> str:
    if isinstance(e, json.JSONDecodeError):
        return f"not valid JSON: {e.msg}: line {e.lineno} column {e.colno}"
    if isinstance(e, UnicodeDecodeError):
        return f"not UTF-8 text at byte {e.start}"
    text = first_line(e)
    return text.split("header: ", 1)[-1] if "deserializing header" in text else text  # safetensors' wording


def json_problem(path: Path) -> str | None:
    """Why a JSON file cannot be read, else None."""
    try:
        json.loads(Path(path).read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        return _reason(e)
    except OSError as e:
        return e.strerror or first_line(e)
    return None


def safetensors_problem(path: Path) -> str | None:
    """Why a .safetensors file cannot be loaded (its header does not parse or its tensors run past its end), else
    None. Opening maps the file and reads the header only."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt"):
            return None
    except SafetensorError as e:
        return _reason(e)
    except OSError as e:
        return e.strerror or first_line(e)


def torch_file_problem(path: Path) -> str | None:
    """Why a torch.save file (zip format, as accelerate writes them) cannot be loaded: empty, or no zip directory at
    its end (cut short). Reads the directory only."""
    try:
        if Path(path).stat().st_size == 0:
            return "empty"
        return None if zipfile.is_zipfile(path) else "cut short: no zip directory at its end"
    except OSError as e:
        return e.strerror or first_line(e)


def folder_problem(folder: Path, torch_files: bool = False) -> tuple[Path, str] | None:
    """The first damaged file of a model folder and why: a JSON file that does not parse, a safetensors file whose
    header does not, and (`torch_files`, for accelerate checkpoints) a .bin/.pkl without its zip directory. Model
    folders from the hub may hold pre-zip torch files, so those are not judged there."""
    folder = Path(folder)
    try:
        files = sorted(p for p in folder.iterdir() if p.is_file())
    except OSError:
        return None
    for p in files:
        problem = None
        if p.suffix == ".json":
            problem = json_problem(p)
        elif p.suffix == ".safetensors":
            problem = safetensors_problem(p)
        elif torch_files and p.suffix in (".bin", ".pkl"):
            problem = torch_file_problem(p)
        if problem:
            return p, problem
    return None


def check_folder(folder: Path, hint: str | None = None, torch_files: bool = False) -> None:
    """Refuse a model folder with a damaged file, in one line naming the file (before anything loads it)."""
    found = folder_problem(folder, torch_files)
    if found:
        raise damaged(*found, hint)


@contextlib.contextmanager
def guard(where: Path, hint: str | None = None, torch_files: bool = False) -> Iterator[None]:
    """Loading from `where` (a folder or a file): an error that a damaged file causes becomes one line naming the
    file; any other error passes through as it is."""
    try:
        yield
    except KronError:
        raise
    except Exception as e:
        where = Path(where)
        found = folder_problem(where, torch_files) if where.is_dir() else None
        if found:
            raise damaged(*found, hint) from None
        if isinstance(e, FileNotFoundError) and e.filename:
            raise damaged(Path(e.filename), "missing", hint) from None
        looks_damaged = isinstance(e, DAMAGE) or type(e).__name__ == "SafetensorError" or (
            isinstance(e, RuntimeError) and any(s in str(e) for s in TORCH_DAMAGE))
        if looks_damaged:
            raise damaged(where, _reason(e), hint) from None
        raise


# ------------------------------------------------------------------------------------------ the way back


def way_back(path: Path) -> str:
    """What restores a damaged file, from where it lies in a workspace."""
    path = Path(path)
    parts = path.parts
    if path.name == "manifest.json":
        return ("restore it from a copy, or start again in a new workspace (kron factorize MODEL --workspace NEW); "
                "the models in this one stay readable")
    if "checkpoints" in parts[:-1]:
        i = len(parts) - 1 - parts[::-1].index("checkpoints")
        ckpt = Path(*parts[: i + 3])
        return (f"remove that checkpoint (rm -r {ckpt}): --resume then continues from the one before it, "
                "--restart starts the stage again")
    if "tasks" in parts[:-2]:
        i = len(parts) - 1 - parts[::-1].index("tasks")
        if i + 2 < len(parts) and parts[i + 2] in ("student", "teacher"):
            return finetune_hint(Path(*parts[:i]) if i else Path("."), parts[i + 1], parts[i + 2])
    if path.parent.name == "student":
        return (f"restore {path.parent} from a copy, or make it again with {factorize_again(path.parent.parent)} "
                "(its distillation is lost)")
    return f"replace {path.parent} with an intact copy (download or save the model again)"


def factorize_again(root: Path) -> str:
    """The `kron factorize` that made the workspace (recorded in its manifest), for this folder and with --force."""
    import shlex

    manifest = read_json(Path(root) / "manifest.json") if json_problem(Path(root) / "manifest.json") is None else {}
    record = ((manifest.get("stages") or {}).get("factorize") or {}) if isinstance(manifest, dict) else {}
    command = list(record.get("command") or [])
    if command[:2] != ["kron", "factorize"]:
        return f"kron factorize MODEL --workspace {root} --force"
    for i, arg in enumerate(command):  # the workspace may have moved since
        if arg in ("-w", "--workspace") and i + 1 < len(command):
            command[i + 1] = str(root)
        elif arg.startswith("--workspace="):
            command[i] = f"--workspace={root}"
    return shlex.join(command) + ("" if "--force" in command else " --force")


def finetune_hint(root: Path, task: str, which: str) -> str:
    """The `kron finetune` that writes a task's student or teacher again: --resume rewrites it from the stage's last
    checkpoint where one exists, --restart trains it again."""
    teacher = which == "teacher"
    cmd = f"kron finetune --workspace {root} --task {task}" + (" --teacher-only" if teacher else "")
    stage_dir = Path(root) / "checkpoints" / f"{'teacher' if teacher else 'finetune'}-{task}"
    if stage_dir.is_dir() and any(p.name.startswith("step_") for p in stage_dir.iterdir()):
        return f"run {cmd} --resume to write it again from its last checkpoint, or {cmd} --restart to train it again"
    return f"train it again: {cmd}"
