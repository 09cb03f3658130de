"""Scheduling semantics on real SQLite files: retries, the idempotency ledger, replay of crashed
runs, resource pools, misfire grace, overlap queueing and the queue reaper."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from scheduler.models.job import new_job_row
from scheduler.models.validation import validate_job_spec
from scheduler.store.api import Claim, ClaimBatch
from scheduler.store.sqlite import claims as claim_store
from scheduler.store.sqlite import idempotency, queue, recovery
from scheduler.store.sqlite import jobs as job_store
from scheduler.store.sqlite.db import Database
from scheduler.store.sqlite.finish import Finish, Finished, FinishPolicy, finish_runs
from scheduler.store.sqlite.migrations import migrate
from scheduler.timeutil import to_sqlite

NOW = datetime(2026, 11, 26, 12, 0, 0, tzinfo=UTC)
NOW_TEXT = to_sqlite(NOW)
LATER = to_sqlite(NOW + timedelta(minutes=5))


def at(seconds: float) -> str:
    return to_sqlite(NOW + timedelta(seconds=seconds))


@pytest.fixture
def db(tmp_path: Path) -> Any:
    database = Database.open(tmp_path / "s.db")
    migrate(database)
    yield database
    database.close()


def add_job(db: Database, **overrides: Any) -> dict[str, Any]:
    spec = {
        "name": "job", "schedule_cron": "*/5 * * * *", "session_target": "shell",
        "payload_message": "true", "run_timeout_ms": 1000, "delivery_mode": "none",
        "origin": "system", **overrides,
    }
    job = job_store.insert_job(db, new_job_row(validate_job_spec(spec, now=NOW), NOW)).as_row()
    if job["schedule_kind"] == "cron":
        job = job_store.update_job(db, job["id"], {"next_run_at": NOW_TEXT}, NOW_TEXT).as_row()
    return job


def claim(db: Database, now_text: str = NOW_TEXT, limit: int = 50) -> ClaimBatch:
    return claim_store.claim_due(db, now_text, limit, {"shell"}, lambda job: LATER)


def finish(db: Database, c: Claim, status: str, now_text: str = NOW_TEXT,
           columns: dict[str, Any] | None = None) -> Finished:
    policy = FinishPolicy(now_text=now_text, backoff_until=lambda n: at(3600 * n),
                          retry_at=lambda n: at(30 * 2 ** (n - 1)))
    return finish_runs(db, [Finish(c, status, 10, columns or {})], policy)[0]


def run_row(db: Database, run_id: str) -> dict[str, Any]:
    row = db.query_one("SELECT * FROM runs WHERE id = ?", (run_id,))
    assert row is not None
    return row


# -- retries ------------------------------------------------------------------------------------


def test_retry_ladder_then_final_failure(db: Database) -> None:
    job = add_job(db, max_retries=2)
    first = claim(db).claims[0]
    done = finish(db, first, "error")
    assert done.retry is not None and done.retry["scheduled_for"] == at(30)
    assert done.retry["dispatch_kind"] == "retry" and done.retry["retry_of_run_id"] == first.run.id
    assert run_row(db, first.run.id)["retry_count"] == 1
    assert done.job is not None and done.job.consecutive_errors == 0  # not final yet
    assert done.job.last_status == "error"

    assert claim(db, at(29)).claims == []  # not due yet
    second = claim(db, at(30)).claims[0]
    assert second.source == "retry" and second.run.retry_of == first.run.id
    assert second.run.retry_count == 1
    assert second.run.idempotency_key == idempotency.chain_key(first.run.id, job["id"])
    assert second.run.replay_of is None
    done = finish(db, second, "timeout", now_text=at(30))
    assert done.retry is not None and done.retry["scheduled_for"] == at(60)  # 30 s × 2^(2−1)
    assert run_row(db, second.run.id)["retry_count"] == 2

    third = claim(db, at(60)).claims[0]
    assert third.run.retry_count == 2 and third.run.retry_of == second.run.id
    done = finish(db, third, "error", now_text=at(60))
    assert done.retry is None  # exhausted
    assert done.job is not None and done.job.consecutive_errors == 1
    assert done.job.next_run_at == at(3600)  # error backoff (1 h in this test's policy)
    statuses = db.query("SELECT status FROM job_dispatch_queue ORDER BY created_at")
    assert [r["status"] for r in statuses] == ["done", "done"]


def test_success_needs_no_retry_and_resets_errors(db: Database) -> None:
    job = add_job(db, max_retries=3)
    job_store.update_job(db, job["id"], {"consecutive_errors": 4}, NOW_TEXT)
    done = finish(db, claim(db).claims[0], "ok")
    assert done.retry is None and done.job is not None and done.job.consecutive_errors == 0


def test_no_retry_when_the_backlog_is_full(db: Database) -> None:
    job = add_job(db, max_retries=5, max_queued_dispatches=1, overlap_policy="allow")
    first = claim(db).claims[0]
    assert queue.enqueue_dispatch(db, job["id"], "manual", at(600)) is not None  # fills the cap
    done = finish(db, first, "error")
    assert done.retry is None
    assert done.job is not None and done.job.consecutive_errors == 1


def test_disabling_a_job_cancels_its_pending_retry_at_once(db: Database) -> None:
    job = add_job(db, max_retries=1)
    done = finish(db, claim(db).claims[0], "error")
    assert done.retry is not None
    manual = queue.enqueue_dispatch(db, job["id"], "manual", at(10))
    assert manual is not None
    job_store.update_job(db, job["id"], {"enabled": 0}, NOW_TEXT)
    # Cancelled by the disable itself, long before the retry would fall due.
    assert db.scalar("SELECT status FROM job_dispatch_queue WHERE id = ?", (done.retry["id"],)) == "cancelled"
    skipped = db.query("SELECT error_message, dispatch_queue_id FROM runs WHERE status = 'skipped'")
    assert skipped == [{"error_message": "job disabled; queued retry run cancelled",
                        "dispatch_queue_id": done.retry["id"]}]
    # A manual run still runs on a disabled job; nothing else is left to cancel.
    batch = claim(db, at(30))
    assert [c.dispatch_id for c in batch.claims] == [manual["id"]] and batch.skipped == []


def test_a_retry_row_of_a_disabled_job_is_still_cancelled_when_it_falls_due(db: Database) -> None:
    job = add_job(db, enabled=False)
    # Written by other software while the job was disabled (the disable found nothing to cancel).
    row = queue.enqueue_dispatch(db, job["id"], "retry", at(30))
    assert row is not None
    batch = claim(db, at(30))
    assert batch.claims == []
    assert [r.error_message for r in batch.skipped] == ["job disabled; queued retry run cancelled"]
    assert db.scalar("SELECT status FROM job_dispatch_queue WHERE id = ?", (row["id"],)) == "cancelled"


def test_failed_at_job_stays_until_its_last_retry(db: Database) -> None:
    job = add_job(db, schedule_kind="at", schedule_at=NOW_TEXT, delete_after_run=True, max_retries=1)
    done = finish(db, claim(db).claims[0], "error")
    assert done.retry is not None and done.job is not None and done.job.enabled == 1
    retry = claim(db, at(30)).claims[0]
    done = finish(db, retry, "ok", now_text=at(30))
    assert done.job is None and job_store.get_job(db, job["id"]) is None


# -- the idempotency ledger ------------------------------------------------------------------------


def test_occurrence_key_is_claimed_in_the_ledger(db: Database) -> None:
    job = add_job(db)
    c = claim(db).claims[0]
    key = idempotency.occurrence_key(job["id"], NOW_TEXT)
    entry = idempotency.get(db, key)
    assert entry is not None and entry["status"] == "claimed" and entry["run_id"] == c.run.id
    assert entry["expires_at"] == to_sqlite(NOW + timedelta(days=7))


def test_claimed_occurrence_is_skipped_with_a_record(db: Database) -> None:
    job = add_job(db)
    claim(db)
    job_store.update_job(db, job["id"], {"next_run_at": NOW_TEXT}, NOW_TEXT)  # clock stepped back
    batch = claim(db)
    assert batch.claims == []
    assert "already claimed" in batch.skipped[0].error_message


def test_released_key_can_be_dispatched_again(db: Database) -> None:
    """Reference defect §17 #5b: re-dispatch after a release collided on the unique index."""
    job = add_job(db)
    first = claim(db).claims[0]
    finish(db, first, "ok")
    key = idempotency.occurrence_key(job["id"], NOW_TEXT)
    released = idempotency.release(db, key, NOW_TEXT)
    assert released["status"] == "released" and released["released_at"] == NOW_TEXT
    job_store.update_job(db, job["id"], {"next_run_at": NOW_TEXT}, NOW_TEXT)
    again = claim(db).claims
    assert len(again) == 1 and again[0].run.idempotency_key == key
    assert run_row(db, first.run.id)["idempotency_key"] is None  # gave up its copy
    entry = idempotency.get(db, key)
    assert entry is not None and entry["status"] == "claimed" and entry["run_id"] == again[0].run.id


