"""Retention: ``db prune [--dry-run]``, ``db check``, ``db vacuum`` and the daemon's prune pass,
on a real database file with real artifact directories. Runs are written straight into the
file, backdated, so a test needs no hours of scheduling."""

from __future__ import annotations

import hashlib
import os
import sqlite3
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from conftest import CliResult, add_job, query, shell_job

Cli = Callable[..., CliResult]


def sql(db_path: Path, statement: str, params: tuple[Any, ...] = ()) -> None:
    conn = sqlite3.connect(db_path, timeout=10)
    try:
        conn.execute(statement, params)
        conn.commit()
    finally:
        conn.close()


def job(cli: Cli, name: str = "nightly") -> str:
    # Disabled: the daemon tests must not add runs of their own.
    return str(add_job(cli, shell_job(name=name, schedule_cron="0 3 * * *", enabled=False))["id"])


def old_run(db_path: Path, job_id: str, minutes_ago: int, status: str = "ok",
            with_files: bool = True) -> str:
    run_id = str(uuid.uuid4())
    sql(db_path, "INSERT INTO runs (id, job_id, status, started_at, finished_at) "
                 "VALUES (?, ?, ?, datetime('now', ?), datetime('now', ?))",
        (run_id, job_id, status, f"-{minutes_ago} minutes", f"-{minutes_ago} minutes"))
    if with_files:
        folder = artifacts(db_path) / run_id
        folder.mkdir(parents=True)
        (folder / "stdout.txt").write_text("x" * 100)
    return run_id


def artifacts(db_path: Path) -> Path:
    return db_path.parent / "artifacts" / "runs"


def run_ids(db_path: Path) -> set[str]:
    return {r["id"] for r in query(db_path, "SELECT id FROM runs")}


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_db_prune_keeps_the_newest_runs_of_each_job_and_removes_the_others_files(
    cli: Cli, db_path: Path
) -> None:
    busy, quiet = job(cli, "busy"), job(cli, "quiet")
    busy_runs = [old_run(db_path, busy, minutes) for minutes in (60, 50, 40, 30, 20, 10)]
    quiet_runs = [old_run(db_path, quiet, minutes) for minutes in (500, 400)]
    code, out, stdout, stderr = cli("db", "prune", env={"SCHEDULER_RUNS_KEEP_PER_JOB": "3"})
    assert code == 0, stdout + stderr
    assert out["runs"] == {"over_cap": 3, "too_old": 0}
    assert out["files"]["run_dirs"] == 3 and out["files"]["files"] == 3
    kept = set(busy_runs[3:] + quiet_runs)
    assert run_ids(db_path) == kept
    assert {p.name for p in artifacts(db_path).iterdir()} == kept


def test_the_default_cap_is_the_references_hundred(cli: Cli, db_path: Path) -> None:
    nightly = job(cli)
    runs = [old_run(db_path, nightly, 200 - i, with_files=False) for i in range(102)]
    code, out, _, _ = cli("db", "prune")
    assert code == 0 and out["runs"]["over_cap"] == 2
    assert run_ids(db_path) == set(runs[2:])


def test_dry_run_counts_what_would_go_and_writes_nothing(cli: Cli, db_path: Path) -> None:
    nightly = job(cli)
    for minutes in (30, 20, 10):
        old_run(db_path, nightly, minutes)
    sql(db_path, "INSERT INTO approvals (id, job_id, status, resolved_at) "
                 "VALUES ('old', ?, 'approved', datetime('now', '-40 days'))", (nightly,))
    before, dirs_before = digest(db_path), sorted(artifacts(db_path).iterdir())
    code, out, stdout, stderr = cli("db", "prune", "--dry-run", env={"SCHEDULER_RUNS_KEEP_PER_JOB": "1"})
    assert code == 0, stdout + stderr
    assert out["dry_run"] is True and out["runs"]["over_cap"] == 2 and out["approvals"] == 1
    assert out["files"]["run_dirs"] == 2
    assert digest(db_path) == before
    assert sorted(artifacts(db_path).iterdir()) == dirs_before
    code, _, stdout, _ = cli("db", "prune", "--dry-run", json_mode=False,
                             env={"SCHEDULER_RUNS_KEEP_PER_JOB": "1"})
    assert code == 0 and "nothing deleted" in stdout and "runs        2 (over_cap 2" in stdout


