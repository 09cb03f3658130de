"""Retention of runs and resolved approvals (messages and the ledger have their own modules).

Runs go by two rules: beyond the newest ``keep_per_job`` of their job (the reference keeps 100),
and, when ``keep_days`` is set, started more than that many days ago. Whatever the rules say,
a run is kept while something still needs it: it has not ended (running, or waiting on an
approval), a queued dispatch still reads it (a chain child's ``source_run_id``, a retry's
``retry_of_run_id``), or its outbound message is still unsent. The reference's prune deletes
even running runs once a job has a hundred newer ones.
"""

from __future__ import annotations

import sqlite3
from contextlib import suppress
from datetime import timedelta
from typing import Any, Final

from scheduler.store.api import RunPrune
from scheduler.store.sqlite.db import Database
from scheduler.timeutil import from_sqlite, to_sqlite

_UNFINISHED: Final = "('pending', 'running', 'awaiting_approval')"
_OPEN_DISPATCH: Final = "('pending', 'claimed', 'awaiting_approval')"

# The newest run of a job ranks 1; ties on started_at fall to the later insert.
_CANDIDATES: Final = f"""
WITH ranked AS (
  SELECT id, status, started_at,
         ROW_NUMBER() OVER (PARTITION BY job_id ORDER BY started_at DESC, rowid DESC) AS rank
  FROM runs
), needed AS (
  SELECT source_run_id AS id FROM job_dispatch_queue
   WHERE status IN {_OPEN_DISPATCH} AND source_run_id IS NOT NULL
  UNION
  SELECT retry_of_run_id FROM job_dispatch_queue
   WHERE status IN {_OPEN_DISPATCH} AND retry_of_run_id IS NOT NULL
  UNION
  SELECT run_id FROM messages
   WHERE to_agent = '@outbound' AND status = 'pending' AND run_id IS NOT NULL
)
SELECT id, CASE WHEN rank > :keep THEN 'over_cap' ELSE 'too_old' END AS rule
  FROM ranked
 WHERE (rank > :keep OR (:cutoff IS NOT NULL AND started_at < :cutoff))
   AND status NOT IN {_UNFINISHED}
   AND id NOT IN (SELECT id FROM needed)
"""

_DELETE_CHUNK: Final = 500


def _cutoff(now: str, days: int) -> str | None:
    return to_sqlite(from_sqlite(now) - timedelta(days=days)) if days > 0 else None


def prune_runs(db: Database, now: str, keep_per_job: int, keep_days: int, *,
               dry_run: bool = False) -> RunPrune:
    """Delete (or, with ``dry_run``, only find) the runs the rules let go, in one transaction;
    their ids come back so the caller can remove their artifact files."""
    params = {"keep": keep_per_job, "cutoff": _cutoff(now, keep_days)}
    if dry_run:
        return _tally(db.query(_CANDIDATES, params))
    with db.transaction() as conn:
        rows = [dict(r) for r in conn.execute(_CANDIDATES, params).fetchall()]
        _delete(conn, [r["id"] for r in rows])
    return _tally(rows)


def _tally(rows: list[Any]) -> RunPrune:
    by_rule = {"over_cap": 0, "too_old": 0}
    for row in rows:
        by_rule[row["rule"]] += 1
    return RunPrune(by_rule=by_rule, run_ids=[row["id"] for row in rows])


def _delete(conn: sqlite3.Connection, ids: list[str]) -> None:
    for start in range(0, len(ids), _DELETE_CHUNK):
        chunk = ids[start:start + _DELETE_CHUNK]
        marks = ",".join("?" * len(chunk))
        conn.execute(f"DELETE FROM runs WHERE id IN ({marks})", chunk)


_OLD_APPROVALS: Final = "FROM approvals WHERE status != 'pending' AND resolved_at < ?"


def prune_approvals(db: Database, now: str, keep_days: int, *, dry_run: bool = False) -> int:
    """Delete resolved approvals resolved more than ``keep_days`` ago (the reference: 30)."""
    cutoff = _cutoff(now, keep_days)
    if dry_run:
        return int(db.scalar(f"SELECT COUNT(*) {_OLD_APPROVALS}", (cutoff,)) or 0)
    with db.transaction() as conn:
        return conn.execute(f"DELETE {_OLD_APPROVALS}", (cutoff,)).rowcount


