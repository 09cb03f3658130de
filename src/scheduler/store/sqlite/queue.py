"""SQL for ``job_dispatch_queue``: manual runs, retries, replays and (later) chained runs."""

from __future__ import annotations

import sqlite3
import uuid

from scheduler.store.sqlite.db import Database, Row

LIVE_STATUSES = ("pending", "claimed", "awaiting_approval")
# A row claimed this long ago with no run was abandoned by its claimant.
ORPHAN_CLAIM_AGE_S = 300


def live_backlog(conn: sqlite3.Connection, job_id: str) -> int:
    """Rows of the job still to run (``done`` and ``cancelled`` rows do not count)."""
    row = conn.execute(
        "SELECT COUNT(*) AS n FROM job_dispatch_queue WHERE job_id = ? "
        "AND status IN ('pending', 'claimed', 'awaiting_approval')",
        (job_id,),
    ).fetchone()
    return int(row["n"])


def live_rows(db: Database, job_id: str) -> list[Row]:
    """The job's queue rows still to run (pending, claimed, awaiting approval), oldest due first."""
    return db.query(
        "SELECT * FROM job_dispatch_queue WHERE job_id = ? "
        "AND status IN ('pending', 'claimed', 'awaiting_approval') ORDER BY scheduled_for, created_at",
        (job_id,),
    )


def insert(
    conn: sqlite3.Connection,
    job_id: str,
    kind: str,
    scheduled_for: str,
    *,
    source_run_id: str | None = None,
    retry_of_run_id: str | None = None,
) -> Row:
    dispatch_id = str(uuid.uuid4())
    conn.execute(
        "INSERT INTO job_dispatch_queue (id, job_id, dispatch_kind, status, scheduled_for, "
        "source_run_id, retry_of_run_id) VALUES (?, ?, ?, 'pending', ?, ?, ?)",
        (dispatch_id, job_id, kind, scheduled_for, source_run_id, retry_of_run_id),
    )
    row: Row = conn.execute("SELECT * FROM job_dispatch_queue WHERE id = ?", (dispatch_id,)).fetchone()
    return row


def enqueue_dispatch(
    db: Database,
    job_id: str,
    kind: str,
    scheduled_for: str,
    *,
    source_run_id: str | None = None,
    retry_of_run_id: str | None = None,
    backlog_cap: int | None = None,
) -> Row | None:
    """Queue a run of ``job_id``. Returns None when the job's live backlog is at ``backlog_cap``."""
    with db.transaction() as conn:
        if backlog_cap is not None and live_backlog(conn, job_id) >= backlog_cap:
            return None
        return insert(
            conn, job_id, kind, scheduled_for, source_run_id=source_run_id, retry_of_run_id=retry_of_run_id
        )


def close(conn: sqlite3.Connection, dispatch_id: str, status: str, now_text: str) -> None:
    conn.execute(
        "UPDATE job_dispatch_queue SET status = ?, processed_at = ? WHERE id = ?",
        (status, now_text, dispatch_id),
    )


def release(conn: sqlite3.Connection, dispatch_id: str) -> None:
    """Give a claimed row back to ``pending``, keeping its ``scheduled_for``: it is due again in
    the place it had (its job could not start after all)."""
    conn.execute(
        "UPDATE job_dispatch_queue SET status = 'pending', claimed_at = NULL WHERE id = ?",
        (dispatch_id,),
    )


def reap(db: Database, now_text: str) -> int:
    """No row stays ``claimed`` or ``awaiting_approval`` forever (reference §17 #5): close rows
    left ``claimed`` whose run has ended; return to ``pending`` rows claimed long ago without any
    run (a claimant that died between the two; our claims write both at once, a reference daemon
    did not); cancel rows awaiting an approval that was rejected, timed out or never created, and
    release those whose approval was granted. Returns how many rows changed."""
    with db.transaction() as conn:
        ended = conn.execute(
            "UPDATE job_dispatch_queue SET status = 'done', processed_at = ? WHERE status = 'claimed' "
            "AND EXISTS (SELECT 1 FROM runs r WHERE r.dispatch_queue_id = job_dispatch_queue.id) "
            "AND NOT EXISTS (SELECT 1 FROM runs r WHERE r.dispatch_queue_id = job_dispatch_queue.id "
            "AND r.status = 'running')",
            (now_text,),
        ).rowcount
        orphaned = conn.execute(
            "UPDATE job_dispatch_queue SET status = 'pending', claimed_at = NULL "
            "WHERE status = 'claimed' AND (claimed_at IS NULL OR claimed_at < datetime(?, ?)) "
            "AND NOT EXISTS (SELECT 1 FROM runs r WHERE r.dispatch_queue_id = job_dispatch_queue.id)",
            (now_text, f"-{ORPHAN_CLAIM_AGE_S} seconds"),
        ).rowcount
        # Rows parked for an approval that will never come: rejected, timed out, or none at all
        # (the reference's `jobs reject` left them so, counting against the backlog cap).
        abandoned = conn.execute(
            "UPDATE job_dispatch_queue SET status = 'cancelled', processed_at = ? "
            "WHERE status = 'awaiting_approval' AND NOT EXISTS (SELECT 1 FROM approvals a "
            "WHERE a.dispatch_queue_id = job_dispatch_queue.id AND a.status IN ('pending', 'approved'))",
            (now_text,),
        ).rowcount
        approved = conn.execute(
            "UPDATE job_dispatch_queue SET status = 'pending', claimed_at = NULL "
            "WHERE status = 'awaiting_approval' AND EXISTS (SELECT 1 FROM approvals a "
            "WHERE a.dispatch_queue_id = job_dispatch_queue.id AND a.status = 'approved')"
        ).rowcount
    return ended + orphaned + abandoned + approved
