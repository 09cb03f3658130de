"""Every process a shell run starts ends with the run: real processes, ``setsid`` escapes,
cleared environments, cancellation, a spawning loop, and the watchdog's check command."""

from __future__ import annotations

import asyncio
import os
import random
import shutil
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import kill_quietly, pids_with_marker, process_alive
from scheduler.models.records import Job, Run
from scheduler.strategies.process_tree import (
    DeferredSweeper,
    ProcessInfo,
    current_members,
    members,
    proc_available,
    snapshot,
)
from scheduler.strategies.shell import run_shell_command
from scheduler.strategies.watchdog import WatchdogStrategy

pytestmark = [
    pytest.mark.skipif(sys.platform != "linux" or not proc_available(), reason="needs Linux /proc"),
    pytest.mark.skipif(shutil.which("setsid") is None, reason="needs setsid(1)"),
]

SHELL = "/bin/bash"
ENV = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C"}


def _mark() -> str:
    """A unique ``sleep`` argument, so this test's processes can be found by their command line."""
    return f"300.{random.randint(100000, 999999)}"


def _tagged(run_id: str) -> list[int]:
    return [p.pid for p in snapshot().values() if p.run_id == run_id and p.alive]


async def _gone(pids: list[int], within_s: float = 5.0) -> bool:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        if not any(process_alive(pid) for pid in pids):
            return True
        await asyncio.sleep(0.05)
    return False


def _pids_in(path: Path) -> list[int]:
    return [int(word) for word in path.read_text().split()] if path.exists() else []


async def _read_pids(path: Path, count: int = 1, within_s: float = 5.0) -> list[int]:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        pids = _pids_in(path)
        if len(pids) >= count:
            return pids
        await asyncio.sleep(0.02)
    raise AssertionError(f"{path} never held {count} pids")


@pytest.fixture
def cleanup() -> Iterator[list[str]]:
    """Marks whose processes are killed after the test, whatever happened."""
    marks: list[str] = []
    yield marks
    for mark in marks:
        for pid in pids_with_marker(mark):
            kill_quietly(pid)


# --- the membership rule (a hand-made process table) ---------------------------------------------


def _info(pid: int, ppid: int, *, pgid: int = 0, sid: int = 0, run_id: str | None = None,
          started: int = 0, state: str = "S") -> ProcessInfo:
    return ProcessInfo(pid=pid, ppid=ppid, pgid=pgid or pid, sid=sid or pid, state=state,
                       run_id=run_id, started=started)


def test_members_by_tag_session_group_known_and_descent() -> None:
    table = {p.pid: p for p in [
        _info(10, 1, run_id="r"),                      # tagged
        _info(11, 10),                                 # its child, environment cleared
        _info(20, 1, sid=500),                         # in the shell's session
        _info(21, 1, pgid=500, sid=21),                # in the shell's group
        _info(30, 1, started=77),                      # seen before (pid and start time)
        _info(31, 30),
        _info(40, 1, started=78),                      # same pid as a known one? no: other start
        _info(50, 1, run_id="other"),
    ]}
    found = members(table, {"r"}, {500: "r"}, {(30, 77): "r", (40, 99): "r"})
    assert found == {10: "r", 11: "r", 20: "r", 21: "r", 30: "r", 31: "r"}


# --- real processes -------------------------------------------------------------------------------


async def test_timeout_ends_a_setsid_escapee_and_everything_tagged(tmp_path: Path, cleanup) -> None:
    mark = _mark()
    cleanup.append(mark)
    pidfile = tmp_path / "escaped.pid"
    run_id = f"test-{mark}"
    # The run id comes in through the environment, as the shell job strategy sets it.
    result = await run_shell_command(
        f"setsid sleep {mark} & echo $! > {pidfile}; sleep {mark}",
        shell=SHELL, timeout_s=1, env={**ENV, "SCHEDULER_RUN_ID": run_id}, kill_grace_s=0.5,
    )
    assert result.timed_out
    (escaped,) = await _read_pids(pidfile)
    assert await _gone([escaped]), "the setsid'd sleep outlived the timeout"
    assert _tagged(run_id) == []
    assert pids_with_marker(mark) == []


async def test_timeout_ends_a_child_that_left_the_session_and_cleared_its_environment(
    tmp_path: Path, cleanup
) -> None:
    mark = _mark()
    cleanup.append(mark)
    pidfile = tmp_path / "hidden.pid"
    result = await run_shell_command(
        f"env -i setsid sleep {mark} & echo $! > {pidfile}; sleep {mark}",
        shell=SHELL, timeout_s=1, env=ENV, run_id=f"test-{mark}", kill_grace_s=0.5,
    )
    assert result.timed_out
    assert await _gone(await _read_pids(pidfile)), "found only through its parent, before the TERM"


