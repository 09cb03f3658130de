"""Claiming due work: one transaction turns due occurrences and queue rows into ``running`` runs.

A claim is atomic against the CLI and against any other process on the same file: an occurrence
is taken once (compare-and-set on ``next_run_at``, then the idempotency ledger), a queue row once
(``pending`` → ``claimed``), and the run row and ledger entry exist before anything starts.
Every occurrence that is not run leaves a ``skipped`` run that says why (overlap, misfire grace,
an already claimed key, a disabled job): never a silent drop.

Work whose resource pool is full *waits*: nothing is written for it, so an occurrence keeps its
``next_run_at`` and a queue row its ``scheduled_for``, and the pool's next free place goes to the
work that fell due first, occurrences and queue rows alike. A waiter is not due for the loop
(``next_due_at``) until its misfire grace runs out; a run that ends wakes the loop to look again.

Work of a job with ``approval_required`` passes the same guards, and where it would start a run
it is gated instead (``_gate``, with approvals.py): a gate run ``awaiting_approval`` holds the
work's idempotency key, and the work waits as a queue row ``awaiting_approval``. Once approved,
the row is claimed like any other but never gated again, and never dropped by a guard: it waits
for its job's own run (whatever the overlap policy) and for its pool (past any misfire grace).
Approvals that time out are resolved at the start of each claim; their deadlines are part of
``next_due_at``.
"""

from __future__ import annotations

import sqlite3
import uuid
from collections.abc import Collection
from dataclasses import dataclass
from typing import Literal

from scheduler.models.placement import served_placements
from scheduler.models.records import DEFAULT_MAX_QUEUED_DISPATCHES, DEFAULT_RUN_TIMEOUT_MS, Job, Run
from scheduler.store import DEFAULT_LEASE_S
from scheduler.store.api import DISPATCH, WATCHDOG, Claim, ClaimBatch, NextFire, Owner
from scheduler.store.sqlite import approvals, pools, queue, runs
from scheduler.store.sqlite import idempotency as ledger
from scheduler.store.sqlite.db import Database, Row
from scheduler.timeutil import from_sqlite

Verdict = Literal["run", "skip", "queue", "full"]


def _strategy_filter(targets: Collection[str]) -> tuple[str, list[str]]:
    """SQL for "a job this daemon has a strategy for": standard jobs by session_target, watchdog
    and dispatch jobs by job_type."""
    sessions = [t for t in targets if t not in (WATCHDOG, DISPATCH)]
    marks = ", ".join("?" for _ in sessions) or "NULL"
    clause = f"(COALESCE(j.job_type, 'standard') = 'standard' AND j.session_target IN ({marks}))"
    for pseudo in (WATCHDOG, DISPATCH):
        if pseudo in targets:
            clause = f"({clause} OR j.job_type = '{pseudo}')"
    return clause, sessions


def _placement_filter(owner: Owner | None) -> tuple[str, list[str]]:
    """SQL for "a job placed where this instance serves": no placement, its host or one of its
    labels. Without an owner (a caller that speaks for no instance), every placement."""
    if owner is None:
        return "1 = 1", []
    served = served_placements(owner.host, owner.labels)
    marks = ", ".join("?" for _ in served)
    return f"(j.placement IS NULL OR j.placement = '' OR j.placement IN ({marks}))", served


def _target_filter(targets: Collection[str], owner: Owner | None) -> tuple[str, list[str]]:
    """SQL for "work this instance runs": a strategy for it, and placed where it serves.
    claim_due, next_due_at and jobs_without_strategy share it, so the loop never wakes for
    work another instance is to run."""
    strategy, params = _strategy_filter(targets)
    placed, served = _placement_filter(owner)
    return f"({strategy} AND {placed})", [*params, *served]


