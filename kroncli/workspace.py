"""One directory per experiment: layout, manifest, atomic writes and a lock.

Layout:  manifest.json  student/  tasks/<task>/{student,teacher}  metrics/<stage>.csv  checkpoints/<stage>/
         predictions/  cache/  .lock  .lock.flock  (the Workspace methods are its one definition)
Every file is written to a temporary name in the same folder and renamed, so a crash leaves either the
old file or the new one, never half of one. Temporary names carry the writer's PID (`.NAME.PID.XXXXXXXX.tmp`, a
folder replaced in two renames also `.NAME.old-PID`), so that opening a workspace can tell what a killed process
left behind from what a running one is writing: `recover` finishes or undoes the former and removes its
temporaries.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import os
import re
import shutil
import socket
import sys
import tempfile
from pathlib import Path
from typing import Any, Iterator

from .errors import KronError

MANIFEST = "manifest.json"
LOCK = ".lock"  # names the holder, for messages: JSON {pid, host, boot, started} ("PID HOST" before the kernel lock)
KERNEL_LOCK = ".lock.flock"  # what the kernel locks (flock, through filelock): free the moment its holder dies
LOCK_FILES = (LOCK, KERNEL_LOCK)
FORCE_LOCK = "KRON_FORCE_LOCK"  # =1: take over a lock recorded on another machine (kron factorize: also --force)


def now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _tmp_prefix(path: Path) -> str:
    return f".{path.name}.{os.getpid()}."


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write through a temporary sibling and one rename. The file gets the permissions a plain open() would
    give it (mkstemp's are owner-only, which would hide manifests and corpora from the rest of a team)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=_tmp_prefix(path), suffix=".tmp", dir=path.parent)
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
    tmp = Path(tempfile.mkdtemp(prefix=_tmp_prefix(path), suffix=".tmp", dir=path.parent))
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


_TMP = re.compile(r"^\.(?P<name>.+)\.(?P<pid>\d+)\.[^.]+\.tmp$")  # _tmp_prefix + tempfile's 8 characters
_OLD = re.compile(r"^\.(?P<name>.+)\.old-(?P<pid>\d+)$")  # atomic_dir's target, moved aside


def recover(folder: Path) -> None:
    """Finish or undo what killed processes left in `folder`, and say so.

    A folder swap stopped between atomic_dir's two renames (the old NAME moved aside to .NAME.old-PID, the new one
    still .NAME.PID.*.tmp) is finished: the new folder was complete before the first rename. Where its new folder
    cannot be told apart (none, or several of that process), the old one is put back. Temporaries and set-aside
    folders of processes that no longer run are removed; a running process's are left alone.
    """
    try:
        entries = {e.name: e for e in os.scandir(folder)}
    except OSError:
        return
    dead = {}  # name -> (kind, target name, pid) of the entries whose writer is gone
    for name in entries:
        m = _OLD.match(name) or _TMP.match(name)
        if m and not _pid_alive(int(m["pid"])):
            dead[name] = ("old" if name.endswith(f"old-{m['pid']}") else "tmp", m["name"], int(m["pid"]))
    for name, (kind, target, pid) in sorted(dead.items()):
        if kind != "old" or target in entries:
            continue
        new = [n for n, (k, t, p) in dead.items() if k == "tmp" and t == target and p == pid and entries[n].is_dir()]
        with contextlib.suppress(OSError):  # another process may be recovering the same folder
            if len(new) == 1:
                os.replace(Path(folder) / new[0], Path(folder) / target)
                _warn(f"{Path(folder) / target}: finished replacing it (process {pid} was killed between the two "
                      "renames of the save; the new one is in place)")
            else:
                os.replace(Path(folder) / name, Path(folder) / target)
                _warn(f"{Path(folder) / target}: put the previous one back (process {pid} was killed while replacing "
                      "it)")
    for name, (kind, target, pid) in dead.items():
        path, placed = Path(folder) / name, (Path(folder) / target).exists()
        if not placed and (kind == "old" or f".{target}.old-{pid}" in dead):
            continue  # the swap could not be completed: keep both halves for the user
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            with contextlib.suppress(OSError):
                path.unlink()


def _warn(message: str) -> None:
    from .integrity import warn

    warn(message)


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


def _boot_id() -> str | None:
    """This kernel's boot id (Linux; containers on one machine share it): a lock recorded under the same one was
    held through this kernel's flock, which has the last word on whether its holder is gone."""
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip() or None
    except OSError:
        return None


