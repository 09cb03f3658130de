"""Job operations shared by the CLI and any other front end: validate, then store.

Every function validates completely before it writes, so bad input writes nothing.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

from scheduler.errors import ValidationError
from scheduler.models.job import derive_next_run_at, new_job_row, update_needs_new_next_run
from scheduler.models.records import Job
from scheduler.models.validation import validate_job_spec
from scheduler.timeutil import to_sqlite

if TYPE_CHECKING:
    from scheduler.store.api import Row, Store


def create_job(store: Store, spec: object, now: datetime) -> Job:
    normalized = validate_job_spec(spec, None, "create", now=now)
    return store.insert_job(new_job_row(normalized, now))


def plan_update(store: Store, job_id: str, patch: object, now: datetime) -> tuple[Job, dict[str, Any]]:
    """Validate ``patch`` against the job; return the job and the columns an update would write."""
    current = store.require_job(job_id)
    normalized = validate_job_spec(patch, current.row, "update", now=now)
    if normalized.get("parent_id"):  # checked again by the write, in its transaction
        store.check_chain_placement(job_id, str(normalized["parent_id"]))
    if update_needs_new_next_run(current.row, normalized):
        normalized["next_run_at"] = derive_next_run_at({**current.row, **normalized}, now)
    return current, normalized


def update_job(store: Store, job_id: str, patch: object, now: datetime) -> Job:
    _, columns = plan_update(store, job_id, patch, now)
    if not columns:
        raise ValidationError("the update names no field to change")
    return store.update_job(job_id, columns, to_sqlite(now))


def set_enabled(store: Store, job_id: str, enabled: bool, now: datetime) -> Job:
    return update_job(store, job_id, {"enabled": enabled}, now)


def run_now(store: Store, job_id: str, now: datetime) -> tuple[Job, Row]:
    """Queue a manual run (works for disabled jobs; the schedule is untouched)."""
    job = store.require_job(job_id)
    cap = job.max_queued_dispatches
    dispatch = store.enqueue_dispatch(job_id, "manual", to_sqlite(now), backlog_cap=cap)
    if dispatch is None:
        raise ValidationError(
            f"Dispatch backlog limit reached for {job.name} ({cap} queued runs); "
            "wait for them to run or raise max_queued_dispatches"
        )
    return job, dispatch
