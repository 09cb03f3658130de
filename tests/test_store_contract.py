"""The store's contract: what every backend behind ``store.api.Store`` must do.

Each test speaks only the interface (and builds job rows as ``jobs add`` does), so the suite runs
unchanged against every backend in ``BACKENDS``: today SQLite on a real file; the PostgreSQL
backend adds its parameter here. Claiming, overlap, pools, the ledger, finishing, recovery,
messages and spawn messages are pinned; what is specific to one backend is tested beside its code.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from scheduler.errors import NotFoundError, ValidationError
from scheduler.models.enums import RunStatus
from scheduler.models.job import new_job_row
from scheduler.models.messages import NewMessage
from scheduler.models.records import Job, Message
from scheduler.models.spawn import SpawnPlan, plan_spawn
from scheduler.models.validation import validate_job_spec
from scheduler.store.api import Claim, Delivery, Finish, FinishPolicy, Owner, Store
from scheduler.timeutil import to_sqlite

NOW = datetime(2026, 11, 26, 12, 0, 0, tzinfo=UTC)
SHELL = {"shell"}
ME = Owner(instance="contract-test", host="here")
OTHER = Owner(instance="gone-instance", host="elsewhere")

BACKENDS = ["sqlite", "postgres"]
Opener = Callable[[], Store]


def at(seconds: float) -> str:
    return to_sqlite(NOW + timedelta(seconds=seconds))


@pytest.fixture(params=BACKENDS)
def opener(request: pytest.FixtureRequest, tmp_path: Path) -> Opener:
    """Opens one more connection to the same, fresh database of the backend under test."""
    if request.param == "sqlite":
        from scheduler.store import open_store

        path = tmp_path / "contract.db"
        return lambda: open_store(path)
    if request.param == "postgres":
        from scheduler.store import open_store

        url: str = request.getfixturevalue("pg_url")
        return lambda: open_store(url)
    raise AssertionError(f"unknown backend {request.param}")


@pytest.fixture
def store(opener: Opener) -> Iterator[Store]:
    opened = opener()
    yield opened
    opened.close()


def add_job(store: Store, **overrides: Any) -> Job:
    spec = {"name": "job", "schedule_cron": "*/5 * * * *", "session_target": "shell",
            "payload_message": "true", "run_timeout_ms": 1000, "delivery_mode": "none",
            "origin": "system", **overrides}
    job = store.insert_job(new_job_row(validate_job_spec(spec, now=NOW), NOW))
    if job.schedule_cron and job.row.get("schedule_kind") == "cron":
        job = store.update_job(job.id, {"next_run_at": at(0)}, at(0))
    return job


def claim(store: Store, now: str = at(0), limit: int = 50, owner: Owner = ME) -> list[Claim]:
    return store.claim_due(now, limit, SHELL, lambda job: at(3600), owner).claims


def policy(now: str = at(10)) -> FinishPolicy:
    return FinishPolicy(now_text=now, backoff_until=lambda n: at(7200), retry_at=lambda n: at(60 * n))


def finish(store: Store, c: Claim, status: str = "ok", *, delivery: Delivery | None = None,
           now: str = at(10)) -> Any:
    (done,) = store.finish_runs([Finish(c, status, 5, {"summary": status}, delivery=delivery)],
                                policy(now))
    return done


# -- claiming -----------------------------------------------------------------------------------


def test_a_due_occurrence_is_claimed_once_by_its_owner(store: Store, opener: Opener) -> None:
    job = add_job(store)
    (first,) = claim(store)
    second = opener()
    try:
        assert claim(second) == []  # another connection finds nothing left
    finally:
        second.close()
    assert first.job.id == job.id and first.source == "cron"
    assert first.run.status is RunStatus.RUNNING and first.run.owner == ME.text
    assert store.require_job(job.id).next_run_at == at(3600)
    assert store.require_run(first.run.id).owner == ME.text


def test_the_limit_leaves_the_rest_due(store: Store) -> None:
    for i in range(3):
        add_job(store, name=f"j{i}")
    assert len(claim(store, limit=2)) == 2
    assert store.next_due_at(SHELL, ME) == at(0)
    assert len(claim(store)) == 1
    assert store.next_due_at(SHELL, ME) == at(3600)


def test_overlap_skip_records_why(store: Store) -> None:
    job = add_job(store)
    claim(store)
    store.update_job(job.id, {"next_run_at": at(1)}, at(1))
    batch = store.claim_due(at(1), 10, SHELL, lambda j: at(3600), ME)
    assert batch.claims == []
    (skipped,) = batch.skipped
    assert skipped.status is RunStatus.SKIPPED and "overlap_policy skip" in (skipped.error_message or "")


def test_overlap_allow_runs_side_by_side(store: Store) -> None:
    job = add_job(store, overlap_policy="allow")
    claim(store)
    store.update_job(job.id, {"next_run_at": at(1)}, at(1))
    assert len(claim(store, at(1))) == 1


def test_a_full_pool_makes_work_wait_then_serves_it(store: Store) -> None:
    add_job(store, name="a", resource_pool="gpu")
    add_job(store, name="b", resource_pool="gpu")
    batch = store.claim_due(at(0), 10, SHELL, lambda j: at(3600), ME)
    (holder,) = batch.claims
    assert batch.waiting == 1 and batch.skipped == []
    finish(store, holder)
    (waiter,) = claim(store, at(20))
    assert waiter.job.name != holder.job.name


def test_pool_capacity_is_configurable(store: Store) -> None:
    store.set_pool_capacity("gpu", 2, at(0))
    assert store.pool_capacity("gpu") == 2
    for name in "abc":
        add_job(store, name=name, resource_pool="gpu")
    assert len(claim(store)) == 2
    assert store.remove_pool("gpu") and store.pool_capacity("gpu") is None


def test_manual_runs_queue_and_honour_the_backlog_cap(store: Store) -> None:
    job = add_job(store, max_queued_dispatches=1, schedule_cron="0 0 1 1 *")
    store.update_job(job.id, {"next_run_at": at(86400)}, at(0))
    assert store.enqueue_dispatch(job.id, "manual", at(0), backlog_cap=1) is not None
    assert store.enqueue_dispatch(job.id, "manual", at(0), backlog_cap=1) is None
    (run,) = claim(store)
    assert run.source == "manual" and run.dispatch_id is not None


def test_a_deferred_claim_is_due_again(store: Store) -> None:
    job = add_job(store)
    (c,) = claim(store)
    store.defer_claim(c, at(1), "gateway down")
    assert store.require_run(c.run.id).status is RunStatus.SKIPPED
    assert store.require_job(job.id).next_run_at == at(0)
    assert len(claim(store, at(2))) == 1  # its key was released


# -- finishing --------------------------------------------------------------------------------------


def test_success_is_recorded_once(store: Store) -> None:
    add_job(store)
    (c,) = claim(store)
    done = finish(store, c)
    assert done.recorded and done.job is not None and done.job.last_status == "ok"
    assert store.require_run(c.run.id).status is RunStatus.OK
    again = finish(store, c, "error")
    assert not again.recorded and again.retry is None
    assert store.require_run(c.run.id).status is RunStatus.OK


def test_a_failure_retries_on_the_ladder_then_counts(store: Store) -> None:
    add_job(store, max_retries=1)
    (c,) = claim(store)
    done = finish(store, c, "error")
    assert done.retry is not None and done.retry["scheduled_for"] == at(60)
    (retry,) = claim(store, at(60))
    assert retry.source == "retry" and retry.run.retry_of == c.run.id
    last = finish(store, retry, "error", now=at(70))
    assert last.retry is None and last.job is not None and last.job.consecutive_errors == 1
    assert last.job.next_run_at == at(7200)  # the error backoff


def test_the_end_of_a_run_whose_job_was_deleted_writes_nothing(store: Store) -> None:
    job = add_job(store)
    (c,) = claim(store)
    store.delete_job(job.id)
    done = finish(store, c, delivery=Delivery("result", "telegram", "42"))
    assert not done.recorded and done.message is None
    assert store.due_outbound(at(20)) == []
    with pytest.raises(NotFoundError):
        store.require_job(job.id)


def test_an_unrecordable_end_is_recorded_as_an_error(store: Store) -> None:
    add_job(store)
    (c,) = claim(store)
    assert store.record_unrecordable(c, "the run's result could not be recorded: boom", at(5))
    run = store.require_run(c.run.id)
    assert run.status is RunStatus.ERROR and "boom" in (run.error_message or "")
    assert not store.record_unrecordable(c, "again", at(6))


# -- liveness and recovery ----------------------------------------------------------------------


def test_heartbeats_and_statuses(store: Store) -> None:
    add_job(store)
    (c,) = claim(store)
    store.beat([c.run.id], at(30))
    assert store.require_run(c.run.id).last_heartbeat == at(30)
    assert store.run_statuses([c.run.id, "no-such-run"]) == {c.run.id: "running"}


def test_recovery_crashes_only_the_runs_of_instances_that_are_gone(store: Store) -> None:
    if store.shared:
        pytest.skip("a shared store recovers only expired leases: see the leases block below")
    add_job(store, name="theirs", delivery_guarantee="at-least-once")
    add_job(store, name="mine")
    theirs = [c for c in claim(store, owner=OTHER)]
    assert len(theirs) == 2
    store.update_job(theirs[1].job.id, {"next_run_at": at(1)}, at(1))
    store.update_job(theirs[1].job.id, {"overlap_policy": "allow"}, at(1))
    (mine,) = claim(store, at(1), owner=ME)
    found = store.recover_orphans(at(5), ME)
    assert sorted(r.id for r in found.crashed) == sorted(c.run.id for c in theirs)
    assert store.require_run(mine.run.id).status is RunStatus.RUNNING
    assert [r["retry_of_run_id"] for r in found.replays] == [
        c.run.id for c in theirs if c.job.name == "theirs"]


def test_stale_runs_nobody_watches_are_found(store: Store) -> None:
    add_job(store)
    (c,) = claim(store)
    assert store.unwatched_stale_runs(90, at(60), set()) == []
    (stale,) = store.unwatched_stale_runs(90, at(600), set())
    assert stale.run.id == c.run.id
    assert store.unwatched_stale_runs(90, at(600), {c.run.id}) == []


def test_a_clock_stepped_back_brings_due_times_back(store: Store) -> None:
    job = add_job(store, schedule_cron="* * * * *")
    store.update_job(job.id, {"next_run_at": at(3600)}, at(0))
    moved = store.shift_back_after_clock_step(3600, at(30), lambda j, after: at(60))
    assert moved >= 1 and store.require_job(job.id).next_run_at == at(60)


# -- the ledger ---------------------------------------------------------------------------------------


def test_a_released_key_can_be_claimed_again(store: Store) -> None:
    job = add_job(store)
    (c,) = claim(store)
    key = c.run.idempotency_key
    assert key is not None and store.ledger_entry(key)["status"] == "claimed"
    finish(store, c)
    store.release_key(key, at(20))
    store.update_job(job.id, {"next_run_at": at(0)}, at(20))
    (again,) = claim(store, at(21))
    assert again.run.idempotency_key == key
    assert [e["key"] for e in store.ledger_for_job(job.id)] == [key]


def test_expired_ledger_entries_are_pruned(store: Store) -> None:
    add_job(store)
    claim(store)
    assert store.prune_ledger(at(0)) == 0
    assert store.prune_ledger(at(8 * 86400)) == 1


# -- messages --------------------------------------------------------------------------------------


def test_a_result_is_delivered_with_retries_and_resumes_after_sent_chunks(store: Store) -> None:
    add_job(store, name="announcer")
    (c,) = claim(store)
    done = finish(store, c, delivery=Delivery("hello", "telegram", "42"))
    assert done.message is not None
    (message,) = store.due_outbound(at(20))
    assert (message.body, message.channel, message.delivery_to) == ("hello", "telegram", "42")
    store.record_delivery_progress(message.id, 1)
    failed = store.mark_delivery_failed(message.id, "gateway 500", at(40), at(20))
    assert failed["status"] == "pending" and store.due_outbound(at(30)) == []
    assert store.next_outbound_at() == at(40)
    (again,) = store.due_outbound(at(40))
    assert again.chunks_sent == 1 and again.delivery_attempts == 1
    store.mark_delivered(message.id, at(41))
    assert store.due_outbound(at(99)) == [] and store.next_outbound_at() is None


def test_results_never_reach_an_inbox_even_of_an_agent_named_like_the_outbox(store: Store) -> None:
    add_job(store)
    (c,) = claim(store)
    finish(store, c, delivery=Delivery("a result", "telegram", "42"))
    assert store.take_inbox("main", at(20)) == []
    assert store.take_inbox("@outbound", at(20)) == []


# -- approval gates ---------------------------------------------------------------------------------


def test_gated_work_waits_for_approval_then_runs_once(store: Store) -> None:
    job = add_job(store, approval_required=1, delivery_to="42", delivery_channel="telegram",
                  delivery_mode="none")
    batch = store.claim_due(at(0), 10, SHELL, lambda j: at(3600), ME)
    (gate,) = batch.gated
    assert batch.claims == [] and gate.status is RunStatus.AWAITING_APPROVAL
    (notice,) = store.due_outbound(at(1))
    assert f"jobs approve {job.id}" in notice.body and notice.delivery_to == "42"
    (pending,) = store.pending_approvals(at(30))
    assert (pending["job_id"], pending["job_name"], pending["run_id"], pending["age_s"]) == (
        job.id, "job", gate.id, 30)
    approval = store.approve_job(job.id, at(30))
    assert approval["status"] == "approved" and store.pending_approvals(at(31)) == []
    (run,) = claim(store, at(30))
    assert run.source == "cron" and run.job.id == job.id
    assert claim(store, at(31)) == []


def test_rejected_work_never_runs_and_leaves_nothing_queued(store: Store) -> None:
    job = add_job(store, approval_required=1, schedule_cron="0 0 1 1 *")
    store.update_job(job.id, {"next_run_at": at(86400)}, at(0))
    store.enqueue_dispatch(job.id, "manual", at(0))
    (gate,) = store.claim_due(at(0), 10, SHELL, lambda j: at(3600), ME).gated
    rejected = store.reject_job(job.id, "no", at(5))
    assert rejected["status"] == "rejected"
    assert store.require_run(gate.id).status is RunStatus.CANCELLED
    assert claim(store, at(6)) == [] and store.next_due_at(SHELL, ME) == at(86400)
    with pytest.raises(NotFoundError):
        store.approve_job(job.id, at(7))


def test_an_approval_times_out_when_its_deadline_is_due(store: Store) -> None:
    add_job(store, approval_required=1, approval_timeout_s=90, approval_auto="approve")
    store.claim_due(at(0), 10, SHELL, lambda j: at(3600), ME)
    assert store.next_due_at(SHELL, ME) == at(90)
    batch = store.claim_due(at(90), 10, SHELL, lambda j: at(3600), ME)
    assert [r.status for r in batch.resolved] == [RunStatus.APPROVED] and len(batch.claims) == 1


# -- messages between agents, and spawn messages ------------------------------------------------------


def spawn_message(store: Store, body: dict[str, Any] | str, *, sender: str = "planner",
                  job_id: str | None = None, now: str = at(0)) -> Message:
    text = body if isinstance(body, str) else json.dumps(body)
    return store.send_message(NewMessage(from_agent=sender, to_agent="main", body=text,
                                         kind="spawn", job_id=job_id), now)


def spawn_plan(message: Message) -> SpawnPlan:
    return plan_spawn(message.body, from_agent=message.from_agent, to_agent=message.to_agent,
                      job_id=message.job_id, now=NOW)


SPAWN_BODY = {"name": "spawned", "session_target": "shell", "payload_message": "true"}


def test_a_message_is_written_pending_and_read_back(store: Store) -> None:
    sent = store.send_message(NewMessage(from_agent="a", to_agent="b", body="hi", kind="status"), at(0))
    assert (sent.status, sent.kind, sent.body, sent.created_at) == ("pending", "status", "hi", at(0))
    assert store.get_message(sent.id) == sent
    assert store.get_message("nope") is None


@pytest.mark.parametrize("link", ["job_id", "run_id", "reply_to"])
def test_a_message_naming_what_does_not_exist_is_refused_and_not_written(store: Store, link: str) -> None:
    with pytest.raises(NotFoundError, match="not found: nope"):
        store.send_message(NewMessage(from_agent="a", to_agent="b", body="hi", **{link: "nope"}), at(0))
    assert store.pending_spawns() == [] and store.take_inbox("b", at(1)) == []


def test_pending_spawns_are_the_unanswered_spawn_messages_oldest_first(store: Store) -> None:
    second = spawn_message(store, SPAWN_BODY, now=at(2))
    first = spawn_message(store, SPAWN_BODY, now=at(1))
    store.send_message(NewMessage(from_agent="a", to_agent="main", body="not a spawn"), at(0))
    assert [m.id for m in store.pending_spawns()] == [first.id, second.id]
    assert [m.id for m in store.pending_spawns(limit=1)] == [first.id]
    store.reject_spawn(first.id, "no", at(3))
    assert [m.id for m in store.pending_spawns()] == [second.id]


def test_a_spawn_is_accepted_once_with_its_job(store: Store) -> None:
    message = spawn_message(store, SPAWN_BODY)
    plan = spawn_plan(message)
    job = store.accept_spawn(message.id, plan.row, plan.queue_at, at(1))
    assert job is not None and job.name == "spawned" and job.next_run_at == at(0)
    answered = store.get_message(message.id)
    assert answered is not None and (answered.status, answered.delivered_at) == ("delivered", at(1))
    assert answered.metadata == {"spawned_job_id": job.id}
    again = spawn_plan(message)  # a second look (another process, a replay) writes nothing
    assert store.accept_spawn(message.id, again.row, again.queue_at, at(2)) is None
    assert store.reject_spawn(message.id, "late", at(2)) is None
    assert [row["id"] for row in store.list_jobs()] == [job.id]
    (c,) = claim(store)
    assert c.job.id == job.id and c.source == "at"


@pytest.mark.parametrize("keep", [False, True])
def test_a_linked_one_off_runs_once_through_its_queue_row_then_goes(store: Store, keep: bool) -> None:
    parent = add_job(store, name="parent", schedule_cron="0 0 1 1 *")
    store.update_job(parent.id, {"next_run_at": None}, at(0))  # only the spawned run is due
    message = spawn_message(store, {**SPAWN_BODY, "delete_after_run": not keep}, job_id=parent.id)
    plan = spawn_plan(message)
    job = store.accept_spawn(message.id, plan.row, plan.queue_at, at(1))
    assert job is not None and job.parent_id == parent.id and job.next_run_at is None
    (c,) = claim(store)
    assert (c.job.id, c.source) == (job.id, "manual")
    finish(store, c)
    assert claim(store, at(120)) == []  # it ran once: nothing of it is due again
    after = store.get_job(job.id)
    if keep:
        assert after is not None and not after.enabled and after.last_status == "ok"
    else:
        assert after is None


def test_an_accept_that_fails_writes_nothing_and_leaves_the_message_pending(store: Store) -> None:
    parent = add_job(store, name="parent")
    message = spawn_message(store, {**SPAWN_BODY, "trigger_on": "success"}, job_id=parent.id)
    plan = spawn_plan(message)
    store.delete_job(parent.id)  # the message's job_id goes with it: name the parent in the row
    with pytest.raises(ValidationError, match=f"parent job does not exist: {parent.id}"):
        store.accept_spawn(message.id, plan.row, plan.queue_at, at(1))
    taken = spawn_message(store, {**SPAWN_BODY, "id": "taken"})
    store.accept_spawn(taken.id, spawn_plan(taken).row, None, at(1))
    duplicate = spawn_message(store, {**SPAWN_BODY, "id": "taken"})
    with pytest.raises(ValidationError, match="a job with this id already exists"):
        store.accept_spawn(duplicate.id, spawn_plan(duplicate).row, None, at(1))
    assert [m.id for m in store.pending_spawns()] == [message.id, duplicate.id]
    assert [row["id"] for row in store.list_jobs()] == ["taken"]


def test_a_rejected_spawn_answers_its_sender_once(store: Store) -> None:
    message = spawn_message(store, "not json", sender="researcher")
    answer = store.reject_spawn(message.id, "the spawn body is not valid JSON", at(1))
    assert answer is not None and answer.reply is not None
    reply = answer.reply
    assert (reply.from_agent, reply.to_agent, reply.kind, reply.reply_to, reply.status) == (
        "scheduler", "researcher", "system", message.id, "pending")
    assert reply.body == "Spawn rejected: the spawn body is not valid JSON"
    answered = store.get_message(message.id)
    assert answered is not None and answered.status == "delivered"
    assert answered.metadata == {"spawn_error": "the spawn body is not valid JSON"}
    assert store.reject_spawn(message.id, "again", at(2)) is None
    assert store.accept_spawn(message.id, {"id": "never"}, None, at(2)) is None
    (injected,) = store.take_inbox("researcher", at(3))
    assert injected["id"] == reply.id
    assert store.list_jobs() == []


def test_spawn_messages_never_reach_an_inbox(store: Store) -> None:
    spawn_message(store, SPAWN_BODY)
    text = store.send_message(NewMessage(from_agent="a", to_agent="main", body="hello"), at(0))
    assert [row["id"] for row in store.take_inbox("main", at(1))] == [text.id]
    assert len(store.pending_spawns()) == 1


# -- jobs, and the change token ---------------------------------------------------------------------


def test_jobs_round_trip(store: Store) -> None:
    job = add_job(store, name="crud")
    assert store.get_job(job.id) == job
    assert [row["name"] for row in store.list_jobs()] == ["crud"]
    assert store.update_job(job.id, {"name": "renamed"}, at(1)).name == "renamed"
    store.delete_job(job.id)
    assert store.get_job(job.id) is None
    with pytest.raises(NotFoundError):
        store.delete_job(job.id)


def test_a_write_by_another_process_changes_the_token(store: Store, opener: Opener) -> None:
    before = store.change_token()
    assert store.change_token() == before
    other = opener()
    try:
        other.insert_job(new_job_row(validate_job_spec(
            {"name": "x", "schedule_cron": "0 0 1 1 *", "session_target": "shell",
             "payload_message": "true", "run_timeout_ms": 1000, "delivery_mode": "none",
             "origin": "system"}, now=NOW), NOW))
    finally:
        other.close()
    assert store.change_token() != before


def test_a_sound_database_has_no_integrity_problems(store: Store) -> None:
    assert store.integrity_problems() == []
    assert store.identity() is not None


# -- cancellation ------------------------------------------------------------------------------

CANCEL_REASON = "Cancelled by the contract test"


def live_rows(store: Store, job_ids: list[str]) -> list[str]:
    """Queue rows of these jobs the daemon could still act on (a claim at the end of time)."""
    return [c.dispatch_id or "" for c in claim(store, at(10**6)) if c.job.id in job_ids]


def test_cancel_stops_a_job_and_its_descendants(store: Store) -> None:
    root = add_job(store, name="build")
    deploy = add_child(store, root, name="deploy")
    report = add_child(store, deploy, name="report")
    notify = add_child(store, root, name="notify")
    store.enqueue_dispatch(deploy.id, "chain", at(0))
    running = {c.job.id: c for c in claim(store)}
    assert set(running) == {root.id, deploy.id}
    later = store.enqueue_dispatch(notify.id, "chain", at(3600))
    manual = store.enqueue_dispatch(root.id, "manual", at(3600))
    assert later is not None and manual is not None

    done = store.cancel_jobs(root.id, cascade=True, now=at(30), reason=CANCEL_REASON)

    assert done.job_ids == [root.id, deploy.id, report.id, notify.id]  # parents first, then by name
    assert sorted(done.run_ids) == sorted(c.run.id for c in running.values())
    assert sorted(done.dispatch_ids) == sorted([running[deploy.id].dispatch_id or "", later["id"],
                                                manual["id"]])
    assert done.approval_ids == []
    assert [store.require_job(j).enabled for j in done.job_ids] == [False] * 4
    for c in running.values():
        run = store.require_run(c.run.id)
        assert run.status is RunStatus.CANCELLED and run.error_message == CANCEL_REASON
        assert run.finished_at == at(30) and run.row["duration_ms"] == 30_000
        assert not finish(store, c, now=at(40)).recorded  # the daemon's late end changes nothing
        assert store.require_run(c.run.id).status is RunStatus.CANCELLED
    (skipped,) = store.list_runs(notify.id, 10)  # a queued run that never started says why
    assert skipped["status"] == "skipped" and CANCEL_REASON in skipped["error_message"]
    assert live_rows(store, done.job_ids) == [] and store.next_due_at(SHELL, ME) is None


def test_cancel_without_cascade_leaves_the_children_alone(store: Store) -> None:
    root = add_job(store, name="build")
    deploy = add_child(store, root, name="deploy")
    store.enqueue_dispatch(deploy.id, "chain", at(0))
    running = {c.job.id: c for c in claim(store)}
    queued = store.enqueue_dispatch(deploy.id, "chain", at(3600))
    assert queued is not None

    done = store.cancel_jobs(root.id, cascade=False, now=at(30), reason=CANCEL_REASON)

    assert done.job_ids == [root.id] and done.run_ids == [running[root.id].run.id]
    assert done.dispatch_ids == []
    assert store.require_job(deploy.id).enabled
    assert store.require_run(running[deploy.id].run.id).status is RunStatus.RUNNING
    assert finish(store, running[deploy.id], now=at(40)).recorded
    assert [c.dispatch_id for c in claim(store, at(3600))] == [queued["id"]]


def test_cancel_of_an_unknown_job_writes_nothing(store: Store) -> None:
    job = add_job(store)
    before = store.change_token()
    with pytest.raises(NotFoundError, match="no-such-job"):
        store.cancel_jobs("no-such-job", cascade=True, now=at(1), reason=CANCEL_REASON)
    assert store.require_job(job.id).enabled and store.change_token() == before


# -- chains: the children a parent's end fires ------------------------------------------------------


def add_child(store: Store, parent: Job, trigger_on: str = "success", **overrides: Any) -> Job:
    return add_job(store, **{"name": f"child on {trigger_on}", "parent_id": parent.id,
                             "trigger_on": trigger_on, **overrides})


def queued_chain_rows(done: Any) -> list[tuple[str, str]]:
    return [(row["job_id"], row["scheduled_for"]) for row in done.children.queued]


def test_a_success_fires_the_success_and_complete_children_with_the_end(store: Store) -> None:
    parent = add_job(store, name="build")
    on_success = add_child(store, parent, "success", name="deploy")
    on_complete = add_child(store, parent, "complete", name="log")
    add_child(store, parent, "failure", name="notify")
    (c,) = claim(store)
    done = finish(store, c, now=at(10))
    assert queued_chain_rows(done) == [(on_success.id, at(10)), (on_complete.id, at(10))]  # by name
    children = claim(store, at(10))
    assert sorted(k.job.name for k in children) == ["deploy", "log"]
    assert {k.source for k in children} == {"chain"}
    assert {k.run.triggered_by_run for k in children} == {c.run.id}
    assert finish(store, c).recorded is False  # ending it again fires nothing either


def test_failure_children_wait_for_the_last_retry(store: Store) -> None:
    parent = add_job(store, name="build", max_retries=1)
    notify = add_child(store, parent, "failure", name="notify")
    (c,) = claim(store)
    first = finish(store, c, "error")
    assert first.retry is not None and first.children.queued == ()
    (retry,) = claim(store, at(60))
    last = finish(store, retry, "timeout", now=at(70))
    assert queued_chain_rows(last) == [(notify.id, at(70))]
    (child,) = claim(store, at(70))
    assert child.job.id == notify.id and child.run.triggered_by_run == retry.run.id


def test_cancelled_parents_count_as_failures(store: Store) -> None:
    parent = add_job(store)
    notify = add_child(store, parent, "failure")
    add_child(store, parent, "success")
    (c,) = claim(store)
    done = finish(store, c, "cancelled")
    assert [row["job_id"] for row in done.children.queued] == [notify.id]


def test_a_trigger_delay_schedules_the_child_later(store: Store) -> None:
    parent = add_job(store)
    later = add_child(store, parent, trigger_delay_s=90)
    (c,) = claim(store)
    assert queued_chain_rows(finish(store, c, now=at(10))) == [(later.id, at(100))]
    assert claim(store, at(99)) == []
    assert [k.job.id for k in claim(store, at(100))] == [later.id]


def test_trigger_conditions_test_the_parents_output(store: Store) -> None:
    parent = add_job(store)
    hit = add_child(store, parent, name="a hit", trigger_condition="regex:^BUILD OK")
    add_child(store, parent, name="a miss", trigger_condition="contains:FAILED")
    (c,) = claim(store)
    (done,) = store.finish_runs([Finish(c, "ok", 5, {"summary": "short"},
                                        content="BUILD OK in 3s\nall green")], policy())
    assert [row["job_id"] for row in done.children.queued] == [hit.id]
    assert len(done.children.unmatched) == 1 and done.children.skipped == ()


def test_children_beyond_the_fanout_are_chosen_by_name_and_recorded(store: Store) -> None:
    parent = add_job(store, max_trigger_fanout=2)
    kids = {name: add_child(store, parent, name=name) for name in ("c", "a", "b")}
    (c,) = claim(store)
    done = finish(store, c)
    assert [row["job_id"] for row in done.children.queued] == [kids["a"].id, kids["b"].id]
    (left_out,) = done.children.skipped
    assert left_out.job_id == kids["c"].id and left_out.status is RunStatus.SKIPPED
    assert "max_trigger_fanout 2" in (left_out.error_message or "")
    assert left_out.triggered_by_run == c.run.id
    assert store.list_runs(kids["c"].id, 5)[0]["status"] == "skipped"


def test_a_child_whose_backlog_is_full_is_recorded_skipped(store: Store) -> None:
    parent = add_job(store)
    child = add_child(store, parent, max_queued_dispatches=1)
    assert store.enqueue_dispatch(child.id, "manual", at(5000)) is not None
    (c,) = claim(store)
    done = finish(store, c)
    assert done.children.queued == ()
    (skipped,) = done.children.skipped
    assert skipped.job_id == child.id and "max_queued_dispatches" in (skipped.error_message or "")


def test_a_deferred_claim_fires_no_children_the_later_end_does(store: Store) -> None:
    parent = add_job(store)
    after = add_child(store, parent, "complete")
    (c,) = claim(store)
    store.defer_claim(c, at(1), "gateway down")  # not an end of the parent's work
    (again,) = claim(store, at(2))
    assert again.job.id == parent.id  # only the parent, due again
    done = finish(store, again, now=at(3))
    assert [row["job_id"] for row in done.children.queued] == [after.id]
    assert [k.job.id for k in claim(store, at(3))] == [after.id]


def test_disabled_children_are_not_fired(store: Store) -> None:
    parent = add_job(store)
    add_child(store, parent, enabled=False)
    (c,) = claim(store)
    done = finish(store, c)
    assert done.children.queued == () and done.children.skipped == ()


def test_a_self_deleting_parent_that_fired_children_is_kept_disabled(store: Store) -> None:
    parent = add_job(store, delete_after_run=True)
    child = add_child(store, parent)
    (c,) = claim(store)
    done = finish(store, c)
    assert done.job is not None and not done.job.enabled  # its run is the child's input
    (k,) = claim(store, at(10))
    assert k.job.id == child.id and store.get_run(k.run.triggered_by_run or "") is not None


def test_a_retry_of_a_chained_run_keeps_the_parents_run_as_its_trigger(store: Store) -> None:
    parent = add_job(store)
    add_child(store, parent, max_retries=1)
    (p,) = claim(store)
    finish(store, p)
    (child,) = claim(store, at(10))
    assert finish(store, child, "error", now=at(11)).retry is not None
    (retry,) = claim(store, at(11 + 60))
    assert retry.run.retry_of == child.run.id and retry.run.triggered_by_run == p.run.id


def test_a_crash_that_is_not_replayed_fires_the_failure_children(store: Store) -> None:
    once = add_job(store, name="once")
    notify = add_child(store, once, "failure", name="notify once")
    replayed = add_job(store, name="replayed", delivery_guarantee="at-least-once")
    add_child(store, replayed, "complete", name="after replay")
    crashed = {k.job.name: k for k in claim(store, owner=OTHER)}
    # A shared store takes only runs whose lease (30 s by default) expired.
    later = at(60) if store.shared else at(5)
    found = store.recover_orphans(later, ME)
    once_run = crashed["once"].run.id
    assert list(found.children) == [once_run]
    assert [row["job_id"] for row in found.children[once_run].queued] == [notify.id]
    kids = [k for k in claim(store, later) if k.source == "chain"]
    assert [(k.job.id, k.run.triggered_by_run) for k in kids] == [(notify.id, once_run)]


def test_a_child_is_placed_only_under_an_existing_parent_without_cycles_or_excess_depth(
    store: Store,
) -> None:
    from scheduler.errors import ValidationError

    root = add_job(store, name="root")
    with pytest.raises(ValidationError, match="parent job does not exist: nope"):
        store.check_chain_placement("new", "nope")
    chain = [root]
    for depth in range(1, 11):
        chain.append(add_child(store, chain[-1], name=f"depth {depth}"))
    with pytest.raises(ValidationError, match=r"Max chain depth \(10\) exceeded. Chain would be 11 deep"):
        store.check_chain_placement("new", chain[-1].id)
    with pytest.raises(ValidationError, match="Cycle detected"):
        store.check_chain_placement(root.id, chain[3].id)
    with pytest.raises(ValidationError, match="Cycle detected"):
        store.update_job(root.id, {"parent_id": root.id, "trigger_on": "success"}, at(1))
    other = add_job(store, name="other root")
    branch = add_child(store, other, name="branch")
    add_child(store, branch, name="leaf")
    with pytest.raises(ValidationError, match="Chain would be 11 deep"):  # the subtree moves along
        store.update_job(branch.id, {"parent_id": chain[9].id}, at(1))
    store.check_chain_placement("new", chain[9].id)  # depth 10 is allowed


# -- image attachments of outbound deliveries -------------------------------------------------------


def test_attachments_are_recorded_with_the_delivery_and_progress_resumes(store: Store) -> None:
    add_job(store, name="charts")
    (c,) = claim(store)
    finish(store, c, delivery=Delivery("a chart", "telegram", "42",
                                       attachments=("/tmp/a.png", "/tmp/b.png")))
    (message,) = store.due_outbound(at(20))
    assert message.attachments == ("/tmp/a.png", "/tmp/b.png") and message.media_sent == 0
    store.record_delivery_progress(message.id, 1)
    store.record_media_progress(message.id, 1, None, at(21))
    store.record_media_progress(message.id, 2, "attachment not sent: /tmp/b.png: no such file", at(22))
    (again,) = store.due_outbound(at(23))
    assert (again.chunks_sent, again.media_sent) == (1, 2)
    assert again.metadata["media_skipped"] == ["attachment not sent: /tmp/b.png: no such file"]


def test_a_delivery_without_attachments_has_none(store: Store) -> None:
    add_job(store, name="text")
    (c,) = claim(store)
    finish(store, c, delivery=Delivery("text only", "telegram", "42"))
    (message,) = store.due_outbound(at(20))
    assert message.attachments == () and message.media_sent == 0
    assert "attachments" not in message.metadata

# -- the agent registry and retrieval context (issue 9: agentsctx) ------------------------------------


def test_agents_register_list_and_get_with_capabilities_parsed(store: Store) -> None:
    assert store.get_agent("coder") is None
    agent = store.register_agent("coder", "Code Bot", at(0), capabilities=["code", "review"])
    assert (agent["id"], agent["name"], agent["status"], agent["session_key"]) == \
        ("coder", "Code Bot", "idle", None)
    assert agent["capabilities"] == ["code", "review"] and agent["last_seen_at"] == at(0)
    store.set_agent_status("coder", "busy", "agent:coder:scheduler:j", at(5))
    again = store.register_agent("coder", "Coder", at(9))  # renamed; busy, session, caps kept
    assert (again["name"], again["status"], again["session_key"], again["capabilities"]) == \
        ("Coder", "busy", "agent:coder:scheduler:j", ["code", "review"])
    assert again["last_seen_at"] == at(9)
    store.register_agent("ava", None, at(9))
    assert [a["id"] for a in store.list_agents()] == ["ava", "coder"]
    assert store.list_agents()[1] == store.get_agent("coder")


def test_ensure_agent_adds_once_and_never_changes_an_existing_agent(store: Store) -> None:
    assert store.ensure_agent("main", "Main Agent", ["*"], at(0)) is True
    assert store.get_agent("main")["capabilities"] == ["*"]  # type: ignore[index]
    store.register_agent("main", "Boss", at(1))
    assert store.ensure_agent("main", "Main Agent", ["*"], at(2)) is False
    assert store.get_agent("main")["name"] == "Boss"  # type: ignore[index]


def test_a_status_for_an_unknown_agent_registers_it(store: Store) -> None:
    store.set_agent_status("ops", "busy", "agent:ops:main", at(3))
    agent = store.get_agent("ops")
    assert agent is not None
    assert (agent["name"], agent["status"], agent["session_key"], agent["last_seen_at"]) == \
        ("ops", "busy", "agent:ops:main", at(3))
    store.set_agent_status("ops", "idle", None, at(4))
    agent = store.get_agent("ops")
    assert agent is not None and (agent["status"], agent["session_key"]) == ("idle", None)


AGENT_JOB = {"session_target": "isolated", "payload_kind": "agentTurn",
             "delivery_opt_out_reason": "contract test"}


def test_busy_agents_without_a_running_turn_are_released(store: Store) -> None:
    job = add_job(store, agent_id="writer", **AGENT_JOB)
    (running,) = store.claim_due(at(0), 5, {"isolated"}, lambda j: at(3600), ME).claims
    assert running.job.id == job.id
    store.set_agent_status("writer", "busy", "agent:writer:scheduler:x", at(1))
    store.set_agent_status("ghost", "busy", "agent:ghost:scheduler:y", at(1))
    store.set_agent_status("resting", "offline", None, at(1))
    assert store.release_agents_without_turns(at(2)) == ["ghost"]
    statuses = {a["id"]: (a["status"], a["session_key"]) for a in store.list_agents()}
    assert statuses == {"writer": ("busy", "agent:writer:scheduler:x"), "ghost": ("idle", None),
                        "resting": ("offline", None)}


def end_with(store: Store, c: Claim, columns: dict[str, Any], now: str) -> None:
    store.finish_runs([Finish(c, "ok", 5, columns)], policy(now))


def test_prior_outputs_are_stdout_or_summary_newest_first_without_the_current_run(store: Store) -> None:
    job = add_job(store)
    outputs = [{"shell_stdout": "stdout one", "summary": "stdout:\nstdout one"},
               {"summary": "a reply"},
               {"summary": "   "},  # no output: not a candidate
               {"shell_stdout": "\n", "summary": "the summary stands in"}]
    for n, columns in enumerate(outputs):
        store.update_job(job.id, {"next_run_at": at(100 * n)}, at(100 * n))
        (c,) = claim(store, at(100 * n))
        end_with(store, c, columns, at(100 * n + 1))
    store.update_job(job.id, {"next_run_at": at(900)}, at(900))
    (current,) = claim(store, at(900))
    found = store.prior_outputs(job.id, current.run.id, 10, 100)
    assert [p.output for p in found] == ["the summary stands in", "a reply", "stdout one"]
    assert [p.started_at for p in found] == [at(300), at(100), at(0)]
    assert all(p.status == "ok" and p.stdout_path is None for p in found)
    assert [p.output for p in store.prior_outputs(job.id, current.run.id, 2, 3)] == ["the", "a r"]
    assert store.prior_outputs(job.id, found[0].run_id, 1, 100)[0].output == "a reply"
    assert store.prior_outputs("no-such-job", current.run.id, 5, 100) == []
# -- task groups and the team adapter (issue 9, branch tasks) ----------------------------------------

from scheduler.models.tasks import NewTaskGroup  # noqa: E402


def new_group(agents: tuple[str, ...] = ("a", "b"), **overrides: Any) -> NewTaskGroup:
    fields: dict[str, Any] = {"name": "fanout", "expected_agents": agents, "timeout_s": 60,
                              "delivery_channel": "telegram", "delivery_to": "ops", **overrides}
    return NewTaskGroup(**fields)


def outbound_notices(store: Store, now: str = at(3600)) -> list[str]:
    return [m.body for m in store.due_outbound(now)]


def test_a_task_group_is_created_with_pending_agents_and_read_back(store: Store) -> None:
    created = store.create_task_group(new_group(), at(0))
    assert created["status"] == "active" and created["created_at"] == at(0)
    assert created["agents"] == [{"agent_label": "a", "status": "pending"},
                                 {"agent_label": "b", "status": "pending"}]
    group = store.task_group(created["id"])
    assert group is not None and json.loads(group["expected_agents"]) == ["a", "b"]
    assert [a["agent_label"] for a in group["agents"]] == ["a", "b"]
    assert group["notice"] is None
    assert [g["id"] for g in store.active_task_groups()] == [created["id"]]
    assert store.task_group("nope") is None


def test_the_last_report_finishes_the_group_with_its_notice_in_one_go(store: Store) -> None:
    gid = store.create_task_group(new_group(), at(0))["id"]
    assert store.report_task_agent(gid, "a", "running", None, at(1)) is None
    assert store.report_task_agent(gid, "a", "completed", "merged", at(2)) is None
    assert outbound_notices(store) == []
    finished = store.report_task_agent(gid, "b", "failed", None, at(3))
    assert finished is not None and finished.notice is not None
    assert finished.group["status"] == "failed" and finished.group["completed_at"] == at(3)
    assert finished.group["summary"] == "[ok] a: merged\n[FAILED] b: failed"
    assert outbound_notices(store) == ['[FAILED] Task group "fanout" failed\n\n'
                                       "[ok] a: merged\n[FAILED] b: failed"]
    (notice,) = store.due_outbound(at(3600))
    assert (notice.channel, notice.delivery_to) == ("telegram", "ops")
    group = store.task_group(gid)
    assert group is not None and group["notice"]["status"] == "pending"
    assert [g["id"] for g in store.task_group_history(10)] == [gid]
    assert store.active_task_groups() == []


def test_reports_to_unknown_groups_labels_or_finished_groups_write_nothing(store: Store) -> None:
    gid = store.create_task_group(new_group(("a",)), at(0))["id"]
    with pytest.raises(NotFoundError, match="Task group not found: nope"):
        store.report_task_agent("nope", "a", "running", None, at(1))
    with pytest.raises(NotFoundError, match="'zz' is not in task group"):
        store.report_task_agent(gid, "zz", "completed", None, at(1))
    with pytest.raises(NotFoundError):
        store.register_task_session(gid, "zz", "key", at(1))
    with pytest.raises(ValidationError, match="Unknown status"):
        store.report_task_agent(gid, "a", "dead", None, at(1))
    group = store.task_group(gid)
    assert group is not None and group["agents"][0]["status"] == "pending"
    store.report_task_agent(gid, "a", "completed", None, at(2))
    with pytest.raises(ValidationError, match="is completed: it takes no more reports"):
        store.report_task_agent(gid, "a", "running", None, at(3))
    assert outbound_notices(store) == ['[ok] Task group "fanout" completed\n\n[ok] a: done']


def test_the_dead_man_switch_spares_recent_heartbeats_and_notifies(store: Store) -> None:
    gid = store.create_task_group(new_group(("quiet", "beating", "done"), timeout_s=60), at(0))["id"]
    store.register_task_session(gid, "beating", "agent:main:subagent:x", at(0))
    store.report_task_agent(gid, "done", "completed", None, at(10))
    assert store.sweep_task_groups(at(59)).dead == []  # younger than its timeout
    assert store.touch_task_sessions({"agent:main:subagent:x", "other"}, at(50)) == 1
    sweep = store.sweep_task_groups(at(60))
    assert [d["agent_label"] for d in sweep.dead] == ["quiet"]
    assert sweep.finished == []  # "beating" heartbeat 10 s ago: alive
    sweep = store.sweep_task_groups(at(111))  # its heartbeat now older than min(60, 300)
    assert [d["agent_label"] for d in sweep.dead] == ["beating"]
    (finished,) = sweep.finished
    assert finished.group["status"] == "timed_out" and finished.notice is not None
    assert finished.group["summary"] == ("[DEAD] quiet: timed out\n[DEAD] beating: timed out\n"
                                         "[ok] done: done")
    assert outbound_notices(store) == [f'[FAILED] Task group "fanout" timed_out\n\n'
                                       f'{finished.group["summary"]}']
    group = store.task_group(gid)
    assert group is not None
    assert {a["agent_label"]: a["error"] for a in group["agents"]}["quiet"] == \
        "Timed out (dead-man switch)"
    assert store.sweep_task_groups(at(200)).finished == []  # finished once
    assert store.touch_task_sessions({"agent:main:subagent:x"}, at(200)) == 0


def test_a_group_without_a_target_finishes_silently(store: Store) -> None:
    gid = store.create_task_group(new_group(("a",), delivery_to=None), at(0))["id"]
    finished = store.report_task_agent(gid, "a", "completed", None, at(1))
    assert finished is not None and finished.notice is None
    assert store.due_outbound(at(3600)) == []


def add_team_message(store: Store, message_id: str, **columns: Any) -> None:
    """A team message as the messages CLI writes it. Plain SQL on the backend's file: on this
    branch no Store method writes the team columns (the messages work adds them)."""

    row = {"id": message_id, "from_agent": "lead", "to_agent": "writer", "body": "do it",
           "kind": "text", "created_at": at(0), **columns}
    with store.db.transaction() as conn:  # type: ignore[attr-defined]
        conn.execute(f"INSERT INTO messages ({', '.join(row)}) VALUES ({', '.join('?' * len(row))})",
                     tuple(row.values()))


def test_team_messages_map_into_tasks_and_events_once(store: Store) -> None:
    add_team_message(store, "t1", team_id="core", member_id="writer", kind="task",
                     subject="Write docs", created_at=at(0))
    add_team_message(store, "t2", team_id="core", member_id="writer", task_id="t1",
                     kind="status", created_at=at(1))
    add_team_message(store, "t3", team_id="core", kind="text", created_at=at(2))
    add_team_message(store, "solo", created_at=at(3))
    assert store.map_team_messages(200, at(5)) == 3
    assert store.map_team_messages(200, at(6)) == 0
    (task,) = store.team_tasks("core", 50)
    assert (task["id"], task["title"], task["status"], task["member_id"]) == \
        ("t1", "Write docs", "open", "writer")
    events = store.team_events("core", 50, None)
    assert sorted(e["event_type"] for e in events) == ["mailbox", "task_created", "task_message"]
    assert {e["event_type"] for e in store.team_events("core", 50, "t1")} == \
        {"task_created", "task_message"}
    payload = json.loads(next(e["payload"] for e in events if e["message_id"] == "t1"))
    assert payload == {"kind": "task", "from_agent": "lead", "to_agent": "writer",
                       "subject": "Write docs", "status": "pending", "priority": 0,
                       "ack_required": False}
    assert [m["id"] for m in store.team_inbox("core", 20, "writer", None)] == ["t1", "t2", "t3"]
    assert [m["id"] for m in store.team_inbox("core", 20, None, "t1")] == ["t2"]
    assert store.team_inbox("other", 20, None, None) == []


def test_a_team_ack_reads_the_message_and_logs_it(store: Store) -> None:
    add_team_message(store, "t1", team_id="core", member_id="writer", kind="task")
    add_team_message(store, "solo")
    assert store.ack_team_message("solo", "me", None, at(1)) is None
    assert store.ack_team_message("nope", "me", None, at(1)) is None
    acked = store.ack_team_message("t1", "writer", "got it", at(2))
    assert acked is not None and (acked["status"], acked["ack_at"]) == ("read", at(2))
    (event,) = store.team_events("core", 50, "t1")
    assert event["event_type"] == "ack"
    assert json.loads(event["payload"]) == {"actor": "writer", "detail": "got it"}


@pytest.mark.parametrize(("reports", "outcome"), [
    ((("w", "completed"), ("r", "completed")), "passed"),
    ((("w", "completed"), ("r", "failed")), "failed"),
])
def test_a_team_gate_moves_on_when_its_group_finishes_and_notifies(
        store: Store, reports: tuple[tuple[str, str], ...], outcome: str) -> None:
    group = new_group(("w", "r"), name="team:core:task:deploy")
    gate = store.open_team_gate("core", "deploy", group, at(0))
    assert gate["gate_status"] == "waiting" and gate["expected_members"] == ["w", "r"]
    (task,) = store.team_tasks("core", 50)
    assert (task["status"], task["gate_tracker_id"]) == ("blocked", gate["tracker_id"])
    check = store.check_team_gates(100, at(1))
    assert (check.passed, check.failed, check.pending) == (0, 0, 1)
    for label, state in reports:
        store.report_task_agent(gate["tracker_id"], label, state, None, at(2))
    check = store.check_team_gates(100, at(3))
    assert (check.passed, check.failed) == ((1, 0) if outcome == "passed" else (0, 1))
    (task,) = store.team_tasks("core", 50)
    assert task["gate_status"] == outcome
    assert task["status"] == ("open" if outcome == "passed" else "failed")
    kinds = [e["event_type"] for e in store.team_events("core", 50, "deploy")]
    assert kinds[0] == f"gate_{outcome}" and kinds[-1] == "gate_open"
    (notice,) = outbound_notices(store)
    assert notice.startswith("[ok] Task group" if outcome == "passed" else "[FAILED] Task group")


def test_a_gate_whose_group_the_switch_finished_fails_with_one_notice(store: Store) -> None:
    gate = store.open_team_gate("core", "deploy", new_group(("w",), timeout_s=10), at(0))
    assert store.check_team_gates(100, at(5)).pending == 1
    (finished,) = store.sweep_task_groups(at(20)).finished
    assert finished.group["id"] == gate["tracker_id"] and finished.notice is not None
    check = store.check_team_gates(100, at(21))
    assert (check.failed, check.finished) == (1, [])
    (task,) = store.team_tasks("core", 50)
    assert (task["status"], task["last_error"]) == ("failed", "[DEAD] w: timed out")
    assert outbound_notices(store) == ['[FAILED] Task group "team:core:task:deploy" timed_out\n\n'
                                       "[DEAD] w: timed out"]
# -- messages: inboxes, broadcasts, reads and acks, expiry, pruning (issue 9, msgs) -----------------

DAY = 24 * 3600


def send(store: Store, to: str = "main", body: str = "hello", *, now: str = at(0),
         **fields: Any) -> Message:
    return store.send_message(NewMessage(from_agent=fields.pop("sender", "planner"), to_agent=to,
                                         body=body, **fields), now)


def ids(rows: list[dict[str, Any]]) -> list[str]:
    return [str(row["id"]) for row in rows]


def test_a_broadcast_taken_by_one_agent_is_still_pending_for_the_others(store: Store) -> None:
    """Reference defect §17 #15: the first agent to take a broadcast consumed it for everyone."""
    news = send(store, "broadcast", "all hands at noon")
    (taken,) = store.take_inbox("a", at(1))
    assert taken["id"] == news.id and taken["status"] == "pending"
    assert store.take_inbox("a", at(2)) == []
    assert [(r["id"], r["status"]) for r in store.inbox("a", at(2), 20)] == [(news.id, "delivered")]
    assert [(r["id"], r["status"]) for r in store.inbox("b", at(2), 20)] == [(news.id, "pending")]
    assert ids(store.take_inbox("b", at(3))) == [news.id]
    own = store.get_message(news.id)
    assert own is not None and own.status == "pending" and own.row["delivery_attempts"] == 2


