"""SQL for the ``jobs`` table."""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from scheduler.errors import NotFoundError, StoreConstraintError, ValidationError
from scheduler.store.sqlite.db import Database, Row
from scheduler.store.sqlite.migrations import _expected_columns

if TYPE_CHECKING:
    from scheduler.models.records import Job

_IMMUTABLE = frozenset({"id", "queued_count", "created_at"})


@lru_cache(maxsize=1)
def job_columns() -> tuple[str, ...]:
    return tuple(str(c["name"]) for c in _expected_columns()["jobs"])


def _check_columns(names: Mapping[str, Any], *, allow_immutable: bool) -> None:
    known = set(job_columns())
    for name in names:
        if name not in known or (not allow_immutable and name in _IMMUTABLE):
            raise ValidationError(f'"{name}" is not a writable job field')


def explain_integrity(exc: StoreConstraintError) -> ValidationError:
    text = str(exc)
    if "UNIQUE" in text and "jobs.id" in text:
        return ValidationError("a job with this id already exists")
    if "CHECK" in text:
        return ValidationError(
            'delivery_to is required when delivery_mode is "announce" or "announce-always"'
        )
    return ValidationError(f"the job violates a database constraint: {text.split(': ', 1)[-1]}")


def _check_parent(conn: sqlite3.Connection, job_id: str, parent_id: str) -> None:
    """Parent exists, no cycle, chain no deeper than the limit: checked in the writing
    transaction, so two CLI writes cannot together make a cycle."""
    from scheduler.store.sqlite.chains import check_placement

    check_placement(conn, job_id, parent_id)


def insert_job(db: Database, row: Mapping[str, Any]) -> Job:
    try:
        with db.transaction() as conn:
            insert_job_in(conn, row)
    except StoreConstraintError as exc:
        raise explain_integrity(exc) from None
    return require_job(db, str(row["id"]))


def insert_job_in(conn: sqlite3.Connection, row: Mapping[str, Any]) -> None:
    """Insert a job inside the caller's transaction (a spawn creates its job with the message's
    answer). A missing parent, a cycle or too deep a chain is a ValidationError; a broken
    constraint surfaces when the transaction ends, for the caller to pass through
    ``explain_integrity``."""
    _check_columns(row, allow_immutable=True)
    names = list(row)
    sql = (
        f"INSERT INTO jobs ({', '.join(names)}) "
        f"VALUES ({', '.join('?' for _ in names)})"
    )
    parent = row.get("parent_id")
    if parent:
        _check_parent(conn, str(row["id"]), str(parent))
    conn.execute(sql, [row[n] for n in names])


def get_job(db: Database, job_id: str) -> Job | None:
    row = db.query_one("SELECT * FROM jobs WHERE id = ?", (job_id,))
    from scheduler.models.records import Job

    return None if row is None else Job.from_row(row)


def require_job(db: Database, job_id: str) -> Job:
    job = get_job(db, job_id)
    if job is None:
        raise NotFoundError(f"Job not found: {job_id}")
    return job


def list_jobs(db: Database, job_type: str | None = None) -> list[Row]:
    if job_type is None:
        return db.query("SELECT * FROM jobs ORDER BY name, id")
    return db.query(
        "SELECT * FROM jobs WHERE COALESCE(job_type, 'standard') = ? ORDER BY name, id", (job_type,)
    )


def update_job(db: Database, job_id: str, columns: Mapping[str, Any], now_text: str) -> Job:
    """Apply a validated patch; ``updated_at`` is stamped. A patch that disables the job also
    cancels its pending retries and chained runs, in the same transaction. Raises NotFoundError."""
    _check_columns(columns, allow_immutable=False)
    values = {**columns, "updated_at": now_text}
    assignments = ", ".join(f"{name} = ?" for name in values)
    try:
        with db.transaction() as conn:
            parent = values.get("parent_id")
            if parent:
                _check_parent(conn, job_id, str(parent))
            cursor = conn.execute(
                f"UPDATE jobs SET {assignments} WHERE id = ?", [*values.values(), job_id]
            )
            if cursor.rowcount == 0:
                raise NotFoundError(f"Job not found: {job_id}")
            if "enabled" in columns and not columns["enabled"]:
                # Its pending retries and chained runs go with the disable, not when they fall due.
                # (Imported here: `jobs list` and the other readers never need the claim code.)
                from scheduler.store.sqlite.claims import cancel_queued_runs_of_disabled_job

                cancel_queued_runs_of_disabled_job(conn, job_id, now_text)
    except StoreConstraintError as exc:
        raise explain_integrity(exc) from None
    return require_job(db, job_id)


def delete_job(db: Database, job_id: str) -> None:
    """Delete a job; its runs, approvals and dispatch rows go with it (FK cascade)."""
    with db.transaction() as conn:
        cursor = conn.execute("DELETE FROM jobs WHERE id = ?", (job_id,))
        if cursor.rowcount == 0:
            raise NotFoundError(f"Job not found: {job_id}")
