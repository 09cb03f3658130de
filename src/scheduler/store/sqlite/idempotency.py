"""The idempotency ledger: each unit of work (a scheduled occurrence, a retry of a failed run, a
manual run) is claimed once under a key, so no restart, clock step or second process runs it twice.

Key shapes are the reference's (first 32 hex chars of sha256 of a descriptive string), so keys
a reference daemon claimed in a shared database are honoured here.
"""

from __future__ import annotations

import hashlib
import sqlite3

from scheduler.errors import NotFoundError
from scheduler.store.sqlite.db import Database, Row

# How long a ledger row is kept after its claim.
EXPIRY_ONE_SHOT = "+24 hours"
EXPIRY_DEFAULT = "+7 days"


def idempotency_key(raw: str) -> str:
    return hashlib.sha256(raw.encode("utf-8")).hexdigest()[:32]


def occurrence_key(job_id: str, scheduled_text: str) -> str:
    """A cron fire time or an at-job's time (stored UTC text)."""
    return idempotency_key(f"{job_id}:{scheduled_text}")


def manual_key(job_id: str, dispatch_id: str) -> str:
    return idempotency_key(f"run_now:{job_id}:{dispatch_id}")


def chain_key(anchor_run_or_dispatch: str, job_id: str) -> str:
    """Retries, replays and chained runs: anchored on the run they follow."""
    return idempotency_key(f"chain:{anchor_run_or_dispatch}:{job_id}")


def is_claimed(conn: sqlite3.Connection, key: str) -> bool:
    row = conn.execute("SELECT status FROM idempotency_ledger WHERE key = ?", (key,)).fetchone()
    return row is not None and row["status"] == "claimed"


def holder(conn: sqlite3.Connection, key: str) -> str | None:
    """The run that holds ``key`` claimed, or None when the key is free (absent or released)."""
    row = conn.execute("SELECT status, run_id FROM idempotency_ledger WHERE key = ?", (key,)).fetchone()
    return str(row["run_id"]) if row is not None and row["status"] == "claimed" else None


def release_claimed_after(conn: sqlite3.Connection, now_text: str) -> int:
    """Release keys claimed at a wall time later than now: only a wall clock stepped back since
    can do that, and the instants they name will come round again as new occurrences."""
    return conn.execute(
        "UPDATE idempotency_ledger SET status = 'released', released_at = ? "
        "WHERE status = 'claimed' AND claimed_at > ?",
        (now_text, now_text),
    ).rowcount


def claim(
    conn: sqlite3.Connection, key: str, job_id: str, run_id: str, now_text: str, one_shot: bool
) -> bool:
    """Claim ``key`` for ``run_id`` (inside the caller's transaction). A released key is claimed
    again: the run that held it gives up its copy of the key, so the new run can carry it
    (the reference could never re-dispatch a released key, §17 #5b)."""
    expiry = EXPIRY_ONE_SHOT if one_shot else EXPIRY_DEFAULT
    row = conn.execute("SELECT status, run_id FROM idempotency_ledger WHERE key = ?", (key,)).fetchone()
    if row is not None and row["status"] == "claimed":
        return False
    if row is None:
        conn.execute(
            "INSERT INTO idempotency_ledger (key, job_id, run_id, status, claimed_at, expires_at) "
            "VALUES (?, ?, ?, 'claimed', ?, datetime(?, ?))",
            (key, job_id, run_id, now_text, now_text, expiry),
        )
    else:
        conn.execute(
            "UPDATE idempotency_ledger SET status = 'claimed', job_id = ?, run_id = ?, claimed_at = ?, "
            "released_at = NULL, result_hash = NULL, expires_at = datetime(?, ?) WHERE key = ?",
            (job_id, run_id, now_text, now_text, expiry, key),
        )
    return True


def free_run_key(conn: sqlite3.Connection, key: str) -> None:
    """Before a new run takes ``key``: earlier runs that carried it keep their history but not
    the key (``runs.idempotency_key`` is unique)."""
    conn.execute("UPDATE runs SET idempotency_key = NULL WHERE idempotency_key = ?", (key,))


def release_in(conn: sqlite3.Connection, key: str, now_text: str) -> bool:
    cursor = conn.execute(
        "UPDATE idempotency_ledger SET status = 'released', released_at = ? "
        "WHERE key = ? AND status = 'claimed'",
        (now_text, key),
    )
    return cursor.rowcount > 0


# -- the CLI's view ---------------------------------------------------------------------------


def for_job(db: Database, job_id: str, limit: int = 20) -> list[Row]:
    return db.query(
        "SELECT * FROM idempotency_ledger WHERE job_id = ? ORDER BY claimed_at DESC, rowid DESC LIMIT ?",
        (job_id, limit),
    )


def get(db: Database, key: str) -> Row | None:
    return db.query_one("SELECT * FROM idempotency_ledger WHERE key = ?", (key,))


def release(db: Database, key: str, now_text: str) -> Row:
    """Release a claimed key so its work may run again. Raises NotFoundError for unknown keys."""
    with db.transaction() as conn:
        if conn.execute("SELECT 1 FROM idempotency_ledger WHERE key = ?", (key,)).fetchone() is None:
            raise NotFoundError(f"Idempotency key not found: {key}")
        release_in(conn, key, now_text)
    row = get(db, key)
    assert row is not None
    return row


def prune(db: Database, now_text: str, *, dry_run: bool = False) -> int:
    """Delete expired ledger rows (with ``dry_run``, only count them); returns how many."""
    if dry_run:
        return int(db.scalar("SELECT COUNT(*) FROM idempotency_ledger WHERE expires_at < ?",
                             (now_text,)))
    with db.transaction() as conn:
        return conn.execute("DELETE FROM idempotency_ledger WHERE expires_at < ?", (now_text,)).rowcount