def test_a_refused_prompt_puts_back_only_that_agents_copy_of_a_broadcast(store: Store) -> None:
    news = send(store, "broadcast")
    direct = send(store, "a", "for a alone")
    assert set(ids(store.take_inbox("a", at(1)))) == {news.id, direct.id}
    store.take_inbox("b", at(1))
    store.return_to_inbox("a", [news.id, direct.id], at(2))
    assert set(ids(store.take_inbox("a", at(3)))) == {news.id, direct.id}
    assert store.take_inbox("b", at(3)) == []  # b's copy stays delivered
    events = [(r["event_type"], r["detail"]) for r in store.message_receipts(news.id, 20)]
    assert events.count(("error", "prompt not accepted; back in the inbox")) == 1


def test_reading_a_broadcast_is_per_agent_and_needs_the_agent(store: Store) -> None:
    news = send(store, "broadcast")
    with pytest.raises(ValidationError, match="is a broadcast"):
        store.mark_read(news.id, None, at(1))
    seen = store.mark_read(news.id, "a", at(1))
    assert (seen["status"], seen["read_at"]) == ("read", at(1))
    assert store.unread_count("a", at(2)) == 0 and store.unread_count("b", at(2)) == 1
    assert store.read_all("a", at(2)) == 0
    acked = store.ack_message(news.id, "b", "b", "on it", at(3))
    assert (acked["status"], acked["ack_at"], acked["read_at"]) == ("read", at(3), at(3))
    assert store.unread_count("c", at(4)) == 1
    own = store.get_message(news.id)
    assert own is not None and own.status == "pending" and own.row["read_at"] is None
    assert [(r["actor"], r["detail"]) for r in store.message_receipts(news.id, 20)] == [
        ("b", "on it"), ("a", None)]


