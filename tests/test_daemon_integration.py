"""End-to-end: the real daemon (``python -m scheduler``) on a temp database, driven by the CLI."""

from __future__ import annotations

import itertools
import random
import shutil
import signal
import sqlite3
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from conftest import (
    kill_quietly,
    pids_with_marker,
    process_alive,
    query,
    reference_fixture,
    shell_job,
    wait_until,
)

NEVER_SOON = "0 0 1 1 *"  # a valid cron that will not fire during a test


def add(cli, *options: str, **fields: Any) -> dict[str, Any]:
    """``jobs add`` a shell job; return the stored row."""
    code, out, stdout, stderr = cli("jobs", "add", shell_job(**fields), *options)
    assert code == 0, stdout + stderr
    return out["job"]


def epoch(stored: str) -> float:
    """Stored UTC text ('YYYY-MM-DD HH:MM:SS') as a Unix timestamp."""
    return datetime.strptime(stored, "%Y-%m-%d %H:%M:%S").replace(tzinfo=UTC).timestamp()


def stamps(path: Path) -> list[float]:
    """Timestamps a job wrote with ``date +%s.%N >> path``."""
    return [float(line) for line in path.read_text().split()] if path.exists() else []


def runs_of(db, job_id: str) -> list[dict[str, Any]]:
    return db("SELECT * FROM runs WHERE job_id = ? ORDER BY started_at, rowid", (job_id,))


def marker() -> str:
    """A unique ``sleep`` argument, so this test's processes can be found in /proc."""
    return f"{random.randint(100000, 999999)}"


def _sleep_cmd(seconds: int, mark: str) -> str:
    return f"sleep {seconds}.{mark}"


# -- scheduling ----------------------------------------------------------------------------------


def test_at_job_fires_once_on_time(cli, daemon, db, tmp_path) -> None:
    d = daemon()
    deleted_out, kept_out = tmp_path / "deleted.txt", tmp_path / "kept.txt"
    deleted = add(cli, "--in", "2s", name="at deleted", payload_message=f"date +%s.%N >> {deleted_out}")
    kept = add(cli, "--in", "2s", name="at kept", delete_after_run=0,
               payload_message=f"date +%s.%N >> {kept_out}")
    assert deleted["delete_after_run"] == 1

    for job in (deleted, kept):
        d.wait_for_event("run.finished", lambda e, j=job: e["job_id"] == j["id"], timeout=10)
    time.sleep(1.5)  # room for a (wrong) second firing

    for job, out in ((deleted, deleted_out), (kept, kept_out)):
        fired = stamps(out)
        assert len(fired) == 1, f"{job['name']} ran {len(fired)} times"
        late = fired[0] - epoch(job["schedule_at"])
        assert 0 <= late <= 1.0, f"{job['name']} fired {late:.3f}s after schedule_at"
        assert len([e for e in d.events("run.started") if e["job_id"] == job["id"]]) == 1

    assert db("SELECT id FROM jobs WHERE id = ?", (deleted["id"],)) == []
    row = db("SELECT enabled, last_status FROM jobs WHERE id = ?", (kept["id"],))[0]
    assert row == {"enabled": 0, "last_status": "ok"}
    assert [r["status"] for r in runs_of(db, kept["id"])] == ["ok"]


def _next_local_fire(now: datetime, zone: str, hour: int, minute: int,
                     weekdays: set[int] | None = None) -> datetime:
    """The first UTC instant after ``now`` at hour:minute wall time in ``zone`` (on ``weekdays``,
    ISO numbering), computed with zoneinfo only. Skips the test on a DST-transition day."""
    tz = ZoneInfo(zone)
    today = now.astimezone(tz).date()
    for offset in range(9):
        day: date = today + timedelta(days=offset)
        if weekdays and day.isoweekday() not in weekdays:
            continue
        wall = datetime(day.year, day.month, day.day, hour, minute, tzinfo=tz)
        instant = wall.astimezone(UTC)
        if instant.astimezone(tz).replace(tzinfo=None) != wall.replace(tzinfo=None):
            pytest.skip(f"{day} is a DST transition day in {zone}")
        if instant > now:
            return instant
    raise AssertionError("no fire time within 9 days")