def test_runs_still_needed_survive_the_cap(cli: Cli, db_path: Path) -> None:
    nightly = job(cli)
    running = old_run(db_path, nightly, 90, status="running")
    waiting = old_run(db_path, nightly, 85, status="awaiting_approval")
    chain_source = old_run(db_path, nightly, 80)
    retried = old_run(db_path, nightly, 75)
    unsent = old_run(db_path, nightly, 70)
    done_source = old_run(db_path, nightly, 65)
    plain = old_run(db_path, nightly, 60)
    newest = old_run(db_path, nightly, 1)
    for queue_id, status, source, retry_of in (("q1", "pending", chain_source, None),
                                               ("q2", "pending", None, retried),
                                               ("q3", "done", done_source, None)):
        sql(db_path, "INSERT INTO job_dispatch_queue (id, job_id, dispatch_kind, status, "
                     "scheduled_for, source_run_id, retry_of_run_id) "
                     "VALUES (?, ?, 'chain', ?, datetime('now'), ?, ?)",
            (queue_id, nightly, status, source, retry_of))
    sql(db_path, "INSERT INTO messages (id, from_agent, to_agent, body, status, run_id) "
                 "VALUES ('m1', 'scheduler', '@outbound', 'report', 'pending', ?)", (unsent,))
    code, out, stdout, stderr = cli("db", "prune", env={"SCHEDULER_RUNS_KEEP_PER_JOB": "1"})
    assert code == 0 and out["runs"]["over_cap"] == 2, stdout + stderr
    assert run_ids(db_path) == {running, waiting, chain_source, retried, unsent, newest}
    assert not (artifacts(db_path) / plain).exists() and not (artifacts(db_path) / done_source).exists()
    assert (artifacts(db_path) / running).is_dir()


def test_an_age_limit_prunes_old_runs_under_the_cap(cli: Cli, db_path: Path) -> None:
    nightly = job(cli)
    old_run(db_path, nightly, 8 * 24 * 60)
    recent = old_run(db_path, nightly, 6 * 24 * 60)
    code, out, _, _ = cli("db", "prune", env={"SCHEDULER_RUNS_KEEP_DAYS": "7"})
    assert code == 0 and out["runs"] == {"over_cap": 0, "too_old": 1}
    assert run_ids(db_path) == {recent}


def test_resolved_approvals_go_after_thirty_days_pending_ones_never(cli: Cli, db_path: Path) -> None:
    nightly = job(cli)
    for approval_id, status, resolved in (("gone", "rejected", "-31 days"),
                                          ("recent", "approved", "-29 days"),
                                          ("waiting", "pending", None)):
        sql(db_path, "INSERT INTO approvals (id, job_id, status, requested_at, resolved_at) "
                     "VALUES (?, ?, ?, datetime('now', '-60 days'), datetime('now', ?))",
            (approval_id, nightly, status, resolved))
    code, out, _, _ = cli("db", "prune")
    assert code == 0 and out["approvals"] == 1
    assert {r["id"] for r in query(db_path, "SELECT id FROM approvals")} == {"recent", "waiting"}


def test_orphaned_artifact_directories_go_once_they_are_an_hour_old(cli: Cli, db_path: Path) -> None:
    nightly = job(cli)
    live = old_run(db_path, nightly, 600)
    stale, fresh = artifacts(db_path) / "gone-long-ago", artifacts(db_path) / "just-written"
    for folder in (stale, fresh):
        folder.mkdir(parents=True)
        (folder / "stdout.txt").write_text("out")
    two_hours_ago = time.time() - 7200
    os.utime(stale, (two_hours_ago, two_hours_ago))
    os.utime(artifacts(db_path) / live, (two_hours_ago, two_hours_ago))
    code, out, _, _ = cli("db", "prune")
    assert code == 0 and out["files"]["orphan_dirs"] == 1
    assert {p.name for p in artifacts(db_path).iterdir()} == {live, "just-written"}


def test_a_bad_retention_setting_is_one_line_and_changes_nothing(cli: Cli, db_path: Path) -> None:
    nightly = job(cli)
    runs = {old_run(db_path, nightly, minutes) for minutes in (3, 2, 1)}
    code, out, _, stderr = cli("db", "prune", env={"SCHEDULER_RUNS_KEEP_PER_JOB": "none"})
    assert code == 2 and out == {"ok": False, "error": out["error"]}
    assert "SCHEDULER_RUNS_KEEP_PER_JOB" in out["error"] and "Traceback" not in stderr
    assert run_ids(db_path) == runs


def test_db_check_reports_integrity_schema_and_what_would_go(cli: Cli, db_path: Path) -> None:
    nightly = job(cli)
    for minutes in (2, 1):
        old_run(db_path, nightly, minutes)
    code, out, stdout, stderr = cli("db", "check", env={"SCHEDULER_RUNS_KEEP_PER_JOB": "1"})
    assert code == 0, stdout + stderr
    assert out["integrity"] == ["ok"] and out["schema_version"] == 23 and out["schema_current"]
    assert out["would_prune"]["runs"]["over_cap"] == 1 and out["bytes"] > 0
    assert len(run_ids(db_path)) == 2


