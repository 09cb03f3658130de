"""The database attacked under the real daemon: values it cannot store, a full disk, damaged
pages, files deleted, an empty file, a lock held past the shutdown. Each ends in a clear state:
recorded, refused with one line, or stopped non-zero; never a daemon that claims work it cannot
record."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import add_job, pids_with_marker, runs_of, shell_job, wait_until

NEVER_SOON = "0 0 1 1 *"


def write(db_path: Path, sql: str, params: tuple[Any, ...] = ()) -> None:
    conn = sqlite3.connect(db_path, timeout=10)
    try:
        conn.execute(sql, params)
        conn.commit()
    finally:
        conn.close()


def wait_exit(d, timeout: float) -> int:
    try:
        return d.proc.wait(timeout)
    except subprocess.TimeoutExpired:
        d.kill()
        raise AssertionError(f"daemon still running after {timeout}s") from None


def test_a_run_whose_end_cannot_be_stored_is_recorded_as_error_and_the_daemon_goes_on(
    cli, daemon, db, db_path
) -> None:
    job = add_job(cli, shell_job(name="overflowing", payload_message="exit 3", delete_after_run=0,
                             schedule_cron=NEVER_SOON))
    # A database written by something else: a counter at the top of SQLite's integer range.
    write(db_path, "UPDATE jobs SET consecutive_errors = ? WHERE id = ?", (2**63 - 1, job["id"]))
    d = daemon()
    assert cli("jobs", "run", job["id"])[0] == 0
    (run,) = wait_until(lambda: [r for r in runs_of(db, job["id"]) if r["status"] != "running"],
                        timeout=15, message="the run recorded")
    assert run["status"] == "error" and "could not be recorded" in run["error_message"]
    d.wait_for_event("run.record_failed", lambda e: e["run_id"] == run["id"], timeout=5)
    other = add_job(cli, shell_job(name="next", payload_message="echo fine", delete_after_run=0),
                "--in", "1s")
    wait_until(lambda: [r for r in runs_of(db, other["id"]) if r["status"] == "ok"], timeout=15)
    assert d.events("daemon.task_failed") == []
    assert d.stop() == 0


# -- a full disk, for longer than any retry schedule ---------------------------------------------


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 2 MiB tmpfs of our own (needs root; skipped elsewhere unless CI requires it)."""
    mount = tmp_path / "small"
    mount.mkdir()
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m,mode=0700", "tmpfs", str(mount)],
                            capture_output=True, text=True)
    if result.returncode != 0:
        if os.environ.get("SCHEDULER_TEST_REQUIRE_MOUNT"):
            pytest.fail(f"cannot mount a tmpfs: {result.stderr.strip()}")
        pytest.skip(f"cannot mount a tmpfs here: {result.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], capture_output=True)


def fill(disk: Path) -> Path:
    filler = disk / "filler"
    with open(filler, "wb") as handle, contextlib.suppress(OSError):
        while True:
            handle.write(b"\0" * 65536)
            handle.flush()
    return filler


def test_a_long_full_disk_delays_the_record_but_never_loses_or_doubles_a_run(
    cli, daemon, small_disk: Path, tmp_path: Path
) -> None:
    db_path = small_disk / "scheduler.db"
    stamps = tmp_path / "executions"  # outside the full disk
    env = {"SCHEDULER_DB": str(db_path), "SCHEDULER_HEARTBEAT_CHECK_MS": "5000",
           "SCHEDULER_STALE_THRESHOLD_S": "10"}
    code, out, stdout, stderr = cli("jobs", "add", shell_job(
        name="once", payload_message=f"echo run >> {stamps}; sleep 2; head -c 20000 /dev/zero | tr '\\0' x",
        delivery_guarantee="at-least-once", delete_after_run=0), "--in", "2s", env=env)
    assert code == 0, stdout + stderr
    job = out["job"]
    d = daemon(env=env)
    d.wait_for_event("run.started", lambda e: e["job_id"] == job["id"], timeout=15)
    filler = fill(small_disk)
    d.wait_for_event("run.record_pending", timeout=15)
    time.sleep(20)  # longer than stale threshold + health check: the old daemon gave up by now
    assert d.proc.poll() is None
    filler.unlink()
    event = d.wait_for_event("run.finished", lambda e: e["job_id"] == job["id"], timeout=40)
    assert event["status"] == "ok"
    rows = _runs(db_path, job["id"])
    assert [r["status"] for r in rows] == ["ok"]
    assert d.stop() == 0
    # A restart neither crashes nor replays it.
    d2 = daemon(env=env)
    time.sleep(2)
    assert d2.events("run.crashed") == []
    assert d2.stop() == 0
    assert [r["status"] for r in _runs(db_path, job["id"])] == ["ok"]
    assert stamps.read_text().split() == ["run"]


def _runs(db_path: Path, job_id: str) -> list[dict[str, Any]]:
    conn = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=10)
    conn.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in conn.execute("SELECT * FROM runs WHERE job_id = ?", (job_id,))]
    finally:
        conn.close()