def test_cron_next_run_in_non_utc_zones(cli, daemon, db, db_path) -> None:
    cases = [
        ("0 9 * * 1-5", "Europe/Berlin", 9, 0, {1, 2, 3, 4, 5}),
        ("30 2 * * *", "America/New_York", 2, 30, None),
    ]
    before = datetime.now(UTC)
    jobs = [add(cli, name=f"cron {tz}", schedule_cron=expr, schedule_tz=tz) for expr, tz, *_ in cases]
    after = datetime.now(UTC)

    expected: dict[str, set[str]] = {}
    for job, (expr, tz, hour, minute, weekdays) in zip(jobs, cases, strict=True):
        options = {_next_local_fire(t, tz, hour, minute, weekdays) for t in (before, after)}
        expected[job["id"]] = {o.strftime("%Y-%m-%d %H:%M:%S") for o in options}
        assert job["next_run_at"] in expected[job["id"]], (expr, tz, job["next_run_at"], options)

        code, out, _, _ = cli("cron", "next", expr, "--tz", tz, "--count", "2")
        assert code == 0
        first = datetime.fromisoformat(out["next"][0])
        assert first.utcoffset() == first.astimezone(ZoneInfo(tz)).utcoffset()
        assert first.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S") in expected[job["id"]]

    # The daemon computes the same instants when a row has lost its next run.
    with sqlite3.connect(db_path) as conn:
        conn.execute("UPDATE jobs SET next_run_at = NULL")
    conn.close()
    daemon()
    rows = db("SELECT id, next_run_at FROM jobs")  # filled in at start-up, before daemon.started
    assert len(rows) == 2
    for row in rows:
        assert row["next_run_at"] in expected[row["id"]], row


@pytest.mark.slow
def test_seconds_cron_fires_repeatedly(cli, daemon, db, tmp_path) -> None:
    out = tmp_path / "fires.txt"
    d = daemon()
    job = add(cli, name="every 2s", schedule_cron="*/2 * * * * *", payload_message=f"date +%s.%N >> {out}")
    first = d.wait_for_event("run.finished", lambda e: e["job_id"] == job["id"], timeout=5)
    second = d.wait_for_event(
        "run.finished", lambda e: e["job_id"] == job["id"] and e["run_id"] != first["run_id"], timeout=5
    )
    assert first["status"] == second["status"] == "ok"
    assert second["next_run_at"] > first["next_run_at"]
    fired = stamps(out)
    assert len(fired) >= 2
    assert all(b - a >= 0.5 for a, b in itertools.pairwise(fired)), fired  # one run per occurrence
    assert db("SELECT next_run_at FROM jobs")[0]["next_run_at"] >= second["next_run_at"]


# -- outcomes ------------------------------------------------------------------------------------


def test_failing_job_records_error(cli, daemon, db) -> None:
    d = daemon()
    job = add(cli, name="fails", schedule_cron=NEVER_SOON, run_now=True,
              payload_message="echo boom >&2; exit 3")
    d.wait_for_event("run.finished", lambda e: e["job_id"] == job["id"], timeout=10)
    (run,) = runs_of(db, job["id"])
    assert run["status"] == "error"
    assert run["shell_exit_code"] == 3
    assert "boom" in run["shell_stderr"]
    assert run["error_message"] == "Shell exited with code 3"
    assert run["finished_at"] is not None
    row = db("SELECT consecutive_errors, last_status, enabled FROM jobs")[0]
    assert row == {"consecutive_errors": 1, "last_status": "error", "enabled": 1}


def test_long_job_does_not_delay_a_due_job(cli, daemon, db, tmp_path) -> None:
    d = daemon({"SCHEDULER_SHUTDOWN_GRACE_MS": "300"})
    mark = marker()
    long = add(cli, name="long", schedule_cron=NEVER_SOON, run_now=True, run_timeout_ms=30000,
               payload_message=_sleep_cmd(10, mark))
    d.wait_for_event("run.started", lambda e: e["job_id"] == long["id"], timeout=5)
    out = tmp_path / "short.txt"
    short = add(cli, "--in", "2s", name="short", payload_message=f"date +%s.%N >> {out}")
    d.wait_for_event("run.finished", lambda e: e["job_id"] == short["id"], timeout=8)

    (fired,) = stamps(out)
    late = fired - epoch(short["schedule_at"])
    assert 0 <= late <= 1.5, f"short job started {late:.3f}s after it was due"
    assert [r["status"] for r in runs_of(db, long["id"])] == ["running"]
    assert d.stop() == 0
    assert pids_with_marker(mark) == []


# -- shutdown, locking, crash --------------------------------------------------------------------


