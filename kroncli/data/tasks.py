"""Every task kron trains and scores, by name: GLUE's (data.glue.Task) and SQuAD's (data.squad.SquadTask).

The CLI and recipe edge turn a name into its task here, once; below that edge functions take the task object
(its `.name` is canonical, and `Workspace.task_dir` names its folder from it).
"""

from __future__ import annotations

from .glue import Task, find_task
from .squad import SquadTask, find_squad_task

AnyTask = Task | SquadTask


def find_any_task(name: str | AnyTask) -> AnyTask | None:
    """The GLUE or SQuAD task for any usual spelling (a task object itself), or None."""
    return find_task(name) or find_squad_task(name)
