"""SQL for ``approvals``: requesting, granting, refusing and listing approvals of gated work.

The gate itself is part of the claim (``claims.py``): due work of a job with
``approval_required`` that could start a run gets, instead, a gate run ``awaiting_approval``, an
approval ``pending`` and a queue row ``awaiting_approval`` (a scheduled occurrence gets a queue
row of kind ``cron`` or ``at`` for the purpose), and its notification is recorded as an outbound
message, all in the claim's transaction.

Granting an approval (``jobs approve``, or a timeout with ``approval_auto: approve``) puts the
queue row back to ``pending``, due at once; the claim knows it by its approval (``approved``,
then ``dispatched`` once its run started) and never gates it again. Refusing one (``jobs
reject``, or a timeout otherwise) cancels the gate run and closes the row in the same
transaction, so nothing is left ``awaiting_approval`` (reference §17 #5).
"""

from __future__ import annotations

import sqlite3
import uuid
from typing import Final

from scheduler.errors import NotFoundError
from scheduler.models.records import Job, Run
from scheduler.store.api import Delivery
from scheduler.store.sqlite.db import Database, Row
from scheduler.store.sqlite.messages import enqueue_outbound

# The kinds of work a gate holds back: scheduled occurrences, manual runs and chained runs.
# Retries and crash replays continue work that already ran (approved, if it was gated).
GATED_KINDS: Final = frozenset({"cron", "at", "manual", "chain"})
OPERATOR: Final = "operator"
TIMEOUT: Final = "timeout"
DEFAULT_MAX_PENDING: Final = 10
# When a pending approval times out (the schema's default timeout for rows that hold NULL).
_DEADLINE: Final = "datetime(a.requested_at, '+' || COALESCE(j.approval_timeout_s, 3600) || ' seconds')"
_LIVE_ROW: Final = "('pending', 'claimed', 'awaiting_approval')"


def gates(job: Row, kind: str) -> bool:
    """Work of ``kind`` for ``job`` must be approved before it runs."""
    return bool(job.get("approval_required")) and kind in GATED_KINDS


def notice_text(job: Job) -> str:
    """The reference's approval request, word for word (operators' tooling may match it)."""
    return (f"\u26a0\ufe0f Job '{job.name}' requires approval.\n"
            f"Approve: openclaw-scheduler jobs approve {job.id}\n"
            f"Reject: openclaw-scheduler jobs reject {job.id}")


# -- the claim's side ------------------------------------------------------------------------------


def refusal(conn: sqlite3.Connection, job: Row) -> str | None:
    """Why no further approval may be requested for ``job`` (max_pending_approvals), or None."""
    limit = job.get("max_pending_approvals") or DEFAULT_MAX_PENDING
    pending = int(conn.execute(
        "SELECT COUNT(*) AS n FROM approvals WHERE job_id = ? AND status = 'pending'", (job["id"],)
    ).fetchone()["n"])
    if pending < limit:
        return None
    return (f"approval not requested: {pending} approvals of this job already pending "
            f"(max_pending_approvals {limit}); approve or reject them first")


def request(conn: sqlite3.Connection, job: Job, run_id: str, dispatch_id: str, now_text: str) -> Row | None:
    """Record the approval for the gate run ``run_id``, park its queue row, and record the
    notification to the job's delivery target. Returns the outbound message, or None when the
    job has no ``delivery_to`` (then only ``approvals pending`` shows the request, and the gate
    run's summary says so)."""
    conn.execute(
        "INSERT INTO approvals (id, job_id, run_id, dispatch_queue_id, status, requested_at) "
        "VALUES (?, ?, ?, ?, 'pending', ?)",
        (str(uuid.uuid4()), job.id, run_id, dispatch_id, now_text),
    )
    conn.execute(
        "UPDATE job_dispatch_queue SET status = 'awaiting_approval', claimed_at = ? WHERE id = ?",
        (now_text, dispatch_id),
    )
    target = (job.delivery_to or "").strip()
    summary = ("Awaiting approval" if target else
               "Awaiting approval; no notification sent (the job has no delivery_to): "
               "see `openclaw-scheduler approvals pending`")
    conn.execute("UPDATE runs SET summary = ? WHERE id = ?", (summary, run_id))
    if not target:
        return None
    # Sent whatever the job's delivery_mode: an approval nobody hears of helps no one.
    delivery = Delivery(text=notice_text(job), channel=job.delivery_channel, target=job.delivery_to)
    return enqueue_outbound(conn, delivery, subject=job.name, job_id=job.id, run_id=run_id,
                            now_text=now_text)


