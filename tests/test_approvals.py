"""Approval gates in the claim transaction, on real SQLite files: what is written when work is
gated, approved, rejected or timed out, and that approved work runs exactly once, is never gated
again and never dropped by an overlap or pool guard."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from conftest import query
from scheduler.errors import NotFoundError
from scheduler.models.enums import RunStatus
from scheduler.models.job import new_job_row
from scheduler.models.records import Job
from scheduler.models.validation import validate_job_spec
from scheduler.store import open_store
from scheduler.store.api import Claim, ClaimBatch, Finish, FinishPolicy, Owner
from scheduler.store.sqlite.store import SqliteStore
from scheduler.timeutil import to_sqlite

NOW = datetime(2026, 11, 26, 12, 0, 0, tzinfo=UTC)
ME = Owner(instance="approvals-test", host="here")
SHELL = {"shell"}
NOTICE = ("\u26a0\ufe0f Job '{name}' requires approval.\n"
          "Approve: openclaw-scheduler jobs approve {id}\n"
          "Reject: openclaw-scheduler jobs reject {id}")


def at(seconds: float) -> str:
    return to_sqlite(NOW + timedelta(seconds=seconds))


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "approvals.db"


@pytest.fixture
def store(path: Path) -> Iterator[SqliteStore]:
    opened = open_store(path)
    assert isinstance(opened, SqliteStore)
    yield opened
    opened.close()


def rows(path: Path, sql: str, *params: Any) -> list[dict[str, Any]]:
    return query(path, sql, params)


def add_job(store: SqliteStore, due: str | None = at(0), **overrides: Any) -> Job:
    """A gated cron shell job due at ``due`` (its next fire after that is an hour later)."""
    spec = {"name": "deploy", "schedule_cron": "0 0 1 1 *", "session_target": "shell",
            "payload_message": "true", "run_timeout_ms": 1000, "delivery_mode": "none",
            "origin": "system", "approval_required": 1, **overrides}
    job = store.insert_job(new_job_row(validate_job_spec(spec, now=NOW), NOW))
    if due is not None and job.row["schedule_kind"] == "cron":
        job = store.update_job(job.id, {"next_run_at": due}, at(0))
    return job


def claim(store: SqliteStore, now: str = at(0)) -> ClaimBatch:
    return store.claim_due(now, 50, SHELL, lambda job: at(3600), ME)


def finish(store: SqliteStore, c: Claim, status: str = "ok", now: str = at(10)) -> None:
    policy = FinishPolicy(now_text=now, backoff_until=lambda n: at(7200), retry_at=lambda n: at(60 * n))
    store.finish_runs([Finish(c, status, 5, {})], policy)


def live_rows(path: Path, job_id: str) -> list[dict[str, Any]]:
    return rows(path, "SELECT * FROM job_dispatch_queue WHERE job_id = ? "
                      "AND status IN ('pending', 'claimed', 'awaiting_approval')", job_id)


def gate_of(batch: ClaimBatch) -> str:
    (gate,) = batch.gated
    assert gate.status is RunStatus.AWAITING_APPROVAL and batch.claims == []
    return gate.id


# -- the gate -------------------------------------------------------------------------------------


def test_a_gated_fire_time_waits_as_a_gate_run_an_approval_and_a_queue_row(
        store: SqliteStore, path: Path) -> None:
    job = add_job(store, delivery_mode="none", delivery_channel="telegram", delivery_to="@ops")
    store.add_alias("ops", "telegram", "-100123", None)
    batch = claim(store)
    gate_id = gate_of(batch)
    assert batch.notices == 1

    (gate,) = rows(path, "SELECT * FROM runs WHERE job_id = ?", job.id)
    assert gate["id"] == gate_id and gate["status"] == "awaiting_approval" and gate["finished_at"] is None
    (approval,) = rows(path, "SELECT * FROM approvals WHERE job_id = ?", job.id)
    assert approval["status"] == "pending" and approval["run_id"] == gate_id
    assert approval["requested_at"] == at(0)
    (row,) = rows(path, "SELECT * FROM job_dispatch_queue WHERE job_id = ?", job.id)
    assert (row["id"], row["status"], row["dispatch_kind"]) == (
        approval["dispatch_queue_id"], "awaiting_approval", "cron")
    assert gate["dispatch_queue_id"] == row["id"]
    # The occurrence is taken: the schedule moved on, and its key is held by the gate run.
    assert store.require_job(job.id).next_run_at == at(3600)
    assert store.ledger_entry(gate["idempotency_key"])["run_id"] == gate_id
    # The request goes out through durable delivery, though the job announces nothing else.
    (message,) = store.due_outbound(at(1))
    assert message.body == NOTICE.format(name="deploy", id=job.id)
    assert (message.channel, message.delivery_to, message.run_id) == ("telegram", "-100123", gate_id)
    assert claim(store, at(5)).gated == []  # nothing is asked twice


def test_without_a_delivery_target_the_gate_run_says_where_to_look(store: SqliteStore) -> None:
    add_job(store)
    gate_id = gate_of(claim(store))
    assert store.due_outbound(at(1)) == []
    assert "approvals pending" in (store.require_run(gate_id).summary or "")


@pytest.mark.parametrize("source", ["cron", "at", "manual", "chain"])
def test_every_root_and_chained_source_is_gated_then_runs_once_when_approved(
        store: SqliteStore, path: Path, source: str) -> None:
    if source == "at":
        job = add_job(store, None, schedule_kind="at", schedule_at=at(0), schedule_cron=None,
                      delete_after_run=0)
    elif source == "cron":
        job = add_job(store)
    else:
        job = add_job(store, at(3600))
        assert store.enqueue_dispatch(job.id, source, at(0)) is not None
    gate_id = gate_of(claim(store))

    approval = store.approve_job(job.id, at(30))
    assert (approval["status"], approval["run_id"], approval["job_name"]) == ("approved", gate_id, "deploy")
    assert store.require_run(gate_id).status is RunStatus.APPROVED
    assert store.next_due_at(SHELL, ME) == at(30)  # due at once

    batch = claim(store, at(30))
    (run,) = batch.claims
    assert batch.gated == [] and run.source == source and run.dispatch_id == approval["dispatch_queue_id"]
    assert rows(path, "SELECT status FROM approvals")[0]["status"] == "dispatched"
    assert claim(store, at(31)).claims == []
    finish(store, run, now=at(40))
    assert live_rows(path, job.id) == []
    statuses = [r["status"] for r in rows(path, "SELECT status FROM runs ORDER BY started_at, rowid")]
    assert statuses == ["approved", "ok"]
    if source == "at":  # the at-job's own occurrence ran: it ends as any at-job does
        assert not store.require_job(job.id).enabled


def test_a_fire_time_comes_round_again_it_is_not_gated_twice(store: SqliteStore) -> None:
    job = add_job(store)
    gate_of(claim(store))
    store.update_job(job.id, {"next_run_at": at(0)}, at(1))  # e.g. a clock stepped back
    batch = claim(store, at(2))
    (skipped,) = batch.skipped
    assert batch.gated == [] and "already claimed" in (skipped.error_message or "")


def test_retries_of_approved_work_are_not_gated_again(store: SqliteStore) -> None:
    job = add_job(store, max_retries=1)
    gate_of(claim(store))
    store.approve_job(job.id, at(1))
    (run,) = claim(store, at(1)).claims
    finish(store, run, "error", now=at(2))
    (retry,) = claim(store, at(62)).claims
    assert retry.source == "retry" and retry.run.retry_of == run.run.id


def test_the_approved_run_takes_over_the_key_its_gate_held(store: SqliteStore) -> None:
    job = add_job(store, at(3600))
    store.enqueue_dispatch(job.id, "manual", at(0))
    gate_id = gate_of(claim(store))
    key = store.require_run(gate_id).idempotency_key
    assert key is not None and store.ledger_entry(key)["run_id"] == gate_id
    store.approve_job(job.id, at(1))
    (run,) = claim(store, at(1)).claims
    assert run.run.idempotency_key == key and store.ledger_entry(key)["run_id"] == run.run.id
    assert store.require_run(gate_id).idempotency_key is None


# -- reject, timeouts, the cap --------------------------------------------------------------------


def test_reject_cancels_the_gate_run_and_closes_its_row(store: SqliteStore, path: Path) -> None:
    job = add_job(store, at(3600))
    store.enqueue_dispatch(job.id, "chain", at(0))
    gate_id = gate_of(claim(store))
    approval = store.reject_job(job.id, "not during the freeze", at(5))
    assert approval["status"] == "rejected" and approval["notes"] == "not during the freeze"
    assert approval["resolved_by"] == "operator"
    gate = store.require_run(gate_id)
    assert gate.status is RunStatus.CANCELLED and gate.error_message == "not during the freeze"
    assert live_rows(path, job.id) == []
    assert claim(store, at(6)).claims == [] and store.next_due_at(SHELL, ME) == at(3600)
    with pytest.raises(NotFoundError, match="No pending approval for job"):
        store.reject_job(job.id, None, at(7))


def test_reject_without_a_reason_says_who(store: SqliteStore) -> None:
    job = add_job(store)
    gate_id = gate_of(claim(store))
    store.reject_job(job.id, None, at(5))
    assert store.require_run(gate_id).error_message == "Rejected by operator"


def test_a_rejected_at_job_is_over(store: SqliteStore) -> None:
    job = add_job(store, None, schedule_kind="at", schedule_at=at(0), schedule_cron=None)
    gate_of(claim(store))
    store.reject_job(job.id, None, at(5))
    after = store.require_job(job.id)  # disabled, not deleted: the refusal stays on record
    assert not after.enabled and after.next_run_at is None


def test_unknown_jobs_and_jobs_with_nothing_pending_are_errors(store: SqliteStore) -> None:
    job = add_job(store, None)
    with pytest.raises(NotFoundError, match="Job not found: nope"):
        store.approve_job("nope", at(0))
    with pytest.raises(NotFoundError, match=f"No pending approval for job: {job.id}"):
        store.approve_job(job.id, at(0))


def test_approve_takes_the_oldest_pending_approval_first(store: SqliteStore) -> None:
    job = add_job(store, at(3600))
    first = store.enqueue_dispatch(job.id, "manual", at(-10))
    second = store.enqueue_dispatch(job.id, "manual", at(0))
    assert first is not None and second is not None
    assert len(claim(store).gated) == 2
    assert store.approve_job(job.id, at(20))["dispatch_queue_id"] == first["id"]
    assert store.approve_job(job.id, at(21))["dispatch_queue_id"] == second["id"]


def test_a_timeout_rejects_by_default_at_its_deadline(store: SqliteStore, path: Path) -> None:
    job = add_job(store, approval_timeout_s=600)
    gate_id = gate_of(claim(store))
    assert store.next_due_at(SHELL, ME) == at(600)  # the loop sleeps until the deadline, no longer
    assert claim(store, at(599)).resolved == []
    (resolved,) = claim(store, at(600)).resolved
    assert resolved.id == gate_id and resolved.status is RunStatus.CANCELLED
    assert "timed out after 600s" in (resolved.error_message or "")
    (approval,) = rows(path, "SELECT * FROM approvals")
    assert (approval["status"], approval["resolved_by"]) == ("timed_out", "timeout")
    assert live_rows(path, job.id) == []


def test_a_timeout_with_approval_auto_approve_runs_the_work_in_the_same_claim(store: SqliteStore) -> None:
    job = add_job(store, approval_timeout_s=60, approval_auto="approve")
    gate_id = gate_of(claim(store))
    batch = claim(store, at(60))
    (run,) = batch.claims
    assert [r.status for r in batch.resolved] == [RunStatus.APPROVED] and run.job.id == job.id
    assert "auto-approve" in (store.require_run(gate_id).summary or "")


def test_max_pending_approvals_refuses_more_and_records_why(store: SqliteStore, path: Path) -> None:
    job = add_job(store, max_pending_approvals=1)
    gate_of(claim(store))
    store.update_job(job.id, {"next_run_at": at(60)}, at(1))
    row = store.enqueue_dispatch(job.id, "manual", at(60))
    assert row is not None
    batch = claim(store, at(60))
    assert batch.gated == [] and len(batch.skipped) == 2
    assert all("max_pending_approvals 1" in (r.error_message or "") for r in batch.skipped)
    (closed,) = rows(path, "SELECT status FROM job_dispatch_queue WHERE id = ?", row["id"])
    assert closed["status"] == "cancelled"
    assert len(store.pending_approvals(at(61))) == 1


# -- approved work is never dropped ---------------------------------------------------------------


def test_approved_work_waits_for_its_own_run_under_overlap_skip(store: SqliteStore, path: Path) -> None:
    job = add_job(store, at(3600), overlap_policy="skip")
    store.enqueue_dispatch(job.id, "manual", at(0))
    gate_of(claim(store))
    store.update_job(job.id, {"approval_required": 0}, at(1))  # an ungated run takes the job
    store.enqueue_dispatch(job.id, "manual", at(1))
    (running,) = claim(store, at(1)).claims
    store.approve_job(job.id, at(2))

    waiting = claim(store, at(2))
    assert waiting.claims == [] and waiting.skipped == [] and waiting.gated == []
    assert sorted(r["status"] for r in live_rows(path, job.id)) == ["claimed", "pending"]
    assert store.next_due_at(SHELL, ME) == at(3600)  # no hot loop over work that waits
    finish(store, running, now=at(3))
    (approved,) = claim(store, at(4)).claims
    assert approved.source == "manual"


def test_approved_work_waits_for_a_run_of_its_job_started_in_the_same_claim(
        store: SqliteStore, path: Path) -> None:
    job = add_job(store, at(3600), overlap_policy="skip")
    store.enqueue_dispatch(job.id, "manual", at(0))
    gate_of(claim(store))
    store.update_job(job.id, {"approval_required": 0, "next_run_at": at(0)}, at(1))
    store.approve_job(job.id, at(1))
    batch = claim(store, at(2))  # the fire time (due first) starts; the approved row meets it
    (started,) = batch.claims
    assert started.source == "cron" and batch.skipped == []
    assert [r["status"] for r in live_rows(path, job.id) if r["dispatch_kind"] == "manual"] == ["pending"]
    finish(store, started, now=at(3))
    (approved,) = claim(store, at(4)).claims
    assert approved.source == "manual"


def test_approved_work_waits_for_its_pool_past_any_misfire_grace(store: SqliteStore, path: Path) -> None:
    holder = add_job(store, at(1), name="holder", approval_required=0, resource_pool="gpu")
    job = add_job(store, at(3600), resource_pool="gpu", misfire_grace_s=5)
    store.enqueue_dispatch(job.id, "manual", at(0))
    gate_of(claim(store, at(0)))  # the gate takes no place in the pool
    (held,) = claim(store, at(1)).claims
    assert held.job.id == holder.id
    store.approve_job(job.id, at(1))

    late = claim(store, at(600))  # far past misfire_grace_s 5: still not dropped
    assert late.claims == [] and late.skipped == []
    assert [r["status"] for r in live_rows(path, job.id)] == ["pending"]
    assert store.next_due_at(SHELL, ME) == at(3600)
    finish(store, held, now=at(601))
    (approved,) = claim(store, at(602)).claims
    assert approved.job.id == job.id


def test_an_approved_run_given_back_is_not_gated_again(store: SqliteStore) -> None:
    job = add_job(store, at(3600))
    store.enqueue_dispatch(job.id, "manual", at(0))
    gate_of(claim(store))
    store.approve_job(job.id, at(1))
    (run,) = claim(store, at(1)).claims
    store.defer_claim(run, at(2), "gateway down")
    batch = claim(store, at(3))
    assert batch.gated == [] and len(batch.claims) == 1


def test_an_approval_granted_by_a_reference_cli_is_picked_up_by_the_reaper(
        store: SqliteStore, path: Path) -> None:
    job = add_job(store, at(3600))
    store.enqueue_dispatch(job.id, "chain", at(0))
    gate_id = gate_of(claim(store))
    # The reference's `jobs approve` only resolves the approval; its dispatcher did the rest.
    other = sqlite3.connect(path)
    with other:
        other.execute("UPDATE approvals SET status = 'approved', resolved_by = 'operator'")
    other.close()
    assert store.reap_queue(at(5)) == 1
    (run,) = claim(store, at(5)).claims
    assert run.job.id == job.id and store.require_run(gate_id).status is RunStatus.APPROVED
    assert rows(path, "SELECT status FROM approvals") == [{"status": "dispatched"}]


def test_pending_approvals_list_their_job_age_run_and_deadline(store: SqliteStore) -> None:
    job = add_job(store, approval_timeout_s=120)
    gate_id = gate_of(claim(store))
    (row,) = store.pending_approvals(at(75))
    assert (row["job_id"], row["job_name"], row["run_id"]) == (job.id, "deploy", gate_id)
    assert (row["requested_at"], row["age_s"], row["timeout_at"], row["on_timeout"]) == (
        at(0), 75, at(120), "reject")