def test_the_inbox_order_is_kind_then_priority_then_age(store: Store) -> None:
    urgent_text = send(store, body="urgent text", priority=2, now=at(0))
    old_task = send(store, kind="task", body="old task", now=at(0))
    new_task = send(store, kind="task", body="new task", priority=1, now=at(5))
    constraint = send(store, "broadcast", kind="constraint", body="no force push", now=at(9))
    plain = send(store, body="plain", now=at(0))
    assert ids(store.inbox("main", at(10), 20)) == [
        constraint.id, new_task.id, old_task.id, urgent_text.id, plain.id]
    assert ids(store.inbox("main", at(10), 2)) == [constraint.id, new_task.id]
    assert ids(store.take_inbox("main", at(10), 5)) == [
        constraint.id, new_task.id, old_task.id, urgent_text.id, plain.id]


def test_read_all_and_ack_change_only_the_agents_messages(store: Store) -> None:
    mine = send(store, "main")
    theirs = send(store, "coder")
    news = send(store, "broadcast")
    assert store.read_all("main", at(1)) == 2
    assert store.unread_count("main", at(1)) == 0 and store.unread_count("coder", at(1)) == 2
    row = store.ack_message(theirs.id, None, "operator", None, at(2))
    assert (row["status"], row["ack_at"]) == ("read", at(2))
    again = store.ack_message(mine.id, None, "main", "done", at(3))
    assert (again["read_at"], again["ack_at"]) == (at(1), at(1))  # set once, kept
    assert ids(store.inbox("coder", at(4), 20)) == [news.id]
    assert [r["event_type"] for r in store.message_receipts(mine.id, 20)] == ["ack", "ack"]