def test_prune_deletes_only_expired_entries(db: Database) -> None:
    add_job(db)
    claim(db)
    assert idempotency.prune(db, to_sqlite(NOW + timedelta(days=6))) == 0
    assert idempotency.prune(db, to_sqlite(NOW + timedelta(days=8))) == 1


# -- crash replay ---------------------------------------------------------------------------------


@pytest.mark.parametrize("guarantee", ["at-least-once", "at-most-once"])
def test_crashed_runs_replay_only_for_at_least_once(db: Database, guarantee: str) -> None:
    job = add_job(db, delivery_guarantee=guarantee)
    crashed_run = claim(db).claims[0].run
    found = recovery.recover_orphans(db, at(5))
    assert [r.id for r in found.crashed] == [crashed_run.id]
    assert run_row(db, crashed_run.id)["status"] == "crashed"
    key = idempotency.get(db, crashed_run.idempotency_key)
    assert key is not None and key["status"] == "released"
    replays = claim(db, at(5)).claims
    if guarantee == "at-most-once":
        assert found.replays == [] and replays == []
        return
    assert len(found.replays) == 1 and len(replays) == 1
    replay = replays[0].run
    assert replay.replay_of == crashed_run.id and replay.retry_of == crashed_run.id
    # A second start finds nothing more to replay: exactly once per crash.
    finish(db, replays[0], "ok", now_text=at(6))
    assert recovery.recover_orphans(db, at(7)).replays == []
    job_after = job_store.require_job(db, job["id"])
    assert job_after.last_status == "ok"