def test_sigterm_during_run_cancels_it_and_exits_0(cli, daemon, db) -> None:
    d = daemon({"SCHEDULER_SHUTDOWN_GRACE_MS": "1000"})
    mark = marker()
    job = add(cli, name="sleeper", schedule_cron=NEVER_SOON, run_now=True, run_timeout_ms=60000,
              payload_message=f"{_sleep_cmd(30, mark)}; echo done")
    d.wait_for_event("run.started", lambda e: e["job_id"] == job["id"], timeout=5)
    wait_until(lambda: pids_with_marker(mark), timeout=5, message="sleep started")

    t0 = time.monotonic()
    code = d.stop(signal.SIGTERM, timeout=15)
    assert code == 0
    assert time.monotonic() - t0 < 10
    (run,) = runs_of(db, job["id"])
    assert run["status"] == "cancelled"
    assert run["finished_at"] is not None
    assert db("SELECT COUNT(*) AS n FROM runs WHERE status = 'running'")[0]["n"] == 0
    assert pids_with_marker(mark) == []
    assert [e["event"] for e in d.logs][-1] == "daemon.stopped"


def test_second_daemon_is_refused(cli, daemon) -> None:
    first = daemon()
    second = daemon(wait=False)
    code = second.proc.wait(10)
    second.stop()
    assert code == 3
    assert len(second.lines) == 1, second.lines
    assert f"pid {first.pid}" in second.lines[0]
    assert "Traceback" not in second.lines[0]
    assert first.proc.poll() is None

    _, out, _, _ = cli("status")
    assert out["daemon"]["running"] is True
    assert out["daemon"]["pid"] == first.pid
    assert first.stop() == 0
    _, out, _, _ = cli("status")
    assert out["daemon"]["running"] is False


def test_crash_recovery_marks_run_crashed(cli, daemon, db) -> None:
    d = daemon()
    mark = marker()
    job = add(cli, "--in", "1s", name="crashy", run_timeout_ms=60000, payload_message=_sleep_cmd(30, mark))
    d.wait_for_event("run.started", lambda e: e["job_id"] == job["id"], timeout=6)
    orphans = wait_until(lambda: pids_with_marker(mark), timeout=5, message="sleep started")
    d.stop(signal.SIGKILL)
    for pid in orphans:  # the job's process group outlives a SIGKILLed daemon; clean it up
        kill_quietly(pid)
    assert [r["status"] for r in runs_of(db, job["id"])] == ["running"]

    d2 = daemon()
    d2.wait_for_event("run.crashed", timeout=5)
    (run,) = runs_of(db, job["id"])
    assert run["status"] == "crashed"
    assert run["finished_at"] is not None
    row = db("SELECT enabled, last_status FROM jobs WHERE id = ?", (job["id"],))[0]
    assert row == {"enabled": 0, "last_status": "crashed"}
    time.sleep(1)
    assert len(runs_of(db, job["id"])) == 1  # at-most-once: not run again
    assert db("SELECT COUNT(*) AS n FROM runs WHERE status = 'running'")[0]["n"] == 0


# -- isolation of the shell ----------------------------------------------------------------------


def test_shell_job_does_not_see_secrets(cli, daemon, db, tmp_path) -> None:
    d = daemon({
        "OPENCLAW_GATEWAY_TOKEN": "secret-xyz",
        "MY_API_KEY": "apikey-value-4711",
        "ALLOWED_SERVICE_TOKEN": "allowed-value-0815",
        "SCHEDULER_SHELL_ENV_ALLOW": "ALLOWED_SERVICE_TOKEN",
        "SCHEDULER_DEBUG": "1",
    })
    out = tmp_path / "env.txt"
    job = add(cli, name="env dump", schedule_cron=NEVER_SOON, run_now=True,
              payload_message=f"env > {out}; env")
    d.wait_for_event("run.finished", lambda e: e["job_id"] == job["id"], timeout=10)
    seen = out.read_text()
    for needle in ("OPENCLAW_GATEWAY_TOKEN", "secret-xyz", "MY_API_KEY", "apikey-value-4711"):
        assert needle not in seen, needle
    assert "\nPATH=" in "\n" + seen
    assert "ALLOWED_SERVICE_TOKEN=allowed-value-0815" in seen
    (run,) = runs_of(db, job["id"])
    assert run["status"] == "ok"
    assert "secret-xyz" not in (run["shell_stdout"] or "")
    assert d.stop() == 0
    assert d.lines, "the daemon logged nothing"
    assert not [line for line in d.lines if "secret-xyz" in line]


