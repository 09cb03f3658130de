"""Claiming on a database shared by several daemons.

Every other write on PostgreSQL takes the fleet-wide writer lock (db.py), which gives the SQL of
store/sqlite/ the one-writer-at-a-time semantics it was written for. Claims do not: the due jobs
and queue rows a claim acts on are locked with ``FOR UPDATE SKIP LOCKED``, so two daemons
claiming at once take different work and neither waits. What a claim decides beyond its own rows
is guarded by locks taken first, always in this order (so no two claims deadlock):

1. the writer lock, only when a pending approval has timed out (resolving it writes rows that
   the CLI and other claims may also write);
2. the pool lock, only when some enabled job belongs to a resource pool: the running count of a
   pool is then read and raised by one claim at a time, so a capacity holds fleet-wide;
3. the job rows (and queue rows) of the work, skipping those another claim holds. A job's
   overlap check reads its running runs while its row is locked, so no other daemon can start
   a run of the same job in between; each occurrence's idempotency key is a primary key, so
   the same occurrence can never be recorded twice.
"""

from __future__ import annotations

from collections.abc import Collection

from scheduler.store.api import ClaimBatch, NextFire, Owner
from scheduler.store.postgres.db import WRITE_LOCK_KEY, PgDatabase
from scheduler.store.sqlite import approvals
from scheduler.store.sqlite.claims import claim_in

POOL_LOCK_KEY = 0x6F63_506C  # "ocPl"
_POOLED = "SELECT EXISTS (SELECT 1 FROM jobs WHERE resource_pool IS NOT NULL AND enabled = 1)"


def claim_due(db: PgDatabase, now_text: str, limit: int, targets: Collection[str],
              next_fire: NextFire, owner: Owner | None, lease_s: int) -> ClaimBatch:
    if limit <= 0:
        return ClaimBatch()
    deadline = approvals.next_deadline(db)  # type: ignore[arg-type]
    with db.transaction(write_lock=False) as conn:
        if deadline is not None and deadline <= now_text:
            conn.execute("SELECT pg_advisory_xact_lock(?)", (WRITE_LOCK_KEY,))
        if conn.execute(_POOLED).fetchone() == {"exists": True}:
            conn.execute("SELECT pg_advisory_xact_lock(?)", (POOL_LOCK_KEY,))
        return claim_in(conn, now_text, limit, targets, next_fire, owner, lease_s,
                        skip_locked=True)