def test_outbound_deliveries_are_in_no_agents_view(store: Store) -> None:
    add_job(store)
    (c,) = claim(store)
    done = finish(store, c, delivery=Delivery("a result", "telegram", "42"))
    result_id = done.message["id"]
    for agent in ("main", "scheduler"):
        assert store.inbox(agent, at(20), 50) == [] and store.unread_count(agent, at(20)) == 0
        assert store.outbox(agent, 50) == []
        assert store.read_all(agent, at(20)) == 0
    with pytest.raises(ValidationError, match="outbound delivery"):
        store.mark_read(result_id, None, at(20))
    with pytest.raises(ValidationError, match="outbound delivery"):
        store.ack_message(result_id, None, "operator", None, at(20))
    assert [m.id for m in store.due_outbound(at(20))] == [result_id]


def test_outbox_thread_and_receipts(store: Store) -> None:
    question = send(store, "coder", "which branch?", now=at(0))
    answer = send(store, "planner", "main", sender="coder", reply_to=question.id, now=at(5))
    later = send(store, "coder", "thanks", now=at(9))
    assert ids(store.outbox("planner", 20)) == [later.id, question.id]
    assert ids(store.thread(question.id)) == [question.id, answer.id]
    assert ids(store.thread(answer.id)) == [answer.id]
    with pytest.raises(NotFoundError, match="Message not found: nope"):
        store.thread("nope")
    with pytest.raises(NotFoundError, match="Message not found: nope"):
        store.message_receipts("nope", 20)
    with pytest.raises(NotFoundError, match="Message not found: nope"):
        store.mark_read("nope", None, at(1))
    with pytest.raises(NotFoundError, match="Message not found: nope"):
        store.ack_message("nope", None, "operator", None, at(1))