def granted(conn: sqlite3.Connection, dispatch_id: str) -> Row | None:
    """The approval that let the queue row ``dispatch_id`` run, if any."""
    row: Row | None = conn.execute(
        "SELECT * FROM approvals WHERE dispatch_queue_id = ? AND status IN ('approved', 'dispatched') "
        "ORDER BY requested_at DESC, rowid DESC LIMIT 1",
        (dispatch_id,),
    ).fetchone()
    return row


def mark_dispatched(conn: sqlite3.Connection, approval: Row, now_text: str) -> None:
    """The approved work's run started. (A gate run still waiting was approved by a reference
    CLI, which only resolves the approval: it is ended here.)"""
    conn.execute(
        "UPDATE approvals SET status = 'dispatched', notes = COALESCE(notes, ?) "
        "WHERE id = ? AND status = 'approved'",
        ("Approved and dispatched by scheduler", approval["id"]),
    )
    _end_gate_run(conn, approval["run_id"], "approved", now_text, summary="Approved by operator")


def resolve_expired(conn: sqlite3.Connection, now_text: str) -> list[Run]:
    """Resolve the pending approvals whose ``approval_timeout_s`` has run out, as the job's
    ``approval_auto`` says (``approve``, or ``reject`` by default). Returns their gate runs."""
    expired = conn.execute(
        "SELECT a.*, j.approval_auto AS approval_auto, COALESCE(j.approval_timeout_s, 3600) AS timeout_s "
        f"FROM approvals a JOIN jobs j ON j.id = a.job_id WHERE a.status = 'pending' AND {_DEADLINE} <= ? "
        "ORDER BY a.requested_at, a.rowid",
        (now_text,),
    ).fetchall()
    for approval in expired:
        waited = f"{approval['timeout_s']}s"
        if approval["approval_auto"] == "approve":
            _grant(conn, approval, TIMEOUT, now_text, summary="Approval granted (timeout auto-approve)",
                   notes=f"auto-approved: no answer within approval_timeout_s {waited}")
        else:
            _refuse(conn, approval, "timed_out", TIMEOUT, now_text,
                    notes=f"no answer within approval_timeout_s {waited}",
                    message=f"Approval timed out after {waited} (approval_auto reject)")
    return _runs(conn, [a["run_id"] for a in expired if a["run_id"]])


def next_deadline(db: Database) -> str | None:
    """When the first pending approval times out (the scheduler sleeps no longer than that)."""
    value = db.scalar(
        f"SELECT MIN({_DEADLINE}) FROM approvals a JOIN jobs j ON j.id = a.job_id "
        "WHERE a.status = 'pending'"
    )
    return None if value is None else str(value)


# -- resolution ------------------------------------------------------------------------------------


def _end_gate_run(conn: sqlite3.Connection, run_id: str | None, status: str, now_text: str, *,
                  summary: str | None = None, error: str | None = None) -> None:
    if run_id is None:
        return
    conn.execute(
        "UPDATE runs SET status = ?, finished_at = ?, last_heartbeat = ?, "
        "duration_ms = MAX(0, CAST((julianday(?) - julianday(started_at)) * 86400000 AS INTEGER)), "
        "summary = COALESCE(?, summary), error_message = COALESCE(?, error_message) "
        "WHERE id = ? AND status IN ('awaiting_approval', 'pending')",
        (status, now_text, now_text, now_text, summary, error, run_id),
    )


def _grant(conn: sqlite3.Connection, approval: Row, by: str, now_text: str, *, summary: str,
           notes: str | None = None) -> None:
    """Approve: the gate run ends ``approved`` and its queue row is due now, marked (by this
    approval) so that the claim runs it without asking again."""
    conn.execute(
        "UPDATE approvals SET status = 'approved', resolved_at = ?, resolved_by = ?, notes = ? "
        "WHERE id = ? AND status = 'pending'",
        (now_text, by, notes, approval["id"]),
    )
    _end_gate_run(conn, approval["run_id"], "approved", now_text, summary=summary)
    if approval["dispatch_queue_id"]:
        conn.execute(
            "UPDATE job_dispatch_queue SET status = 'pending', scheduled_for = ?, claimed_at = NULL "
            "WHERE id = ? AND status = 'awaiting_approval'",
            (now_text, approval["dispatch_queue_id"]),
        )