# An at-job whose occurrence already ran is not due even if next_run_at says so: the reference
# stamps last_run_at this way to hold the at-path while a retry of the occurrence is queued.
AT_ALREADY_RAN = (
    "NOT (j.schedule_kind = 'at' AND j.schedule_at IS NOT NULL AND j.last_run_at IS NOT NULL "
    "AND j.last_run_at >= j.schedule_at)"
)
_DUE_OCCURRENCE = (
    "j.enabled = 1 AND j.parent_id IS NULL AND j.next_run_at IS NOT NULL AND " + AT_ALREADY_RAN
)
# One probe of idx_runs_running_job, made only for the rows that get this far.
_OWN_RUN_ACTIVE = "EXISTS (SELECT 1 FROM runs own WHERE own.job_id = j.id AND own.status = 'running')"
_POLICY = "COALESCE(j.overlap_policy, 'skip')"
# A queue row whose work an approval let through (approvals.granted says the same per row).
_APPROVED_ROW = (
    "EXISTS (SELECT 1 FROM approvals ap WHERE ap.dispatch_queue_id = q.id "
    "AND ap.status IN ('approved', 'dispatched'))"
)
# A queue row of a job whose own run is active waits for that run under overlap `queue`, and
# so does approved work under `skip` (it is never dropped for overlap, reference §17 #23).
_ROW_WAITS_FOR_OWN_RUN = (
    f"({_POLICY} != 'allow' AND {_OWN_RUN_ACTIVE} AND ({_POLICY} = 'queue' OR {_APPROVED_ROW}))"
)


@dataclass(frozen=True)
class _PoolWaitSql:
    """SQL for "this due work waits for its pool", given the pools that are full now.

    Due work whose pool is full waits until its misfire grace runs out (then it is skipped),
    unless the overlap policy decides first: a fire time of a job whose own run is active is
    skipped or counted under `skip`/`queue`; a queue row of such a job is cancelled under `skip`.
    claim_due and next_due_at share these conditions, so the loop never wakes for work that
    would only wait again; _occurrence_waits and _row_waits decide the same per item, with the
    pool counts of the claim in progress. The full pools are computed once and bound as
    parameters (each condition takes ``full``): while no pool is full, the conditions are a
    plain false and the queries cost what they did before pools could wait.
    """

    full: list[str]
    occurrence: str = "FALSE"
    row: str = "FALSE"
    in_full: str = "FALSE"  # the job's pool is full, in a form an index can serve

    @classmethod
    def build(cls, full: list[str]) -> _PoolWaitSql:
        if not full:
            return cls(full)
        in_pools = f"j.resource_pool IN ({', '.join('?' for _ in full)})"
        in_full = f"COALESCE({in_pools}, FALSE)"
        decided_at_once = (
            f"((j.enabled = 0 AND q.dispatch_kind != 'manual') OR ({_POLICY} = 'skip' AND {_OWN_RUN_ACTIVE}))"
        )
        return cls(
            full,
            occurrence=f"({in_full} AND NOT ({_POLICY} != 'allow' AND {_OWN_RUN_ACTIVE}))",
            row=f"(NOT {decided_at_once} AND NOT {_ROW_WAITS_FOR_OWN_RUN} AND {in_full})",
            in_full=in_pools,
        )


def _past_grace(due: str) -> str:
    """SQL, one ``?`` for now: work due at ``due`` has waited beyond the job's misfire grace."""
    return f"(j.misfire_grace_s IS NOT NULL AND datetime({due}, '+' || j.misfire_grace_s || ' seconds') < ?)"


def _grace_deadline(due: str) -> str:
    """SQL: the first whole second at which work due at ``due`` is past the job's misfire grace."""
    return f"datetime({due}, '+' || (j.misfire_grace_s + 1) || ' seconds')"


def next_due_at(db: Database, targets: Collection[str], owner: Owner | None = None) -> str | None:
    """The earliest instant at which work this daemon can run needs it: due work placed where it
    serves and not waiting for a pool, a waiter's misfire grace running out, or a pending
    approval timing out (any instance resolves those). (A pool that frees wakes the loop
    anyway.)"""
    where, params = _target_filter(targets, owner)
    waits = _PoolWaitSql.build(pools.full_pools(db))
    candidates = [
        db.scalar(
            f"SELECT MIN(j.next_run_at) FROM jobs j WHERE {_DUE_OCCURRENCE} AND {where} "
            f"AND NOT {waits.occurrence}",
            [*params, *waits.full],
        ),
        db.scalar(
            "SELECT MIN(q.scheduled_for) FROM job_dispatch_queue q JOIN jobs j ON j.id = q.job_id "
            f"WHERE q.status = 'pending' AND {where} AND NOT {_ROW_WAITS_FOR_OWN_RUN} "
            f"AND NOT {waits.row}",
            [*params, *waits.full],
        ),
    ]
    if waits.full:  # when a waiter's grace runs out (waiters are jobs of full pools)
        candidates += [
            db.scalar(
                f"SELECT MIN({_grace_deadline('j.next_run_at')}) FROM jobs j WHERE {waits.in_full} "
                f"AND {_DUE_OCCURRENCE} AND {where} AND j.misfire_grace_s IS NOT NULL "
                f"AND {waits.occurrence}",
                [*waits.full, *params, *waits.full],
            ),
            db.scalar(
                f"SELECT MIN({_grace_deadline('q.scheduled_for')}) FROM job_dispatch_queue q "
                f"JOIN jobs j ON j.id = q.job_id WHERE q.status = 'pending' AND {where} "
                f"AND j.misfire_grace_s IS NOT NULL AND {waits.row} AND NOT {_APPROVED_ROW}",
                [*params, *waits.full],
            ),
        ]
    candidates.append(approvals.next_deadline(db))  # a pending approval times out
    due = [t for t in candidates if t is not None]
    return min(due) if due else None