def _runs_kron(pid: int) -> bool:
    """Whether process `pid` lives and is a kron command (`kron ...`, `python -m kroncli ...`), by its /proc command
    line: a reused PID is not taken for the holder. Without /proc any live process counts."""
    if not _pid_alive(pid):
        return False
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except FileNotFoundError:
        return not Path("/proc/self").exists()
    except OSError:
        return True
    return b"kroncli" in argv[:4] or any(os.path.basename(a) == b"kron" for a in argv[:2])


def _holder(path: Path) -> dict | None:
    """Who a lock record names ({pid, host, ...}, also from the "PID HOST" text of earlier versions); {} when it
    names nobody (damaged, empty); None when there is no record."""
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        return None
    except OSError:
        return {}
    try:
        record = json.loads(text)
        record = {**record, "pid": int(record["pid"]), "host": str(record["host"])}
    except (ValueError, TypeError, KeyError):
        pid, _, host = text.strip().partition(" ")
        try:
            record = {"pid": int(pid), "host": host.strip()}
        except ValueError:
            return {}
    return record if record["pid"] > 0 and record["host"] else {}


def _who(holder: dict | None) -> str:
    if not holder:
        return "another process"
    since = f" since {holder['started']}" if holder.get("started") else ""
    return f"process {holder['pid']} on {holder['host']}{since}"


def _take_over(root: Path, record: Path, force: bool) -> None:
    """With the kernel lock held: refuse a record that may still name a running kron, say so when taking one over."""
    holder = _holder(record)
    if holder is None:
        return
    if not holder:
        _warn(f"{record} names no process (damaged); taking the lock over")
        return
    same_kernel = holder.get("boot") is not None and holder.get("boot") == _boot_id()
    if not same_kernel and holder["host"] != socket.gethostname():
        if not force:
            raise KronError(f"workspace {root} is locked by {_who(holder)} ({record}), which this machine cannot "
                            f"check; if no kron runs there any more, run again with {FORCE_LOCK}=1 (kron factorize: "
                            "--force) to take the lock over")
        _warn(f"taking over the lock of {_who(holder)} (forced)")
        return
    if not same_kernel and holder["pid"] != os.getpid() and _runs_kron(holder["pid"]):  # a kron of before flock
        raise KronError(f"workspace {root} is in use by {_who(holder)} ({record}); wait for it to finish or stop it")
    _warn(f"taking over the lock of {_who(holder)} ({record}): it ended without releasing it")


