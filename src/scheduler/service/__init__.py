"""Operations shared by the CLI and the Python API (``scheduler.api``): validate, then store.

Every function validates completely before it writes, so bad input writes nothing, and raises
the ``SchedulerError`` the CLI prints. This package holds the job and run operations; the other
areas have a module each (``messages``, ``tasks``, ``approvals``). Arrows point down: the CLI and
the API call these, these call the store.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final, NamedTuple

from scheduler.errors import ValidationError
from scheduler.timeutil import to_sqlite

if TYPE_CHECKING:
    from datetime import datetime
    from pathlib import Path

    from scheduler.models.records import Job, Run
    from scheduler.store.api import Cancellation, Row, Store

# The job models are imported where they are used: the CLI's message and task commands load
# this package for its sibling modules, and validation costs a CLI call tens of milliseconds.

# What a run cancelled by `jobs cancel` says, in its error_message (and in the daemon's log).
OPERATOR_CANCEL_REASON: Final = "Cancelled by operator (jobs cancel)"
# Bounds of a runs listing: far above any useful value, far below SQLite's 2^63.
MAX_RUNS_LIMIT: Final = 10000


def job_spec_object(value: object) -> dict[str, Any]:
    """``value`` as a job spec (a mapping of field names); ValidationError otherwise."""
    if not isinstance(value, dict):
        raise ValidationError("Job spec must be a JSON object, e.g. '{\"name\": \"...\"}'")
    return value


def one_shot_spec(spec: dict[str, Any], when: datetime) -> dict[str, Any]:
    """``spec`` made a one-shot job due at ``when`` (``jobs add --at/--in``): an ``at``
    schedule, deleted after its run unless the spec says otherwise. Changes ``spec``."""
    from scheduler import cron
    from scheduler.models.enums import ScheduleKind

    schedule_at = to_sqlite(when)
    spec.update(schedule_kind=ScheduleKind.AT.value, schedule_at=schedule_at, next_run_at=schedule_at)
    spec.setdefault("schedule_cron", cron.NEVER_SENTINEL)
    spec.setdefault("delete_after_run", 1)
    return spec


def watchdog_spec(spec: dict[str, Any]) -> dict[str, Any]:
    """``spec`` made a watchdog job (``jobs add --watchdog``): a shell check, announcing nothing,
    that deletes itself once its condition is met, unless the spec says otherwise."""
    from scheduler.models.enums import DeliveryMode, JobType, PayloadKind, SessionTarget

    spec["job_type"] = JobType.WATCHDOG.value
    spec.setdefault("session_target", SessionTarget.SHELL.value)
    spec.setdefault("payload_kind", PayloadKind.SHELL_COMMAND.value)
    if not spec.get("payload_message"):
        spec["payload_message"] = spec.get("watchdog_check_cmd") or "true"
    spec.setdefault("delivery_mode", DeliveryMode.NONE.value)
    spec.setdefault("watchdog_self_destruct", 1)
    return spec


def validate_job(spec: object, now: datetime) -> dict[str, Any]:
    """The normalised spec a create would store (what ``jobs validate`` prints)."""
    from scheduler.models.validation import validate_job_spec

    return validate_job_spec(job_spec_object(spec), None, "create", now=now)


def check_new_job(store: Store, spec: object, now: datetime) -> dict[str, Any]:
    """Everything ``create_job`` checks, writing nothing (``jobs add --dry-run``): the spec, the
    row built from it, and what only the database knows (the parent, cycles, chain depth)."""
    from scheduler.models.job import new_job_row

    normalized = validate_job(spec, now)
    row = new_job_row(normalized, now)
    if row["parent_id"]:
        store.check_chain_placement(row["id"], row["parent_id"])
    return normalized


def create_job(store: Store, spec: object, now: datetime) -> Job:
    from scheduler.models.job import new_job_row

    normalized = validate_job(spec, now)
    return store.insert_job(new_job_row(normalized, now))


def plan_update(store: Store, job_id: str, patch: object, now: datetime) -> tuple[Job, dict[str, Any]]:
    """Validate ``patch`` against the job; return the job and the columns an update would write."""
    from scheduler.models.job import derive_next_run_at, update_needs_new_next_run
    from scheduler.models.validation import validate_job_spec

    current = store.require_job(job_id)
    normalized = validate_job_spec(job_spec_object(patch), current.row, "update", now=now)
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


def delete_job(store: Store, job_id: str) -> Job:
    """Delete the job (its runs go with it); the job as it was. NotFoundError for an unknown id."""
    job = store.require_job(job_id)
    store.delete_job(job_id)
    return job


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


class CancelOutcome(NamedTuple):
    """What cancelling a job did: the store's ``Cancellation``, and how many processes of its
    runs were killed here because no daemon serves the database (0 when one does)."""

    cancellation: Cancellation
    orphans_killed: int


def cancel_job(store: Store, job_id: str, *, cascade: bool, now: datetime,
               database: Path) -> CancelOutcome:
    """Disable the job (and with ``cascade`` its descendants), stop their runs, close their queue
    rows and reject their pending approvals; ``database`` is the store's file (is a daemon
    serving it?). NotFoundError, writing nothing, for an unknown id."""
    done = store.cancel_jobs(job_id, cascade=cascade, now=to_sqlite(now),
                             reason=OPERATOR_CANCEL_REASON)
    return CancelOutcome(done, _end_work_no_daemon_watches(done.run_ids, database))


def _end_work_no_daemon_watches(run_ids: list[str], database: Path) -> int:
    """Kill the processes of cancelled runs when no daemon serves the database (one killed with
    SIGKILL leaves its runs' processes behind): nobody else would, since the next daemon takes
    only ``running`` runs for orphans. A serving daemon stops its own work. Returns the count."""
    if not run_ids:
        return 0
    from scheduler.engine.lock import probe

    if probe(database)["running"]:
        return 0
    from scheduler.engine.orphans import kill_processes_of_runs

    return len(kill_processes_of_runs(run_ids))


def check_runs_limit(limit: int) -> int:
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_RUNS_LIMIT:
        raise ValidationError(f"limit must be a whole number from 1 to {MAX_RUNS_LIMIT}, got {limit!r}")
    return limit


def list_runs(store: Store, job_id: str, limit: int) -> list[Row]:
    """The job's newest ``limit`` runs, newest first; NotFoundError for an unknown job."""
    runs = store.list_runs(job_id, check_runs_limit(limit))
    if not runs:
        store.require_job(job_id)
    return runs


def get_run(store: Store, run_id: str) -> Run:
    return store.require_run(run_id)
