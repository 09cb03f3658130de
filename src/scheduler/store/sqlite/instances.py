"""SQL for the ``instances`` table: the daemons that serve this database.

Each daemon start is one instance (its id is new at every start). It registers itself, refreshes
its ``last_seen`` on a heartbeat and marks itself stopped on a clean exit; it never writes
another instance's row, so instances need no coordination here. An instance is *live* while it
is not stopped and beat within the lease; the caller passes the cut (``live_since``) as stored
text, so the SQL does no date arithmetic.
"""

from __future__ import annotations

import json
from typing import Any

from scheduler.store.api import Owner
from scheduler.store.sqlite.db import Database, Row


def register(db: Database, owner: Owner, version: str, pid: int, now: str) -> None:
    """Insert the instance (or, should its id be registered already, start it afresh)."""
    labels = json.dumps(list(owner.labels))
    with db.transaction() as conn:
        conn.execute(
            "INSERT INTO instances (id, host, labels, version, pid, started_at, last_seen, "
            "stopped_at) VALUES (?, ?, ?, ?, ?, ?, ?, NULL) "
            "ON CONFLICT (id) DO UPDATE SET host = excluded.host, labels = excluded.labels, "
            "version = excluded.version, pid = excluded.pid, last_seen = excluded.last_seen, "
            "stopped_at = NULL",
            (owner.instance, owner.host, labels, version, pid, now, now),
        )


def beat(db: Database, owner: Owner, now: str) -> bool:
    """``last_seen`` is now; False when the row is gone (pruned while the instance was silent)
    or marked stopped, and the instance must register again."""
    with db.transaction() as conn:
        moved = conn.execute(
            "UPDATE instances SET last_seen = ? WHERE id = ? AND stopped_at IS NULL",
            (now, owner.instance),
        )
    return moved.rowcount > 0


def mark_stopped(db: Database, owner: Owner, now: str) -> None:
    with db.transaction() as conn:
        conn.execute(
            "UPDATE instances SET stopped_at = ?, last_seen = ? WHERE id = ? AND stopped_at IS NULL",
            (now, now, owner.instance),
        )


def _labels(text: Any) -> list[str]:
    try:
        value = json.loads(text or "[]")
    except ValueError:
        return []
    return [str(label) for label in value] if isinstance(value, list) else []


def list_instances(db: Database, live_since: str) -> list[Row]:
    """Every instance, live ones first, then by host and start (newest first): its columns,
    ``labels`` parsed, ``live`` and ``running_runs`` (its runs now ``running``)."""
    running = {
        str(row["owner"]): int(row["n"])
        for row in db.query(
            "SELECT owner, COUNT(*) AS n FROM runs WHERE status = 'running' AND owner IS NOT NULL "
            "GROUP BY owner"
        )
    }
    rows = db.query(
        "SELECT id, host, labels, version, pid, started_at, last_seen, stopped_at, "
        "CASE WHEN stopped_at IS NULL AND last_seen >= ? THEN 1 ELSE 0 END AS live "
        "FROM instances ORDER BY live DESC, host, started_at DESC, id",
        (live_since,),
    )
    for row in rows:
        row["labels"] = _labels(row["labels"])
        row["live"] = bool(row["live"])
        row["running_runs"] = running.get(f"{row['id']}@{row['host']}", 0)
    return rows


def prune(db: Database, before: str, *, dry_run: bool = False) -> int:
    """Remove the instances stopped, or silent, since before ``before``; how many."""
    where = ("(stopped_at IS NOT NULL AND stopped_at < ?) "
             "OR (stopped_at IS NULL AND last_seen < ?)")
    if dry_run:
        return int(db.scalar(f"SELECT COUNT(*) FROM instances WHERE {where}", (before, before)) or 0)
    with db.transaction() as conn:
        gone = conn.execute(f"DELETE FROM instances WHERE {where}", (before, before))
    return int(gone.rowcount)


def placed_jobs(db: Database) -> list[Row]:
    """Enabled jobs with a placement: ``id, name, placement, next_run_at`` and ``due_rows``
    (their queue rows waiting to run), by name."""
    return db.query(
        "SELECT j.id, j.name, j.placement, j.next_run_at, "
        "(SELECT COUNT(*) FROM job_dispatch_queue q WHERE q.job_id = j.id "
        " AND q.status = 'pending') AS due_rows "
        "FROM jobs j WHERE j.enabled = 1 AND j.placement IS NOT NULL AND j.placement != '' "
        "ORDER BY j.name, j.id"
    )
