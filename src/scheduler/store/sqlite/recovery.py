"""Start-up recovery and run health: what happens to work a dead process left behind.

Runs left ``running`` by a process that died become ``crashed``. What follows depends on the
job's ``delivery_guarantee``: ``at-least-once`` work is replayed exactly once per crash (a
``retry`` queue row; the new run's ``replay_of`` names the crashed run), ``at-most-once`` work
is not run again (an at-job whose only occurrence crashed is disabled), so the crash is the end
of its work and its failure and complete children fire, in the transaction that records the
crash; a replayed crash fires none (the replay's end will).

Each run is held under a lease (``lease_expires_at``, extended by the heartbeat) of a
generation (``lease_generation``). A run whose owner's lease expired is recovered the same way
by any other instance while it serves (``recover_expired_leases``), and its generation moves
on: the old owner, should it come back, can no longer record it (finish.py checks it).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Collection
from datetime import timedelta

from scheduler.models.records import Job, Run
from scheduler.store import DEFAULT_LEASE_S
from scheduler.store.api import Chained, Claim, NextFireAfter, Owner, Recovery, Source
from scheduler.store.sqlite import idempotency as ledger
from scheduler.store.sqlite import queue
from scheduler.store.sqlite.chains import fire_children
from scheduler.store.sqlite.db import Database, Row
from scheduler.timeutil import from_sqlite, to_sqlite

CRASH_MESSAGE = "the daemon stopped while this run was in progress (found at start-up)"

_ORPHANS = (
    "SELECT r.*, j.schedule_kind AS job_schedule_kind, j.next_run_at AS job_next_run_at, "
    "j.delivery_guarantee AS job_guarantee, j.enabled AS job_enabled "
    "FROM runs r JOIN jobs j ON j.id = r.job_id WHERE r.status = 'running' "
    "AND (r.owner IS NULL OR r.owner != ?) "
)
# Two parameters: now, and the instant a run with no lease must have beaten since (now - lease).
_LEASE_EXPIRED = (
    "AND (r.lease_expires_at < ? OR (r.lease_expires_at IS NULL AND r.last_heartbeat < ?)) "
)


def recover_orphans(db: Database, now_text: str, owner: Owner | None = None, *,
                    shared: bool = False, lease_s: int = DEFAULT_LEASE_S) -> Recovery:
    """Call at start, before claiming anything. On a store of its own (``shared`` False: the
    single-instance lock is held), every instance but ``owner`` (this daemon) is gone, so their
    running runs crashed. On a shared store other instances live: only the runs whose lease
    expired are theirs no longer. (Runs of the reference's daemon, and of old versions of ours,
    have no owner and no lease: on a shared store they count as expired once their heartbeat
    is older than a lease.)"""
    return _recover(db, now_text, owner, lease_s, expired_only=shared)


def recover_expired_leases(db: Database, now_text: str, owner: Owner,
                           lease_s: int = DEFAULT_LEASE_S) -> Recovery:
    """While serving: the running runs of other instances whose lease expired (their host
    died, or their daemon stalled or was cut off) are recovered as after a crash, and fenced:
    their old owner can no longer record them."""
    return _recover(db, now_text, owner, lease_s, expired_only=True)


def _recover(db: Database, now_text: str, owner: Owner | None, lease_s: int, *,
             expired_only: bool) -> Recovery:
    result = Recovery()
    mine = "" if owner is None else owner.text
    with db.transaction() as conn:
        if expired_only:
            cutoff = to_sqlite(from_sqlite(now_text) - timedelta(seconds=lease_s))
            orphans = conn.execute(_ORPHANS + _LEASE_EXPIRED + "ORDER BY r.started_at",
                                   (mine, now_text, cutoff)).fetchall()
        else:
            orphans = conn.execute(_ORPHANS + "ORDER BY r.started_at", (mine,)).fetchall()
        for run in orphans:
            message = _lease_message(run, mine) if expired_only else CRASH_MESSAGE
            _crash(conn, run, now_text, message, result)
    queue.reap(db, now_text)
    return result


def _lease_message(run: Row, mine: str) -> str:
    by = f" (recovered by {mine})" if mine else ""
    if run["lease_expires_at"] is None:
        return (f"no heartbeat since {run['last_heartbeat']} UTC from the daemon running it "
                f"({run['owner'] or 'no owner recorded'}), which held no lease{by}")
    return (f"the lease of its owner {run['owner'] or '(none recorded)'} expired at "
            f"{run['lease_expires_at']} UTC while this run was in progress{by}")


def _crash(conn: sqlite3.Connection, run: Row, now_text: str, message: str,
           result: Recovery) -> None:
    """Record one orphaned run as ``crashed`` and what follows from its job's guarantee, in the
    caller's transaction: the one handling of a dead owner's run, at start and while serving.
    Compare-and-set on the run's lease generation, which moves on: another instance that
    recovered or ended the run first wins, and the old owner is fenced off."""
    crashed = conn.execute(
        "UPDATE runs SET status = 'crashed', finished_at = ?, error_message = ?, "
        "duration_ms = CAST((julianday(?) - julianday(started_at)) * 86400000 AS INTEGER), "
        "lease_generation = lease_generation + 1 "
        "WHERE id = ? AND status = 'running' AND lease_generation = ?",
        (now_text, message, now_text, run["id"], run["lease_generation"]),
    )
    if crashed.rowcount == 0:
        return
    if run["dispatch_queue_id"]:
        queue.close(conn, run["dispatch_queue_id"], "done", now_text)
    if run["idempotency_key"]:
        ledger.release_in(conn, run["idempotency_key"], now_text)
    replay = run["job_guarantee"] == "at-least-once" and run["job_enabled"]
    if replay:
        result.replays.append(
            queue.insert(conn, run["job_id"], "retry", now_text,
                         source_run_id=run["id"], retry_of_run_id=run["id"])
        )
    else:
        # A crash that is not replayed ends the job's work: its failure and complete
        # children fire now, in this transaction.
        result.children[run["id"]] = _fire_children_of_crash(conn, run, message, now_text)
    occurrence_lost = (
        not replay and run["job_schedule_kind"] == "at" and run["job_next_run_at"] is None
    )
    conn.execute(
        "UPDATE jobs SET last_run_at = ?, last_status = 'crashed', updated_at = ?"
        + (", enabled = 0" if occurrence_lost else "")
        + " WHERE id = ?",
        (now_text, now_text, run["job_id"]),
    )
    result.crashed.append(Run.from_row(run))


def _fire_children_of_crash(conn: sqlite3.Connection, run: Row, message: str,
                            now_text: str) -> Chained:
    job = conn.execute("SELECT * FROM jobs WHERE id = ?", (run["job_id"],)).fetchone()
    return fire_children(conn, job, run["id"], "crashed", message, now_text).as_chained()


def jobs_missing_next_run(db: Database) -> list[Job]:
    """Enabled root cron jobs with no next run (a reference DB can hold these)."""
    rows = db.query(
        "SELECT * FROM jobs WHERE enabled = 1 AND parent_id IS NULL AND next_run_at IS NULL "
        "AND schedule_kind = 'cron' AND schedule_cron IS NOT NULL"
    )
    return [Job.from_row(row) for row in rows]


def set_next_run(db: Database, job_id: str, next_run_at: str | None) -> None:
    with db.transaction() as conn:
        conn.execute("UPDATE jobs SET next_run_at = ? WHERE id = ?", (next_run_at, job_id))


def unwatched_stale_runs(
    db: Database, threshold_s: int, now_text: str, watched: Collection[str]
) -> list[Claim]:
    """Running runs whose heartbeat stopped ``threshold_s`` ago and that this daemon is not
    running itself: nobody will finish them, so the health check ends them as ``timeout``."""
    rows = db.query(
        "SELECT r.*, q.dispatch_kind FROM runs r LEFT JOIN job_dispatch_queue q "
        "ON q.id = r.dispatch_queue_id WHERE r.status = 'running' AND r.last_heartbeat < datetime(?, ?)",
        (now_text, f"-{int(threshold_s)} seconds"),
    )
    claims: list[Claim] = []
    for run in rows:
        if run["id"] in watched:
            continue
        job = db.query_one("SELECT * FROM jobs WHERE id = ?", (run["job_id"],))
        if job is None:
            continue
        source: Source = run.pop("dispatch_kind", None) or (
            "at" if job["schedule_kind"] == "at" else "cron")
        claims.append(Claim(run=Run.from_row(run), job=Job.from_row(job), source=source,
                            dispatch_id=run["dispatch_queue_id"]))
    return claims


def _earlier_by(value: str, seconds: float, floor: str) -> str:
    return max(floor, to_sqlite(from_sqlite(value) - timedelta(seconds=seconds)))


def shift_back_after_clock_step(
    db: Database, seconds: float, now_text: str, next_fire_after: NextFireAfter
) -> int:
    """The wall clock was stepped back by ``seconds``: every future instant the daemon computed
    from the old clock (cron fire times, retry and delivery due times, approval requests) lies
    that much too far ahead. Bring each back by the step (never before now), cron jobs onto their own grid, so
    nothing waits out the step; and release the ledger keys claimed under the old clock in the
    stretch of wall time that now comes round again, so jobs keep their cadence through it.
    Returns how many rows changed."""
    moved = 0
    with db.transaction() as conn:
        moved += ledger.release_claimed_after(conn, now_text)
        jobs = conn.execute(
            "SELECT * FROM jobs WHERE enabled = 1 AND parent_id IS NULL AND schedule_kind = 'cron' "
            "AND schedule_cron IS NOT NULL AND next_run_at > ?",
            (now_text,),
        ).fetchall()
        for job in jobs:
            start = _earlier_by(job["next_run_at"], seconds, now_text)
            fire = next_fire_after(Job.from_row(job), to_sqlite(from_sqlite(start) - timedelta(seconds=1)))
            if fire is not None and fire < job["next_run_at"]:
                conn.execute("UPDATE jobs SET next_run_at = ? WHERE id = ?", (fire, job["id"]))
                moved += 1
        for table, column, where in (
            ("job_dispatch_queue", "scheduled_for", "status = 'pending'"),
            ("messages", "next_attempt_at", "status = 'pending'"),
            # A pending approval asked under the old clock would time out that much late.
            ("approvals", "requested_at", "status = 'pending'"),
        ):
            rows = conn.execute(
                f"SELECT id, {column} AS due FROM {table} WHERE {where} AND {column} > ?", (now_text,)
            ).fetchall()
            for row in rows:
                conn.execute(f"UPDATE {table} SET {column} = ? WHERE id = ?",
                             (_earlier_by(row["due"], seconds, now_text), row["id"]))
            moved += len(rows)
    return moved


def latest_recorded_instant(db: Database) -> str | None:
    """The latest wall time any run or ledger claim was recorded at: later than now means the
    clock was stepped back while no daemon watched it."""
    value = db.scalar(
        "SELECT MAX(t) FROM (SELECT MAX(started_at) AS t FROM runs "
        "UNION ALL SELECT MAX(claimed_at) FROM idempotency_ledger) AS latest"
    )
    return None if value is None else str(value)
