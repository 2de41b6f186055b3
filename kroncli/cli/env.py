"""`kron env`: versions and devices for bug reports."""

from __future__ import annotations

from rich.table import Table

from ..workspace import versions
from .common import JsonOpt, emit_json, handle_errors, human_console


@handle_errors
def env_cmd(json_out: JsonOpt = False) -> None:
    """Print library versions and the compute devices kron sees.

    Example: kron env --json
    """
    import torch

    info = versions()
    info["cuda"] = torch.cuda.is_available()
    info["cuda_devices"] = torch.cuda.device_count()
    info["cpu_threads"] = torch.get_num_threads()
    if json_out:
        emit_json(info)
        return
    table = Table("component", "version", title="kron env")
    for k, v in info.items():
        table.add_row(k, str(v))
    human_console(False).print(table)
