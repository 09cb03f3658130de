"""Claiming due work and recording its outcome: the daemon's transactions.

Each function is one ``BEGIN IMMEDIATE`` transaction, so a claim is atomic against the CLI and
against any other process on the same file: an occurrence is taken once (compare-and-set on
``next_run_at`` plus the unique idempotency key on ``runs``), a queue row once (``pending`` →
``claimed``), and the run row exists before anything is started.
"""

from __future__ import annotations

import hashlib
import sqlite3
import uuid
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from scheduler.store.db import Database, Row
from scheduler.store.runs import FINISH_COLUMNS

Source = Literal["cron", "at", "manual", "retry", "chain"]
NextFire = Callable[[Row], str | None]

OVERLAP_SKIP_MESSAGE = "previous run still active (overlap_policy skip)"
OVERLAP_QUEUE_FULL_MESSAGE = "previous run still active and the overlap queue is full"
OVERLAP_QUEUED_MESSAGE = "previous run still active; queued behind it (overlap_policy queue)"
CRASH_MESSAGE = "the daemon stopped while this run was in progress (found at start-up)"


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
    cancelled_dispatches: int = 0


def idempotency_key(raw: str) -> str:
    """The reference's key shape: first 32 hex chars of sha256 of a descriptive string."""
    return hashlib.sha256(raw.encode("utf-8")).hexdigest()[:32]


def _target_filter(targets: Collection[str]) -> tuple[str, list[str]]:
    marks = ", ".join("?" for _ in targets)
    return (
        f"j.session_target IN ({marks}) AND COALESCE(j.job_type, 'standard') = 'standard'",
        list(targets),
    )


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


def _insert_run(
    conn: sqlite3.Connection,
    job: Row,
    now_text: str,
    *,
    status: str,
    key: str | None,
    dispatch_id: str | None = None,
    retry_of: str | None = None,
    triggered_by: str | None = None,
    message: str | None = None,
) -> Row:
    run_id = str(uuid.uuid4())
    finished = now_text if status != "running" else None
    conn.execute(
        "INSERT INTO runs (id, job_id, status, started_at, finished_at, duration_ms, last_heartbeat, "
        "dispatched_at, run_timeout_ms, idempotency_key, dispatch_queue_id, retry_of, "
        "triggered_by_run, summary, error_message) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            run_id,
            job["id"],
            status,
            now_text,
            finished,
            0 if finished else None,
            now_text,
            now_text,
            job["run_timeout_ms"] or 300000,
            key,
            dispatch_id,
            retry_of,
            triggered_by,
            message,
            message,
        ),
    )
    row: Row = conn.execute("SELECT * FROM runs WHERE id = ?", (run_id,)).fetchone()
    return row


def _running_count(conn: sqlite3.Connection, job_id: str) -> int:
    return int(
        conn.execute(
            "SELECT COUNT(*) AS n FROM runs WHERE job_id = ? AND status = 'running'", (job_id,)
        ).fetchone()["n"]
    )


def _overlap_verdict(conn: sqlite3.Connection, job: Row) -> Literal["run", "skip", "queue", "full"]:
    policy = job["overlap_policy"] or "skip"
    if policy == "allow" or _running_count(conn, job["id"]) == 0:
        return "run"
    if policy == "queue":
        queued = job["queued_count"] or 0
        return "queue" if queued < (job["max_queued_dispatches"] or 25) else "full"
    return "skip"