def test_a_message_keeps_every_field_its_sender_gave(store: Store) -> None:
    sent = send(store, subject="PR 12", priority=2, expires_at=at(7200), ack_required=True,
                metadata='{"pr": 12}', owner="coder", kind="decision")
    got = store.get_message(sent.id)
    assert got is not None and got == sent
    assert (got.subject, got.expires_at, got.metadata) == ("PR 12", at(7200), {"pr": 12})
    assert (got.row["priority"], got.row["ack_required"], got.row["owner"]) == (2, 1, "coder")


def test_messages_past_their_expiry_expire_for_every_agent(store: Store) -> None:
    direct = send(store, expires_at=at(60))
    news = send(store, "broadcast", expires_at=at(60))
    lasting = send(store, expires_at=at(600))
    spawn = send(store, kind="spawn", body=json.dumps(SPAWN_BODY), expires_at=at(60))
    store.take_inbox("a", at(1))  # a holds a delivered copy of the broadcast
    assert store.expire_messages(at(59)) == 0
    assert ids(store.inbox("main", at(60), 20)) == [lasting.id]  # past expiry: not shown already
    assert store.take_inbox("b", at(60)) == []
    assert store.expire_messages(at(60)) == 3  # the direct one, the broadcast, a's copy
    statuses = {m.id: m.status for m in map(store.get_message, (direct.id, news.id, lasting.id,
                                                                   spawn.id)) if m is not None}
    assert statuses == {direct.id: "expired", news.id: "expired", lasting.id: "pending",
                        spawn.id: "pending"}  # the spawn handler answers an expired spawn itself
    assert store.unread_count("main", at(61)) == 1 and store.unread_count("a", at(61)) == 0
    assert store.expire_messages(at(61)) == 0


def test_pruning_keeps_an_unsent_result_whatever_its_age(store: Store) -> None:
    """Reference defect §17 #16: results older than 3 days were pruned even if never sent."""
    add_job(store)
    (c,) = claim(store)
    unsent = finish(store, c, delivery=Delivery("a result", "telegram", "42")).message["id"]
    delivered, read, waiting = send(store, "a"), send(store, "b"), send(store, "c")
    notice = send(store, "d", kind="system", body="spawn rejected")
    news = send(store, "broadcast")
    store.take_inbox("a", at(1))
    store.mark_read(read.id, None, at(1))
    assert store.prune_messages(at(2 * DAY)) == {
        "broadcasts": 0, "read_expired_failed": 0, "delivered": 0, "notifications": 0}
    assert store.prune_messages(at(4 * DAY)) == {
        "broadcasts": 0, "read_expired_failed": 0, "delivered": 1, "notifications": 1}
    assert store.get_message(delivered.id) is None and store.get_message(notice.id) is None
    assert store.prune_messages(at(31 * DAY)) == {
        "broadcasts": 1, "read_expired_failed": 1, "delivered": 0, "notifications": 0}
    assert store.get_message(news.id) is None and store.get_message(read.id) is None
    assert store.get_message(waiting.id) is not None  # an agent's unread message stays
    assert [m.id for m in store.due_outbound(at(400 * DAY))] == [unsent]
    store.prune_messages(at(400 * DAY))
    assert [m.id for m in store.due_outbound(at(400 * DAY))] == [unsent]


# -- doctor and jobs explain (issue 10) -------------------------------------------------------------


def test_live_dispatches_lists_only_the_jobs_rows_still_to_run(store: Store) -> None:
    job = add_job(store, schedule_cron="0 0 1 1 *")
    other = add_job(store, name="other", schedule_cron="0 0 1 1 *")
    for j in (job, other):
        store.update_job(j.id, {"next_run_at": at(86400)}, at(0))
    later = store.enqueue_dispatch(job.id, "manual", at(5))
    sooner = store.enqueue_dispatch(job.id, "manual", at(0))
    store.enqueue_dispatch(other.id, "manual", at(0))
    assert later is not None and sooner is not None
    assert [r["id"] for r in store.live_dispatches(job.id)] == [sooner["id"], later["id"]]
    mine = [c for c in claim(store, at(1)) if c.job.id == job.id]
    assert [c.dispatch_id for c in mine] == [sooner["id"]]  # the later row is not due yet
    finish(store, mine[0])
    store.reap_queue(at(2))
    assert [r["id"] for r in store.live_dispatches(job.id)] == [later["id"]]
    assert store.live_dispatches("no-such-job") == []
# -- backup files (store/backups.py) ------------------------------------------------------------

def sqlite_only(store: Store) -> None:
    if getattr(store, "shared", False):
        pytest.skip("backup files are SQLite's; a PostgreSQL database is backed up with pg_dump")


