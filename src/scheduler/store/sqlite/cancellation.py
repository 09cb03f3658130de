"""SQL for ``jobs cancel``: a job, and its descendants, stopped in one transaction.

The jobs are disabled (and their overlap queue counters cleared); their runs in flight become
``cancelled`` with the caller's reason: ``running`` ones, and gate runs waiting for an approval.
Their queued runs are closed, manual ones included (an operator who cancels a job means all of
it), each leaving a ``skipped`` run that says why; their pending approvals are rejected. Nothing
here reaches a process: the daemon notices that the runs it works on are no longer ``running``
(a write by another process wakes it) and kills their processes or cancels their requests.
"""

from __future__ import annotations

import sqlite3
import uuid

from scheduler.errors import NotFoundError
from scheduler.models.records import DEFAULT_RUN_TIMEOUT_MS
from scheduler.store.api import Cancellation
from scheduler.store.sqlite import queue
from scheduler.store.sqlite.db import Database

# Runs whose work has not ended: in progress, or held at an approval gate (``pending`` is the
# reference's, never written by either implementation, and ends the same way).
_IN_FLIGHT = ("running", "awaiting_approval", "pending")
_MARKS = ", ".join("?" for _ in _IN_FLIGHT)
_LIVE_ROWS = ", ".join(f"'{status}'" for status in queue.LIVE_STATUSES)


def cancel_jobs(db: Database, job_id: str, *, cascade: bool, now_text: str, reason: str) -> Cancellation:
    """Cancel ``job_id`` and, with ``cascade``, every descendant. Raises NotFoundError (and writes
    nothing) when no such job exists."""
    with db.transaction() as conn:
        if conn.execute("SELECT 1 FROM jobs WHERE id = ?", (job_id,)).fetchone() is None:
            raise NotFoundError(f"Job not found: {job_id}")
        job_ids = family(conn, job_id) if cascade else [job_id]
        result = Cancellation(job_ids=job_ids)
        for member in job_ids:
            _disable(conn, member, now_text)
            result.run_ids += _cancel_runs_in_flight(conn, member, now_text, reason)
            result.dispatch_ids += _close_queue_rows(conn, member, now_text, reason)
            result.approval_ids += _reject_pending_approvals(conn, member, now_text, reason)
    return result


def family(conn: sqlite3.Connection, root: str) -> list[str]:
    """``root`` and its descendants (children by ``parent_id``, recursively), each once: parents
    before their children, siblings by name. A cycle in the data (the schema does not prevent one,
    a hand edit or an old version may leave one) ends where the walk meets a job it already has."""
    found: list[str] = []
    seen: set[str] = set()
    stack = [root]
    while stack:
        job_id = stack.pop()
        if job_id in seen:
            continue
        seen.add(job_id)
        found.append(job_id)
        children = conn.execute(
            "SELECT id FROM jobs WHERE parent_id = ? ORDER BY name DESC, id DESC", (job_id,)
        ).fetchall()
        stack.extend(row["id"] for row in children if row["id"] not in seen)  # popped by name
    return found


def _disable(conn: sqlite3.Connection, job_id: str, now_text: str) -> None:
    # queued_count is the overlap queue's promise of runs after the current one: void too.
    conn.execute(
        "UPDATE jobs SET enabled = 0, queued_count = 0, updated_at = ? WHERE id = ?", (now_text, job_id)
    )


def _cancel_runs_in_flight(conn: sqlite3.Connection, job_id: str, now_text: str, reason: str) -> list[str]:
    rows = conn.execute(
        f"SELECT id FROM runs WHERE job_id = ? AND status IN ({_MARKS}) ORDER BY started_at, rowid",
        (job_id, *_IN_FLIGHT),
    ).fetchall()
    run_ids = [str(row["id"]) for row in rows]
    for run_id in run_ids:
        conn.execute(
            "UPDATE runs SET status = 'cancelled', finished_at = ?, error_message = ?, "
            "duration_ms = MAX(0, CAST(ROUND((julianday(?) - julianday(started_at)) * 86400000) AS INTEGER)) "
            "WHERE id = ?",
            (now_text, reason, now_text, run_id),
        )
    return run_ids


def _close_queue_rows(conn: sqlite3.Connection, job_id: str, now_text: str, reason: str) -> list[str]:
    """Close the job's live queue rows. A row that has a run (claimed, or held at a gate) is
    accounted for by that run, now cancelled; a row still waiting leaves a ``skipped`` run."""
    rows = conn.execute(
        f"SELECT q.id, q.dispatch_kind, EXISTS (SELECT 1 FROM runs r WHERE r.dispatch_queue_id = q.id) "
        f"AS has_run FROM job_dispatch_queue q WHERE q.job_id = ? AND q.status IN ({_LIVE_ROWS}) "
        "ORDER BY q.scheduled_for, q.created_at",
        (job_id,),
    ).fetchall()
    for row in rows:
        queue.close(conn, row["id"], "cancelled", now_text)
        if not row["has_run"]:
            _record_skipped(conn, job_id, row["id"], now_text,
                            f"{reason}; queued {row['dispatch_kind']} run not started")
    return [str(row["id"]) for row in rows]


def _record_skipped(conn: sqlite3.Connection, job_id: str, dispatch_id: str, now_text: str,
                    message: str) -> None:
    conn.execute(
        "INSERT INTO runs (id, job_id, status, started_at, finished_at, duration_ms, last_heartbeat, "
        "dispatched_at, run_timeout_ms, dispatch_queue_id, summary, error_message) "
        "SELECT ?, id, 'skipped', ?, ?, 0, ?, ?, COALESCE(run_timeout_ms, ?), ?, ?, ? "
        "FROM jobs WHERE id = ?",
        (str(uuid.uuid4()), now_text, now_text, now_text, now_text, DEFAULT_RUN_TIMEOUT_MS,
         dispatch_id, message, message, job_id),
    )


def _reject_pending_approvals(conn: sqlite3.Connection, job_id: str, now_text: str,
                              reason: str) -> list[str]:
    rows = conn.execute(
        "SELECT id FROM approvals WHERE job_id = ? AND status = 'pending' ORDER BY requested_at, id",
        (job_id,),
    ).fetchall()
    approval_ids = [str(row["id"]) for row in rows]
    for approval_id in approval_ids:
        conn.execute(
            "UPDATE approvals SET status = 'rejected', resolved_at = ?, resolved_by = 'operator', "
            "notes = ? WHERE id = ?",
            (now_text, reason, approval_id),
        )
    return approval_ids