def jobs_without_strategy(db: Database, targets: Collection[str],
                          owner: Owner | None = None) -> list[Job]:
    """Enabled root jobs placed where this daemon serves that it has no strategy for (they stay
    due, untouched). Jobs placed elsewhere are another instance's, not missing a strategy."""
    strategy, params = _strategy_filter(targets)
    placed, served = _placement_filter(owner)
    rows = db.query(
        f"SELECT j.* FROM jobs j WHERE j.enabled = 1 AND j.parent_id IS NULL AND {placed} "
        f"AND NOT ({strategy})",
        [*served, *params],
    )
    return [Job.from_row(row) for row in rows]


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
        return "queue" if queued < (job["max_queued_dispatches"] or DEFAULT_MAX_QUEUED_DISPATCHES) else "full"
    return "skip"


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
    owner: str | None = None,
    lease_until: str | None = None,
) -> Row:
    run_id = str(uuid.uuid4())
    finished = None if status in ("running", "awaiting_approval") else now_text
    conn.execute(
        "INSERT INTO runs (id, job_id, status, started_at, finished_at, duration_ms, last_heartbeat, "
        "dispatched_at, run_timeout_ms, idempotency_key, dispatch_queue_id, retry_of, replay_of, "
        "triggered_by_run, retry_count, summary, error_message, owner, lease_expires_at) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            run_id, job["id"], status, now_text, finished, None if finished is None else 0, now_text,
            now_text, job["run_timeout_ms"] or DEFAULT_RUN_TIMEOUT_MS, key, dispatch_id, retry_of,
            replay_of, triggered_by, retry_count, message, message, owner, lease_until,
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
    owner: str | None = None,
    status: str = "running",
    lease_s: int = DEFAULT_LEASE_S,
) -> Row:
    """Insert the running run, owned by the claiming instance under a lease of ``lease_s``
    seconds, and claim its key (the caller checked the key is free). A gate run
    (``awaiting_approval``) holds the key the same way, with no lease: nothing runs it."""
    ledger.free_run_key(conn, key)
    until = runs.lease_until(now_text, lease_s) if status == "running" else None
    run = _insert_run(
        conn, job, now_text, status=status, key=key, dispatch_id=dispatch_id, retry_of=retry_of,
        replay_of=replay_of, triggered_by=triggered_by, retry_count=retry_count, owner=owner,
        lease_until=until,
    )
    ledger.claim(conn, key, job["id"], run["id"], now_text, one_shot=bool(job["delete_after_run"]))
    return run


def record_skipped_run(conn: sqlite3.Connection, job: Row, now_text: str, message: str, *,
                       triggered_by: str | None = None) -> Run:
    """A ``skipped`` run of ``job`` saying why work was not started, in the caller's transaction
    (a chained run not queued names the parent run in ``triggered_by``)."""
    return Run.from_row(
        _insert_run(conn, job, now_text, status="skipped", triggered_by=triggered_by, message=message)
    )


def _skip(conn: sqlite3.Connection, job: Row, now_text: str, batch: ClaimBatch, message: str,
          dispatch_id: str | None = None) -> None:
    batch.skipped.append(Run.from_row(
        _insert_run(conn, job, now_text, status="skipped", dispatch_id=dispatch_id, message=message)
    ))


# -- approval gates ----------------------------------------------------------------------------


