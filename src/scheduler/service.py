"""Job operations shared by the CLI and any other front end: validate, then store.

Every function validates completely before it writes, so bad input writes nothing.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from scheduler.errors import ValidationError
from scheduler.models.job import derive_next_run_at, new_job_row, update_needs_new_next_run
from scheduler.models.validation import validate_job_spec
from scheduler.store.sqlite import jobs as job_store
from scheduler.store.sqlite.db import Database, Row
from scheduler.timeutil import to_sqlite


def create_job(db: Database, spec: object, now: datetime) -> Row:
    normalized = validate_job_spec(spec, None, "create", now=now)
    return job_store.insert_job(db, new_job_row(normalized, now))


def plan_update(db: Database, job_id: str, patch: object, now: datetime) -> tuple[Row, dict[str, Any]]:
    """Validate ``patch`` against the job; return the job and the columns an update would write."""
    current = job_store.require_job(db, job_id)
    normalized = validate_job_spec(patch, current, "update", now=now)
    if update_needs_new_next_run(current, normalized):
        normalized["next_run_at"] = derive_next_run_at({**current, **normalized}, now)
    return current, normalized


def update_job(db: Database, job_id: str, patch: object, now: datetime) -> Row:
    _, columns = plan_update(db, job_id, patch, now)
    if not columns:
        raise ValidationError("the update names no field to change")
    return job_store.update_job(db, job_id, columns, to_sqlite(now))


def set_enabled(db: Database, job_id: str, enabled: bool, now: datetime) -> Row:
    return update_job(db, job_id, {"enabled": enabled}, now)


def run_now(db: Database, job_id: str, now: datetime) -> tuple[Row, Row]:
    """Queue a manual run (works for disabled jobs; the schedule is untouched)."""
    from scheduler.store.sqlite import queue  # with uuid: imported only by the command that queues

    job = job_store.require_job(db, job_id)
    cap = int(job["max_queued_dispatches"] or 25)
    dispatch = queue.enqueue_dispatch(
        db, job_id, "manual", to_sqlite(now), backlog_cap=cap
    )
    if dispatch is None:
        raise ValidationError(
            f"Dispatch backlog limit reached for {job['name']} ({cap} queued runs); "
            "wait for them to run or raise max_queued_dispatches"
        )
    return job, dispatch