def test_timed_out_job_leaves_no_process(cli, daemon, db, tmp_path) -> None:
    d = daemon()
    pidfile = tmp_path / "grandchild.pid"
    job = add(cli, name="too slow", schedule_cron=NEVER_SOON, run_now=True, run_timeout_ms=1000,
              payload_message=f"sleep 60 & echo $! > {pidfile}; sleep 60")
    d.wait_for_event("run.finished", lambda e: e["job_id"] == job["id"], timeout=15)
    (run,) = runs_of(db, job["id"])
    assert run["status"] == "timeout"
    assert run["shell_timed_out"] == 1
    grandchild = int(pidfile.read_text())
    try:
        wait_until(lambda: not process_alive(grandchild), timeout=3, message="grandchild gone")
    finally:
        kill_quietly(grandchild)


# -- the reference database ----------------------------------------------------------------------


def test_reference_fixture_db_opens_and_runs(cli, daemon, db, db_path) -> None:
    shutil.copyfile(reference_fixture(), db_path)
    db_path.chmod(0o600)
    original = {r["id"]: r["name"] for r in query(db_path, "SELECT id, name FROM jobs")}
    assert len(original) == 8

    code, listed, _, err = cli("jobs", "list")
    assert code == 0, err
    assert {j["id"]: j["name"] for j in listed} == original

    d = daemon()
    # Let the daemon catch up on the fixture's overdue cron jobs first, so a manual run of the
    # same job is not skipped as an overlap.
    wait_until(
        lambda: not db("SELECT 1 FROM runs WHERE status = 'running'") and not db(
            "SELECT 1 FROM jobs WHERE enabled = 1 AND parent_id IS NULL AND session_target = 'shell' "
            "AND next_run_at <= strftime('%Y-%m-%d %H:%M:%S', 'now')"
        ),
        timeout=10, message="overdue fixture jobs handled",
    )
    by_name = {name: job_id for job_id, name in original.items()}
    finished = "SELECT * FROM runs WHERE dispatch_queue_id = ? AND status != 'running'"
    # shell_exit_code is NULL on success, as in the reference.
    for name, status, exit_code in (("fails 1", "error", 3), ("pool a 1", "ok", None)):
        code, out, _, err = cli("jobs", "run", by_name[name])
        assert code == 0, err
        run = wait_until(lambda o=out: db(finished, (o["dispatch_id"],)), timeout=10,
                         message=f"manual run of {name}")[0]
        assert (run["status"], run["shell_exit_code"]) == (status, exit_code), run

    assert d.stop() == 0
    assert not [e for e in d.logs if e.get("level") in ("error", "critical")]
    assert not [line for line in d.lines if "Traceback" in line]
    assert set(original) <= {r["id"] for r in query(db_path, "SELECT id FROM jobs")}
    assert query(db_path, "SELECT MAX(version) AS v FROM schema_migrations")[0]["v"] == 23


# -- waking and manual runs ----------------------------------------------------------------------


def test_cli_write_wakes_an_idle_daemon(cli, daemon, tmp_path) -> None:
    d = daemon({"SCHEDULER_WAKE_POLL_MS": "200"})
    add(cli, "--in", "1h", name="later")
    time.sleep(1.0)  # the daemon is now asleep until its 10 s tick
    out = tmp_path / "woke.txt"
    job = add(cli, "--in", "1s", name="soon", payload_message=f"date +%s.%N >> {out}")
    d.wait_for_event("run.finished", lambda e: e["job_id"] == job["id"], timeout=8)
    (fired,) = stamps(out)
    late = fired - epoch(job["schedule_at"])
    assert 0 <= late <= 2.0, f"ran {late:.3f}s after due"


def test_manual_run_of_disabled_cron_job(cli, daemon, db, tmp_path) -> None:
    out = tmp_path / "manual.txt"
    job = add(cli, name="disabled", enabled=False, schedule_cron="0 3 * * *",
              payload_message=f"echo ran >> {out}")
    d = daemon()
    code, queued, _, _ = cli("jobs", "run", job["id"])
    assert code == 0
    d.wait_for_event("run.finished", lambda e: e["job_id"] == job["id"], timeout=10)
    time.sleep(0.5)
    assert out.read_text() == "ran\n"
    (run,) = runs_of(db, job["id"])
    assert run["status"] == "ok"
    assert run["dispatch_queue_id"] == queued["dispatch_id"]
    row = db("SELECT enabled, next_run_at FROM jobs")[0]
    assert row == {"enabled": 0, "next_run_at": job["next_run_at"]}
    (dispatch,) = db("SELECT status FROM job_dispatch_queue")
    assert dispatch["status"] == "done"