def test_replayed_run_that_crashes_again_is_replayed_again(db: Database) -> None:
    add_job(db, delivery_guarantee="at-least-once")
    claim(db)
    recovery.recover_orphans(db, at(1))
    replay = claim(db, at(1)).claims[0].run
    second = recovery.recover_orphans(db, at(2))
    assert [r["retry_of_run_id"] for r in second.replays] == [replay.id]


def test_at_most_once_at_job_is_disabled_after_a_crash(db: Database) -> None:
    job = add_job(db, schedule_kind="at", schedule_at=NOW_TEXT, delete_after_run=True)
    claim(db)
    recovery.recover_orphans(db, at(1))
    job_after = job_store.require_job(db, job["id"])
    assert job_after.enabled == 0 and job_after.last_status == "crashed"


# -- misfire, overlap (pools: test_pools.py) --------------------------------------------------


@pytest.mark.parametrize(("late_s", "runs"), [(30, True), (120, False)])
def test_misfire_grace(db: Database, late_s: int, runs: bool) -> None:
    add_job(db, misfire_grace_s=60)
    batch = claim(db, at(late_s))
    assert bool(batch.claims) is runs
    if not runs:
        message = batch.skipped[0].error_message
        assert "missed" in message and "misfire_grace_s 60" in message


def test_without_grace_a_late_occurrence_still_runs_once(db: Database) -> None:
    add_job(db)
    assert len(claim(db, at(86400)).claims) == 1
    assert claim(db, at(86400)).claims == []


