"""Approval gates: list what waits, approve or reject a job's oldest pending approval.

Approving makes the gated work due at once; the daemon sees the write (its data_version
changes) and starts it without waiting for its next tick.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Final

from scheduler.text import checked_line
from scheduler.timeutil import to_sqlite

if TYPE_CHECKING:
    from scheduler.store.api import Row, Store

MAX_REASON_LENGTH: Final = 1000


def pending(store: Store, now: datetime) -> list[Row]:
    """Pending approvals, oldest first: the ``approvals`` columns plus ``job_name``, ``age_s``,
    ``timeout_at`` and ``on_timeout``."""
    return store.pending_approvals(to_sqlite(now))


def approve(store: Store, job_id: str, now: datetime) -> Row:
    """Approve the job's oldest pending approval; NotFoundError when nothing is pending."""
    return store.approve_job(job_id, to_sqlite(now))


def reject(store: Store, job_id: str, reason: str | None, now: datetime) -> Row:
    """Reject the job's oldest pending approval (its gate run is cancelled with ``reason``)."""
    if reason is not None:
        checked_line(reason, "reason", MAX_REASON_LENGTH)
    return store.reject_job(job_id, reason, to_sqlite(now))
