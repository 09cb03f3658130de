"""Finding the processes of runs that a killed daemon left behind, and ending them.

Every shell run's processes carry ``SCHEDULER_RUN_ID=<run id>`` in their environment, which
children inherit. A daemon killed with SIGKILL cannot kill its runs' process groups; the next
daemon marks those runs ``crashed`` and then ends any process still carrying one of their ids,
so a crashed run's work does not go on beside its replay. Linux only (it reads ``/proc``);
elsewhere it finds nothing.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Collection
from pathlib import Path

from scheduler.strategies.shell_job import RUN_ID_VARIABLE

_PROC = Path("/proc")


def processes_of_runs(run_ids: Collection[str], proc: Path = _PROC) -> dict[int, str]:
    """``{pid: run id}`` of live processes whose environment names one of ``run_ids``."""
    if not run_ids or not proc.is_dir():
        return {}
    wanted = {f"{RUN_ID_VARIABLE}={run_id}".encode(): run_id for run_id in run_ids}
    own = os.getpid()
    found: dict[int, str] = {}
    for entry in proc.iterdir():
        if not entry.name.isdigit() or int(entry.name) == own:
            continue
        try:
            environ = (entry / "environ").read_bytes()
        except OSError:  # gone, or another user's process
            continue
        for variable in environ.split(b"\0"):
            run_id = wanted.get(variable)
            if run_id is not None:
                found[int(entry.name)] = run_id
                break
    return found


def kill_processes_of_runs(run_ids: Collection[str], proc: Path = _PROC) -> dict[int, str]:
    """SIGKILL every process still working for one of ``run_ids``; returns what was killed."""
    killed: dict[int, str] = {}
    for pid, run_id in processes_of_runs(run_ids, proc).items():
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            continue
        killed[pid] = run_id
    return killed
