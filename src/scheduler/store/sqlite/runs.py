"""SQL for the ``runs`` table: reads for the CLI, heartbeats, finishing and crash recovery."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Mapping
from datetime import timedelta
from typing import TYPE_CHECKING

from scheduler.errors import NotFoundError
from scheduler.store import DEFAULT_LEASE_S
from scheduler.store.sqlite.db import Database, Row
from scheduler.timeutil import from_sqlite, to_sqlite

if TYPE_CHECKING:
    from scheduler.models.records import Run

TERMINAL_STATUSES = ("ok", "error", "timeout", "skipped", "cancelled", "crashed")


def get_run(db: Database, run_id: str) -> Run | None:
    row = db.query_one("SELECT * FROM runs WHERE id = ?", (run_id,))
    from scheduler.models.records import Run

    return None if row is None else Run.from_row(row)


def require_run(db: Database, run_id: str) -> Run:
    run = get_run(db, run_id)
    if run is None:
        raise NotFoundError(f"Run not found: {run_id}")
    return run


def list_runs(db: Database, job_id: str, limit: int) -> list[Row]:
    return db.query(
        "SELECT * FROM runs WHERE job_id = ? ORDER BY started_at DESC, rowid DESC LIMIT ?",
        (job_id, limit),
    )


def latest_ok_identity(db: Database, job_id: str) -> str | None:
    row = db.query_one(
        "SELECT identity_resolved FROM runs WHERE job_id = ? AND status = 'ok' "
        "ORDER BY started_at DESC, rowid DESC LIMIT 1",
        (job_id,),
    )
    value = None if row is None else row["identity_resolved"]
    return value if isinstance(value, str) else None


def running_runs(db: Database) -> list[Row]:
    return db.query(
        "SELECT r.*, j.name AS job_name FROM runs r JOIN jobs j ON j.id = r.job_id "
        "WHERE r.status = 'running' ORDER BY r.started_at"
    )


def stale_runs(db: Database, threshold_s: int, now_text: str) -> list[Row]:
    """Running runs whose heartbeat is older than ``threshold_s`` (the daemon beats every few
    seconds while the work is alive, so these are runs nobody is watching)."""
    return db.query(
        "SELECT r.*, j.name AS job_name FROM runs r JOIN jobs j ON j.id = r.job_id "
        "WHERE r.status = 'running' "
        "AND r.last_heartbeat < datetime(?, ?) ORDER BY r.started_at",
        (now_text, f"-{int(threshold_s)} seconds"),
    )


# Fencing: the run is still running under the lease its owner was given at claim (the same
# owner, the same generation). Every write of a run's outcome by its owner carries it; bind
# ``held_params(run)``. (``COALESCE``: runs of the reference and of old versions have no owner.)
HELD_BY_CLAIMANT = "status = 'running' AND COALESCE(owner, '') = ? AND lease_generation = ?"


def held_params(run: Run) -> tuple[str, int]:
    return run.owner or "", run.lease_generation


def lease_until(now_text: str, lease_s: int) -> str:
    """The end of a lease taken or extended at ``now_text``, as stored text."""
    return to_sqlite(from_sqlite(now_text) + timedelta(seconds=lease_s))


def was_taken_over(conn: sqlite3.Connection, run: Run) -> bool:
    """The run's lease moved on from the one ``run`` was claimed with: another instance
    recovered it (or it belongs to another owner now). Not so for a run merely ended elsewhere
    (``jobs cancel``) or deleted with its job."""
    row = conn.execute(
        "SELECT owner, lease_generation FROM runs WHERE id = ?", (run.id,)
    ).fetchone()
    if row is None:
        return False
    return bool(row["lease_generation"] != run.lease_generation or (row["owner"] or "") != (run.owner or ""))


def beat(db: Database, run_ids: Iterable[str], now_text: str, owner: str | None = None,
         lease_s: int = DEFAULT_LEASE_S, generations: Mapping[str, int] | None = None) -> set[str]:
    """Heartbeat the runs and extend their leases by ``lease_s``. With ``owner``, only runs still
    running under that owner (and the generation in ``generations``, when given) are extended:
    the others are returned, lost to this owner (recovered by another instance, ended
    elsewhere, or deleted). Without ``owner``, the ids no longer running are returned."""
    ids = list(run_ids)
    if not ids:
        return set()
    until = lease_until(now_text, lease_s)
    held = generations or {}
    lost: set[str] = set()
    with db.transaction() as conn:
        for run_id in ids:
            sql = ("UPDATE runs SET last_heartbeat = ?, lease_expires_at = ? "
                   "WHERE id = ? AND status = 'running'")
            params: list[object] = [now_text, until, run_id]
            if owner is not None:
                sql += " AND COALESCE(owner, '') = ?"
                params.append(owner)
            if run_id in held:
                sql += " AND lease_generation = ?"
                params.append(int(held[run_id]))
            if conn.execute(sql, params).rowcount == 0:
                lost.add(run_id)
    return lost


def statuses(db: Database, run_ids: Iterable[str]) -> dict[str, str]:
    """``{run id: status}`` for those of ``run_ids`` that still exist (a deleted job takes its
    runs with it)."""
    ids = list(run_ids)
    if not ids:
        return {}
    marks = ", ".join("?" for _ in ids)
    rows = db.query(f"SELECT id, status FROM runs WHERE id IN ({marks})", ids)
    return {str(row["id"]): str(row["status"]) for row in rows}
