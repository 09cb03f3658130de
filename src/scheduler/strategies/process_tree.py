"""Finding every process of a shell run in ``/proc``, and ending them all.

A shell run starts in a session and process group of its own, and every process of it inherits
``SCHEDULER_RUN_ID=<run id>`` in its environment. Killing the group is not enough: a command can
leave it (``setsid``, ``set -m``), and a process that outlives its parent is re-parented to init.
So a run's processes are those that, in one snapshot of ``/proc``:

* carry the run id in their environment (inherited through every fork and exec unless cleared);
* belong to the session or process group of the run's shell (both numbered by the shell's pid);
* have a parent that is one of the run's processes (a process that cleared its environment is
  still found while its parent lives).

:func:`end_processes` stops every member with SIGSTOP and looks again, until a look finds no new
member (a stopped process cannot fork, so even a fork bomb stops growing), then SIGKILLs them and
looks until none is left. Every loop is bounded in rounds and in time.

Linux only: where ``/proc`` is missing nothing is found and callers fall back to the process
group. Out of reach: a process that clears its environment, leaves the session and outlives its
parent (only a cgroup could hold it), and a process of another user that we may not signal.
Signals go by pid, so a pid reused in the instant between a look and the signal could be hit;
the sweep runs while the run's processes still hold their pids, which keeps that window tiny.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from scheduler.logs import get as get_logger

RUN_ID_VARIABLE = "SCHEDULER_RUN_ID"

PROC = Path("/proc")
_TAG = f"{RUN_ID_VARIABLE}=".encode()
_DEAD_STATES = frozenset("ZXx")  # zombie, dead: nothing left to signal
# A SIGSTOP round that finds nothing new ends the hunt; these only bound a pathological case.
_MAX_STOP_ROUNDS = 100
_KILL_RECHECK_S = 0.01
DEFAULT_SWEEP_S = 2.0


@dataclass(frozen=True)
class ProcessInfo:
    """One process as ``/proc/<pid>/stat`` and ``/proc/<pid>/environ`` describe it."""

    pid: int
    ppid: int
    pgid: int
    sid: int
    state: str
    run_id: str | None  # SCHEDULER_RUN_ID from its environment (None: unset or unreadable)
    started: int = 0  # start time in clock ticks since boot: with the pid, names one process

    @property
    def identity(self) -> tuple[int, int]:
        return self.pid, self.started

    @property
    def alive(self) -> bool:
        return self.state not in _DEAD_STATES


def proc_available(proc: Path = PROC) -> bool:
    return (proc / "self" / "stat").exists()


def _run_id_in(environ: bytes) -> str | None:
    """The value of SCHEDULER_RUN_ID in a NUL-separated environment block (the first one wins,
    as for getenv)."""
    start = 0
    while True:
        at = environ.find(_TAG, start)
        if at < 0:
            return None
        if at == 0 or environ[at - 1] == 0:  # the name itself, not text inside another value
            end = environ.find(b"\0", at)
            value = environ[at + len(_TAG): end if end >= 0 else len(environ)]
            return value.decode("utf-8", "replace")
        start = at + 1


def _read_process(entry: Path, pid: int) -> ProcessInfo | None:
    try:
        stat = (entry / "stat").read_bytes()
    except OSError:  # gone
        return None
    # "pid (comm) state ppid pgrp session ...": comm may hold spaces and parentheses.
    fields = stat[stat.rfind(b")") + 2:].split()
    if len(fields) < 4:
        return None
    try:
        environ = (entry / "environ").read_bytes()
    except OSError:  # another user's process, or gone
        environ = b""
    started = int(fields[19]) if len(fields) > 19 else 0
    return ProcessInfo(pid=pid, ppid=int(fields[1]), pgid=int(fields[2]), sid=int(fields[3]),
                       state=fields[0].decode(), run_id=_run_id_in(environ), started=started)


def snapshot(proc: Path = PROC) -> dict[int, ProcessInfo]:
    """Every process we can see, except this one and init; empty without ``/proc``."""
    try:
        names = os.listdir(proc)
    except OSError:
        return {}
    own = os.getpid()
    found: dict[int, ProcessInfo] = {}
    for name in names:
        if not name.isdigit() or int(name) in (own, 1):
            continue
        info = _read_process(proc / name, int(name))
        if info is not None:
            found[info.pid] = info
    return found


Known = Mapping[tuple[int, int], str]


def members(
    processes: Mapping[int, ProcessInfo],
    run_ids: Collection[str],
    leaders: Mapping[int, str],
    known: Known | None = None,
) -> dict[int, str]:
    """``{pid: run id}`` of the processes that belong to one of ``run_ids``, to the session or group
    of one of ``leaders`` (``{shell pid: run id}``), or were members before (``known``, by pid and
    start time: an earlier look, while parent links still held), with all their descendants."""
    found: dict[int, str] = {}
    for info in processes.values():
        if info.run_id is not None and info.run_id in run_ids:
            found[info.pid] = info.run_id
            continue
        owner = (leaders.get(info.pid) or leaders.get(info.sid) or leaders.get(info.pgid)
                 or (known or {}).get(info.identity))
        if owner is not None:
            found[info.pid] = owner
    children: dict[int, list[int]] = {}
    for info in processes.values():
        children.setdefault(info.ppid, []).append(info.pid)
    pending = list(found)
    while pending:
        parent = pending.pop()
        for child in children.get(parent, ()):
            if child not in found:
                found[child] = found[parent]
                pending.append(child)
    return found


def _live_members(
    run_ids: Collection[str], leaders: Mapping[int, str], known: Known | None, proc: Path
) -> dict[int, str]:
    processes = snapshot(proc)
    return {pid: run for pid, run in members(processes, run_ids, leaders, known).items()
            if processes[pid].alive}


def current_members(
    run_ids: Collection[str], leaders: Mapping[int, str] | None = None, proc: Path = PROC
) -> dict[tuple[int, int], str]:
    """``{(pid, start time): run id}`` of the live members now: taken before signals that may
    orphan some of them (a SIGTERM to the shell), to be passed as ``known`` afterwards."""
    processes = snapshot(proc)
    found = members(processes, frozenset(run_ids), dict(leaders or {}))
    return {processes[pid].identity: run for pid, run in found.items() if processes[pid].alive}


def _signal(pid: int, sig: signal.Signals) -> bool:
    if pid <= 1 or pid == os.getpid():
        return False
    try:
        os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        return False
    return True


def end_processes(
    run_ids: Collection[str],
    leaders: Mapping[int, str] | None = None,
    *,
    known: Known | None = None,
    within_s: float = DEFAULT_SWEEP_S,
    proc: Path = PROC,
) -> dict[int, str]:
    """SIGKILL every process of ``run_ids`` (and of the sessions/groups of ``leaders``, and the
    ``known`` ones from :func:`current_members`).

    Freezes the whole tree first (SIGSTOP, look again, until nothing new appears), so that parent
    links survive long enough to be followed and nothing forks while it is being killed. Returns
    ``{pid: run id}`` of the processes signalled. Blocking; bounded by ``within_s``.
    """
    if not run_ids and not leaders and not known:
        return {}
    hunt = _Hunt(frozenset(run_ids), dict(leaders or {}), known, proc, time.monotonic() + within_s)
    hunt.freeze()
    if hunt.signalled:
        hunt.kill_until_gone()
    return hunt.signalled


@dataclass
class _Hunt:
    """One :func:`end_processes` call: what to look for, and what was found and signalled."""

    run_ids: frozenset[str]
    leaders: dict[int, str]
    known: Known | None
    proc: Path
    deadline: float
    signalled: dict[int, str] = field(default_factory=dict)
    tried: set[int] = field(default_factory=set)  # includes those we may not signal (EPERM)

    def look(self) -> dict[int, str]:
        return _live_members(self.run_ids, self.leaders, self.known, self.proc)

    def freeze(self) -> None:
        """SIGSTOP every member, and look again, until a look finds nobody new."""
        for _ in range(_MAX_STOP_ROUNDS):
            fresh = {p: r for p, r in self.look().items() if p not in self.tried}
            if not fresh:
                return
            self.tried.update(fresh)
            self.signalled.update({p: r for p, r in fresh.items() if _signal(p, signal.SIGSTOP)})
            if time.monotonic() >= self.deadline:
                return

    def kill_until_gone(self) -> None:
        for pid in self.signalled:
            _signal(pid, signal.SIGKILL)
        while time.monotonic() < self.deadline:
            # Dying processes still show for a moment; those we may not signal are not waited for.
            left = {p: r for p, r in self.look().items() if p in self.signalled or p not in self.tried}
            if not left:
                return
            for pid, run_id in left.items():
                self.tried.add(pid)
                if _signal(pid, signal.SIGKILL):
                    self.signalled[pid] = run_id
            time.sleep(_KILL_RECHECK_S)


class DeferredSweeper:
    """Ends what finished runs left behind, for many runs in one ``/proc`` pass, off the loop.

    A run whose shell exited cleanly (its group empty, its pipes closed) rarely leaves anything,
    and a ``/proc`` pass per run would cost more than the run. Such runs are queued here and swept
    together at most every ``interval_s``, in a worker thread. If the loop shuts down first, the
    queue is swept synchronously while the sweeper's task is cancelled.
    """

    def __init__(self, interval_s: float = 0.5, proc: Path = PROC) -> None:
        self.interval_s = interval_s
        self.proc = proc
        self._pending: set[str] = set()
        self._task: asyncio.Task[None] | None = None
        self.killed: dict[int, str] = {}  # the last pass's victims (for logs and tests)

    def add(self, run_id: str) -> None:
        self._pending.add(run_id)
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._drain(), name="shell-sweeper")

    async def _drain(self) -> None:
        try:
            while self._pending:
                await asyncio.sleep(self.interval_s)
                batch, self._pending = self._pending, set()
                self.killed = await asyncio.to_thread(end_processes, batch, proc=self.proc)
                log_leftovers_killed(self.killed, when="after exit")
        except asyncio.CancelledError:
            if self._pending:
                batch, self._pending = self._pending, set()
                log_leftovers_killed(end_processes(batch, within_s=0.5, proc=self.proc),
                                     when="at shutdown")
            raise


def log_leftovers_killed(killed: Mapping[int, str], *, when: str) -> None:
    """One ``run.leftovers_killed`` event per run that had processes left (nothing if none)."""
    by_run: dict[str, list[int]] = {}
    for pid, run_id in killed.items():
        by_run.setdefault(run_id, []).append(pid)
    log = get_logger("scheduler.shell")
    for run_id, pids in by_run.items():
        log.warning("run.leftovers_killed", run_id=run_id, count=len(pids), pids=sorted(pids)[:20],
                    when=when)


__all__ = [
    "PROC",
    "RUN_ID_VARIABLE",
    "DeferredSweeper",
    "Known",
    "ProcessInfo",
    "current_members",
    "end_processes",
    "log_leftovers_killed",
    "members",
    "proc_available",
    "snapshot",
]

