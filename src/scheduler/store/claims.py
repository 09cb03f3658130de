"""Claiming due work: one transaction turns due occurrences and queue rows into ``running`` runs.

A claim is atomic against the CLI and against any other process on the same file: an occurrence
is taken once (compare-and-set on ``next_run_at``, then the idempotency ledger), a queue row once
(``pending`` → ``claimed``), and the run row and ledger entry exist before anything starts.
Every occurrence that is not run leaves a ``skipped`` run that says why (overlap, resource
pool, misfire grace, an already claimed key, a disabled job): never a silent drop.
"""

from __future__ import annotations

import sqlite3
import uuid
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Literal

from scheduler.store import idempotency as ledger
from scheduler.store import queue
from scheduler.store.db import Database, Row
from scheduler.timeutil import from_sqlite, to_sqlite

Source = Literal["cron", "at", "manual", "retry", "chain"]
NextFire = Callable[[Row], str | None]
Verdict = Literal["run", "skip", "queue", "full", "wait"]

# How often a queue row is re-checked while its job or pool is busy.
BUSY_RECHECK_S = 1


@dataclass(frozen=True)
class Claim:
    """A run created for due work, ready for a strategy."""

    run: Row
    job: Row
    source: Source
    dispatch_id: str | None


@dataclass
class ClaimBatch:
    claims: list[Claim] = field(default_factory=list)
    skipped: list[Row] = field(default_factory=list)
    postponed: int = 0


# The pseudo-target that stands for watchdog jobs, whatever their session_target.
WATCHDOG = "watchdog"


def _target_filter(targets: Collection[str]) -> tuple[str, list[str]]:
    """SQL for "a job this daemon has a strategy for": standard jobs by session_target, watchdog
    jobs by job_type."""
    sessions = [t for t in targets if t != WATCHDOG]
    marks = ", ".join("?" for _ in sessions) or "NULL"
    clause = f"(COALESCE(j.job_type, 'standard') = 'standard' AND j.session_target IN ({marks}))"
    if WATCHDOG in targets:
        clause = f"({clause} OR j.job_type = 'watchdog')"
    return clause, sessions


# An at-job whose occurrence already ran is not due even if next_run_at says so: the reference
# stamps last_run_at this way to hold the at-path while a retry of the occurrence is queued.
_AT_ALREADY_RAN = (
    "NOT (j.schedule_kind = 'at' AND j.schedule_at IS NOT NULL AND j.last_run_at IS NOT NULL "
    "AND j.last_run_at >= j.schedule_at)"
)


def next_due_at(db: Database, targets: Collection[str]) -> str | None:
    """The earliest instant at which work this daemon can run becomes due."""
    where, params = _target_filter(targets)
    job_due = db.scalar(
        "SELECT MIN(j.next_run_at) FROM jobs j WHERE j.enabled = 1 AND j.parent_id IS NULL "
        f"AND j.next_run_at IS NOT NULL AND {_AT_ALREADY_RAN} AND {where}",
        params,
    )
    queue_due = db.scalar(
        "SELECT MIN(q.scheduled_for) FROM job_dispatch_queue q JOIN jobs j ON j.id = q.job_id "
        f"WHERE q.status = 'pending' AND {where}",
        params,
    )
    candidates = [t for t in (job_due, queue_due) if t is not None]
    return min(candidates) if candidates else None


def jobs_without_strategy(db: Database, targets: Collection[str]) -> list[Row]:
    """Enabled root jobs this daemon has no strategy for (they stay due, untouched)."""
    where, params = _target_filter(targets)
    return db.query(
        "SELECT j.id, j.session_target, j.job_type FROM jobs j "
        f"WHERE j.enabled = 1 AND j.parent_id IS NULL AND NOT ({where})",
        params,
    )


# -- guards ------------------------------------------------------------------------------------


def _overlap(conn: sqlite3.Connection, job: Row) -> Verdict:
    policy = job["overlap_policy"] or "skip"
    if policy == "allow":
        return "run"
    running = conn.execute(
        "SELECT 1 FROM runs WHERE job_id = ? AND status = 'running' LIMIT 1", (job["id"],)
    ).fetchone()
    if running is None:
        return "run"
    if policy == "queue":
        queued = job["queued_count"] or 0
        return "queue" if queued < (job["max_queued_dispatches"] or 25) else "full"
    return "skip"


def _pool_busy(conn: sqlite3.Connection, job: Row) -> bool:
    """Resource pools hold one running run at a time, across all jobs that name the pool."""
    pool = job["resource_pool"]
    if not pool:
        return False
    row = conn.execute(
        "SELECT 1 FROM runs r JOIN jobs j ON j.id = r.job_id "
        "WHERE r.status = 'running' AND j.resource_pool = ? LIMIT 1",
        (pool,),
    ).fetchone()
    return row is not None