# -- damaged, deleted and empty databases ---------------------------------------------------------


def corrupt_table(db_path: Path, table: str) -> None:
    """Overwrite the b-tree header of ``table``'s root page in the main file (WAL folded in)."""
    conn = sqlite3.connect(db_path, timeout=10)
    try:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        page_size = conn.execute("PRAGMA page_size").fetchone()[0]
        (root,) = conn.execute("SELECT rootpage FROM sqlite_master WHERE name = ?", (table,)).fetchone()
    finally:
        conn.close()
    with open(db_path, "r+b") as handle:
        handle.seek((root - 1) * page_size)
        handle.write(b"\xff" * 64)


def test_a_damaged_database_is_refused_at_start_with_the_fix(cli, daemon, db_path) -> None:
    add_job(cli, shell_job(name="a", schedule_cron=NEVER_SOON))
    corrupt_table(db_path, "jobs")
    d = daemon(wait=False)
    code = wait_exit(d, 20)
    assert code == 4
    lines = [line for line in d.lines if line.strip()]
    assert len(lines) == 1, lines
    assert "integrity" in lines[0] or "damaged" in lines[0]
    assert ".recover" in lines[0]


def test_damage_found_while_running_stops_the_daemon(cli, daemon, db_path) -> None:
    add_job(cli, shell_job(name="a", schedule_cron=NEVER_SOON))
    d = daemon()
    corrupt_table(db_path, "jobs")
    # Another process writes elsewhere: the daemon's cache is dropped and it reads the damage.
    with contextlib.suppress(sqlite3.Error):
        write(db_path, "INSERT INTO delivery_aliases (alias, channel, target) VALUES ('x', 'c', 't')")
    code = wait_exit(d, 30)
    assert code == 4
    event = d.wait_for_event("db.corrupt", timeout=1)
    assert ".recover" in event["fix"]
    code, out, _, _ = cli("status")
    assert code != 0 or not out["daemon"]["running"]


def test_a_deleted_database_stops_the_daemon(cli, daemon, db_path) -> None:
    add_job(cli, shell_job(name="a", schedule_cron=NEVER_SOON))
    d = daemon()
    for suffix in ("", "-wal", "-shm"):
        with contextlib.suppress(FileNotFoundError):
            Path(str(db_path) + suffix).unlink()
    assert wait_exit(d, 10) == 5
    event = d.wait_for_event("db.gone", timeout=1)
    assert "deleted" in event["error"]


def test_a_deleted_lock_file_stops_the_daemon(cli, daemon, db_path) -> None:
    d = daemon()
    Path(str(db_path) + ".lock").unlink()
    assert wait_exit(d, 10) == 5
    assert "lock file" in d.wait_for_event("db.gone", timeout=1)["error"]


def test_an_empty_database_file_is_refused_not_taken_for_new(cli, daemon, db_path) -> None:
    db_path.touch(mode=0o600)
    d = daemon(wait=False)
    assert wait_exit(d, 15) == 4
    lines = [line for line in d.lines if line.strip()]
    assert len(lines) == 1 and "empty" in lines[0] and "0 bytes" in lines[0], lines
    code, _, stdout, stderr = cli("jobs", "list", json_mode=False)
    assert code == 4 and stdout == "" and "empty" in stderr and len(stderr.splitlines()) == 1
    assert db_path.stat().st_size == 0  # nothing was written into it


# -- shutdown within its bound, whatever the state -----------------------------------------------


