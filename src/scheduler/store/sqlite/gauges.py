"""Reads for the metrics endpoint: the gauges that live in the database, in one round trip.

Run only when ``/metrics`` or ``/readyz`` is scraped (through the daemon's store thread), never
on the scheduling path; every count uses an index the claim path already has.
"""

from __future__ import annotations

from scheduler.store.api import StoreGauges
from scheduler.store.sqlite.claims import AT_ALREADY_RAN
from scheduler.store.sqlite.db import Database
from scheduler.store.sqlite.messages import OUTBOUND


def gauges(db: Database, now_text: str) -> StoreGauges:
    row = db.query_one(
        "SELECT "
        "(SELECT COUNT(*) FROM jobs j WHERE j.enabled = 1 AND j.parent_id IS NULL "
        f" AND j.next_run_at IS NOT NULL AND j.next_run_at <= :now AND {AT_ALREADY_RAN}) AS due_jobs, "
        "(SELECT COUNT(*) FROM job_dispatch_queue WHERE status = 'pending' AND scheduled_for <= :now) "
        " AS due_rows, "
        "(SELECT COUNT(*) FROM job_dispatch_queue WHERE status = 'pending' AND scheduled_for > :now) "
        " AS later_rows, "
        "(SELECT COUNT(*) FROM job_dispatch_queue WHERE status = 'awaiting_approval') AS gated_rows, "
        "(SELECT COUNT(*) FROM approvals WHERE status = 'pending') AS approvals, "
        "(SELECT COUNT(*) FROM messages WHERE to_agent = :outbound AND status = 'pending') AS outbound, "
        "(SELECT MIN(created_at) FROM messages WHERE to_agent = :outbound AND status = 'pending') "
        " AS oldest_outbound",
        {"now": now_text, "outbound": OUTBOUND},
    ) or {}
    oldest = row.get("oldest_outbound")
    return StoreGauges(
        backlog_due=int(row.get("due_jobs") or 0) + int(row.get("due_rows") or 0),
        backlog_later=int(row.get("later_rows") or 0),
        backlog_awaiting_approval=int(row.get("gated_rows") or 0),
        approvals_pending=int(row.get("approvals") or 0),
        outbound_pending=int(row.get("outbound") or 0),
        oldest_outbound_at=None if oldest is None else str(oldest),
    )


def check_writable(db: Database) -> None:
    """Take the write lock and give it back at once (nothing is written): raises the store's
    error when the file is read-only, locked beyond the busy timeout, or unreadable."""
    with db.transaction():
        pass
