"""SQL for the ``runs`` table: reads for the CLI, heartbeats, finishing and crash recovery."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from scheduler.errors import NotFoundError
from scheduler.store.sqlite.db import Database, Row

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


def beat(db: Database, run_ids: Iterable[str], now_text: str) -> None:
    ids = list(run_ids)
    if not ids:
        return
    with db.transaction() as conn:
        conn.executemany(
            "UPDATE runs SET last_heartbeat = ? WHERE id = ? AND status = 'running'",
            [(now_text, run_id) for run_id in ids],
        )


def statuses(db: Database, run_ids: Iterable[str]) -> dict[str, str]:
    """``{run id: status}`` for those of ``run_ids`` that still exist (a deleted job takes its
    runs with it)."""
    ids = list(run_ids)
    if not ids:
        return {}
    marks = ", ".join("?" for _ in ids)
    rows = db.query(f"SELECT id, status FROM runs WHERE id IN ({marks})", ids)
    return {str(row["id"]): str(row["status"]) for row in rows}