def test_sigterm_ends_the_daemon_in_time_while_the_database_stays_locked(cli, daemon, db_path) -> None:
    job = add_job(cli, shell_job(name="ends under a lock", payload_message="sleep 1", delete_after_run=0),
              "--in", "1s")
    d = daemon(env={"SCHEDULER_SHUTDOWN_GRACE_MS": "2000"})
    d.wait_for_event("run.started", lambda e: e["job_id"] == job["id"], timeout=15)
    holder = sqlite3.connect(db_path, timeout=10, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # no writer gets in until we let go
    try:
        # Every store call waits out the 5 s busy timeout meanwhile, so the run's ending queues
        # behind the periodic work (prune, expiry, the claim, the instance heartbeat).
        d.wait_for_event("run.record_pending", timeout=45)
        started = time.monotonic()
        d.proc.send_signal(signal.SIGTERM)
        code = wait_exit(d, 2 + 15)
        took = time.monotonic() - started
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert code in (0, 1), code
    assert took < 2 + 12, took
    assert d.events("daemon.unrecorded") or d.events("daemon.exit_forced")


def test_a_second_sigint_ends_the_daemon_at_once(cli, daemon) -> None:
    mark = f"{os.getpid()}{int(time.time() * 1000) % 100000}"
    job = add_job(cli, shell_job(name="stubborn", payload_message=f"trap '' TERM; sleep 60.{mark}",
                             run_timeout_ms=120000), "--in", "1s")
    d = daemon(env={"SCHEDULER_SHUTDOWN_GRACE_MS": "60000"})
    d.wait_for_event("run.started", lambda e: e["job_id"] == job["id"], timeout=15)
    wait_until(lambda: pids_with_marker(mark), message="the job's process")
    d.proc.send_signal(signal.SIGINT)
    d.wait_for_event("daemon.draining", timeout=5)
    started = time.monotonic()
    d.proc.send_signal(signal.SIGINT)
    wait_exit(d, 10)
    assert time.monotonic() - started < 4
    wait_until(lambda: not pids_with_marker(mark), timeout=5, message="the job's process killed")


def test_status_reads_the_daemon_state_and_its_runs_name_it(cli, daemon, db) -> None:
    import socket

    d = daemon()
    code, out, _, _ = cli("status")
    assert code == 0 and out["daemon"]["running"] and out["daemon"]["state"] == "serving"
    instance = out["daemon"]["instance"]
    assert instance == d.wait_for_event("daemon.started")["instance"]
    assert instance.endswith("@" + socket.gethostname())
    job = add_job(cli, shell_job(name="owned", delete_after_run=0), "--in", "1s")
    (run,) = wait_until(lambda: db("SELECT * FROM runs WHERE job_id = ? AND status = 'ok'", (job["id"],)),
                        timeout=15)
    assert run["owner"] == instance
    assert d.stop() == 0
    assert json.loads(json.dumps(cli("status")[1]))["daemon"]["running"] is False


# -- the maintenance cadences the docs name ---------------------------------------------------------


def test_expired_ledger_entries_are_pruned_at_start(cli, daemon, db, db_path) -> None:
    assert cli("jobs", "list")[0] == 0  # creates the database
    write(db_path, "INSERT INTO idempotency_ledger (key, job_id, run_id, status, claimed_at, expires_at) "
          "VALUES ('old-key', 'j', 'r', 'released', '2020-01-01 00:00:00', '2020-01-08 00:00:00')")
    d = daemon()
    d.wait_for_event("prune.done", timeout=10)
    assert db("SELECT * FROM idempotency_ledger WHERE key = 'old-key'") == []
    assert d.stop() == 0


def test_a_message_another_process_queued_goes_out_within_the_delivery_cadence(
    cli, daemon, db, db_path, fake_gateway
) -> None:
    d = daemon(env={"OPENCLAW_GATEWAY_URL": fake_gateway.url, "SCHEDULER_MESSAGE_DELIVERY_MS": "5000"})
    d.wait_for_event("gateway.up", timeout=10)
    time.sleep(1)  # the sender is idle now
    write(db_path, "INSERT INTO messages (id, from_agent, to_agent, kind, body, channel, delivery_to, "
          "status, created_at, metadata) VALUES ('m1', 'scheduler', '@outbound', 'result', "
          "'hello from elsewhere', 'telegram', '12345', 'pending', datetime('now'), '{}')")
    wait_until(lambda: db("SELECT 1 FROM messages WHERE id = 'm1' AND status = 'delivered'"),
               timeout=9, message="the message delivered within the 5 s cadence")
    assert d.stop() == 0