def _gate(conn: sqlite3.Connection, job: Row, now_text: str, batch: ClaimBatch, *, key: str,
          kind: str, scheduled_for: str, dispatch_id: str | None = None,
          triggered_by: str | None = None, retry_of: str | None = None) -> None:
    """Instead of starting a run: a gate run ``awaiting_approval`` that holds the work's key, an
    approval and its notification; the work waits as a queue row (a scheduled occurrence gets
    one of kind ``cron``/``at``). Past ``max_pending_approvals`` the work is refused: a
    ``skipped`` run says so, and its queue row is closed."""
    refused = approvals.refusal(conn, job)
    if refused is not None:
        if dispatch_id is not None:
            queue.close(conn, dispatch_id, "cancelled", now_text)
        _skip(conn, job, now_text, batch, refused, dispatch_id)
        return
    if dispatch_id is None:
        dispatch_id = str(queue.insert(conn, job["id"], kind, scheduled_for)["id"])
    run = _start_run(conn, job, now_text, key, dispatch_id=dispatch_id, retry_of=retry_of,
                     triggered_by=triggered_by, status="awaiting_approval")
    if approvals.request(conn, Job.from_row(job), run["id"], dispatch_id, now_text) is not None:
        batch.notices += 1
    gate = conn.execute("SELECT * FROM runs WHERE id = ?", (run["id"],)).fetchone()
    batch.gated.append(Run.from_row(gate))


def _claimed_elsewhere(conn: sqlite3.Connection, key: str, approval: Row | None) -> bool:
    """``key`` is held by a run other than the gate run whose approval let this work through."""
    holder = ledger.holder(conn, key)
    return holder is not None and (approval is None or holder != approval["run_id"])


def _take_over_from_gate(conn: sqlite3.Connection, approval: Row, key: str, now_text: str) -> None:
    """The approved work's run takes the key its gate run held, and the approval is spent."""
    if ledger.holder(conn, key) == approval["run_id"]:
        ledger.release_in(conn, key, now_text)
    approvals.mark_dispatched(conn, approval, now_text)


# -- scheduled occurrences ---------------------------------------------------------------------

_OVERLAP_SKIPS: dict[Verdict, str] = {
    "skip": "previous run still active (overlap_policy skip)",
    "full": "previous run still active and the overlap queue is full (max_queued_dispatches)",
    "queue": "previous run still active; this fire time runs right after it (overlap_policy queue)",
}


def _occurrence_waits(job: Row, claimed: bool, missed: float | None, verdict: Verdict,
                      load: pools.PoolLoad) -> bool:
    """A fire time waits, untouched, when only its full pool stands in its way."""
    return not claimed and missed is None and verdict == "run" and not load.has_room(job["resource_pool"])


def _missed_message(job: Row, scheduled: str, missed: float, load: pools.PoolLoad) -> str:
    text = (f"missed: fire time {scheduled} UTC was {missed:.0f}s ago, beyond misfire_grace_s "
            f"{job['misfire_grace_s']}")
    pool = job["resource_pool"]
    if pool and not load.has_room(pool):
        text += f", waiting for resource pool {load.describe(pool)}"
    return text


def _advance(conn: sqlite3.Connection, job: Row, record: Job, next_fire: NextFire) -> bool:
    """Move the job past its due occurrence (compare-and-set on ``next_run_at``)."""
    advanced = None if job["schedule_kind"] == "at" else next_fire(record)
    moved = conn.execute(
        "UPDATE jobs SET next_run_at = ? WHERE id = ? AND next_run_at = ? AND enabled = 1",
        (advanced, job["id"], job["next_run_at"]),
    )
    return moved.rowcount > 0