def run_ids_present(db: Database, run_ids: list[str]) -> set[str]:
    """Which of these ids name a run in the table (the artifact sweep's question)."""
    present: set[str] = set()
    for start in range(0, len(run_ids), _DELETE_CHUNK):
        chunk = run_ids[start:start + _DELETE_CHUNK]
        marks = ",".join("?" * len(chunk))
        present.update(r["id"] for r in db.query(f"SELECT id FROM runs WHERE id IN ({marks})", chunk))
    return present


def vacuum(db: Database) -> None:
    """Rebuild the file without its free pages; folds the WAL in first so the size shows."""
    db.checkpoint("TRUNCATE")
    db.query("VACUUM")
    db.checkpoint("TRUNCATE")


def file_bytes(db: Database) -> int:
    """The main file plus its WAL: what the database takes on disk now."""
    total = 0
    for suffix in ("", "-wal"):
        # no WAL (checkpointed and truncated), or an in-memory database: nothing to add
        with suppress(OSError):
            total += db.path.with_name(db.path.name + suffix).stat().st_size
    return total


# Job housekeeping (features.md §3.12), in the reference's order: a finished one-shot that kept
# itself (disabled, delete_after_run) goes a day after its last run; then a child whose parent is
# gone; then a disabled job past its ttl_hours after a final status. Whatever the rule says, a
# job stays while it has work in flight: a run not ended, an open queue row, or an outbound
# message of one of its runs not yet sent (deleting the job would take that message with it).
_JOB_IN_USE: Final = f"""
  SELECT job_id FROM runs WHERE status IN {_UNFINISHED}
  UNION SELECT job_id FROM job_dispatch_queue WHERE status IN {_OPEN_DISPATCH}
  UNION SELECT r.job_id FROM messages m JOIN runs r ON r.id = m.run_id
   WHERE m.to_agent = '@outbound' AND m.status = 'pending'
"""
_JOB_RULES: Final = {
    "finished_one_shots": "enabled = 0 AND delete_after_run = 1 AND last_run_at IS NOT NULL "
                          "AND last_run_at < datetime(:now, '-24 hours')",
    "orphaned_children": "parent_id IS NOT NULL AND parent_id NOT IN (SELECT id FROM jobs)",
    "ttl_expired": "ttl_hours IS NOT NULL AND enabled = 0 "
                   "AND last_status IN ('ok', 'error', 'timeout') AND last_run_at IS NOT NULL "
                   "AND last_run_at < datetime(:now, '-' || ttl_hours || ' hours')",
}


def _expired_job_ids(conn: sqlite3.Connection, rule: str, now: str,
                     gone: set[str]) -> list[str]:
    rows = conn.execute(
        f"SELECT id FROM jobs WHERE ({_JOB_RULES[rule]}) "
        f"AND id NOT IN ({_JOB_IN_USE}) ORDER BY id", {"now": now}).fetchall()
    ids = [row["id"] for row in rows if row["id"] not in gone]
    if rule != "orphaned_children" or not gone:
        return ids
    # In a dry run nothing was deleted yet: a child of a job an earlier rule would delete is
    # found through that job, as the real pass finds it after the delete.
    children = conn.execute(
        f"SELECT id FROM jobs WHERE parent_id IN ({','.join('?' * len(gone))}) "
        f"AND id NOT IN ({_JOB_IN_USE}) ORDER BY id", sorted(gone)).fetchall()
    return sorted({*ids, *(row["id"] for row in children if row["id"] not in gone)})


def prune_expired_jobs(db: Database, now: str, *, dry_run: bool = False) -> dict[str, int]:
    """Apply the job housekeeping rules in one transaction (a dry run only reads); counts by
    rule."""
    if dry_run:
        with db.reading() as conn:
            return _job_pass(conn, now, delete=False)
    with db.transaction() as conn:
        return _job_pass(conn, now, delete=True)


def _job_pass(conn: sqlite3.Connection, now: str, *, delete: bool) -> dict[str, int]:
    counts: dict[str, int] = {}
    gone: set[str] = set()
    for rule in _JOB_RULES:
        ids = _expired_job_ids(conn, rule, now, gone)
        counts[rule] = len(ids)
        gone.update(ids)
        if delete:
            for start in range(0, len(ids), _DELETE_CHUNK):
                chunk = ids[start:start + _DELETE_CHUNK]
                conn.execute(f"DELETE FROM jobs WHERE id IN ({','.join('?' * len(chunk))})", chunk)
    return counts
