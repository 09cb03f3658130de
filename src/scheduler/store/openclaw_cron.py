"""Read the OpenClaw gateway's cron jobs from its state database, read-only.

``openclaw@2026.9.6`` keeps its cron jobs in ``<state dir>/state/openclaw.sqlite``, table
``cron_jobs``, one row per job with the job object in ``job_json`` (the shape of a legacy
``jobs.json`` entry). This database belongs to a running gateway, so it is opened with a
``mode=ro`` URI: nothing here can write to it, take a write lock, or create a missing file. One
SELECT reads one consistent snapshot (WAL readers never block the gateway's writer); a lock held
too long is reported, not waited out forever.

Not part of the ``Store`` protocol: that is the scheduler's own database; this is someone else's.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Final
from urllib.parse import quote

from scheduler.errors import SchedulerError

BUSY_TIMEOUT_S: Final = 5.0
SQLITE_MAGIC: Final = b"SQLite format 3\x00"


class GatewayDatabaseError(SchedulerError):
    """The gateway's database cannot be read (missing table, locked, not a database)."""


def is_sqlite_file(path: Path) -> bool:
    """Whether ``path`` starts with SQLite's file header (so ``--from`` can take either source)."""
    try:
        with path.open("rb") as handle:
            return handle.read(len(SQLITE_MAGIC)) == SQLITE_MAGIC
    except OSError:
        return False


def _read_only_uri(path: Path) -> str:
    return f"file:{quote(str(path.resolve()))}?mode=ro"


def has_cron_jobs_table(path: Path) -> bool:
    """Whether the database at ``path`` has a ``cron_jobs`` table (False when unreadable)."""
    try:
        conn = sqlite3.connect(_read_only_uri(path), uri=True, timeout=BUSY_TIMEOUT_S)
    except sqlite3.Error:
        return False
    try:
        row = conn.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'cron_jobs'"
        ).fetchone()
        return row is not None
    except sqlite3.OperationalError as exc:
        if _is_lock(exc):  # the right source, just busy: say so rather than look elsewhere
            raise GatewayDatabaseError(_explain(path, exc)) from None
        return False
    except sqlite3.Error:
        return False
    finally:
        conn.close()


def read_cron_job_texts(path: Path) -> list[str]:
    """The ``job_json`` text of every row, in the gateway's list order."""
    try:
        conn = sqlite3.connect(_read_only_uri(path), uri=True, timeout=BUSY_TIMEOUT_S)
    except sqlite3.Error as exc:
        raise GatewayDatabaseError(f"cannot open the gateway database {path} read-only: {exc}") from None
    try:
        rows = conn.execute("SELECT job_json FROM cron_jobs ORDER BY sort_order, rowid").fetchall()
    except sqlite3.OperationalError as exc:
        raise GatewayDatabaseError(_explain(path, exc)) from None
    except sqlite3.DatabaseError as exc:
        raise GatewayDatabaseError(f"{path} is not a readable SQLite database: {exc}") from None
    finally:
        conn.close()
    return [str(row[0]) for row in rows]


def _is_lock(exc: sqlite3.OperationalError) -> bool:
    return "locked" in str(exc) or "busy" in str(exc)


def _explain(path: Path, exc: sqlite3.OperationalError) -> str:
    text = str(exc)
    if _is_lock(exc):
        return (f"the gateway database {path} stayed locked for {BUSY_TIMEOUT_S:.0f}s; "
                "try again, or stop the gateway for a moment")
    if "no such table" in text:
        return f"{path} has no cron_jobs table: not an OpenClaw 2026.9+ state database"
    return f"cannot read cron jobs from {path}: {text}"
