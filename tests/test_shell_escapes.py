"""The real daemon ends every process of a shell run: at the run's timeout, at SIGTERM, and after
a clean exit, including processes that left the run's process group with ``setsid``."""

from __future__ import annotations

import random
import shutil
import signal
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from conftest import kill_quietly, pids_with_marker, process_alive, shell_job, wait_until
from scheduler.strategies.process_tree import proc_available, snapshot

pytestmark = [
    pytest.mark.skipif(sys.platform != "linux" or not proc_available(), reason="needs Linux /proc"),
    pytest.mark.skipif(shutil.which("setsid") is None, reason="needs setsid(1)"),
]

NEVER_SOON = "0 0 1 1 *"


def _add(cli, **fields: Any) -> dict[str, Any]:
    code, out, stdout, stderr = cli("jobs", "add", shell_job(schedule_cron=NEVER_SOON, run_now=True,
                                                             **fields))
    assert code == 0, stdout + stderr
    return out["job"]


def _mark() -> str:
    return f"300.{random.randint(100000, 999999)}"


def _tagged(run_id: str) -> list[int]:
    return [p.pid for p in snapshot().values() if p.run_id == run_id and p.alive]


def _pids(path: Path) -> list[int]:
    return [int(word) for word in path.read_text().split()] if path.exists() else []


@pytest.fixture
def marks() -> Any:
    found: list[str] = []
    yield found
    for mark in found:
        for pid in pids_with_marker(mark):
            kill_quietly(pid)


def test_timeout_ends_the_setsid_escapee(cli, daemon, db, tmp_path, marks) -> None:
    mark = _mark()
    marks.append(mark)
    pidfile = tmp_path / "escaped.pid"
    d = daemon()
    job = _add(cli, name="escapes", run_timeout_ms=1000,
               payload_message=f"setsid sleep {mark} & echo $! > {pidfile}; sleep {mark}")
    finished = d.wait_for_event("run.finished", lambda e: e["job_id"] == job["id"], timeout=20)
    (run,) = db("SELECT * FROM runs WHERE job_id = ?", (job["id"],))
    assert run["status"] == "timeout" and finished["run_id"] == run["id"]
    (escaped,) = wait_until(lambda: _pids(pidfile), timeout=5, message="pid written")
    wait_until(lambda: not process_alive(escaped), timeout=5, message="setsid'd sleep gone")
    assert _tagged(run["id"]) == []
    assert pids_with_marker(mark) == []
    assert d.stop() == 0


def test_sigterm_mid_run_ends_the_setsid_escapee(cli, daemon, db, tmp_path, marks) -> None:
    mark = _mark()
    marks.append(mark)
    pidfile = tmp_path / "escaped.pid"
    d = daemon({"SCHEDULER_SHUTDOWN_GRACE_MS": "500"})
    job = _add(cli, name="escapes at shutdown", run_timeout_ms=120000,
               payload_message=f"setsid sleep {mark} & echo $! > {pidfile}; sleep {mark}")
    (escaped,) = wait_until(lambda: _pids(pidfile), timeout=10, message="escapee started")
    wait_until(lambda: len(pids_with_marker(mark)) >= 2, timeout=5, message="both sleeps running")
    (run,) = db("SELECT * FROM runs WHERE job_id = ?", (job["id"],))
    started = time.monotonic()
    assert d.stop(signal.SIGTERM, timeout=15) == 0
    assert time.monotonic() - started < 10
    assert not process_alive(escaped)
    assert _tagged(run["id"]) == []
    assert pids_with_marker(mark) == []
    (run,) = db("SELECT * FROM runs WHERE job_id = ?", (job["id"],))
    assert run["status"] == "cancelled"


def test_a_daemonized_child_is_ended_after_a_clean_exit(cli, daemon, db, tmp_path, marks) -> None:
    mark = _mark()
    marks.append(mark)
    pidfile = tmp_path / "daemonized.pid"
    d = daemon()
    # A double fork into a new session with its output elsewhere: the group is empty and the
    # pipes are closed when the shell exits, so only the run id finds it.
    job = _add(cli, name="daemonizes",
               payload_message=f"(setsid sleep {mark} >/dev/null 2>&1 < /dev/null & echo $! > {pidfile});"
                               " sleep 0.3; echo started")
    d.wait_for_event("run.finished", lambda e: e["job_id"] == job["id"], timeout=20)
    (run,) = db("SELECT * FROM runs WHERE job_id = ?", (job["id"],))
    assert run["status"] == "ok" and run["shell_stdout"] == "started"
    (leftover,) = _pids(pidfile)
    wait_until(lambda: not process_alive(leftover), timeout=10, message="daemonized sleep gone")
    killed = d.wait_for_event("run.leftovers_killed", lambda e: e["run_id"] == run["id"], timeout=5)
    assert leftover in killed["pids"]
    assert d.stop() == 0