def test_db_check_fails_on_a_damaged_file(cli: Cli, db_path: Path) -> None:
    nightly = job(cli)
    for minutes in range(400, 0, -1):
        old_run(db_path, nightly, minutes, with_files=False)
    # Overwrite the middle pages (runs' data, not the header): a sound header, damaged content.
    with db_path.open("r+b") as raw:
        size = raw.seek(0, os.SEEK_END)
        raw.seek(size // 2)
        raw.write(b"\x55" * 8192)
    code, _, stdout, stderr = cli("db", "check", json_mode=False)
    assert code == 4 and "Integrity:  ok" not in stdout and "Traceback" not in stderr


def test_the_daemon_prunes_at_start_and_vacuum_waits_for_it_to_stop(
    cli: Cli, db_path: Path, daemon: Callable[..., Any]
) -> None:
    nightly = job(cli)
    runs = [old_run(db_path, nightly, minutes) for minutes in (50, 40, 30, 20, 10)]
    d = daemon(env={"SCHEDULER_RUNS_KEEP_PER_JOB": "2"})
    event = d.wait_for_event("prune.done", timeout=30)
    assert event["over_cap"] == 3 and event["run_dirs"] == 3
    assert run_ids(db_path) == set(runs[3:])
    assert {p.name for p in artifacts(db_path).iterdir()} == set(runs[3:])
    code, out, _, _ = cli("db", "vacuum")
    assert code != 0 and "stop the daemon" in out["error"]
    assert d.stop() == 0
    code, out, stdout, stderr = cli("db", "vacuum")
    assert code == 0 and out["bytes_after"] > 0, stdout + stderr


@pytest.mark.parametrize("variable", ["SCHEDULER_RUNS_KEEP_PER_JOB", "SCHEDULER_APPROVALS_KEEP_DAYS"])
def test_the_daemon_refuses_a_retention_setting_out_of_bounds(
    db_path: Path, daemon: Callable[..., Any], variable: str
) -> None:
    d = daemon(env={variable: "0"}, wait=False)
    assert d.proc.wait(30) != 0
    assert any(variable in line for line in d.lines)


@pytest.mark.parametrize(("table", "column"), [("messages", "run_id"), ("approvals", "run_id"),
                                               ("job_dispatch_queue", "source_run_id"),
                                               ("job_dispatch_queue", "retry_of_run_id")])
def test_deleting_a_run_finds_the_rows_naming_it_by_index(
    cli: Cli, db_path: Path, table: str, column: str
) -> None:
    """Each deleted run makes SQLite look for the rows whose foreign key names it; without an
    index on the column, that is a scan of the whole table per run (an hourly prune of 1,000
    runs beside 100,000 messages held the write lock for minutes)."""
    job(cli)
    plan = query(db_path, f"EXPLAIN QUERY PLAN SELECT 1 FROM {table} WHERE {column} = ?", ("x",))
    details = " ".join(row["detail"] for row in plan)
    assert "USING INDEX" in details or "USING COVERING INDEX" in details, details


def test_db_prune_deletes_jobs_past_their_ttl_and_the_dry_run_only_counts(cli: Cli,
                                                                         db_path: Path) -> None:
    expired, recent = job(cli, "expired"), job(cli, "recent")
    for job_id, hours in ((expired, 49), (recent, 1)):
        sql(db_path, "UPDATE jobs SET ttl_hours = 48, last_status = 'ok', "
                     "last_run_at = datetime('now', ?) WHERE id = ?", (f"-{hours} hours", job_id))
    code, out, stdout, stderr = cli("db", "prune", "--dry-run")
    assert code == 0, stdout + stderr
    assert out["jobs"] == {"finished_one_shots": 0, "orphaned_children": 0, "ttl_expired": 1}
    assert {j["id"] for j in query(db_path, "SELECT id FROM jobs")} == {expired, recent}
    code, out, stdout, stderr = cli("db", "prune")
    assert code == 0 and out["jobs"]["ttl_expired"] == 1, stdout + stderr
    assert [j["id"] for j in query(db_path, "SELECT id FROM jobs")] == [recent]
    code, _, stdout, _ = cli("db", "prune", json_mode=False)
    assert "jobs        0 (finished_one_shots 0, orphaned_children 0, ttl_expired 0)" in stdout