def test_overlap_queue_runs_again_right_after(db: Database) -> None:
    job = add_job(db, overlap_policy="queue")
    first = claim(db).claims[0]
    job_store.update_job(db, job["id"], {"next_run_at": at(1)}, NOW_TEXT)
    batch = claim(db, at(1))
    assert batch.claims == [] and "overlap_policy queue" in batch.skipped[0].error_message
    assert job_store.require_job(db, job["id"]).queued_count == 1
    done = finish(db, first, "ok", now_text=at(2))
    assert done.job is not None and done.job.queued_count == 0 and done.job.next_run_at == at(2)
    assert len(claim(db, at(2)).claims) == 1


def test_overlap_allow_runs_concurrently(db: Database) -> None:
    job = add_job(db, overlap_policy="allow")
    claim(db)
    job_store.update_job(db, job["id"], {"next_run_at": at(1)}, NOW_TEXT)
    assert len(claim(db, at(1)).claims) == 1


# -- health: stale runs and the reaper ------------------------------------------------------------


def test_unwatched_stale_run_is_found_and_ends_through_the_retry_path(db: Database) -> None:
    job = add_job(db, max_retries=1)
    c = claim(db).claims[0]
    assert recovery.unwatched_stale_runs(db, 90, at(60), watched=set()) == []
    stale = recovery.unwatched_stale_runs(db, 90, at(120), watched=set())
    assert [s.run.id for s in stale] == [c.run.id] and stale[0].source == "cron"
    assert recovery.unwatched_stale_runs(db, 90, at(120), watched={c.run.id}) == []
    done = finish(db, stale[0], "timeout", now_text=at(120))
    assert done.retry is not None and done.job is not None and done.job.id == job["id"]


def test_reaper_closes_claimed_rows_whose_run_ended(db: Database) -> None:
    job = add_job(db, enabled=False)
    row = queue.enqueue_dispatch(db, job["id"], "manual", NOW_TEXT)
    assert row is not None
    c = claim(db).claims[0]
    db.query("UPDATE runs SET status = 'ok' WHERE id = ?", (c.run.id,))  # ended elsewhere
    assert queue.reap(db, NOW_TEXT) == 1
    assert db.scalar("SELECT status FROM job_dispatch_queue WHERE id = ?", (row["id"],)) == "done"


def test_reaper_resolves_rows_parked_for_approval(db: Database) -> None:
    job = add_job(db, enabled=False)
    rows = {}
    for name in ("rejected", "approved", "orphan", "waiting"):
        row = queue.enqueue_dispatch(db, job["id"], "chain", NOW_TEXT)
        assert row is not None
        rows[name] = row["id"]
    db.query("UPDATE job_dispatch_queue SET status = 'awaiting_approval'")
    for name, status in (("rejected", "rejected"), ("approved", "approved"), ("waiting", "pending")):
        db.query(
            "INSERT INTO approvals (id, job_id, dispatch_queue_id, status) VALUES (?, ?, ?, ?)",
            (f"a-{name}", job["id"], rows[name], status),
        )
    assert queue.reap(db, NOW_TEXT) == 3
    query = "SELECT status FROM job_dispatch_queue WHERE id = ?"
    status = {name: db.scalar(query, (row_id,)) for name, row_id in rows.items()}
    assert status == {"rejected": "cancelled", "approved": "pending", "orphan": "cancelled",
                      "waiting": "awaiting_approval"}


def test_retry_skipped_by_the_backlog_cap_says_so_on_the_run(db: Database) -> None:
    job = add_job(db, max_retries=3, max_queued_dispatches=1, overlap_policy="allow")
    first = claim(db).claims[0]
    assert queue.enqueue_dispatch(db, job["id"], "manual", at(600)) is not None
    finish(db, first, "error", columns={"error_message": "Shell exited with code 1"})
    message = run_row(db, first.run.id)["error_message"]
    assert message.startswith("Shell exited with code 1 (retry 1/3 not scheduled")
    assert "max_queued_dispatches" in message
