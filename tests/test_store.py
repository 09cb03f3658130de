"""The store on real SQLite files: migrations, claims, finishing, recovery."""

from __future__ import annotations

import shutil
import sqlite3
import stat
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from conftest import reference_fixture
from scheduler.models.job import new_job_row
from scheduler.models.validation import validate_job_spec
from scheduler.store.api import Claim, ClaimBatch, Finish, FinishPolicy
from scheduler.store.sqlite import claims as claim_store
from scheduler.store.sqlite import idempotency, queue, recovery
from scheduler.store.sqlite import jobs as job_store
from scheduler.store.sqlite.db import Database
from scheduler.store.sqlite.finish import finish_runs
from scheduler.store.sqlite.migrations import REFERENCE_SCHEMA_VERSION, SCHEMA_REVISION, migrate
from scheduler.timeutil import to_sqlite

NOW = datetime(2026, 11, 26, 12, 0, 0, tzinfo=UTC)
NOW_TEXT = to_sqlite(NOW)


def _open(path: Path) -> Database:
    db = Database.open(path)
    migrate(db)
    return db


def _shell_job(db: Database, **overrides: Any) -> dict[str, Any]:
    spec = {
        "name": "job",
        "schedule_cron": "*/5 * * * *",
        "session_target": "shell",
        "payload_message": "true",
        "run_timeout_ms": 1000,
        "delivery_mode": "none",
        "origin": "system",
        **overrides,
    }
    return job_store.insert_job(db, new_job_row(validate_job_spec(spec, now=NOW), NOW)).as_row()


def _next_fire(job: dict[str, Any]) -> str:
    return to_sqlite(NOW + timedelta(minutes=5))


def _claim(db: Database, limit: int = 10) -> ClaimBatch:
    return claim_store.claim_due(db, NOW_TEXT, limit, {"shell"}, _next_fire)


def _finish(db: Database, claim: Claim, status: str, columns: dict[str, Any] | None = None,
            backoff: str = NOW_TEXT, retry: str = NOW_TEXT) -> dict[str, Any] | None:
    policy = FinishPolicy(now_text=NOW_TEXT, backoff_until=lambda n: backoff, retry_at=lambda n: retry)
    return finish_runs(db, [Finish(claim, status, 5, columns or {})], policy)[0].job


@pytest.fixture
def db(tmp_path: Path) -> Database:
    database = _open(tmp_path / "s.db")
    yield database
    database.close()


