"""Run leases, their recovery while serving, and fencing, through a real daemon on SQLite.

One daemon holds a SQLite file, so the other instance is played by the test: it takes a run
away from the daemon as a second instance would (the run's owner vanishes and its lease
expires; or the test's own store handle recovers the run as instance B while the daemon is
stopped with SIGSTOP). The daemon's lease-recovery task, its heartbeat's ``run.lease_lost`` and
its fenced finish are then seen at work. What every backend's store must do is pinned in
test_store_contract.py ("leases and fencing"); several daemons on one PostgreSQL database are
tested with that backend.
"""

from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import subprocess
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from conftest import Daemon, add_job, kill_quietly, pids_with_marker, runs_of, shell_job, wait_until
from scheduler.models.job import new_job_row
from scheduler.models.validation import validate_job_spec
from scheduler.store import open_store
from scheduler.store.api import Owner
from scheduler.strategies.process_tree import RUN_ID_VARIABLE
from scheduler.timeutil import sqlite_now

Db = Callable[..., list[dict[str, Any]]]
LEASES = {"SCHEDULER_LEASE_S": "5", "SCHEDULER_RUN_HEARTBEAT_MS": "1000"}
VANISHED = "vanished-instance@gone-host"
NOW = datetime(2026, 11, 26, 11, 0, 0, tzinfo=UTC)


def sleeper_command(mark: str, marker_file: Path | None = None) -> str:
    """A shell command that sleeps long (``sleep 120.<mark>``, found by its mark); with
    ``marker_file``, only the first time: a replay finds the file and ends at once."""
    sleep = f"sleep 120.{mark}"
    if marker_file is None:
        return sleep
    return f"if [ -e {marker_file} ]; then echo replayed; else touch {marker_file}; {sleep}; fi"


def sleeping(mark: str) -> bool:
    """A ``sleep 120.<mark>`` process is alive (its shell's command line names it too)."""
    for pid in pids_with_marker(f"120.{mark}"):
        try:
            if Path(f"/proc/{pid}/cmdline").read_bytes().startswith(b"sleep"):
                return True
        except OSError:
            continue
    return False


def start_job(cli: Callable[..., Any], d: Daemon, name: str, command: str,
              guarantee: str, **extra: Any) -> tuple[dict[str, Any], str]:
    job = add_job(cli, shell_job(name=name, payload_message=command, run_timeout_ms=120000,
                                 delivery_guarantee=guarantee, delete_after_run=0, **extra),
                  "--in", "1s")
    event = d.wait_for_event("run.started", lambda e: e["job_id"] == job["id"], timeout=20)
    return job, str(event["run_id"])


def hand_to_a_vanished_instance(db_path: Path, run_id: str) -> None:
    """What the run looks like when its owner died elsewhere: another owner, lease expired."""
    conn = sqlite3.connect(db_path, timeout=10)
    try:
        with conn:
            conn.execute("UPDATE runs SET owner = ?, lease_expires_at = '2000-01-01 00:00:00' "
                         "WHERE id = ? AND status = 'running'", (VANISHED, run_id))
    finally:
        conn.close()


def test_expired_leases_are_recovered_while_serving_and_their_work_stops(
        cli, daemon, db: Db, db_path: Path, tmp_path: Path) -> None:
    d = daemon(env=LEASES)
    least, most = str(random.randint(10**5, 10**6)), str(random.randint(10**5, 10**6))
    replayed_job, replayed_run = start_job(
        cli, d, "at least once", sleeper_command(least, tmp_path / "ran-once"), "at-least-once")
    crashed_job, crashed_run = start_job(cli, d, "at most once", sleeper_command(most),
                                         "at-most-once")
    wait_until(lambda: sleeping(least) and sleeping(most), timeout=15, message="both sleeping")

    for run_id in (replayed_run, crashed_run):
        hand_to_a_vanished_instance(db_path, run_id)

    for run_id, replayed in ((replayed_run, True), (crashed_run, False)):
        recovered = d.wait_for_event("run.recovered", lambda e, r=run_id: e["run_id"] == r,
                                     timeout=20)
        assert recovered["owner"] == VANISHED and recovered["replayed"] is replayed
        d.wait_for_event("run.lease_lost", lambda e, r=run_id: e["run_id"] == r, timeout=20)
    # The lost runs' processes are stopped, and nothing of their own is recorded for them.
    wait_until(lambda: not sleeping(least) and not sleeping(most), timeout=20,
               message="the lost runs' processes ended")
    for run_id in (replayed_run, crashed_run):
        (run,) = db("SELECT * FROM runs WHERE id = ?", (run_id,))
        assert run["status"] == "crashed" and run["lease_generation"] == 2
        assert VANISHED in run["error_message"] and "lease" in run["error_message"]
        assert [e for e in d.events("run.finished") if e["run_id"] == run_id] == []
    # At-least-once work is replayed (and this time ends at once); at-most-once is not.
    replay = wait_until(lambda: [r for r in runs_of(db, replayed_job["id"])
                                 if r["replay_of"] == replayed_run and r["status"] == "ok"],
                        timeout=20, message="the replay recorded ok")
    assert "replayed" in replay[0]["shell_stdout"]
    assert [r["id"] for r in runs_of(db, crashed_job["id"])] == [crashed_run]
    assert d.events("daemon.task_failed") == []
    assert d.stop() == 0