@pytest.mark.slow
def test_overlap_skip_never_runs_twice_at_once(cli, daemon, db) -> None:
    d = daemon({"SCHEDULER_SHUTDOWN_GRACE_MS": "300"})
    mark = marker()
    job = add(cli, name="overlapping", schedule_cron="*/2 * * * * *", run_timeout_ms=30000,
              payload_message=_sleep_cmd(5, mark))
    d.wait_for_event("run.started", lambda e: e["job_id"] == job["id"], timeout=5)
    most_running = 0
    deadline = time.monotonic() + 3.5  # the first run sleeps 5 s
    while time.monotonic() < deadline:
        running = db("SELECT COUNT(*) AS n FROM runs WHERE job_id = ? AND status = 'running'", (job["id"],))
        most_running = max(most_running, running[0]["n"])
        time.sleep(0.1)
    runs = runs_of(db, job["id"])
    assert d.stop() == 0

    assert most_running == 1
    skipped = [r for r in runs if r["status"] == "skipped"]
    assert skipped, [r["status"] for r in runs]
    assert all("overlap" in r["error_message"] for r in skipped)
    first = runs[0]
    assert first["status"] == "running"  # still going when the skips were recorded
    assert all(r["started_at"] >= first["started_at"] for r in skipped)
    assert pids_with_marker(mark) == []


@pytest.mark.slow
def test_locked_database_delays_but_loses_nothing(cli, daemon, db_path, tmp_path) -> None:
    """Another process holds the write lock past the busy timeout while a job falls due: the
    daemon logs the database error, keeps running, and runs the job once the lock is gone."""
    d = daemon()
    out = tmp_path / "ran.txt"
    job = add(cli, "--in", "2s", name="under lock", payload_message=f"date +%s.%N >> {out}")
    holder = sqlite3.connect(db_path, timeout=1, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        d.wait_for_event("scheduler.db_error", timeout=15)
        assert d.proc.poll() is None, "the daemon died on a locked database"
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    d.wait_for_event("run.finished", lambda e: e["job_id"] == job["id"], timeout=15)
    assert len(stamps(out)) == 1
    assert d.stop() == 0


def test_restart_ends_the_processes_of_crashed_runs(cli, daemon, db, tmp_path) -> None:
    """A daemon killed with SIGKILL cannot stop its runs; the next start finds their processes
    by SCHEDULER_RUN_ID and ends them, so crashed work does not go on beside anything new."""
    mark = marker()
    d = daemon()
    job = add(cli, "--in", "1s", name="orphaned",
              payload_message=f"{_sleep_cmd(30, mark)} & {_sleep_cmd(30, mark)}; wait")
    d.wait_for_event("run.started", lambda e: e["job_id"] == job["id"], timeout=10)
    wait_until(lambda: len(pids_with_marker(mark)) >= 2, timeout=5, message="both sleeps started")
    d.proc.kill()
    d.proc.wait(10)
    survivors = pids_with_marker(mark)
    assert len(survivors) >= 2, "the processes should outlive a SIGKILLed daemon"
    try:
        again = daemon()
        killed = again.wait_for_event("run.orphan_killed", timeout=10)
        wait_until(lambda: not pids_with_marker(mark), timeout=5, message="orphans gone")
        (run,) = runs_of(db, job["id"])
        assert run["status"] == "crashed" and killed["run_id"] == run["id"]
        assert again.stop() == 0
    finally:
        for pid in survivors:
            kill_quietly(pid)


def test_shell_runs_know_their_run_and_job_ids(cli, daemon, db, tmp_path) -> None:
    out = tmp_path / "ids.txt"
    d = daemon()
    job = add(cli, "--in", "1s", name="ids", delete_after_run=0,
              payload_message=f'echo "$SCHEDULER_RUN_ID $SCHEDULER_JOB_ID" > {out}')
    d.wait_for_event("run.finished", lambda e: e["job_id"] == job["id"], timeout=10)
    (run,) = runs_of(db, job["id"])
    assert out.read_text().split() == [run["id"], job["id"]]