def test_new_database_is_private_and_at_reference_version(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "s.db"
    db = _open(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    versions = [r["version"] for r in db.query("SELECT version FROM schema_migrations ORDER BY 1")]
    assert versions == list(range(1, REFERENCE_SCHEMA_VERSION + 1))
    assert db.scalar("PRAGMA user_version") == SCHEMA_REVISION
    assert db.scalar("PRAGMA journal_mode") == "wal"
    assert db.scalar("PRAGMA foreign_keys") == 1
    migrate(db)  # a second run changes nothing and does not fail
    assert db.scalar("SELECT COUNT(*) FROM schema_migrations") == REFERENCE_SCHEMA_VERSION
    db.close()


def test_old_database_gains_missing_columns_without_losing_rows(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    raw = sqlite3.connect(path)
    raw.executescript(
        "CREATE TABLE jobs (id TEXT PRIMARY KEY, name TEXT NOT NULL, enabled INTEGER NOT NULL DEFAULT 1,"
        " schedule_cron TEXT NOT NULL, session_target TEXT NOT NULL DEFAULT 'isolated',"
        " payload_kind TEXT NOT NULL, payload_message TEXT NOT NULL);"
        "INSERT INTO jobs VALUES ('j1', 'legacy', 1, '0 * * * *', 'shell', 'shellCommand', 'true');"
    )
    raw.commit()
    raw.close()
    db = _open(path)
    job = job_store.require_job(db, "j1").as_row()
    assert job["name"] == "legacy"
    assert job["schedule_tz"] == "UTC"
    assert job["output_store_limit_bytes"] == 65536
    assert job["job_type"] == "standard"
    assert "created_at" in job  # non-constant default added as a plain column
    db.close()


def test_reference_fixture_is_complete_and_opens_in_place(tmp_path: Path) -> None:
    copy = tmp_path / "ref.db"
    shutil.copy(reference_fixture(), copy)
    before = sqlite3.connect(copy).execute("SELECT id, name FROM jobs ORDER BY id").fetchall()
    db = _open(copy)
    from scheduler.store.sqlite.migrations import missing_columns

    assert missing_columns(db) == []
    after = [(j["id"], j["name"]) for j in db.query("SELECT id, name FROM jobs ORDER BY id")]
    assert after == before and len(after) == 8
    db.close()


def test_due_cron_job_is_claimed_once_and_advanced(db: Database) -> None:
    job = _shell_job(db)
    job_store.update_job(db, job["id"], {"next_run_at": NOW_TEXT}, NOW_TEXT)
    batch = _claim(db)
    assert [c.job.id for c in batch.claims] == [job["id"]]
    claim = batch.claims[0]
    assert claim.run.status == "running" and claim.source == "cron"
    assert claim.run.idempotency_key == idempotency.occurrence_key(job["id"], NOW_TEXT)
    assert job_store.require_job(db, job["id"]).next_run_at == to_sqlite(NOW + timedelta(minutes=5))
    assert _claim(db).claims == []


def test_claim_respects_the_limit_and_leaves_the_rest_due(db: Database) -> None:
    for i in range(5):
        job = _shell_job(db, name=f"j{i}")
        job_store.update_job(db, job["id"], {"next_run_at": NOW_TEXT}, NOW_TEXT)
    assert len(_claim(db, limit=2).claims) == 2
    assert len(_claim(db, limit=10).claims) == 3


def test_two_connections_racing_claim_each_occurrence_once(tmp_path: Path) -> None:
    path = tmp_path / "race.db"
    setup = _open(path)
    for i in range(40):
        job = _shell_job(setup, name=f"j{i}")
        job_store.update_job(setup, job["id"], {"next_run_at": NOW_TEXT}, NOW_TEXT)
    setup.close()
    claimed: list[str] = []
    lock = threading.Lock()
    barrier = threading.Barrier(4)

    def worker() -> None:
        db = Database.open(path)
        barrier.wait()
        for _ in range(20):
            batch = claim_store.claim_due(db, NOW_TEXT, 3, {"shell"}, _next_fire)
            with lock:
                claimed.extend(c.run.job_id for c in batch.claims)
        db.close()

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(claimed) == 40 and len(set(claimed)) == 40


def test_overlap_skip_records_a_skipped_run(db: Database) -> None:
    job = _shell_job(db)
    job_store.update_job(db, job["id"], {"next_run_at": NOW_TEXT}, NOW_TEXT)
    assert len(_claim(db).claims) == 1
    job_store.update_job(db, job["id"], {"next_run_at": NOW_TEXT}, NOW_TEXT)
    # same scheduled text again would collide on the idempotency key; move the occurrence
    later = to_sqlite(NOW - timedelta(seconds=1))
    job_store.update_job(db, job["id"], {"next_run_at": later}, NOW_TEXT)
    batch = _claim(db)
    assert batch.claims == []
    assert [r.status for r in batch.skipped] == ["skipped"]
    assert "overlap" in batch.skipped[0].error_message


def test_manual_dispatch_runs_disabled_job_and_closes_its_row(db: Database) -> None:
    job = _shell_job(db, enabled=False)
    row = queue.enqueue_dispatch(db, job["id"], "manual", NOW_TEXT, backlog_cap=25)
    assert row is not None
    batch = _claim(db)
    assert len(batch.claims) == 1 and batch.claims[0].dispatch_id == row["id"]
    claim = batch.claims[0]
    after = _finish(db, claim, "ok", {"summary": "done"})
    assert after is not None and after.enabled == 0 and after.last_status == "ok"
    status = db.scalar("SELECT status FROM job_dispatch_queue WHERE id = ?", (row["id"],))
    assert status == "done"


def test_backlog_cap_counts_only_live_rows(db: Database) -> None:
    job = _shell_job(db)
    for _ in range(2):
        assert queue.enqueue_dispatch(db, job["id"], "manual", NOW_TEXT, backlog_cap=2)
    assert queue.enqueue_dispatch(db, job["id"], "manual", NOW_TEXT, backlog_cap=2) is None
    db.query("UPDATE job_dispatch_queue SET status = 'done'")
    assert queue.enqueue_dispatch(db, job["id"], "manual", NOW_TEXT, backlog_cap=2)


def test_failed_cron_run_backs_off_and_success_resets(db: Database) -> None:
    job = _shell_job(db)
    job_store.update_job(db, job["id"], {"next_run_at": NOW_TEXT}, NOW_TEXT)
    claim = _claim(db).claims[0]
    far = to_sqlite(NOW + timedelta(hours=1))
    after = _finish(db, claim, "error", backoff=far)
    assert after is not None
    assert after.consecutive_errors == 1 and after.next_run_at == far
    job_store.update_job(db, job["id"], {"next_run_at": to_sqlite(NOW - timedelta(seconds=3))}, NOW_TEXT)
    claim = _claim(db).claims[0]
    after = _finish(db, claim, "ok", backoff=far)
    assert after is not None and after.consecutive_errors == 0


def test_at_job_is_deleted_or_disabled_after_its_run(db: Database) -> None:
    keep = _shell_job(db, name="keep", schedule_kind="at", schedule_at=NOW_TEXT, delete_after_run=False)
    drop = _shell_job(db, name="drop", schedule_kind="at", schedule_at=NOW_TEXT, delete_after_run=True)
    claims = {c.job.name: c for c in _claim(db).claims}
    assert set(claims) == {"keep", "drop"} and claims["keep"].source == "at"
    _finish(db, claims["keep"], "ok")
    _finish(db, claims["drop"], "ok")
    assert job_store.require_job(db, keep["id"]).enabled == 0
    assert job_store.get_job(db, drop["id"]) is None


def test_orphans_become_crashed_and_claimed_rows_return(db: Database) -> None:
    job = _shell_job(db, schedule_kind="at", schedule_at=NOW_TEXT, delete_after_run=False)
    claim = _claim(db).claims[0]
    other = _shell_job(db, name="other")
    row = queue.enqueue_dispatch(db, other["id"], "manual", NOW_TEXT)
    assert row is not None
    db.query("UPDATE job_dispatch_queue SET status = 'claimed' WHERE id = ?", (row["id"],))
    crashed = recovery.recover_orphans(db, NOW_TEXT).crashed
    assert [r.id for r in crashed] == [claim.run.id]
    run = db.query_one("SELECT * FROM runs WHERE id = ?", (claim.run.id,))
    assert run is not None and run["status"] == "crashed" and run["finished_at"] == NOW_TEXT
    assert job_store.require_job(db, job["id"]).enabled == 0
    assert db.scalar("SELECT status FROM job_dispatch_queue WHERE id = ?", (row["id"],)) == "pending"
    assert db.scalar("SELECT COUNT(*) FROM runs WHERE status = 'running'") == 0


def test_unknown_ids_raise_not_found(db: Database) -> None:
    from scheduler.errors import NotFoundError

    with pytest.raises(NotFoundError, match="Job not found: nope"):
        job_store.delete_job(db, "nope")
    with pytest.raises(NotFoundError):
        job_store.update_job(db, "nope", {"name": "x"}, NOW_TEXT)


def test_text_that_is_not_utf8_reads_with_replacement_characters(tmp_path: Path) -> None:
    db = _open(tmp_path / "s.db")
    job = _shell_job(db, name="bytes")
    db.conn.execute("UPDATE jobs SET name = CAST(X'6f6bff21' AS TEXT) WHERE id = ?", (job["id"],))
    assert job_store.require_job(db, job["id"]).name == "ok\ufffd!"
    assert [row["name"] for row in job_store.list_jobs(db)] == ["ok\ufffd!"]
    db.close()