def test_a_backup_holds_what_was_committed_and_nothing_a_writer_has_in_flight(
        store: Store, opener: Opener, tmp_path: Path) -> None:
    import sqlite3  # a backup is a file: a second, raw connection holds the write in flight

    from scheduler.store.backups import check_backup, create_backup

    sqlite_only(store)
    kept = add_job(store)
    writer = sqlite3.connect(store.path, isolation_level=None)
    try:
        writer.execute("BEGIN IMMEDIATE")
        writer.execute("DELETE FROM jobs")
        create_backup(store.path, tmp_path / "during.db")  # the delete is not committed
        writer.execute("ROLLBACK")
    finally:
        writer.close()
    found = check_backup(tmp_path / "during.db")
    assert found.ok and found.jobs == 1
    store.delete_job(kept.id)
    create_backup(store.path, tmp_path / "after.db")
    assert check_backup(tmp_path / "after.db").jobs == 0


def test_replacing_the_database_swaps_in_the_backup_for_every_new_connection(
        store: Store, opener: Opener, tmp_path: Path) -> None:
    from scheduler.store.backups import create_backup, replace_database

    sqlite_only(store)
    create_backup(store.path, tmp_path / "empty.db")
    add_job(store)
    path = store.path
    store.close()
    replace_database(tmp_path / "empty.db", path, exclusive=True)
    reopened = opener()
    try:
        assert reopened.list_jobs() == []
    finally:
        reopened.close()
# -- retention of runs (issue 10) ---------------------------------------------------------------

def test_runs_beyond_the_cap_are_pruned_newest_kept_an_unfinished_one_never(store: Store) -> None:
    job = add_job(store)
    ended = []
    for start in (0, 100):
        store.update_job(job.id, {"next_run_at": at(start)}, at(start))
        (c,) = claim(store, now=at(start))
        finish(store, c, now=at(start + 10))
        ended.append(c.run.id)
    store.update_job(job.id, {"next_run_at": at(200)}, at(200))
    (running,) = claim(store, now=at(200))
    everyone = [*ended, running.run.id]
    would = store.prune_runs(at(300), 1, 0, dry_run=True)
    assert would.by_rule == {"over_cap": 2, "too_old": 0} and sorted(would.run_ids) == sorted(ended)
    assert store.run_ids_present(everyone) == set(everyone)
    done = store.prune_runs(at(300), 1, 0)
    assert sorted(done.run_ids) == sorted(ended)
    assert store.run_ids_present(everyone) == {running.run.id}
    aged = store.prune_runs(at(300 + 30 * DAY), 100, 1)
    assert aged.run_ids == [] and store.run_ids_present(everyone) == {running.run.id}


def test_runs_older_than_the_age_limit_are_pruned_under_the_cap(store: Store) -> None:
    job = add_job(store)
    (c,) = claim(store, now=at(0))
    finish(store, c, now=at(10))
    assert store.prune_runs(at(DAY), 100, 2).run_ids == []
    assert store.prune_runs(at(3 * DAY), 100, 0).run_ids == []  # 0: no age limit
    assert store.prune_runs(at(3 * DAY), 100, 2).by_rule == {"over_cap": 0, "too_old": 1}
    assert store.run_ids_present([c.run.id]) == set() and store.get_job(job.id) is not None


def test_the_file_can_be_vacuumed_and_measured(store: Store) -> None:
    add_job(store)
    before = store.file_bytes()
    store.vacuum()
    assert 0 < store.file_bytes() <= before and store.schema_current()
# -- metrics: the gauges a scrape reads, and the writability check of /readyz ------------------


def test_gauges_count_backlog_approvals_and_outbound(store: Store) -> None:
    empty = store.gauges(at(0))
    assert (empty.backlog_due, empty.backlog_later, empty.approvals_pending,
            empty.outbound_pending, empty.oldest_outbound_at) == (0, 0, 0, 0, None)
    add_job(store, name="due")
    later = add_job(store, name="later")
    store.update_job(later.id, {"next_run_at": at(600)}, at(0))
    store.enqueue_dispatch(later.id, "manual", at(0))
    store.enqueue_dispatch(later.id, "manual", at(300))
    gauges = store.gauges(at(1))
    assert (gauges.backlog_due, gauges.backlog_later) == (2, 1)  # the due job, the due manual row
    c = next(c for c in claim(store, at(1)) if c.job.name == "due")
    finish(store, c, delivery=Delivery("a result", "telegram", "42"))
    after = store.gauges(at(20))
    assert after.outbound_pending == 1 and after.oldest_outbound_at is not None
    assert after.backlog_due == 0  # claimed: nothing due waits


def test_a_writable_store_passes_the_check(store: Store) -> None:
    store.check_writable()
    add_job(store)  # and the check left no transaction open behind it


# -- the sub-agent dispatch ledger ---------------------------------------------------------------


def _dispatch(label: str = "fix-bug", **overrides: Any) -> Any:
    from scheduler.models.dispatch import DispatchLabel
    from scheduler.models.enums import SubagentStatus

    fields: dict[str, Any] = {"label": label, "session_key": f"agent:main:subagent:{label}",
                              "status": SubagentStatus.RUNNING, "spawned_at": at(0), **overrides}
    return DispatchLabel(**fields)


def test_a_dispatch_label_is_saved_read_and_found_by_session(store: Store) -> None:
    saved = store.save_dispatch(_dispatch(deliver_to="42", timeout_s=900, task_prompt="do it"), at(0))
    assert (saved.label, saved.deliver_to, saved.timeout_s, saved.status) == (
        "fix-bug", "42", 900, "running")
    assert saved.created_at == at(0) and saved.updated_at == at(0)
    assert store.get_dispatch("fix-bug") == saved
    assert store.get_dispatch("nope") is None
    assert store.dispatch_by_session("agent:main:subagent:fix-bug") == saved
    assert store.dispatch_by_session("agent:main:subagent:other") is None


def test_saving_a_label_again_replaces_its_entry_but_keeps_when_it_was_created(store: Store) -> None:
    store.save_dispatch(_dispatch(retry_count=2, error="529"), at(0))
    again = store.save_dispatch(_dispatch(session_key="agent:main:subagent:new"), at(60))
    assert again.session_key == "agent:main:subagent:new" and again.retry_count == 0
    assert again.error is None and again.created_at == at(0) and again.updated_at == at(60)
    assert len(store.list_dispatches(None, 10)) == 1


def test_dispatch_labels_are_listed_newest_first_and_by_status(store: Store) -> None:
    from scheduler.models.enums import SubagentStatus

    store.save_dispatch(_dispatch("old", spawned_at=at(0)), at(0))
    store.save_dispatch(_dispatch("new", spawned_at=at(60)), at(60))
    store.save_dispatch(_dispatch("done", spawned_at=at(30), status=SubagentStatus.DONE), at(30))
    assert [d.label for d in store.list_dispatches(None, 10)] == ["new", "done", "old"]
    assert [d.label for d in store.list_dispatches(None, 2)] == ["new", "done"]
    assert [d.label for d in store.list_dispatches({"running"}, 10)] == ["new", "old"]
    assert store.list_dispatches(set(), 10) == []


def test_a_dispatch_update_changes_only_the_named_columns(store: Store) -> None:
    from scheduler.errors import StoreValueError
    from scheduler.models.enums import SubagentStatus

    store.save_dispatch(_dispatch(deliver_to="42", summary="first"), at(0))
    changed = store.update_dispatch("fix-bug", {"status": SubagentStatus.DONE, "sha": "abc"}, at(5))
    assert changed is not None and (changed.status, changed.sha) == ("done", "abc")
    assert (changed.deliver_to, changed.summary, changed.updated_at) == ("42", "first", at(5))
    assert store.update_dispatch("missing", {"sha": "x"}, at(6)) is None
    with pytest.raises(StoreValueError, match="label"):
        store.update_dispatch("fix-bug", {"label": "renamed"}, at(6))
    assert store.get_dispatch("fix-bug") == changed  # the refused write changed nothing


def test_a_guarded_dispatch_update_writes_nothing_when_the_status_moved_on(store: Store) -> None:
    from scheduler.models.enums import SubagentStatus

    store.save_dispatch(_dispatch(status=SubagentStatus.DONE), at(0))
    assert store.update_dispatch("fix-bug", {"status": "error", "error": "late 529"}, at(5),
                                 only_if_status={"running"}) is None
    kept = store.get_dispatch("fix-bug")
    assert kept is not None and (kept.status, kept.error, kept.updated_at) == ("done", None, at(0))
    assert store.update_dispatch("fix-bug", {"summary": "ok"}, at(6),
                                 only_if_status={"done"}) is not None


def test_a_dispatch_label_can_be_deleted(store: Store) -> None:
    store.save_dispatch(_dispatch(), at(0))
    assert store.delete_dispatch("fix-bug") is True
    assert store.delete_dispatch("fix-bug") is False and store.get_dispatch("fix-bug") is None


def test_importing_dispatch_labels_inserts_only_new_ones_and_never_overwrites(store: Store) -> None:
    store.save_dispatch(_dispatch("kept", summary="daemon's"), at(0))
    imported = store.import_dispatches(
        [_dispatch("kept", summary="file's"), _dispatch("fresh", updated_at=at(-60))], at(10))
    assert imported == ["fresh"]
    kept, fresh = store.get_dispatch("kept"), store.get_dispatch("fresh")
    assert kept is not None and kept.summary == "daemon's"
    assert fresh is not None and fresh.updated_at == at(-60) and fresh.created_at == at(10)
    assert store.import_dispatches([_dispatch("fresh")], at(20)) == []


# -- job housekeeping (features.md §3.12) --------------------------------------------------------


def _finished(store: Store, job: Job, hours_ago: float, **columns: Any) -> Job:
    return store.update_job(job.id, {"enabled": 0, "last_status": "ok",
                                     "last_run_at": at(-hours_ago * 3600), **columns}, at(0))


def test_a_finished_one_shot_goes_a_day_after_its_last_run(store: Store) -> None:
    old = _finished(store, add_job(store, name="old"), 25, delete_after_run=1)
    young = _finished(store, add_job(store, name="young"), 23, delete_after_run=1)
    kept = _finished(store, add_job(store, name="no-delete"), 25, delete_after_run=0)
    assert store.prune_expired_jobs(at(0), dry_run=True)["finished_one_shots"] == 1
    assert store.get_job(old.id) is not None  # a dry run deletes nothing
    assert store.prune_expired_jobs(at(0))["finished_one_shots"] == 1
    assert store.get_job(old.id) is None
    assert store.get_job(young.id) is not None and store.get_job(kept.id) is not None


def test_a_disabled_job_past_its_ttl_goes_after_a_final_status(store: Store) -> None:
    expired = _finished(store, add_job(store, name="expired"), 49, ttl_hours=48)
    within = _finished(store, add_job(store, name="within"), 47, ttl_hours=48)
    crashed = _finished(store, add_job(store, name="crashed"), 49, ttl_hours=48,
                        last_status="crashed")
    enabled = store.update_job(add_job(store, name="enabled").id,
                               {"ttl_hours": 1, "last_status": "ok",
                                "last_run_at": at(-7200)}, at(0))
    assert store.prune_expired_jobs(at(0)) == {"finished_one_shots": 0, "orphaned_children": 0,
                                                "ttl_expired": 1}
    assert store.get_job(expired.id) is None
    assert all(store.get_job(j.id) is not None for j in (within, crashed, enabled))


def test_children_of_a_deleted_parent_go_in_the_same_pass(store: Store) -> None:
    parent = _finished(store, add_job(store, name="parent"), 25, delete_after_run=1)
    child = add_job(store, name="child", parent_id=parent.id, trigger_on="success")
    assert store.prune_expired_jobs(at(0), dry_run=True) == {
        "finished_one_shots": 1, "orphaned_children": 1, "ttl_expired": 0}
    assert store.prune_expired_jobs(at(0)) == {
        "finished_one_shots": 1, "orphaned_children": 1, "ttl_expired": 0}
    assert store.get_job(parent.id) is None and store.get_job(child.id) is None


def test_a_job_with_work_in_flight_is_never_expired(store: Store) -> None:
    queued = _finished(store, add_job(store, name="queued"), 25, delete_after_run=1)
    store.enqueue_dispatch(queued.id, "manual", at(0))
    running = add_job(store, name="running")
    (c,) = [c for c in claim(store) if c.job.id == running.id]
    _finished(store, running, 25, delete_after_run=1)
    assert store.prune_expired_jobs(at(0)) == {"finished_one_shots": 0, "orphaned_children": 0,
                                                "ttl_expired": 0}
    assert store.get_job(queued.id) is not None and store.get_job(running.id) is not None
    finish(store, c, now=at(1))

# -- the v0.2 trust gate (issue 11, trust) ------------------------------------------------------