def _refuse(conn: sqlite3.Connection, approval: Row, status: str, by: str, now_text: str, *,
            notes: str | None, message: str) -> None:
    """Reject or time out: the gate run ends ``cancelled`` with ``message`` and its queue row is
    closed. An at-job's only occurrence is then over, so the job is disabled (not deleted: the
    record of the refusal stays)."""
    conn.execute(
        "UPDATE approvals SET status = ?, resolved_at = ?, resolved_by = ?, notes = ? "
        "WHERE id = ? AND status = 'pending'",
        (status, now_text, by, notes, approval["id"]),
    )
    _end_gate_run(conn, approval["run_id"], "cancelled", now_text, error=message)
    dispatch_id = approval["dispatch_queue_id"]
    if not dispatch_id:
        return
    closed = conn.execute(
        f"UPDATE job_dispatch_queue SET status = 'cancelled', processed_at = ? "
        f"WHERE id = ? AND status IN {_LIVE_ROW} RETURNING dispatch_kind",
        (now_text, dispatch_id),
    ).fetchall()
    if closed and closed[0]["dispatch_kind"] == "at":
        conn.execute(
            "UPDATE jobs SET enabled = 0, updated_at = ? WHERE id = ? AND schedule_kind = 'at' "
            "AND next_run_at IS NULL",
            (now_text, approval["job_id"]),
        )


def _oldest_pending(conn: sqlite3.Connection, job_id: str) -> Row:
    """The job's oldest pending approval (first asked, first answered)."""
    if conn.execute("SELECT 1 FROM jobs WHERE id = ?", (job_id,)).fetchone() is None:
        raise NotFoundError(f"Job not found: {job_id}")
    approval: Row | None = conn.execute(
        "SELECT * FROM approvals WHERE job_id = ? AND status = 'pending' "
        "ORDER BY requested_at, rowid LIMIT 1",
        (job_id,),
    ).fetchone()
    if approval is None:
        raise NotFoundError(f"No pending approval for job: {job_id}")
    return approval


def approve(db: Database, job_id: str, now_text: str) -> Row:
    """Approve the job's oldest pending approval; its work is due at once. Returns the approval
    (NotFoundError for an unknown job or one with nothing pending)."""
    with db.transaction() as conn:
        approval = _oldest_pending(conn, job_id)
        _grant(conn, approval, OPERATOR, now_text, summary="Approved by operator")
        return _approval(conn, approval["id"])


def reject(db: Database, job_id: str, reason: str | None, now_text: str) -> Row:
    """Reject the job's oldest pending approval: its gate run is cancelled with ``reason`` and
    its queue row closed. Returns the approval."""
    with db.transaction() as conn:
        approval = _oldest_pending(conn, job_id)
        _refuse(conn, approval, "rejected", OPERATOR, now_text, notes=reason,
                message=reason or "Rejected by operator")
        return _approval(conn, approval["id"])


def pending(db: Database, now_text: str) -> list[Row]:
    """Pending approvals, oldest first, with their job's name, their age in seconds, and when
    and how they time out."""
    return db.query(
        "SELECT a.*, j.name AS job_name, "
        "MAX(0, CAST(ROUND((julianday(?) - julianday(a.requested_at)) * 86400) AS INTEGER)) AS age_s, "
        f"{_DEADLINE} AS timeout_at, COALESCE(j.approval_auto, 'reject') AS on_timeout "
        "FROM approvals a LEFT JOIN jobs j ON j.id = a.job_id WHERE a.status = 'pending' "
        "ORDER BY a.requested_at, a.rowid",
        (now_text,),
    )


def _approval(conn: sqlite3.Connection, approval_id: str) -> Row:
    row: Row = conn.execute(
        "SELECT a.*, j.name AS job_name FROM approvals a LEFT JOIN jobs j ON j.id = a.job_id "
        "WHERE a.id = ?",
        (approval_id,),
    ).fetchone()
    return row


def _runs(conn: sqlite3.Connection, run_ids: list[str]) -> list[Run]:
    runs = []
    for run_id in run_ids:
        row = conn.execute("SELECT * FROM runs WHERE id = ?", (run_id,)).fetchone()
        if row is not None:
            runs.append(Run.from_row(row))
    return runs
