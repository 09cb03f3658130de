"""Resource pools: how many runs of the jobs that name a pool may run at once.

A pool exists as soon as a job names it (``jobs.resource_pool``); its capacity is 1, as in the
reference, unless ``resource_pools`` holds a row for it. Capacity is checked when work is claimed,
inside the claim's ``BEGIN IMMEDIATE`` transaction, so two processes on one file never run more
than ``capacity`` runs of a pool between them.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass, field

from scheduler.models.pools import DEFAULT_CAPACITY, check_capacity, check_name

__all__ = ["DEFAULT_CAPACITY", "PoolLoad", "full_pools", "get_capacity", "remove", "set_capacity"]
from scheduler.store.sqlite.db import Database

# Running runs per pool. It walks the pooled jobs (idx_jobs_pool; CROSS JOIN keeps that order)
# and their running runs (idx_runs_running_job), so its cost grows with the pooled jobs, not
# with everything that runs.
_RUNNING_PER_POOL = (
    "SELECT pj.resource_pool AS pool, COUNT(*) AS running FROM jobs pj CROSS JOIN runs pr "
    "WHERE pj.resource_pool IS NOT NULL AND pj.resource_pool != '' AND pr.job_id = pj.id "
    "AND pr.status = 'running' GROUP BY pj.resource_pool"
)
_FULL_POOLS = (
    f"SELECT pool FROM ({_RUNNING_PER_POOL}) AS per_pool WHERE running >= COALESCE("
    f"(SELECT pc.capacity FROM resource_pools pc WHERE pc.name = pool), {DEFAULT_CAPACITY}) "
    "ORDER BY pool"
)


def full_pools(db: Database) -> list[str]:
    """The pools with no free place now (only work of these can be waiting for a pool)."""
    return [str(row["pool"]) for row in db.query(_FULL_POOLS)]


@dataclass
class PoolLoad:
    """Running runs and capacity per pool, as one claim transaction sees them.

    Read on first use and kept up to date by ``take`` as the transaction starts runs; nothing
    else writes while the transaction holds the write lock, so the counts stay exact.
    """

    conn: sqlite3.Connection
    _running: dict[str, int] | None = None
    _capacity: dict[str, int] = field(default_factory=dict)

    def _load(self) -> dict[str, int]:
        if self._running is None:
            rows = self.conn.execute(_RUNNING_PER_POOL).fetchall()
            self._running = {row["pool"]: int(row["running"]) for row in rows}
            self._capacity = {
                row["name"]: int(row["capacity"])
                for row in self.conn.execute("SELECT name, capacity FROM resource_pools").fetchall()
            }
        return self._running

    def full(self) -> list[str]:
        """The pools with no free place, as this transaction began."""
        return sorted(pool for pool in self._load() if not self.has_room(pool))

    def running(self, pool: str) -> int:
        return self._load().get(pool, 0)

    def capacity(self, pool: str) -> int:
        self._load()
        return self._capacity.get(pool, DEFAULT_CAPACITY)

    def has_room(self, pool: str | None) -> bool:
        return not pool or self.running(pool) < self.capacity(pool)

    def take(self, pool: str | None) -> None:
        if pool:
            running = self._load()
            running[pool] = running.get(pool, 0) + 1

    def describe(self, pool: str) -> str:
        """``'gpu' (1 of 1 running)``, for the reasons recorded on skipped runs."""
        return f"{pool!r} ({self.running(pool)} of {self.capacity(pool)} running)"


# -- capacities (the CLI's `pools` commands) ------------------------------------------------------


def get_capacity(db: Database, name: str) -> int | None:
    """The configured capacity of ``name``, or None when it has the default."""
    value = db.scalar("SELECT capacity FROM resource_pools WHERE name = ?", (name,))
    return None if value is None else int(value)


def set_capacity(db: Database, name: str, capacity: int, now_text: str) -> None:
    check_name(name)
    check_capacity(capacity)
    with db.transaction() as conn:
        conn.execute(
            "INSERT INTO resource_pools (name, capacity, created_at, updated_at) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (name) DO UPDATE SET capacity = excluded.capacity, "
            "updated_at = excluded.updated_at",
            (name, capacity, now_text, now_text),
        )


def remove(db: Database, name: str) -> bool:
    """Forget a configured capacity (the pool is back to the default). False if none was set."""
    with db.transaction() as conn:
        return conn.execute("DELETE FROM resource_pools WHERE name = ?", (name,)).rowcount > 0