def _claim_scheduled(
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
    key = idempotency_key(f"{job['id']}:{occurrence}")
    verdict = _overlap_verdict(conn, job)
    conn.execute("SAVEPOINT occurrence")
    try:
        if verdict == "run":
            run = _insert_run(conn, job, now_text, status="running", key=key)
            batch.claims.append(Claim(run=run, job=job, source="at" if is_at else "cron", dispatch_id=None))
        else:
            if verdict == "queue":
                conn.execute(
                    "UPDATE jobs SET queued_count = COALESCE(queued_count, 0) + 1 WHERE id = ?",
                    (job["id"],),
                )
            message = {
                "skip": OVERLAP_SKIP_MESSAGE,
                "queue": OVERLAP_QUEUED_MESSAGE,
                "full": OVERLAP_QUEUE_FULL_MESSAGE,
            }[verdict]
            batch.skipped.append(_insert_run(conn, job, now_text, status="skipped", key=key, message=message))
        conn.execute("RELEASE occurrence")
    except sqlite3.IntegrityError:
        # The occurrence already has a run (clock stepped back, or a reference daemon fired it).
        conn.execute("ROLLBACK TO occurrence")
        conn.execute("RELEASE occurrence")


def _dispatch_key(row: Row) -> str:
    kind = row["dispatch_kind"]
    if kind == "manual":
        return idempotency_key(f"run_now:{row['job_id']}:{row['dispatch_id']}")
    anchor = row["retry_of_run_id"] if kind == "retry" else row["source_run_id"]
    return idempotency_key(f"chain:{anchor or row['dispatch_id']}:{row['job_id']}")


def _close_dispatch(conn: sqlite3.Connection, dispatch_id: str, status: str, now_text: str) -> None:
    conn.execute(
        "UPDATE job_dispatch_queue SET status = ?, processed_at = ? WHERE id = ?",
        (status, now_text, dispatch_id),
    )


def _claim_dispatch(conn: sqlite3.Connection, row: Row, job: Row, now_text: str, batch: ClaimBatch) -> None:
    taken = conn.execute(
        "UPDATE job_dispatch_queue SET status = 'claimed', claimed_at = ? "
        "WHERE id = ? AND status = 'pending'",
        (now_text, row["dispatch_id"]),
    )
    if taken.rowcount == 0:
        return
    if not job["enabled"] and row["dispatch_kind"] != "manual":
        _close_dispatch(conn, row["dispatch_id"], "cancelled", now_text)
        batch.cancelled_dispatches += 1
        return
    verdict = _overlap_verdict(conn, job)
    key = _dispatch_key(row)
    conn.execute("SAVEPOINT dispatch")
    try:
        if verdict == "run":
            run = _insert_run(
                conn,
                job,
                now_text,
                status="running",
                key=key,
                dispatch_id=row["dispatch_id"],
                retry_of=row["retry_of_run_id"],
                triggered_by=row["source_run_id"],
            )
            batch.claims.append(
                Claim(run=run, job=job, source=row["dispatch_kind"], dispatch_id=row["dispatch_id"])
            )
        else:
            batch.skipped.append(
                _insert_run(
                    conn, job, now_text, status="skipped", key=None,
                    dispatch_id=row["dispatch_id"], message=OVERLAP_SKIP_MESSAGE,
                )
            )
            _close_dispatch(conn, row["dispatch_id"], "cancelled", now_text)
        conn.execute("RELEASE dispatch")
    except sqlite3.IntegrityError:
        conn.execute("ROLLBACK TO dispatch")
        conn.execute("RELEASE dispatch")
        _close_dispatch(conn, row["dispatch_id"], "done", now_text)


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
            _claim_scheduled(conn, job, now_text, next_fire, batch)
        room = limit - len(batch.claims)
        if room > 0:
            rows = conn.execute(
                "SELECT q.id AS dispatch_id, q.dispatch_kind, q.source_run_id, q.retry_of_run_id, "
                "q.job_id FROM job_dispatch_queue q JOIN jobs j ON j.id = q.job_id "
                f"WHERE q.status = 'pending' AND q.scheduled_for <= ? AND {where} "
                "ORDER BY q.scheduled_for, q.created_at LIMIT ?",
                [now_text, *params, room],
            ).fetchall()
            for row in rows:
                job = conn.execute("SELECT * FROM jobs WHERE id = ?", (row["job_id"],)).fetchone()
                _claim_dispatch(conn, row, job, now_text, batch)
    return batch


def enqueue_dispatch(
    db: Database,
    job_id: str,
    kind: str,
    scheduled_for: str,
    *,
    source_run_id: str | None = None,
    retry_of_run_id: str | None = None,
    backlog_cap: int | None = None,
) -> Row | None:
    """Queue a run of ``job_id``. Returns None when the job's live backlog is at ``backlog_cap``."""
    dispatch_id = str(uuid.uuid4())
    with db.transaction() as conn:
        if backlog_cap is not None:
            live = conn.execute(
                "SELECT COUNT(*) AS n FROM job_dispatch_queue WHERE job_id = ? "
                "AND status IN ('pending', 'claimed', 'awaiting_approval')",
                (job_id,),
            ).fetchone()["n"]
            if live >= backlog_cap:
                return None
        conn.execute(
            "INSERT INTO job_dispatch_queue (id, job_id, dispatch_kind, status, scheduled_for, "
            "source_run_id, retry_of_run_id) VALUES (?, ?, ?, 'pending', ?, ?, ?)",
            (dispatch_id, job_id, kind, scheduled_for, source_run_id, retry_of_run_id),
        )
    return db.query_one("SELECT * FROM job_dispatch_queue WHERE id = ?", (dispatch_id,))


@dataclass(frozen=True)
class Finish:
    """The end of one run, as the engine hands it over to be recorded."""

    claim: Claim
    status: str
    duration_ms: int
    columns: dict[str, Any]

    def __post_init__(self) -> None:
        unknown = set(self.columns) - FINISH_COLUMNS
        if unknown:
            raise ValueError(f"not run result columns: {sorted(unknown)}")


def finish_runs(
    db: Database, finishes: Sequence[Finish], now_text: str, backoff_until: Callable[[int], str]
) -> list[Row | None]:
    """Record the end of several runs, and their jobs' new state, in one transaction.

    One commit for a batch: the daemon hands over every run that ended while the previous batch
    was being written. Returns, per run, the job row afterwards (None if the job is gone, by the
    user or by ``delete_after_run``). ``backoff_until(n)`` gives the earliest next run after ``n``
    consecutive errors.
    """
    with db.transaction() as conn:
        return [_finish_one(conn, f, now_text, backoff_until) for f in finishes]


def finish_run(
    db: Database,
    claim: Claim,
    status: str,
    duration_ms: int,
    columns: dict[str, Any],
    now_text: str,
    backoff_until: Callable[[int], str],
) -> Row | None:
    """``finish_runs`` for a single run."""
    return finish_runs(db, [Finish(claim, status, duration_ms, columns)], now_text, backoff_until)[0]


def _finish_one(
    conn: sqlite3.Connection, finish: Finish, now_text: str, backoff_until: Callable[[int], str]
) -> Row | None:
    claim, columns = finish.claim, finish.columns
    assignments = "".join(f", {name} = ?" for name in columns)
    conn.execute(
        "UPDATE runs SET status = ?, finished_at = ?, duration_ms = ?, last_heartbeat = ?"
        f"{assignments} WHERE id = ? AND status = 'running'",
        [finish.status, now_text, finish.duration_ms, now_text, *columns.values(), claim.run["id"]],
    )
    if claim.dispatch_id:
        _close_dispatch(conn, claim.dispatch_id, "done", now_text)
    job = conn.execute("SELECT * FROM jobs WHERE id = ?", (claim.job["id"],)).fetchone()
    if job is None:
        return None
    return _update_job_after_run(conn, job, claim.source, finish.status, now_text, backoff_until)


def _update_job_after_run(
    conn: sqlite3.Connection,
    job: Row,
    source: Source,
    status: str,
    now_text: str,
    backoff_until: Callable[[int], str],
) -> Row | None:
    errors = job["consecutive_errors"] or 0
    if status in ("error", "timeout"):
        errors += 1
    elif status == "ok":
        errors = 0
    patch: dict[str, Any] = {
        "last_run_at": now_text,
        "last_status": status,
        "consecutive_errors": errors,
        "updated_at": now_text,
    }
    delete = False
    if source == "at":
        if job["delete_after_run"]:
            delete = True
        else:
            patch["enabled"] = 0
    elif job["schedule_kind"] != "at" and job["parent_id"] is None:
        if errors > 0 and source == "cron" and job["next_run_at"] is not None:
            patch["next_run_at"] = max(job["next_run_at"], backoff_until(errors))
        if status == "ok" and job["delete_after_run"] and source == "cron":
            delete = True
        queued = job["queued_count"] or 0
        if queued > 0 and not delete:
            patch["queued_count"] = queued - 1
            patch["next_run_at"] = now_text
    if delete:
        conn.execute("DELETE FROM jobs WHERE id = ?", (job["id"],))
        return None
    assignments = ", ".join(f"{name} = ?" for name in patch)
    conn.execute(f"UPDATE jobs SET {assignments} WHERE id = ?", [*patch.values(), job["id"]])
    row: Row = conn.execute("SELECT * FROM jobs WHERE id = ?", (job["id"],)).fetchone()
    return row


def recover_orphans(db: Database, now_text: str) -> list[Row]:
    """At start-up (the single-instance lock is held): runs left ``running`` by a dead process
    become ``crashed``; their queue rows close; their idempotency keys are released; at-jobs whose
    occurrence crashed are disabled (at-most-once). Queue rows left ``claimed`` without a live
    run go back to ``pending``. Returns the crashed runs."""
    with db.transaction() as conn:
        orphans = conn.execute(
            "SELECT r.*, j.schedule_kind, j.delivery_guarantee FROM runs r "
            "JOIN jobs j ON j.id = r.job_id WHERE r.status = 'running'"
        ).fetchall()
        for run in orphans:
            conn.execute(
                "UPDATE runs SET status = 'crashed', finished_at = ?, error_message = ?, "
                "duration_ms = CAST((julianday(?) - julianday(started_at)) * 86400000 AS INTEGER) "
                "WHERE id = ?",
                (now_text, CRASH_MESSAGE, now_text, run["id"]),
            )
            if run["dispatch_queue_id"]:
                _close_dispatch(conn, run["dispatch_queue_id"], "done", now_text)
            if run["idempotency_key"]:
                conn.execute(
                    "UPDATE idempotency_ledger SET status = 'released', released_at = ? "
                    "WHERE key = ? AND status = 'claimed'",
                    (now_text, run["idempotency_key"]),
                )
            at_occurrence = run["schedule_kind"] == "at" and run["dispatch_queue_id"] is None
            conn.execute(
                "UPDATE jobs SET last_run_at = ?, last_status = 'crashed', updated_at = ?"
                + (", enabled = 0" if at_occurrence else "")
                + " WHERE id = ?",
                (now_text, now_text, run["job_id"]),
            )
        conn.execute(
            "UPDATE job_dispatch_queue SET status = 'pending', claimed_at = NULL "
            "WHERE status = 'claimed' AND NOT EXISTS (SELECT 1 FROM runs r "
            "WHERE r.dispatch_queue_id = job_dispatch_queue.id)"
        )
    return list(orphans)


def jobs_missing_next_run(db: Database) -> list[Row]:
    """Enabled root cron jobs with no next run (a reference DB can hold these)."""
    return db.query(
        "SELECT * FROM jobs WHERE enabled = 1 AND parent_id IS NULL AND next_run_at IS NULL "
        "AND schedule_kind = 'cron' AND schedule_cron IS NOT NULL"
    )


def set_next_run(db: Database, job_id: str, next_run_at: str | None) -> None:
    with db.transaction() as conn:
        conn.execute("UPDATE jobs SET next_run_at = ? WHERE id = ?", (next_run_at, job_id))


def jobs_without_strategy(db: Database, targets: Collection[str]) -> list[Row]:
    """Enabled root jobs this daemon has no strategy for (they stay due, untouched)."""
    where, params = _target_filter(targets)
    return db.query(
        "SELECT j.id, j.session_target, j.job_type FROM jobs j "
        f"WHERE j.enabled = 1 AND j.parent_id IS NULL AND NOT ({where})",
        params,
    )