def test_a_fail_closed_end_fires_no_children_schedules_no_retry_and_releases_its_key(
    store: Store,
) -> None:
    parent = add_job(store, name="guarded", max_retries=2)
    add_child(store, parent, "failure", name="notify")
    add_child(store, parent, "complete", name="log")
    (c,) = claim(store)
    message = "Trust enforcement blocked dispatch: no trust level declared; enforcement is block"
    columns = {"summary": message, "error_message": message,
               "trust_evaluation": json.dumps({"decision": "deny"})}
    (done,) = store.finish_runs([Finish(c, "error", 0, columns, fail_closed=True)], policy(at(10)))
    assert done.recorded and done.retry is None and done.children.queued == ()
    assert claim(store, at(3600)) == []  # nothing queued: no retry, no child
    assert done.job is not None and done.job.consecutive_errors == 1
    run = store.get_run(c.run.id)
    assert run is not None and run.status == "error" and run.error_message == message
    assert json.loads(run.row["trust_evaluation"]) == {"decision": "deny"}
    assert c.run.idempotency_key is not None
    entry = store.ledger_entry(c.run.idempotency_key)
    assert entry is not None and entry["status"] == "released"


def test_the_outcome_columns_are_recorded_with_the_end(store: Store) -> None:
    job = add_job(store)
    (c,) = claim(store)
    names = ("identity_resolved", "trust_evaluation", "authorization_decision",
             "authorization_proof_verification", "evidence_record", "credential_handoff_summary")
    columns = {name: json.dumps({"column": name}) for name in names}
    store.finish_runs([Finish(c, "ok", 5, columns)], policy())
    run = store.get_run(c.run.id)
    assert run is not None and run.job_id == job.id
    assert {name: json.loads(run.row[name]) for name in names} == {n: {"column": n} for n in names}


def test_the_latest_ok_identity_of_a_job(store: Store) -> None:
    job = add_job(store, schedule_cron="* * * * *")
    assert store.latest_ok_identity(job.id) is None
    ends = [("ok", '{"n": 1}', 0), ("ok", '{"n": 2}', 100), ("error", '{"n": 3}', 200)]
    for status, identity, offset in ends:
        store.update_job(job.id, {"next_run_at": at(offset)}, at(offset))
        (c,) = claim(store, at(offset))
        store.finish_runs([Finish(c, status, 5, {"identity_resolved": identity})],
                          policy(at(offset + 10)))
    assert store.latest_ok_identity(job.id) == '{"n": 2}'  # the failed run's does not count
    assert store.latest_ok_identity("no-such-job") is None


# -- companion tools: the stuck-run detector and webhook-check ----------------------------------


def test_long_running_runs_are_the_running_ones_started_before_the_cut_oldest_first(
        store: Store) -> None:
    add_job(store, name="dispatch-deliver:fix-bug", watchdog_target_label="fix-bug")
    (old,) = claim(store, at(0))
    add_job(store, name="young")
    claim(store, at(500))
    done_job = add_job(store, name="done")
    store.update_job(done_job.id, {"next_run_at": at(0)}, at(0))
    finish(store, *claim(store, at(1)), now=at(2))
    store.beat([old.run.id], at(550))  # a fresh heartbeat does not make an old run young
    (found,) = store.long_running_runs(at(300), 10)
    assert (found["id"], found["job_name"], found["watchdog_target_label"]) == (
        old.run.id, "dispatch-deliver:fix-bug", "fix-bug")
    assert (found["started_at"], found["last_heartbeat"]) == (at(0), at(550))
    assert found["job_type"] == "standard" and found["run_timeout_ms"] == 1000
    assert [r["job_name"] for r in store.long_running_runs(at(600), 10)] == [
        "dispatch-deliver:fix-bug", "young"]
    assert len(store.long_running_runs(at(600), 1)) == 1


def test_a_notice_is_an_outbound_message_without_a_job(store: Store) -> None:
    notice = store.record_notice(Delivery("1 stuck run", "telegram", "42"), "stuck runs", at(0))
    assert (notice["to_agent"], notice["status"], notice["kind"]) == ("@outbound", "pending", "system")
    assert notice["job_id"] is None and notice["delivery_to"] == "42"
    (due,) = store.due_outbound(at(1))
    assert due.id == notice["id"] and due.body == "1 stuck run"
    unknown = store.record_notice(Delivery("x", "telegram", "@nobody"), "stuck runs", at(2))
    assert unknown["status"] == "failed" and "alias" in unknown["last_error"]


def test_delivery_failures_are_counted_from_an_instant_on(store: Store) -> None:
    store.record_notice(Delivery("old", "telegram", "@nobody"), "s", at(-90_000))
    store.record_notice(Delivery("new", "telegram", "@nobody"), "s", at(0))
    sent = store.record_notice(Delivery("ok", "telegram", "42"), "s", at(0))
    assert store.delivery_failures_since(at(-86_400)) == 1
    store.mark_delivery_failed(sent["id"], "chat not found", at(60), at(1))
    assert store.delivery_failures_since(at(-86_400)) == 2
    assert store.delivery_failures_since(at(10)) == 0

# -- contract enforcement (issue 11: contract_max_cost_usd) --------------------------------------


def test_a_turns_cost_is_recorded_and_a_final_failure_schedules_no_retry(store: Store) -> None:
    job = add_job(store, max_retries=2)
    (c,) = claim(store)
    (done,) = store.finish_runs([Finish(c, "error", 5, {"error_message": "over cap", "cost_usd": 0.25},
                                        no_retry=True)], policy())
    assert done.retry is None
    assert done.job is not None and done.job.consecutive_errors == 1  # counted as the last attempt
    run = store.get_run(c.run.id)
    assert run is not None and run.row["cost_usd"] == 0.25 and run.status == "error"
    assert [r["id"] for r in store.list_runs(job.id, 10)] == [c.run.id]


# -- instances and placement (issue 12) ---------------------------------------------------------
# Two store handles on one database play two daemon instances on hosts "a" and "b".

HOST_A = Owner(instance="instance-a", host="a", labels=("build",))
HOST_B = Owner(instance="instance-b", host="b", labels=("gpu", "eu"))


def two_instances(opener: Opener) -> tuple[Store, Store]:
    return opener(), opener()


def test_a_job_placed_on_a_host_is_claimed_by_that_host_only(opener: Opener) -> None:
    a, b = two_instances(opener)
    try:
        job = add_job(a, placement="host:b")
        assert claim(a, owner=HOST_A) == []  # A leaves B's job due, untouched
        assert a.require_job(job.id).next_run_at == at(0) and a.list_runs(job.id, 10) == []
        (taken,) = claim(b, owner=HOST_B)
        assert taken.job.id == job.id and taken.run.owner == HOST_B.text
    finally:
        a.close()
        b.close()


def test_a_job_placed_on_a_label_goes_to_an_instance_with_that_label(opener: Opener) -> None:
    a, b = two_instances(opener)
    try:
        gpu = add_job(a, name="gpu", placement="label:gpu")
        build = add_job(a, name="build", placement="label:build")
        free = add_job(a, name="free")
        assert {c.job.id for c in claim(a, owner=HOST_A)} == {build.id, free.id}
        assert {c.job.id for c in claim(b, owner=HOST_B)} == {gpu.id}
    finally:
        a.close()
        b.close()


def test_queue_rows_of_a_placed_job_are_claimed_only_where_it_is_placed(store: Store) -> None:
    job = add_job(store, placement="host:b")
    store.update_job(job.id, {"next_run_at": at(3600)}, at(0))
    store.enqueue_dispatch(job.id, "manual", at(0))
    assert claim(store, owner=HOST_A) == []
    (taken,) = claim(store, owner=HOST_B)
    assert taken.source == "manual" and taken.dispatch_id is not None


def test_next_due_at_ignores_work_placed_elsewhere(store: Store) -> None:
    placed = add_job(store, placement="host:b")
    store.enqueue_dispatch(placed.id, "manual", at(5))
    free = add_job(store, name="free")
    store.update_job(free.id, {"next_run_at": at(600)}, at(0))
    assert store.next_due_at(SHELL, HOST_A) == at(600)  # not woken by B's due job or its row
    assert store.next_due_at(SHELL, HOST_B) == at(0)


def test_a_job_placed_elsewhere_is_not_one_without_a_strategy(store: Store) -> None:
    add_job(store, name="theirs", placement="host:b")
    agent = add_job(store, name="agent", session_target="isolated", payload_message="hi",
                    delivery_mode="none", delivery_opt_out_reason="test")
    assert [j.id for j in store.jobs_without_strategy(SHELL, HOST_A)] == [agent.id]
    assert store.require_job(agent.id).placement is None


def test_instances_are_listed_with_their_live_flag_and_running_runs(opener: Opener) -> None:
    a, b = two_instances(opener)
    try:
        a.register_instance(HOST_A, "1.0", 101, at(0))
        b.register_instance(HOST_B, "1.1", 202, at(0))
        add_job(a, placement="host:b")
        add_job(a, name="second", placement="label:eu")
        assert len(claim(b, owner=HOST_B)) == 2
        assert b.beat_instance(HOST_B, at(100)) is True
        rows = {r["id"]: r for r in a.list_instances(live_since=at(70))}  # lease 30 s, now 100
        assert rows["instance-b"]["live"] is True and rows["instance-a"]["live"] is False
        assert rows["instance-b"]["running_runs"] == 2 and rows["instance-a"]["running_runs"] == 0
        assert rows["instance-b"]["labels"] == ["gpu", "eu"] and rows["instance-b"]["host"] == "b"
        assert rows["instance-b"]["version"] == "1.1" and rows["instance-b"]["pid"] == 202
        assert next(r["id"] for r in a.list_instances(at(70))) == "instance-b"  # live first
        b.stop_instance(HOST_B, at(110))
        stopped = {r["id"]: r for r in a.list_instances(at(105))}["instance-b"]
        assert stopped["live"] is False and stopped["stopped_at"] == at(110)
        assert b.beat_instance(HOST_B, at(120)) is False  # a stopped row is not revived by a beat
        b.register_instance(HOST_B, "1.1", 202, at(130))  # ... but by registering again
        assert {r["id"]: r for r in a.list_instances(at(125))}["instance-b"]["live"] is True
    finally:
        a.close()
        b.close()


def test_instances_gone_long_enough_are_pruned_and_live_ones_kept(store: Store) -> None:
    old = Owner(instance="old", host="a")
    silent = Owner(instance="silent", host="a")
    store.register_instance(old, "1", 1, at(-900_000))
    store.stop_instance(old, at(-800_000))
    store.register_instance(silent, "1", 2, at(-700_000))
    store.register_instance(HOST_B, "1", 3, at(-900_000))
    store.beat_instance(HOST_B, at(0))
    assert store.prune_instances(at(-604_800), dry_run=True) == 2
    assert len(store.list_instances(at(-30))) == 3
    assert store.prune_instances(at(-604_800)) == 2
    assert [r["id"] for r in store.list_instances(at(-30))] == ["instance-b"]


def test_placed_jobs_lists_the_enabled_jobs_with_a_placement(store: Store) -> None:
    placed = add_job(store, name="p", placement="label:gpu")
    add_job(store, name="free")
    off = add_job(store, name="off", placement="host:b")
    store.update_job(off.id, {"enabled": 0}, at(0))
    store.enqueue_dispatch(placed.id, "manual", at(0))
    (row,) = store.placed_jobs()
    assert row["id"] == placed.id and row["placement"] == "label:gpu" and row["due_rows"] == 1


# -- bulk copy (issue 12) -------------------------------------------------------------------------
# What `db copy` (store/copying.py) needs of every backend: the tables in dependency order, their
# rows in bounded pages in insertion order, counts, and one all-or-nothing write transaction.


def _copy_table(store: Store, name: str) -> Any:
    return next(table for table in store.copy_tables() if table.name == name)


def _stored_rows(store: Store, name: str) -> list[dict[str, Any]]:
    return [row for batch in store.read_rows(name) for row in batch]


def test_the_copy_tables_come_parents_first_without_bookkeeping(store: Store) -> None:
    names = [table.name for table in store.copy_tables()]
    assert "schema_migrations" not in names and len(names) == len(set(names))
    for parent, child in (("jobs", "runs"), ("runs", "job_dispatch_queue"),
                          ("job_dispatch_queue", "approvals"), ("messages", "message_receipts"),
                          ("messages", "message_recipients"), ("task_tracker", "task_tracker_agents")):
        assert names.index(parent) < names.index(child), (parent, child)
    assert all(table.key for table in store.copy_tables())
    assert _copy_table(store, "runs").deferred == ("dispatch_queue_id",)
    assert {t.name for t in store.copy_tables() if t.registry} == {
        "agents", "delivery_aliases", "resource_pools"}


