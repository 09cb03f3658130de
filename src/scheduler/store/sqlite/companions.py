"""SQL for the companion tools (features.md §15.2): the stuck-run detector's candidates, its
alerts as outbound notices, and the delivery failures ``webhook-check`` counts.

Time arithmetic stays in the caller: the cut-off instants come in as our UTC text, which sorts
as it compares, so the SQL is the same on every backend.
"""

from __future__ import annotations

from scheduler.store.api import Delivery, Row
from scheduler.store.sqlite.db import Database
from scheduler.store.sqlite.messages import enqueue_outbound


def long_running_runs(db: Database, started_before: str, limit: int) -> list[Row]:
    """Running runs started before ``started_before``, oldest first, with what the detector needs
    of their job (name, type, the dispatch label a watcher job names)."""
    return db.query(
        "SELECT r.id, r.job_id, r.started_at, r.last_heartbeat, r.run_timeout_ms, "
        "j.name AS job_name, j.job_type, j.watchdog_target_label "
        "FROM runs r JOIN jobs j ON j.id = r.job_id "
        "WHERE r.status = 'running' AND r.started_at < ? "
        "ORDER BY r.started_at, r.id LIMIT ?",
        (started_before, int(limit)),
    )


def record_notice(db: Database, delivery: Delivery, subject: str, now_text: str,
                  kind: str) -> Row:
    """An outbound notice with no job behind it, sent by the daemon like any result."""
    with db.transaction() as conn:
        return enqueue_outbound(conn, delivery, subject=subject, job_id=None, run_id=None,
                                now_text=now_text, kind=kind)


def delivery_failures_since(db: Database, since: str) -> int:
    """Messages created at or after ``since`` that carry a delivery error."""
    count = db.scalar(
        "SELECT COUNT(*) FROM messages WHERE last_error IS NOT NULL AND created_at >= ?",
        (since,),
    )
    return int(count or 0)
