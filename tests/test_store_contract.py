"""The store's contract: what every backend behind ``store.api.Store`` must do.

Each test speaks only the interface (and builds job rows as ``jobs add`` does), so the suite runs
unchanged against every backend in ``BACKENDS``: today SQLite on a real file; the PostgreSQL
backend adds its parameter here. Claiming, overlap, pools, the ledger, finishing, recovery and
messages are pinned; what is specific to one backend is tested beside its code.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from scheduler.errors import NotFoundError
from scheduler.models.enums import RunStatus
from scheduler.models.job import new_job_row
from scheduler.models.records import Job
from scheduler.models.validation import validate_job_spec
from scheduler.store.api import Claim, Delivery, Finish, FinishPolicy, Owner, Store
from scheduler.timeutil import to_sqlite

NOW = datetime(2026, 11, 26, 12, 0, 0, tzinfo=UTC)
SHELL = {"shell"}
ME = Owner(instance="contract-test", host="here")
OTHER = Owner(instance="gone-instance", host="elsewhere")

BACKENDS = ["sqlite"]
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
    assert store.next_due_at(SHELL) == at(0)
    assert len(claim(store)) == 1
    assert store.next_due_at(SHELL) == at(3600)


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
    found = store.recover_orphans(at(5), ME)
    once_run = crashed["once"].run.id
    assert list(found.children) == [once_run]
    assert [row["job_id"] for row in found.children[once_run].queued] == [notify.id]
    kids = [k for k in claim(store, at(5)) if k.source == "chain"]
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