async def test_clean_exit_ends_a_daemonized_leftover_at_once_without_a_sweeper(
    tmp_path: Path, cleanup
) -> None:
    mark = _mark()
    cleanup.append(mark)
    pidfile = tmp_path / "daemon.pid"
    result = await run_shell_command(
        f"(setsid sleep {mark} >/dev/null 2>&1 & echo $! > {pidfile}); echo started",
        shell=SHELL, timeout_s=10, env=ENV, run_id=f"test-{mark}",
    )
    assert result.exit_code == 0 and result.stdout == b"started\n"
    # No sweeper to defer to: the hunt happened before the call returned.
    assert not any(process_alive(pid) for pid in await _read_pids(pidfile))


async def test_clean_exit_hands_the_leftover_to_the_sweeper(tmp_path: Path, cleanup) -> None:
    mark = _mark()
    cleanup.append(mark)
    pidfile = tmp_path / "daemon.pid"
    sweeper = DeferredSweeper(interval_s=0.05)
    # The pause lets setsid(1) leave the group, so nothing is left in it when the shell exits.
    result = await run_shell_command(
        f"(setsid sleep {mark} >/dev/null 2>&1 & echo $! > {pidfile}); sleep 0.3; echo started",
        shell=SHELL, timeout_s=10, env=ENV, run_id=f"test-{mark}", sweeper=sweeper,
    )
    assert result.exit_code == 0
    leftover = await _read_pids(pidfile)
    assert await _gone(leftover)
    assert set(sweeper.killed) == set(leftover)


async def test_pipe_holder_outside_the_group_is_ended_and_the_run_returns(tmp_path: Path, cleanup) -> None:
    mark = _mark()
    cleanup.append(mark)
    pidfile = tmp_path / "holder.pid"
    started = time.monotonic()
    result = await run_shell_command(
        f"setsid sleep {mark} & echo $! > {pidfile}; echo done",
        shell=SHELL, timeout_s=20, env=ENV, run_id=f"test-{mark}", sweeper=DeferredSweeper(),
    )
    assert time.monotonic() - started < 10
    assert result.exit_code == 0 and result.stdout == b"done\n"
    assert not any(process_alive(pid) for pid in await _read_pids(pidfile))


async def test_cancellation_ends_escapees(tmp_path: Path, cleanup) -> None:
    mark = _mark()
    cleanup.append(mark)
    pidfile = tmp_path / "escaped.pid"
    run_id = f"test-{mark}"
    task = asyncio.create_task(run_shell_command(
        f"setsid sleep {mark} & echo $! > {pidfile}; sleep {mark}",
        shell=SHELL, timeout_s=60, env=ENV, run_id=run_id, kill_grace_s=0.5,
    ))
    escaped = await _read_pids(pidfile)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert not any(process_alive(pid) for pid in escaped)
    assert _tagged(run_id) == []


async def test_a_spawning_loop_is_stopped_and_killed_at_the_timeout(cleanup) -> None:
    mark = _mark()
    cleanup.append(mark)
    run_id = f"test-{mark}"
    command = (f"for i in $(seq 60); do (setsid sleep {mark} &); done; "
               f"(while true; do setsid sleep {mark} & sleep 0.01; done) & sleep {mark}")
    result = await run_shell_command(command, shell=SHELL, timeout_s=2, env=ENV, run_id=run_id,
                                     kill_grace_s=0.2)
    assert result.timed_out
    assert _tagged(run_id) == []
    assert pids_with_marker(mark) == []


async def test_current_members_names_processes_by_pid_and_start_time(tmp_path: Path, cleanup) -> None:
    mark = _mark()
    cleanup.append(mark)
    run_id = f"test-{mark}"
    pidfile = tmp_path / "child.pid"
    task = asyncio.create_task(run_shell_command(
        f"sleep {mark} & echo $! > {pidfile}; wait", shell=SHELL, timeout_s=30, env=ENV, run_id=run_id,
    ))
    try:
        (child,) = await _read_pids(pidfile)
        known = current_members({run_id})
        assert child in {pid for pid, _started in known}
        assert set(known.values()) == {run_id}
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


async def test_watchdog_check_leaves_nothing_behind(tmp_path: Path, cleanup) -> None:
    mark = _mark()
    cleanup.append(mark)
    pidfile = tmp_path / "check.pid"
    strategy = WatchdogStrategy(shell=SHELL, environ=ENV)
    strategy.sweeper.interval_s = 0.05
    job = Job.from_row({
        "id": f"job-{mark}", "job_type": "watchdog", "run_timeout_ms": 10000,
        "watchdog_check_cmd": f"(setsid sleep {mark} >/dev/null 2>&1 & echo $! > {pidfile}); exit 0",
        "watchdog_started_at": None, "watchdog_timeout_min": None, "watchdog_alert_channel": None,
        "watchdog_alert_target": None, "watchdog_target_label": "t", "watchdog_self_destruct": 0})
    outcome = await strategy.execute(job, Run.from_row({"id": f"test-{mark}"}))
    assert outcome.status == "ok"
    assert await _gone(await _read_pids(pidfile)), "the check's daemonized child outlived the run"
