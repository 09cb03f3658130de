"""Finding the processes of runs that a killed daemon left behind, and ending them.

Every shell run's processes carry ``SCHEDULER_RUN_ID=<run id>`` in their environment, which
children inherit. A daemon killed with SIGKILL cannot end its runs' processes; the next daemon
marks those runs ``crashed`` and then ends any process still carrying one of their ids (and its
descendants), so a crashed run's work does not go on beside its replay. The ``/proc`` scan is
:mod:`scheduler.strategies.process_tree`, which also ends a live run's leftovers. Linux only;
elsewhere it finds nothing.
"""

from __future__ import annotations

from collections.abc import Collection
from pathlib import Path

from scheduler.strategies.process_tree import PROC, end_processes, members, snapshot


def processes_of_runs(run_ids: Collection[str], proc: Path = PROC) -> dict[int, str]:
    """``{pid: run id}`` of live processes that carry one of ``run_ids``, or descend from one."""
    if not run_ids:
        return {}
    processes = snapshot(proc)
    found = members(processes, frozenset(run_ids), {})
    return {pid: run_id for pid, run_id in found.items() if processes[pid].alive}


def kill_processes_of_runs(run_ids: Collection[str], proc: Path = PROC) -> dict[int, str]:
    """SIGKILL every process still working for one of ``run_ids``; returns what was killed."""
    if not run_ids:
        return {}
    return end_processes(run_ids, proc=proc)