def _claim_occurrence(
    conn: sqlite3.Connection, job: Row, now_text: str, next_fire: NextFire, batch: ClaimBatch,
    load: pools.PoolLoad, owner: str | None, lease_s: int = DEFAULT_LEASE_S,
) -> None:
    scheduled = job["next_run_at"]
    is_at = job["schedule_kind"] == "at"
    key = ledger.occurrence_key(job["id"], job["schedule_at"] if is_at and job["schedule_at"] else scheduled)
    claimed = ledger.is_claimed(conn, key)
    missed = _missed_by_s(job, scheduled, now_text)
    verdict = _overlap(conn, job)
    if _occurrence_waits(job, claimed, missed, verdict, load):
        batch.waiting += 1
        return
    record = Job.from_row(job)
    if not _advance(conn, job, record, next_fire):
        return  # another process took this occurrence first
    if claimed:
        _skip(conn, job, now_text, batch, f"fire time {scheduled} UTC already claimed (key {key})")
    elif missed is not None:
        _skip(conn, job, now_text, batch, _missed_message(job, scheduled, missed, load))
    elif verdict != "run":
        if verdict == "queue":
            conn.execute(
                "UPDATE jobs SET queued_count = COALESCE(queued_count, 0) + 1 WHERE id = ?", (job["id"],)
            )
        _skip(conn, job, now_text, batch, _OVERLAP_SKIPS[verdict])
    elif approvals.gates(job, "at" if is_at else "cron"):
        _gate(conn, job, now_text, batch, key=key, kind="at" if is_at else "cron", scheduled_for=scheduled)
    else:
        run = _start_run(conn, job, now_text, key, owner=owner, lease_s=lease_s)
        load.take(job["resource_pool"])
        batch.claims.append(Claim(run=Run.from_row(run), job=record,
                                  source="at" if is_at else "cron", dispatch_id=None))


# -- queue rows --------------------------------------------------------------------------------


def _row_key(row: Row) -> str:
    kind = row["dispatch_kind"]
    if kind == "manual":
        return ledger.manual_key(row["job_id"], row["id"])
    anchor = row["retry_of_run_id"] if kind == "retry" else row["source_run_id"]
    return ledger.chain_key(anchor or row["id"], row["job_id"])


def _disabled_message(kind: str) -> str:
    return f"job disabled; queued {kind} run cancelled"


def _row_waits(row: Row, job: Row, verdict: Verdict, now_text: str, load: pools.PoolLoad,
               approved: bool = False) -> bool:
    """A queue row waits, untouched, while its own job's run is active under overlap ``queue``,
    or while its pool is full and its misfire grace lasts. Approved work waits for both instead
    of being dropped: for its job's own run under any policy but ``allow``, for its pool however
    long it takes."""
    if not job["enabled"] and row["dispatch_kind"] != "manual":
        return False  # cancelled below
    if verdict in ("queue", "full"):
        return True
    if verdict == "skip":
        return approved
    if approved:
        return not load.has_room(job["resource_pool"])
    within_grace = _missed_by_s(job, row["scheduled_for"], now_text) is None
    return within_grace and not load.has_room(job["resource_pool"])


def _row_closed_because(conn: sqlite3.Connection, row: Row, job: Row, key: str, verdict: Verdict,
                        now_text: str, load: pools.PoolLoad,
                        approval: Row | None = None) -> tuple[str, str] | None:
    """Why a claimed queue row ends without a run, as (row status, reason); None to run it.
    (Approved work reaches the overlap and pool reasons never: it waits instead.)"""
    kind = row["dispatch_kind"]
    if not job["enabled"] and kind != "manual":
        return "cancelled", _disabled_message(kind)
    if _claimed_elsewhere(conn, key, approval):
        return "done", f"queued {kind} run already claimed (key {key})"
    if verdict == "skip":
        return "cancelled", f"previous run still active (overlap_policy skip); queued {kind} run cancelled"
    pool = job["resource_pool"]
    if pool and not load.has_room(pool):  # only past its grace: within it, the row waits
        late = _missed_by_s(job, row["scheduled_for"], now_text) or 0.0
        return "cancelled", (
            f"missed: queued {kind} run due {row['scheduled_for']} UTC waited {late:.0f}s for "
            f"resource pool {load.describe(pool)}, beyond misfire_grace_s {job['misfire_grace_s']}"
        )
    return None


def _start_row_run(conn: sqlite3.Connection, row: Row, job: Row, key: str, now_text: str,
                   owner: str | None, lease_s: int = DEFAULT_LEASE_S) -> Claim:
    retry_count, replay_of, triggered_by = 0, None, row["source_run_id"]
    if row["retry_of_run_id"]:
        failed = conn.execute(
            "SELECT r.retry_count, r.status, r.triggered_by_run, t.job_id AS trigger_job "
            "FROM runs r LEFT JOIN runs t ON t.id = r.triggered_by_run WHERE r.id = ?",
            (row["retry_of_run_id"],),
        ).fetchone()
        if failed is not None:
            retry_count = failed["retry_count"] or 0
            replay_of = row["retry_of_run_id"] if failed["status"] == "crashed" else None
            if failed["triggered_by_run"] and failed["trigger_job"] != row["job_id"]:
                # A retry (or replay) of a chained run is still the parent's child: it gets the
                # parent run's output again, not its own failed attempt's (that is retry_of).
                triggered_by = failed["triggered_by_run"]
    run = _start_run(
        conn, job, now_text, key,
        dispatch_id=row["id"], retry_of=row["retry_of_run_id"], replay_of=replay_of,
        triggered_by=triggered_by, retry_count=retry_count, owner=owner, lease_s=lease_s,
    )
    return Claim(run=Run.from_row(run), job=Job.from_row(job), source=row["dispatch_kind"],
                 dispatch_id=row["id"])


