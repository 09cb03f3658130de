"""A job's stored row: the columns a new job gets, and when a job next runs.

``new_job_row`` completes a spec ``validate_job_spec`` accepted (models/validation.py) with the
reference's code defaults; ``derive_next_run_at`` and ``update_needs_new_next_run`` decide the
``next_run_at`` a create or an update stores.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any, Final

from scheduler import cron
from scheduler.models.enums import ScheduleKind
from scheduler.models.fields import JOB_COLUMNS, JOB_FIELD_RULES, default_payload_kind, is_blank
from scheduler.timeutil import to_sqlite

# Fields whose change (or a re-enable) makes an update re-derive next_run_at from now.
SCHEDULE_CHANGE_FIELDS: Final = ("schedule_kind", "schedule_at", "schedule_cron", "schedule_tz", "parent_id")


def new_job_id() -> str:
    """A random UUID4 in its usual text form; what ``str(uuid.uuid4())`` gives, without importing
    ``uuid``, which imports ``platform`` (a few ms of every ``jobs add``)."""
    raw = bytearray(os.urandom(16))
    raw[6] = (raw[6] & 0x0F) | 0x40  # version 4
    raw[8] = (raw[8] & 0x3F) | 0x80  # RFC 4122 variant
    text = raw.hex()
    return f"{text[:8]}-{text[8:12]}-{text[12:16]}-{text[16:20]}-{text[20:]}"


def derive_next_run_at(job: Mapping[str, Any], now: datetime, *, run_now: bool = False) -> str | None:
    """When a job should next run, as stored UTC text, or None when nothing schedules it.

    Children run only when triggered; ``run_now`` makes a job due a second ago; an at-job runs at
    ``schedule_at``; a cron job at its next fire strictly after ``now`` (None for the sentinel).
    """
    if not is_blank(job.get("parent_id")):
        return None
    if run_now:
        return to_sqlite(now - timedelta(seconds=1))
    if job.get("schedule_kind") == ScheduleKind.AT:
        schedule_at = job.get("schedule_at")
        return None if is_blank(schedule_at) else str(schedule_at)
    expr = job.get("schedule_cron")
    if is_blank(expr):
        return None
    fire = cron.next_fire(str(expr), str(job.get("schedule_tz") or "UTC"), now)
    return None if fire is None else to_sqlite(fire)


def new_job_row(normalized: Mapping[str, Any], now: datetime) -> dict[str, Any]:
    """Every column of a new job, in ``JOB_COLUMNS`` order, from a spec ``validate_job_spec``
    accepted in create mode; omitted fields get the reference's code defaults."""
    row: dict[str, Any] = {}
    for column in JOB_COLUMNS:
        value = normalized.get(column)
        row[column] = JOB_FIELD_RULES[column].default if value is None else value
    row["id"] = normalized.get("id") or new_job_id()
    if is_blank(row["payload_kind"]):
        row["payload_kind"] = default_payload_kind(row["session_target"])
    never_fires_itself = row["schedule_kind"] == ScheduleKind.AT or not is_blank(row["parent_id"])
    if is_blank(row["schedule_cron"]) and never_fires_itself:
        row["schedule_cron"] = cron.NEVER_SENTINEL
    row["queued_count"] = 0
    row["created_at"] = row["updated_at"] = to_sqlite(now)
    if row["next_run_at"] is None:
        row["next_run_at"] = derive_next_run_at(row, now, run_now=bool(normalized.get("run_now")))
    return row


def update_needs_new_next_run(current: Mapping[str, Any], normalized: Mapping[str, Any]) -> bool:
    """Whether an update must re-derive ``next_run_at`` from now.

    True when the patch changes a schedule field (``SCHEDULE_CHANGE_FIELDS``) or re-enables a
    disabled job, unless the patch sets ``next_run_at`` itself. A schedule field repeated with
    its stored value is not a change, so an overdue run is not lost to a no-op update.
    """
    if "next_run_at" in normalized:
        return False
    if any(key in normalized and normalized[key] != current.get(key) for key in SCHEDULE_CHANGE_FIELDS):
        return True
    return "enabled" in normalized and bool(normalized["enabled"]) and not current.get("enabled")