def _missed_by_s(job: Row, scheduled: str, now_text: str) -> float | None:
    """Seconds past its grace a fire time was claimed, or None if within grace (or no grace)."""
    grace = job.get("misfire_grace_s")
    if grace is None:
        return None
    late = (from_sqlite(now_text) - from_sqlite(scheduled)).total_seconds()
    return late if late > grace else None


# -- runs --------------------------------------------------------------------------------------


def _insert_run(
    conn: sqlite3.Connection,
    job: Row,
    now_text: str,
    *,
    status: str,
    key: str | None = None,
    dispatch_id: str | None = None,
    retry_of: str | None = None,
    replay_of: str | None = None,
    triggered_by: str | None = None,
    retry_count: int = 0,
    message: str | None = None,
) -> Row:
    run_id = str(uuid.uuid4())
    finished = None if status == "running" else now_text
    conn.execute(
        "INSERT INTO runs (id, job_id, status, started_at, finished_at, duration_ms, last_heartbeat, "
        "dispatched_at, run_timeout_ms, idempotency_key, dispatch_queue_id, retry_of, replay_of, "
        "triggered_by_run, retry_count, summary, error_message) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            run_id, job["id"], status, now_text, finished, None if finished is None else 0, now_text,
            now_text, job["run_timeout_ms"] or 300000, key, dispatch_id, retry_of, replay_of,
            triggered_by, retry_count, message, message,
        ),
    )
    row: Row = conn.execute("SELECT * FROM runs WHERE id = ?", (run_id,)).fetchone()
    return row


def _start_run(
    conn: sqlite3.Connection,
    job: Row,
    now_text: str,
    key: str,
    *,
    dispatch_id: str | None = None,
    retry_of: str | None = None,
    replay_of: str | None = None,
    triggered_by: str | None = None,
    retry_count: int = 0,
) -> Row:
    """Insert the running run and claim its key (the caller checked the key is free)."""
    ledger.free_run_key(conn, key)
    run = _insert_run(
        conn, job, now_text, status="running", key=key, dispatch_id=dispatch_id, retry_of=retry_of,
        replay_of=replay_of, triggered_by=triggered_by, retry_count=retry_count,
    )
    ledger.claim(conn, key, job["id"], run["id"], now_text, one_shot=bool(job["delete_after_run"]))
    return run


def _skip(conn: sqlite3.Connection, job: Row, now_text: str, batch: ClaimBatch, message: str,
          dispatch_id: str | None = None) -> None:
    batch.skipped.append(
        _insert_run(conn, job, now_text, status="skipped", dispatch_id=dispatch_id, message=message)
    )


# -- scheduled occurrences ---------------------------------------------------------------------


def _claim_occurrence(
    conn: sqlite3.Connection, job: Row, now_text: str, next_fire: NextFire, batch: ClaimBatch
) -> None:
    scheduled = job["next_run_at"]
    is_at = job["schedule_kind"] == "at"
    advanced = None if is_at else next_fire(job)
    moved = conn.execute(
        "UPDATE jobs SET next_run_at = ? WHERE id = ? AND next_run_at = ? AND enabled = 1",
        (advanced, job["id"], scheduled),
    )
    if moved.rowcount == 0:
        return  # another process took this occurrence first
    occurrence = job["schedule_at"] if is_at and job["schedule_at"] else scheduled
    key = ledger.occurrence_key(job["id"], occurrence)
    missed = _missed_by_s(job, scheduled, now_text)
    if ledger.is_claimed(conn, key):
        _skip(conn, job, now_text, batch, f"fire time {scheduled} UTC already claimed (key {key})")
        return
    if missed is not None:
        _skip(conn, job, now_text, batch,
              f"missed: fire time {scheduled} UTC was {missed:.0f}s ago, beyond misfire_grace_s "
              f"{job['misfire_grace_s']}")
        return
    if _pool_busy(conn, job):
        _skip(conn, job, now_text, batch,
              f"resource pool {job['resource_pool']!r} busy with another run; fire time skipped")
        return
    verdict = _overlap(conn, job)
    if verdict == "skip":
        _skip(conn, job, now_text, batch, "previous run still active (overlap_policy skip)")
    elif verdict == "full":
        _skip(conn, job, now_text, batch,
              "previous run still active and the overlap queue is full (max_queued_dispatches)")
    elif verdict == "queue":
        conn.execute(
            "UPDATE jobs SET queued_count = COALESCE(queued_count, 0) + 1 WHERE id = ?", (job["id"],)
        )
        _skip(conn, job, now_text, batch,
              "previous run still active; this fire time runs right after it (overlap_policy queue)")
    else:
        run = _start_run(conn, job, now_text, key)
        batch.claims.append(Claim(run=run, job=job, source="at" if is_at else "cron", dispatch_id=None))


# -- queue rows --------------------------------------------------------------------------------


def _row_key(row: Row) -> str:
    kind = row["dispatch_kind"]
    if kind == "manual":
        return ledger.manual_key(row["job_id"], row["id"])
    anchor = row["retry_of_run_id"] if kind == "retry" else row["source_run_id"]
    return ledger.chain_key(anchor or row["id"], row["job_id"])