def _claim_row(conn: sqlite3.Connection, row: Row, job: Row, now_text: str, batch: ClaimBatch,
               load: pools.PoolLoad, owner: str | None, lease_s: int = DEFAULT_LEASE_S) -> None:
    approval = approvals.granted(conn, row["id"]) if row.get("approved") else None
    verdict = _overlap(conn, job)
    if _row_waits(row, job, verdict, now_text, load, approved=approval is not None):
        batch.waiting += 1
        return
    taken = conn.execute(
        "UPDATE job_dispatch_queue SET status = 'claimed', claimed_at = ? "
        "WHERE id = ? AND status = 'pending'",
        (now_text, row["id"]),
    )
    if taken.rowcount == 0:
        return
    key = _row_key(row)
    closed = _row_closed_because(conn, row, job, key, verdict, now_text, load, approval)
    if closed is not None:
        status, reason = closed
        queue.close(conn, row["id"], status, now_text)
        _skip(conn, job, now_text, batch, reason, row["id"])
        return
    if approval is None and approvals.gates(job, row["dispatch_kind"]):
        _gate(conn, job, now_text, batch, key=key, kind=row["dispatch_kind"],
              scheduled_for=row["scheduled_for"], dispatch_id=row["id"],
              triggered_by=row["source_run_id"], retry_of=row["retry_of_run_id"])
        return
    if approval is not None:
        _take_over_from_gate(conn, approval, key, now_text)
    batch.claims.append(_start_row_run(conn, row, job, key, now_text, owner, lease_s))
    load.take(job["resource_pool"])


def cancel_queued_runs_of_disabled_job(conn: sqlite3.Connection, job_id: str, now_text: str) -> list[Row]:
    """Cancel a disabled job's pending retries and chained runs at once, in the caller's
    transaction (a manual run still runs). Each leaves the ``skipped`` run it would leave had it
    fallen due while the job was disabled."""
    job = conn.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
    if job is None:
        return []
    rows = conn.execute(
        "SELECT id, dispatch_kind FROM job_dispatch_queue WHERE job_id = ? AND status = 'pending' "
        "AND dispatch_kind != 'manual' ORDER BY scheduled_for, created_at",
        (job_id,),
    ).fetchall()
    skipped = []
    for row in rows:
        queue.close(conn, row["id"], "cancelled", now_text)
        skipped.append(_insert_run(conn, job, now_text, status="skipped", dispatch_id=row["id"],
                                   message=_disabled_message(row["dispatch_kind"])))
    return skipped


# -- one claim ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Due:
    """One piece of due work: a job's scheduled occurrence, or a queue row."""

    due: str
    created: str
    job: Row
    row: Row | None = None