def test_rows_are_read_in_bounded_pages_in_insertion_order(store: Store) -> None:
    ids = [add_job(store, name=f"job {n}").id for n in range(7)]
    store.update_job(ids[0], {"name": "touched last"}, at(1))  # an update keeps its place
    pages = list(store.read_rows("jobs", batch_size=3))
    assert [len(page) for page in pages] == [3, 3, 1]
    assert [row["id"] for page in pages for row in page] == ids
    assert pages[0][0]["name"] == "touched last" and "payload_message" in pages[0][0]
    narrow = [row for page in store.read_rows("jobs", 5, columns=("id", "name")) for row in page]
    assert narrow[1] == {"id": ids[1], "name": "job 1"}


def test_counts_and_user_data(store: Store) -> None:
    assert not store.holds_user_data()
    assert set(store.row_counts().values()) == {0}
    assert set(store.row_counts()) == {table.name for table in store.copy_tables()}
    add_job(store)
    store.add_alias("ops", "telegram", "42", None)
    assert store.holds_user_data()
    counts = store.row_counts()
    assert (counts["jobs"], counts["delivery_aliases"], counts["runs"]) == (1, 1, 0)


def test_a_snapshot_does_not_see_a_write_made_meanwhile(store: Store, opener: Opener) -> None:
    add_job(store)
    other = opener()
    try:
        with store.read_snapshot():
            assert store.row_counts()["jobs"] == 1
            add_job(other, name="meanwhile")
            assert store.row_counts()["jobs"] == 1
            assert len(_stored_rows(store, "jobs")) == 1
        assert store.row_counts()["jobs"] == 2
    finally:
        other.close()


def test_a_bulk_load_commits_at_its_end_and_a_raise_undoes_all_of_it(
        store: Store, opener: Opener) -> None:
    job = add_job(store)
    (row,) = _stored_rows(store, "jobs")
    store.delete_job(job.id)
    jobs, aliases = _copy_table(store, "jobs"), _copy_table(store, "delivery_aliases")
    alias = {"alias": "ops", "channel": "telegram", "target": "42", "description": None,
             "created_at": at(0)}

    with pytest.raises(RuntimeError), store.bulk_load() as writer:
        assert writer.insert(jobs, [row]) == 1
        assert writer.insert(aliases, [alias]) == 1
        assert writer.counts()["jobs"] == 1  # the transaction sees its own rows
        raise RuntimeError("half way")
    assert not store.holds_user_data()

    with store.bulk_load() as writer:
        writer.insert(jobs, [row])
        assert writer.update(jobs, [{"id": job.id, "name": "renamed"}]) == 1
    other = opener()
    try:
        copied = other.require_job(job.id)
        assert copied.name == "renamed"
        assert {k: v for k, v in _stored_rows(other, "jobs")[0].items() if k != "name"} == {
            k: v for k, v in row.items() if k != "name"}
    finally:
        other.close()


def test_a_taken_key_fails_the_load_unless_the_existing_row_is_kept(store: Store) -> None:
    from scheduler.errors import StoreError

    add_job(store)
    store.add_alias("ops", "telegram", "theirs", None)
    (job_row,) = _stored_rows(store, "jobs")
    (alias_row,) = _stored_rows(store, "delivery_aliases")
    with pytest.raises(StoreError), store.bulk_load() as writer:
        writer.insert(_copy_table(store, "delivery_aliases"), [{**alias_row, "alias": "new"}])
        writer.insert(_copy_table(store, "jobs"), [job_row])
    assert [r["alias"] for r in store.list_aliases()] == ["ops"]  # the first insert undone too

    with store.bulk_load() as writer:
        kept = writer.insert(_copy_table(store, "delivery_aliases"),
                             [{**alias_row, "target": "ours"}, {**alias_row, "alias": "new"}],
                             keep_existing=True)
    assert kept == 1
    assert {r["alias"]: r["target"] for r in store.list_aliases()} == {"ops": "theirs", "new": "theirs"}


def test_a_column_the_store_lacks_is_refused_by_name(store: Store) -> None:
    from scheduler.errors import StoreValueError

    with pytest.raises(StoreValueError, match="no column colour"), store.bulk_load() as writer:
        writer.insert(_copy_table(store, "delivery_aliases"),
                      [{"alias": "a", "channel": "c", "target": "t", "colour": "red"}])
    with pytest.raises(StoreValueError, match="colour"):
        list(store.read_rows("jobs", columns=("id", "colour")))
    assert not store.holds_user_data()

# -- leases and fencing (issue 12) ---------------------------------------------------------------
# Two store handles on one database with two owners play two instances: A claims, its lease
# runs out, B recovers, A comes back late.

A = Owner(instance="instance-a", host="host-a")
B = Owner(instance="instance-b", host="host-b")


@pytest.fixture
def other(opener: Opener) -> Iterator[Store]:
    """A second handle on the same database: instance B's."""
    opened = opener()
    yield opened
    opened.close()


def claim_for(store: Store, owner: Owner, now: str = at(0), lease_s: int = 10) -> list[Claim]:
    return store.claim_due(now, 50, SHELL, lambda job: at(3600), owner, lease_s).claims


def with_shared(store: Store, shared: bool) -> Store:
    """The same handle, saying it is (or is not) shared with other live daemons."""
    base = type(store)
    store.__class__ = type(f"Shared{base.__name__}", (base,), {"shared": property(lambda self: shared)})
    return store


def test_a_claimed_run_holds_a_lease_that_its_owners_heartbeats_extend(store: Store) -> None:
    add_job(store)
    (c,) = claim_for(store, A, lease_s=10)
    assert c.run.lease_expires_at == at(10) and c.run.lease_generation == 1
    assert store.require_run(c.run.id).lease_expires_at == at(10)
    assert store.beat([c.run.id], at(8), A, lease_s=10, generations={c.run.id: 1}) == set()
    run = store.require_run(c.run.id)
    assert (run.last_heartbeat, run.lease_expires_at) == (at(8), at(18))
    # Another owner's beat neither extends the lease nor claims the run: it is not theirs.
    assert store.beat([c.run.id], at(9), B, lease_s=10) == {c.run.id}
    assert store.require_run(c.run.id).lease_expires_at == at(18)


def test_the_default_lease_is_thirty_seconds(store: Store) -> None:
    add_job(store)
    (c,) = claim(store)
    assert store.require_run(c.run.id).lease_expires_at == at(30)


def test_an_expired_at_least_once_run_is_replayed_by_another_instance(store: Store, other: Store) -> None:
    job = add_job(store, delivery_guarantee="at-least-once")
    (c,) = claim_for(store, A, lease_s=10)
    assert other.recover_expired_leases(at(9), B, 10).crashed == []  # the lease still holds
    found = other.recover_expired_leases(at(11), B, 10)
    assert [r.id for r in found.crashed] == [c.run.id]
    assert [row["retry_of_run_id"] for row in found.replays] == [c.run.id]
    run = store.require_run(c.run.id)
    assert run.status is RunStatus.CRASHED and run.lease_generation == 2
    assert A.text in (run.error_message or "") and "lease" in (run.error_message or "")
    assert other.recover_expired_leases(at(12), B, 10).crashed == []  # once only
    (replay,) = claim_for(other, B, at(12))
    assert replay.job.id == job.id and replay.run.replay_of == c.run.id and replay.run.owner == B.text


def test_an_expired_at_most_once_run_is_recorded_crashed_and_its_at_job_disabled(
        store: Store, other: Store) -> None:
    job = add_job(store, name="once", schedule_kind="at", schedule_at="2026-11-26T12:00:00Z",
                  schedule_cron=None, delivery_guarantee="at-most-once")
    store.update_job(job.id, {"next_run_at": at(0)}, at(0))
    child = add_job(store, name="on-failure", parent_id=job.id, trigger_on="failure",
                    schedule_cron=None, schedule_kind="cron")
    (c,) = claim_for(store, A, lease_s=10)
    found = other.recover_expired_leases(at(20), B, 10)
    assert [r.id for r in found.crashed] == [c.run.id] and found.replays == []
    assert [row["job_id"] for row in found.children[c.run.id].queued] == [child.id]
    assert store.require_run(c.run.id).status is RunStatus.CRASHED
    after = store.require_job(job.id)
    assert not after.enabled and after.last_status == "crashed"
    assert c.run.idempotency_key is not None
    entry = store.ledger_entry(c.run.idempotency_key)
    assert entry is not None and entry["released_at"] is not None


def test_an_instance_never_recovers_its_own_runs_nor_live_leases(store: Store, other: Store) -> None:
    add_job(store, name="mine")
    (mine,) = claim_for(other, B, lease_s=10)
    add_job(store, name="theirs")
    (theirs,) = claim_for(store, A, at(0), lease_s=60)
    assert other.recover_expired_leases(at(30), B, 10).crashed == []  # B's own, A's still live
    assert store.require_run(mine.run.id).status is RunStatus.RUNNING
    assert store.require_run(theirs.run.id).status is RunStatus.RUNNING


def test_a_fenced_owners_late_result_records_nothing(store: Store, other: Store) -> None:
    job = add_job(store, max_retries=2, delivery_guarantee="at-least-once")
    child = add_job(store, name="after", parent_id=job.id, trigger_on="complete",
                    schedule_cron=None, schedule_kind="cron")
    (c,) = claim_for(store, A, lease_s=10)
    other.recover_expired_leases(at(11), B, 10)
    before = store.require_job(job.id)
    live = [row["id"] for row in store.live_dispatches(job.id)]  # the replay only
    for status in ("ok", "error"):
        done = finish(store, c, status, delivery=Delivery("late", "telegram", "42"), now=at(20))
        assert not done.recorded and done.fenced
        assert done.message is None and done.retry is None and done.children.queued == ()
    run = store.require_run(c.run.id)
    assert run.status is RunStatus.CRASHED and run.summary is None
    assert store.due_outbound(at(60)) == []
    assert [row["id"] for row in store.live_dispatches(job.id)] == live
    assert store.live_dispatches(child.id) == []
    after = store.require_job(job.id)
    assert (after.last_status, after.consecutive_errors) == (before.last_status, before.consecutive_errors)
    assert not store.record_unrecordable(c, "late", at(21))
    assert not store.defer_claim(c, at(21), "gateway down")
    assert store.require_job(job.id).next_run_at == before.next_run_at
    assert store.beat([c.run.id], at(22), A, generations={c.run.id: 1}) == {c.run.id}


def test_a_run_ended_by_the_operator_is_not_recorded_but_not_fenced(store: Store) -> None:
    job = add_job(store)
    (c,) = claim_for(store, A)
    store.cancel_jobs(job.id, cascade=False, now=at(1), reason="operator")
    done = finish(store, c, now=at(2))
    assert not done.recorded and not done.fenced


def test_an_owners_own_end_still_records_under_its_lease(store: Store, other: Store) -> None:
    add_job(store)
    (c,) = claim_for(store, A, lease_s=10)
    store.beat([c.run.id], at(8), A, lease_s=10)
    assert other.recover_expired_leases(at(12), B, 10).crashed == []  # extended to at(18)
    done = finish(store, c, now=at(13))
    assert done.recorded and not done.fenced


def test_start_up_recovery_of_a_store_of_its_own_takes_every_other_owners_runs(store: Store) -> None:
    add_job(store)
    (c,) = claim_for(store, A, lease_s=3600)
    found = with_shared(store, False).recover_orphans(at(5), B, 10)
    assert [r.id for r in found.crashed] == [c.run.id]  # the lock says A is gone, lease or not
    assert store.require_run(c.run.id).lease_generation == 2


def test_start_up_recovery_of_a_shared_store_takes_only_expired_leases(store: Store) -> None:
    add_job(store, name="live")
    add_job(store, name="expired", delivery_guarantee="at-least-once")
    claims = {c.job.name: c for c in claim_for(store, A, lease_s=10)}
    store.beat([claims["live"].run.id], at(8), A, lease_s=10)
    shared = with_shared(store, True)
    found = shared.recover_orphans(at(12), B, 10)
    assert [r.id for r in found.crashed] == [claims["expired"].run.id]
    assert [row["retry_of_run_id"] for row in found.replays] == [claims["expired"].run.id]
    assert store.require_run(claims["live"].run.id).status is RunStatus.RUNNING