def _claim_row(conn: sqlite3.Connection, row: Row, job: Row, now_text: str, batch: ClaimBatch) -> None:
    taken = conn.execute(
        "UPDATE job_dispatch_queue SET status = 'claimed', claimed_at = ? "
        "WHERE id = ? AND status = 'pending'",
        (now_text, row["id"]),
    )
    if taken.rowcount == 0:
        return
    kind = row["dispatch_kind"]
    if not job["enabled"] and kind != "manual":
        queue.close(conn, row["id"], "cancelled", now_text)
        _skip(conn, job, now_text, batch, f"job disabled; queued {kind} run cancelled", row["id"])
        return
    key = _row_key(row)
    if ledger.is_claimed(conn, key):
        queue.close(conn, row["id"], "done", now_text)
        _skip(conn, job, now_text, batch, f"queued {kind} run already claimed (key {key})", row["id"])
        return
    verdict = _overlap(conn, job)
    if _pool_busy(conn, job) or verdict in ("queue", "full"):
        # A queued run is never dropped for being early: it waits for the pool or the job.
        later = to_sqlite(from_sqlite(now_text) + timedelta(seconds=BUSY_RECHECK_S))
        queue.postpone(conn, row["id"], later)
        batch.postponed += 1
        return
    if verdict == "skip":
        queue.close(conn, row["id"], "cancelled", now_text)
        _skip(conn, job, now_text, batch, f"previous run still active (overlap_policy skip); "
              f"queued {kind} run cancelled", row["id"])
        return
    retry_count, replay_of = 0, None
    if row["retry_of_run_id"]:
        failed = conn.execute(
            "SELECT retry_count, status FROM runs WHERE id = ?", (row["retry_of_run_id"],)
        ).fetchone()
        if failed is not None:
            retry_count = failed["retry_count"] or 0
            replay_of = row["retry_of_run_id"] if failed["status"] == "crashed" else None
    run = _start_run(
        conn, job, now_text, key,
        dispatch_id=row["id"], retry_of=row["retry_of_run_id"], replay_of=replay_of,
        triggered_by=row["source_run_id"], retry_count=retry_count,
    )
    batch.claims.append(Claim(run=run, job=job, source=kind, dispatch_id=row["id"]))


def claim_due(
    db: Database, now_text: str, limit: int, targets: Collection[str], next_fire: NextFire
) -> ClaimBatch:
    """Claim up to ``limit`` runs of due work (scheduled occurrences first, then queue rows)."""
    batch = ClaimBatch()
    if limit <= 0:
        return batch
    where, params = _target_filter(targets)
    with db.transaction() as conn:
        jobs = conn.execute(
            "SELECT j.* FROM jobs j WHERE j.enabled = 1 AND j.parent_id IS NULL "
            f"AND j.next_run_at IS NOT NULL AND j.next_run_at <= ? AND {_AT_ALREADY_RAN} AND {where} "
            "ORDER BY j.next_run_at LIMIT ?",
            [now_text, *params, limit],
        ).fetchall()
        for job in jobs:
            _claim_occurrence(conn, job, now_text, next_fire, batch)
        room = limit - len(batch.claims)
        if room > 0:
            rows = conn.execute(
                "SELECT q.* FROM job_dispatch_queue q JOIN jobs j ON j.id = q.job_id "
                f"WHERE q.status = 'pending' AND q.scheduled_for <= ? AND {where} "
                "ORDER BY q.scheduled_for, q.created_at LIMIT ?",
                [now_text, *params, room],
            ).fetchall()
            for row in rows:
                job = conn.execute("SELECT * FROM jobs WHERE id = ?", (row["job_id"],)).fetchone()
                _claim_row(conn, row, job, now_text, batch)
    return batch


def defer_claim(db: Database, claim: Claim, now_text: str, reason: str) -> None:
    """Give a claim back: the run is recorded ``skipped`` with ``reason``, its idempotency key is
    released, and the work is due again (a queue row returns to ``pending``; a scheduled
    occurrence puts the job's ``next_run_at`` back to it). Used when the gateway is down."""
    key = claim.run["idempotency_key"]
    with db.transaction() as conn:
        conn.execute(
            "UPDATE runs SET status = 'skipped', finished_at = ?, duration_ms = 0, summary = ?, "
            "error_message = ?, idempotency_key = NULL WHERE id = ? AND status = 'running'",
            (now_text, reason, reason, claim.run["id"]),
        )
        if key:
            ledger.release_in(conn, key, now_text)
        if claim.dispatch_id:
            queue.postpone(conn, claim.dispatch_id, now_text)
        elif claim.job["next_run_at"] is not None:
            occurrence = claim.job["next_run_at"]
            conn.execute(
                "UPDATE jobs SET next_run_at = CASE WHEN next_run_at IS NULL OR next_run_at > ? "
                "THEN ? ELSE next_run_at END WHERE id = ?",
                (occurrence, occurrence, claim.job["id"]),
            )