def _due_work(conn: sqlite3.Connection, now_text: str, limit: int, targets: Collection[str],
              waits: _PoolWaitSql, owner: Owner | None, skip_locked: bool) -> list[_Due]:
    """Up to ``limit`` occurrences and ``limit`` queue rows that can be acted on now, in the order
    they fell due: first due, first served, whatever their kind. With ``skip_locked`` (a database
    shared by several daemons), the jobs and rows taken are locked for this transaction and
    those another daemon has locked are passed over, so claimers never wait for each other."""
    where, params = _target_filter(targets, owner)
    jobs = conn.execute(
        f"SELECT j.* FROM jobs j WHERE {_DUE_OCCURRENCE} AND j.next_run_at <= ? AND {where} "
        f"AND (NOT {waits.occurrence} OR {_past_grace('j.next_run_at')}) "
        "ORDER BY j.next_run_at LIMIT ?" + (" FOR UPDATE OF j SKIP LOCKED" if skip_locked else ""),
        [now_text, *params, *waits.full, now_text, limit],
    ).fetchall()
    rows = conn.execute(
        f"SELECT q.*, {_APPROVED_ROW} AS approved FROM job_dispatch_queue q "
        f"JOIN jobs j ON j.id = q.job_id WHERE q.status = 'pending' AND q.scheduled_for <= ? "
        f"AND {where} AND NOT {_ROW_WAITS_FOR_OWN_RUN} "
        f"AND (NOT {waits.row} OR ({_past_grace('q.scheduled_for')} AND NOT {_APPROVED_ROW})) "
        "ORDER BY q.scheduled_for, q.created_at LIMIT ?"
        + (" FOR UPDATE OF q, j SKIP LOCKED" if skip_locked else ""),
        [now_text, *params, *waits.full, now_text, limit],
    ).fetchall()
    work = [_Due(job["next_run_at"], job["created_at"], job) for job in jobs]
    for row in rows:
        job = conn.execute("SELECT * FROM jobs WHERE id = ?", (row["job_id"],)).fetchone()
        work.append(_Due(row["scheduled_for"], row["created_at"], job, row))
    work.sort(key=lambda item: (item.due, item.created))  # stable: occurrences first on a tie
    return work


def claim_due(
    db: Database, now_text: str, limit: int, targets: Collection[str], next_fire: NextFire,
    owner: Owner | None = None, lease_s: int = DEFAULT_LEASE_S,
) -> ClaimBatch:
    """Claim up to ``limit`` runs of due work, first due first served, for ``owner``, each under
    a lease of ``lease_s`` seconds (heartbeats extend it: runs.beat). Work that
    must wait for its pool is left as it is (counted in ``waiting``); gated work gets its gate
    run (``gated``); approvals that timed out are resolved first (``resolved``)."""
    if limit <= 0:
        return ClaimBatch()
    with db.transaction() as conn:
        return claim_in(conn, now_text, limit, targets, next_fire, owner, lease_s)


def claim_in(
    conn: sqlite3.Connection, now_text: str, limit: int, targets: Collection[str],
    next_fire: NextFire, owner: Owner | None, lease_s: int = DEFAULT_LEASE_S, *,
    skip_locked: bool = False,
) -> ClaimBatch:
    """claim_due's work, in the caller's transaction (which, on a shared database, holds what
    store/postgres/claims.py takes first)."""
    batch = ClaimBatch()
    by = None if owner is None else owner.text
    batch.resolved.extend(approvals.resolve_expired(conn, now_text))
    load = pools.PoolLoad(conn)
    waits = _PoolWaitSql.build(load.full())
    for item in _due_work(conn, now_text, limit, targets, waits, owner, skip_locked):
        if len(batch.claims) >= limit:
            break
        if item.row is None:
            _claim_occurrence(conn, item.job, now_text, next_fire, batch, load, by, lease_s)
        else:
            _claim_row(conn, item.row, item.job, now_text, batch, load, by, lease_s)
    return batch


def defer_claim(db: Database, claim: Claim, now_text: str, reason: str) -> bool:
    """Give a claim back: the run is recorded ``skipped`` with ``reason``, its idempotency key is
    released, and the work is due again in its old place (a queue row returns to ``pending``
    with its ``scheduled_for``; a scheduled occurrence puts the job's ``next_run_at`` back to
    it). Used when the gateway is down. Only while the run is running under the claim's lease:
    else nothing is written (the work is someone else's now) and False is returned."""
    key = claim.run.idempotency_key
    with db.transaction() as conn:
        given_back = conn.execute(
            "UPDATE runs SET status = 'skipped', finished_at = ?, duration_ms = 0, summary = ?, "
            f"error_message = ?, idempotency_key = NULL WHERE id = ? AND {runs.HELD_BY_CLAIMANT}",
            (now_text, reason, reason, claim.run.id, *runs.held_params(claim.run)),
        )
        if given_back.rowcount == 0:
            return False
        if key:
            ledger.release_in(conn, key, now_text)
        if claim.dispatch_id:
            queue.release(conn, claim.dispatch_id)
        elif claim.job.next_run_at is not None:
            occurrence = claim.job.next_run_at
            conn.execute(
                "UPDATE jobs SET next_run_at = CASE WHEN next_run_at IS NULL OR next_run_at > ? "
                "THEN ? ELSE next_run_at END WHERE id = ?",
                (occurrence, occurrence, claim.job.id),
            )
    return True