def test_a_daemon_stopped_past_its_lease_cannot_record_or_deliver_its_late_result(
        cli, daemon, db: Db, db_path: Path) -> None:
    d = daemon(env=LEASES)
    mark = str(random.randint(10**5, 10**6))
    _, run_id = start_job(
        cli, d, "late", f"sleep 3.{mark}; echo late-result", "at-most-once",
        delivery_mode="announce-always", delivery_channel="telegram", delivery_to="12345")
    wait_until(lambda: pids_with_marker(f"3.{mark}"), timeout=15, message="the job sleeping")
    d.proc.send_signal(signal.SIGSTOP)
    try:
        # Instance B, on the same database, finds the lease expired and takes the run over,
        # while the stopped daemon's job finishes its work.
        other = open_store(db_path)
        try:
            found = wait_until(
                lambda: other.recover_expired_leases(sqlite_now(), Owner("instance-b", "host-b"), 5)
                .crashed, timeout=30, interval=0.5, message="instance B recovered the run")
        finally:
            other.close()
        assert [r.id for r in found] == [run_id]
        wait_until(lambda: not pids_with_marker(f"3.{mark}"), timeout=15, message="the work ended")
    finally:
        d.proc.send_signal(signal.SIGCONT)

    # Whichever the daemon notices first, its lost lease or its work's end, the late result is
    # dropped: one outcome (B's), no delivery.
    seen = wait_until(lambda: [e for e in d.events("run.fenced") + d.events("run.lease_lost")
                               if e["run_id"] == run_id], timeout=20, message="fenced or lost")
    assert seen[0]["owner"] == d.events("daemon.started")[0]["instance"]
    (run,) = db("SELECT * FROM runs WHERE id = ?", (run_id,))
    assert run["status"] == "crashed" and run["shell_stdout"] is None
    assert db("SELECT id FROM messages WHERE run_id = ?", (run_id,)) == []
    assert [e for e in d.events("run.finished") if e["run_id"] == run_id] == []
    assert d.stop() == 0


@pytest.mark.parametrize("heartbeat_ms", ["5000", "9000"])
def test_a_heartbeat_as_long_as_the_lease_is_refused(daemon, heartbeat_ms: str) -> None:
    d = daemon(env={"SCHEDULER_LEASE_S": "5", "SCHEDULER_RUN_HEARTBEAT_MS": heartbeat_ms},
               wait=False)
    assert d.proc.wait(30) == 2
    d.kill()
    text = "\n".join(d.lines)
    assert "SCHEDULER_LEASE_S" in text and "SCHEDULER_RUN_HEARTBEAT_MS" in text
    assert "Traceback" not in text


def test_a_run_without_a_lease_on_a_shared_store_waits_for_its_heartbeat_to_age(tmp_path: Path) -> None:
    """A run of the reference (or of an older version) has no owner and no lease: at start-up
    on a shared store it counts as expired only once its heartbeat is older than a lease."""
    store = open_store(tmp_path / "s.db")
    try:
        spec = validate_job_spec(json.loads(shell_job(schedule_cron="* * * * *")), now=NOW)
        job = store.insert_job(new_job_row(spec, NOW))
        conn = store.db.conn  # type: ignore[attr-defined]
        # As the reference writes a run: no owner, no lease.
        conn.execute("INSERT INTO runs (id, job_id, status, started_at, last_heartbeat) "
                     "VALUES ('r', ?, 'running', '2026-11-26 11:59:00', '2026-11-26 11:59:50')",
                     (job.id,))
        base = type(store)
        store.__class__ = type("SharedSqliteStore", (base,), {"shared": property(lambda s: True)})
        me = Owner("instance-b", "host-b")
        assert store.recover_orphans("2026-11-26 12:00:10", me, 30).crashed == []
        (crashed,) = store.recover_orphans("2026-11-26 12:00:30", me, 30).crashed
        assert crashed.id == "r"
        assert "no lease" in (store.require_run("r").error_message or "")
    finally:
        store.close()


def test_processes_left_on_this_host_by_a_recovered_run_are_killed(
        cli, daemon, db: Db, db_path: Path) -> None:
    """An instance that died on this host (beside this daemon, on a shared database) leaves its
    runs' processes behind: the daemon that recovers the run kills them, so the work does not go
    on beside its replay."""
    d = daemon(env=LEASES)
    job = add_job(cli, shell_job(name="theirs", schedule_cron="0 0 1 1 *", delete_after_run=0,
                                 delivery_guarantee="at-least-once"))
    # The vanished instance claimed it (its claim is the test's, at the job's far fire time).
    other = open_store(db_path)
    try:
        (c,) = other.claim_due(str(job["next_run_at"]), 1, {"shell"}, lambda j: None,
                               Owner("vanished-instance", "gone-host"), 5).claims
    finally:
        other.close()
    mark = str(random.randint(10**5, 10**6))
    leftover = subprocess.Popen(["sleep", f"120.{mark}"], env={**os.environ, RUN_ID_VARIABLE: c.run.id},
                                start_new_session=True)
    try:
        hand_to_a_vanished_instance(db_path, c.run.id)
        d.wait_for_event("run.recovered", lambda e: e["run_id"] == c.run.id, timeout=20)
        killed = d.wait_for_event("run.orphan_killed", lambda e: e["run_id"] == c.run.id, timeout=20)
        assert killed["pid"] == leftover.pid
        assert leftover.wait(10) == -signal.SIGKILL
    finally:
        kill_quietly(leftover.pid)
        leftover.wait(5)
    (run,) = db("SELECT status FROM runs WHERE id = ?", (c.run.id,))
    assert run["status"] == "crashed"
    assert d.events("run.lease_lost") == []  # not this daemon's run
    assert d.stop() == 0
