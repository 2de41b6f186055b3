"""One directory per experiment: layout, manifest, atomic writes and a PID lock.

Layout:  manifest.json  student/  metrics/<stage>.csv  checkpoints/  .lock
Every file is written to a temporary name in the same folder and renamed, so a crash leaves either the
old file or the new one, never half of one.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import os
import shutil
import socket
import sys
import tempfile
from pathlib import Path
from typing import Any, Iterator

from .errors import KronError

MANIFEST = "manifest.json"
LOCK = ".lock"


def now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write through a temporary sibling and one rename. The file gets the permissions a plain open() would
    give it (mkstemp's are owner-only, which would hide manifests and corpora from the rest of a team)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.chmod(tmp, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


@contextlib.contextmanager
def atomic_dir(path: Path) -> Iterator[Path]:
    """Yield a temporary sibling folder; on success it replaces `path` in one rename. The folder gets the
    permissions a plain mkdir would give it (mkdtemp's are owner-only)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        os.chmod(tmp, 0o777 & ~_umask())
        yield tmp
        old = None
        if path.exists():
            old = path.with_name(f".{path.name}.old-{os.getpid()}")
            os.replace(path, old)
        os.replace(tmp, path)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def versions() -> dict[str, str]:
    """Library versions stamped into manifests (and printed by `kron env`)."""
    from importlib import metadata

    out = {"python": sys.version.split()[0]}
    for pkg in ("kroncli", "torch", "transformers", "tokenizers", "safetensors", "numpy", "scipy", "accelerate",
                "datasets", "onnx", "onnxruntime"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            pass
    return out


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class Workspace:
    """Paths and bookkeeping of one experiment directory."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)

    manifest_path = property(lambda self: self.root / MANIFEST)
    student_dir = property(lambda self: self.root / "student")
    metrics_dir = property(lambda self: self.root / "metrics")
    checkpoints_dir = property(lambda self: self.root / "checkpoints")

    def exists(self) -> bool:
        return self.manifest_path.exists() or (self.root.exists() and any(self.root.iterdir()))

    def is_workspace(self) -> bool:
        """What kron factorize / finetune write: a manifest, the student, or task models."""
        return any((self.root / name).exists() for name in (MANIFEST, "student", "tasks"))

    def prepare_new(self, force: bool) -> None:
        """Refuse to reuse a workspace unless forced (the folder is made by `lock`, and removed again when the
        command fails before writing into it)."""
        if self.root.exists() and not self.root.is_dir():
            raise KronError(f"workspace {self.root} is a file, not a folder; choose another --workspace")
        if self.exists() and not force:
            raise KronError(f"workspace {self.root} already exists; pass --force to overwrite it or choose "
                            "another --workspace")

    def read_manifest(self) -> dict:
        if not self.manifest_path.exists():
            return {}
        try:
            return json.loads(self.manifest_path.read_text())
        except json.JSONDecodeError as e:
            raise KronError(f"{self.manifest_path} is not valid JSON ({e}); restore it or start a new "
                            "workspace") from None

    def write_manifest(self, manifest: dict) -> None:
        manifest.setdefault("created", now())
        manifest["updated"] = now()
        manifest["kroncli_version"] = versions().get("kroncli", "unknown")
        atomic_write_json(self.manifest_path, manifest)

    def record_stage(self, stage: str, info: dict, reset: bool = False, top: dict | None = None) -> dict:
        """Mark a stage finished in manifest.json (with --force, `reset` forgets earlier stages).

        `top` sets workspace-wide keys (e.g. the teacher) beside the per-stage records.
        """
        old = self.read_manifest()
        manifest = {"created": old["created"]} if reset and "created" in old else ({} if reset else old)
        manifest.update(top or {})
        manifest.setdefault("stages", {})[stage] = {"done": True, "finished": now(), **info}
        manifest.setdefault("versions", versions())
        self.write_manifest(manifest)
        return manifest

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Exclusive use of the workspace by this process; a lock left by a dead process is taken over. A folder
        this made and nothing filled (the command failed first) is removed again."""
        created = not self.root.exists()
        self.root.mkdir(parents=True, exist_ok=True)
        path = self.root / LOCK
        me = f"{os.getpid()} {socket.gethostname()}\n"
        for _ in range(2):
            try:
                fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                try:
                    pid_s, _, host = path.read_text().partition(" ")
                    pid = int(pid_s)
                except (OSError, ValueError):
                    pid, host = -1, ""
                if pid > 0 and host.strip() == socket.gethostname() and _pid_alive(pid):
                    raise KronError(f"workspace {self.root} is in use by process {pid} ({path}); wait for it "
                                    "to finish or stop it") from None
                path.unlink(missing_ok=True)  # stale: its holder is gone
                continue
            with os.fdopen(fd, "w") as f:
                f.write(me)
            break
        else:
            raise KronError(f"could not take the lock {path}; remove it if no kron process uses the workspace")
        try:
            yield
        finally:
            with contextlib.suppress(FileNotFoundError):
                if path.read_text() == me:
                    path.unlink()
            if created:
                with contextlib.suppress(OSError):  # not empty: the command wrote something, keep it
                    self.root.rmdir()