class Workspace:
    """Paths and bookkeeping of one experiment directory."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        if self.root.is_dir() and self.is_workspace():
            self.recover()

    def recover(self) -> None:
        """Opening a workspace finishes or undoes the writes a killed process left (see `recover`), in the folders
        kron writes into: the workspace itself, its metrics, cache and predictions, and each task's folder."""
        for folder in (self.root, self.metrics_dir, self.root / "cache", self.predictions_dir,
                       *sorted(self.tasks_dir.glob("*/"))):
            recover(folder)

    manifest_path = property(lambda self: self.root / MANIFEST)
    student_dir = property(lambda self: self.root / "student")
    metrics_dir = property(lambda self: self.root / "metrics")
    checkpoints_dir = property(lambda self: self.root / "checkpoints")
    tasks_dir = property(lambda self: self.root / "tasks")
    predictions_dir = property(lambda self: self.root / "predictions")
    eval_csv = property(lambda self: self.metrics_csv("eval"))  # kron eval glue / squad / ood rows
    speed_csv = property(lambda self: self.metrics_csv("speed"))  # kron eval speed rows

    # The layout's one definition: every command finds a task's models, a stage's log and checkpoints here.
    def task_dir(self, task) -> Path:
        """tasks/<task>: a task's models (`task`: a data.glue.Task or data.squad.SquadTask, anything with .name)."""
        return self.tasks_dir / task.name.lower()

    def task_definition(self, name: str) -> Path:
        """tasks/<name>/task.json: an own-data task's files, columns and labels (data/own.py)."""
        return self.tasks_dir / name.lower() / "task.json"

    def task_model_dir(self, task, which: str) -> Path:
        """tasks/<task>/<student|teacher>."""
        return self.task_dir(task) / which

    def task_models(self, which: str, marker: str) -> list[str]:
        """The task folders holding a `which` model (its folder has the file `marker`), by folder name."""
        return sorted(p.parent.parent.name for p in self.tasks_dir.glob(f"*/{which}/{marker}"))

    def metrics_csv(self, stage: str) -> Path:
        """metrics/<stage>.csv: a training stage's log (distill, finetune-mrpc[-teacher]) or eval / speed rows."""
        return self.metrics_dir / f"{stage}.csv"

    def stage_checkpoints(self, stage: str) -> Path:
        """checkpoints/<stage>/: a training stage's step-N folders (kron run resumes from the newest)."""
        return self.checkpoints_dir / stage

    def exists(self) -> bool:
        """Anything in the folder but a lock (a killed command may leave one alone: no workspace)."""
        return self.manifest_path.exists() or (self.root.is_dir() and any(p.name not in LOCK_FILES
                                                                          for p in self.root.iterdir()))

    def _only_a_lock(self) -> bool:
        """The folder holds a lock and nothing else: what a command killed before it wrote anything leaves."""
        names = {p.name for p in self.root.iterdir()} if self.root.is_dir() else set()
        return bool(names) and names <= set(LOCK_FILES)

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
        """The manifest ({} when there is none yet); a damaged one is a KronError naming it. Commands that write
        the manifest at their end read it before they write anything (stages.common.require_student)."""
        from .integrity import read_json_object

        if not self.manifest_path.exists():
            return {}
        return read_json_object(self.manifest_path)

    def write_manifest(self, manifest: dict) -> None:
        manifest.setdefault("created", now())
        manifest["updated"] = now()
        manifest["kroncli_version"] = versions().get("kroncli", "unknown")
        atomic_write_json(self.manifest_path, manifest)

    def record_stage(self, stage: str, info: dict, reset: bool = False, top: dict | None = None) -> dict:
        """Mark a stage finished in manifest.json (with --force, `reset` forgets earlier stages).

        `top` sets workspace-wide keys (e.g. the teacher) beside the per-stage records.
        """
        try:
            old = self.read_manifest()
        except KronError:
            if not reset:
                raise
            old = {}  # --force writes a new manifest: a damaged old one is replaced, not read
        manifest = {"created": old["created"]} if reset and "created" in old else ({} if reset else old)
        manifest.update(top or {})
        manifest.setdefault("stages", {})[stage] = {"done": True, "finished": now(), **info}
        manifest.setdefault("versions", versions())
        self.write_manifest(manifest)
        return manifest

    def start_stage(self, stage: str) -> str | None:
        """Mark `stage` as running since now (kron run's evaluation stages) and return when an earlier run of it
        started that never finished, or None: the rows that run wrote are replaced by this one's."""
        manifest = self.read_manifest()
        record = manifest.setdefault("stages", {}).get(stage) or {}
        earlier = None if record.get("done") else record.get("started")
        manifest["stages"][stage] = {"done": False, "started": now()}
        self.write_manifest(manifest)
        return earlier

    @contextlib.contextmanager
    def lock(self, force: bool = False) -> Iterator[None]:
        """Exclusive use of the workspace by this process (kron factorize, distill, finetune, run).

        The kernel holds the lock (flock on .lock.flock, through filelock), so it is free the moment its holder dies,
        however it dies; .lock names the holder for the messages. A record its holder left is taken over with a line
        on stderr; one written on another machine, which this one cannot check, is refused unless `force` (or
        KRON_FORCE_LOCK=1). A folder this made, or one a killed command left holding only its lock, is removed
        again when nothing filled it (the command failed first).
        """
        from filelock import FileLock, Timeout

        fresh = not self.root.exists() or self._only_a_lock()
        self.root.mkdir(parents=True, exist_ok=True)
        record, kernel = self.root / LOCK, FileLock(self.root / KERNEL_LOCK, timeout=0)
        try:
            kernel.acquire()
        except Timeout:
            raise KronError(f"workspace {self.root} is in use by {_who(_holder(record))} ({record}); wait for it "
                            "to finish or stop it") from None
        try:
            _take_over(self.root, record, force or os.environ.get(FORCE_LOCK, "") not in ("", "0"))
            me = {"pid": os.getpid(), "host": socket.gethostname(), "boot": _boot_id(), "started": now()}
            atomic_write_json(record, me)
            try:
                yield
            finally:
                if _holder(record) == me:
                    record.unlink(missing_ok=True)
        finally:
            with contextlib.suppress(OSError):  # unlinked while held: a waiter that opened it sees so and retries
                (self.root / KERNEL_LOCK).unlink()
            kernel.release()
            if fresh:
                with contextlib.suppress(OSError):  # not empty: the command wrote something, keep it
                    self.root.rmdir()
