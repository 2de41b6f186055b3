"""Every task kron trains and scores, by name: GLUE's (data.glue.Task), SQuAD's (data.squad.SquadTask) and a
user's own (data.own.OwnTask, defined by its files).

The CLI and recipe edge turn a name into its task here, once (`resolve_task`); below that edge functions take the
task object (its `.name` is canonical, and `Workspace.task_dir` names its folder from it).
"""

from __future__ import annotations

from ..errors import KronError
from ..integrity import read_json_object
from ..workspace import Workspace, atomic_write_json
from .glue import TASKS, VARIANTS, Task, find_task
from .own import OwnTask, check_files, define, differences, from_definition
from .task_files import TaskFiles
from .squad import SquadTask, find_squad_task

AnyTask = Task | SquadTask


def find_any_task(name: str | AnyTask) -> AnyTask | None:
    """The GLUE or SQuAD task for any usual spelling (a task object itself), or None."""
    return find_task(name) or find_squad_task(name)


def stored_task(ws: Workspace | None, name: str) -> OwnTask | None:
    """The own task `name` as the workspace defined it (tasks/<name>/task.json), or None."""
    if ws is None:
        return None
    path = ws.task_definition(name)
    return from_definition(read_json_object(path), path) if path.is_file() else None


def unknown_task(name: str) -> KronError:
    return KronError(f"unknown task {name!r}: name a GLUE task ({', '.join([*TASKS, *VARIANTS])}), squad / squad_v2, "
                     f"or your own data with --task {name} --train FILE --dev FILE")


def resolve_task(name: str, ws: Workspace | None = None, files: TaskFiles | None = None,
                 label_order: tuple[str, ...] | None = None) -> AnyTask:
    """The task a command's `--task NAME` (and own-data options) mean: own files when given (checked against the
    workspace's definition of that name, if any), the workspace's own task of that name, else GLUE / SQuAD."""
    if files is not None and files.given:
        task = define(name, files, label_order)
        old = stored_task(ws, task.name)
        if old is not None:
            changed = differences(old, task)
            if changed:
                raise KronError(f"{ws.root} already has task {old.name} on other data ({', '.join(changed)} differ); "
                                f"pass another --task name, or the files and options it was defined with")
        return task
    if files is not None and any(v is not None for k, v in vars(files).items() if k != "split_seed"):
        raise KronError(f"--task {name}: the own-data options need --train FILE (or --dataset NAME)")
    stored = stored_task(ws, name)
    if stored is not None:
        check_files(stored)
        return stored
    task = find_any_task(name)
    if task is None:
        raise unknown_task(name)
    return task


def save_definition(ws: Workspace, task: AnyTask) -> None:
    """Write an own task's definition into the workspace (once; the same definition again changes nothing)."""
    if isinstance(task, OwnTask):
        path = ws.task_definition(task.name)
        if not path.is_file():
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_json(path, task.definition())
