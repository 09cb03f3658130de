"""Recording the end of runs: the run row, retries, and the job's new state, in one transaction.

A failed run (``error`` or ``timeout``) of a job with ``max_retries`` is followed by a ``retry``
queue row scheduled on the ladder ``base × 2^(n−1)``, written in the same transaction as the run's
end, so a crash can never lose a retry nor schedule one twice. Only when retries are exhausted
(or none are configured) does the failure count against the job: ``consecutive_errors`` and the
error backoff of cron jobs (reference §5.1–§5.3, computed on UTC instants, §17 #7), and the
job's triggered children fire: ``chain`` queue rows written in the same transaction as the end,
so a crash neither loses a child nor fires it twice. A failure that will be retried fires none:
failure and complete children wait for the last attempt (§17 #21).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Any

from scheduler.models.enums import FAILED_RUN_STATUSES, RunStatus, ScheduleKind
from scheduler.models.records import Job, Run
from scheduler.store.api import Claim, Finish, Finished, FinishPolicy, Source
from scheduler.store.sqlite import idempotency as ledger
from scheduler.store.sqlite import queue, runs
from scheduler.store.sqlite.chains import fire_children
from scheduler.store.sqlite.db import Database, Row
from scheduler.store.sqlite.messages import enqueue_outbound


def finish_runs(db: Database, finishes: Sequence[Finish], policy: FinishPolicy) -> list[Finished]:
    """Record several run endings in one transaction (the daemon batches whatever ended while the
    previous batch was being written)."""
    with db.transaction() as conn:
        return [_finish_one(conn, finish, policy) for finish in finishes]


def _finish_one(conn: sqlite3.Connection, finish: Finish, policy: FinishPolicy) -> Finished:
    claim, columns, now_text = finish.claim, finish.columns, policy.now_text
    assignments = "".join(f", {name} = ?" for name in columns)
    ended = conn.execute(
        "UPDATE runs SET status = ?, finished_at = ?, duration_ms = ?, last_heartbeat = ?"
        f"{assignments} WHERE id = ? AND {runs.HELD_BY_CLAIMANT}",
        [finish.status, now_text, finish.duration_ms, now_text, *columns.values(), claim.run.id,
         *runs.held_params(claim.run)],
    )
    if ended.rowcount == 0:
        # Ending it again would deliver, retry or count it twice; a deleted job took its runs;
        # and a run another instance took over (its lease expired) is that instance's now.
        return Finished(job=None, retry=None, recorded=False,
                        fenced=runs.was_taken_over(conn, claim.run))
    if claim.dispatch_id:
        queue.close(conn, claim.dispatch_id, "done", now_text)
    message = None
    if finish.delivery is not None:
        message = enqueue_outbound(conn, finish.delivery, subject=claim.job.name,
                                   job_id=claim.job.id, run_id=claim.run.id, now_text=now_text)
    job = _load(conn, claim.job.id)
    if job is None:
        return Finished(job=None, retry=None, message=message)
    if finish.remove_job:
        conn.execute("DELETE FROM jobs WHERE id = ?", (job.id,))
        return Finished(job=None, retry=None, message=message)
    if finish.fail_closed:
        return _end_fail_closed(conn, finish, job, policy, message)
    retry = None if finish.no_retry else _schedule_retry(conn, job, claim.run, finish.status, policy)
    if retry is not None:
        conn.execute(
            "UPDATE jobs SET last_run_at = ?, last_status = ?, updated_at = ? WHERE id = ?",
            (now_text, finish.status, now_text, job.id),
        )
        return Finished(job=_load(conn, job.id), retry=retry, message=message)
    # The end of the job's work (no retry follows): its children fire now, in this transaction.
    fired = fire_children(conn, job.row, claim.run.id, finish.status, _content(finish), now_text)
    after = _update_job_after_run(conn, job, claim.source, finish.status, policy,
                                  keep=bool(fired.queued))
    return Finished(job=after, retry=None, message=message, children=fired.as_chained())


def _end_fail_closed(conn: sqlite3.Connection, finish: Finish, job: Job, policy: FinishPolicy,
                     message: Row | None) -> Finished:
    """A run a trust gate stopped: it counts as the job's failure, but is not retried (the same
    declaration would be refused again) and fires no children: work downstream of a refused
    identity, trust level or authorization must not run. Its idempotency key is released, so
    the work may run once the declaration or the provider is fixed (the reference's abort)."""
    key = finish.claim.run.idempotency_key
    if key:
        ledger.release_in(conn, key, policy.now_text)
    after = _update_job_after_run(conn, job, finish.claim.source, finish.status, policy)
    return Finished(job=after, retry=None, message=message)


def _content(finish: Finish) -> str | None:
    """What the children's trigger conditions test: the strategy's output, else what was recorded."""
    if finish.content is not None:
        return finish.content
    columns = finish.columns
    return columns.get("summary") or columns.get("error_message")


def _schedule_retry(
    conn: sqlite3.Connection, job: Job, run: Run, status: str, policy: FinishPolicy
) -> Row | None:
    if status not in FAILED_RUN_STATUSES or not job.enabled:
        return None
    current = conn.execute("SELECT retry_count FROM runs WHERE id = ?", (run.id,)).fetchone()
    done = (current["retry_count"] if current else run.retry_count) or 0
    if done >= job.max_retries:
        return None
    cap = job.max_queued_dispatches
    if queue.live_backlog(conn, job.id) >= cap:
        # The backlog cap wins and this failure is final; say so on the run, not only in a log.
        conn.execute(
            "UPDATE runs SET error_message = COALESCE(error_message || ' ', '') || ? WHERE id = ?",
            (f"(retry {done + 1}/{job.max_retries} not scheduled: {cap} queued runs already "
             "wait, max_queued_dispatches)", run.id),
        )
        return None
    attempt = done + 1
    row = queue.insert(
        conn, job.id, "retry", policy.retry_at(attempt), source_run_id=run.id, retry_of_run_id=run.id,
    )
    conn.execute("UPDATE runs SET retry_count = ? WHERE id = ?", (attempt, run.id))
    return row


def _load(conn: sqlite3.Connection, job_id: str) -> Job | None:
    row = conn.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
    return None if row is None else Job.from_row(row)


def _ends_at_job(job: Job, source: Source) -> bool:
    """The run was an at-job's own occurrence (or a retry/replay of it), now finally over. A
    linked one-off (an at-job with a parent: only a spawn makes one, models/spawn.py) is never
    due by itself: its occurrence is the manual queue row it was created with."""
    own_occurrence = ("at", "retry", "manual") if job.parent_id is not None else ("at", "retry")
    return job.schedule_kind is ScheduleKind.AT and job.next_run_at is None and source in own_occurrence


def _update_job_after_run(
    conn: sqlite3.Connection, job: Job, source: Source, status: str, policy: FinishPolicy,
    *, keep: bool = False,
) -> Job | None:
    """``keep``: the run fired children, which read it as their input; a job that would delete
    itself (``delete_after_run``) is disabled instead, keeping its runs and its children's place."""
    now_text = policy.now_text
    errors = job.consecutive_errors
    if status in FAILED_RUN_STATUSES:
        errors += 1
    elif status == RunStatus.OK:
        errors = 0
    patch: dict[str, Any] = {
        "last_run_at": now_text,
        "last_status": status,
        "consecutive_errors": errors,
        "updated_at": now_text,
    }
    delete = False
    if _ends_at_job(job, source):
        if job.delete_after_run:
            delete = True
        else:
            patch["enabled"] = 0
    elif job.schedule_kind is not ScheduleKind.AT and job.parent_id is None:
        if errors > 0 and status in FAILED_RUN_STATUSES and job.next_run_at is not None:
            patch["next_run_at"] = max(job.next_run_at, policy.backoff_until(errors))
        if status == RunStatus.OK and job.delete_after_run and source == "cron":
            delete = True
        if job.queued_count > 0 and not delete:
            patch["queued_count"] = job.queued_count - 1
            patch["next_run_at"] = now_text
    if delete and keep:
        delete, patch["enabled"] = False, 0
    if delete:
        conn.execute("DELETE FROM jobs WHERE id = ?", (job.id,))
        return None
    assignments = ", ".join(f"{name} = ?" for name in patch)
    conn.execute(f"UPDATE jobs SET {assignments} WHERE id = ?", [*patch.values(), job.id])
    return _load(conn, job.id)


def record_unrecordable(db: Database, claim: Claim, message: str, now_text: str) -> bool:
    """End a run whose real result could not be written (``finish_runs`` refused it): status
    ``error`` with ``message``, its queue row closed; no delivery, retry or job update, which are
    what may have failed. False when the run was no longer running under the claim's lease."""
    with db.transaction() as conn:
        ended = conn.execute(
            "UPDATE runs SET status = 'error', finished_at = ?, last_heartbeat = ?, error_message = ?, "
            f"duration_ms = COALESCE(duration_ms, 0) WHERE id = ? AND {runs.HELD_BY_CLAIMANT}",
            (now_text, now_text, message, claim.run.id, *runs.held_params(claim.run)),
        ).rowcount
        if ended and claim.dispatch_id:
            queue.close(conn, claim.dispatch_id, "done", now_text)
    return ended > 0
