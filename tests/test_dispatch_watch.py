"""The dispatch watcher (issue 11, features.md §15.1): job_type ``dispatch`` run in-process by
strategies/dispatch_watch.py, against a real daemon, a real SQLite file and the fake gateway's
WebSocket control plane."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import time
import uuid
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from conftest import Daemon, add_job, query, wait_until
from fakegateway import FakeGateway, Reply
from fakerpc import RpcReply, RunScript
from scheduler import logs
from scheduler.config import load_settings
from scheduler.engine.dispatch_watching import call_inline, watch_in_foreground
from scheduler.errors import ValidationError
from scheduler.gateway.rpc import GatewayRpc
from scheduler.models.dispatch import DispatchLabel
from scheduler.models.enums import SubagentStatus
from scheduler.models.validation import validate_job_spec
from scheduler.store import open_store
from scheduler.strategies.dispatch_watch import LedgerDoor, WatchResult, WatchSettings, watch_dispatch
from scheduler.timeutil import sqlite_now

LABEL = "nightly-report"


def watcher_spec(label: str = LABEL, **overrides: Any) -> dict[str, Any]:
    """The delivery-watcher job `dispatch enqueue` registers (docs/dispatch.md)."""
    return {
        "name": f"dispatch-deliver:{label}", "schedule_kind": "at",
        "schedule_at": "2026-01-01 00:00:00", "session_target": "shell",
        "payload_kind": "shellCommand",
        "payload_message": f"openclaw-scheduler dispatch watch --label '{label}'",
        "job_type": "dispatch", "watchdog_target_label": label,
        "delivery_mode": "announce-always", "delivery_channel": "telegram", "delivery_to": "12345",
        "delivery_guarantee": "at-least-once", "ttl_hours": 48, "overlap_policy": "skip",
        "run_timeout_ms": (14400 + 420) * 1000, "delete_after_run": 1, "origin": "dispatch",
        **overrides,
    }


# -- validation -----------------------------------------------------------------------------------


def test_a_dispatch_job_is_accepted_with_its_label_and_a_shell_payload() -> None:
    normalized = validate_job_spec(watcher_spec())
    assert normalized["job_type"] == "dispatch"
    assert normalized["watchdog_target_label"] == LABEL


@pytest.mark.parametrize(("overrides", "message"), [
    ({"watchdog_target_label": None}, "watchdog_target_label (the dispatch label to watch) is required"),
    ({"watchdog_target_label": "  "}, "watchdog_target_label (the dispatch label to watch) is required"),
    ({"session_target": "isolated", "payload_kind": "agentTurn"}, 'need session_target "shell"'),
    ({"payload_kind": "systemEvent", "session_target": "main", "delivery_to": "1"},
     'need session_target "shell"'),
])
def test_a_dispatch_job_without_its_rules_is_refused(overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=re.escape(message)):
        validate_job_spec(watcher_spec(**overrides))


def test_an_update_cannot_take_the_label_off_a_dispatch_job() -> None:
    stored = {**validate_job_spec(watcher_spec()), "id": "j1"}
    with pytest.raises(ValidationError, match="watchdog_target_label"):
        validate_job_spec({"watchdog_target_label": None}, stored, "update")
    assert validate_job_spec({"name": "renamed"}, stored, "update") == {"name": "renamed"}


def test_jobs_add_stores_a_dispatch_job_and_lists_it_by_type(cli) -> None:
    job = add_job(cli, json.dumps(watcher_spec()))
    assert job["job_type"] == "dispatch" and job["watchdog_target_label"] == LABEL
    code, listed, _, _ = cli("jobs", "list", "--type", "dispatch")
    assert code == 0 and [j["id"] for j in listed] == [job["id"]]
    code, _, stdout, _ = cli("jobs", "add", json.dumps(watcher_spec(watchdog_target_label=None)))
    assert code != 0 and "watchdog_target_label" in stdout


# -- the watch, in a real daemon --------------------------------------------------------------------

TOKEN = "dispatch-test-token"
SESSION = "agent:main:subagent:0b6c2a52-5d43-4c1e-9d0e-5c9a3f1e2d7a"
TASK = "Write the nightly report and say when it is ready."
REPLY = "The nightly report is ready and all twelve checks passed."


def watch_env(gateway: FakeGateway, **extra: str) -> dict[str, str]:
    """Small watcher settings, so a test runs in seconds (the defaults are the reference's)."""
    return {"OPENCLAW_GATEWAY_URL": gateway.url, "OPENCLAW_GATEWAY_TOKEN": TOKEN,
            "SCHEDULER_DISPATCH_POLL_MS": "200", "SCHEDULER_DISPATCH_STUCK_MS": "1500",
            "SCHEDULER_DISPATCH_RETRY_BASE_MS": "100", "SCHEDULER_DISPATCH_DEADLINE_MARGIN_MS": "0",
            **extra}


def start_turn(gateway: FakeGateway, message: str = TASK) -> str:
    """What `dispatch enqueue` does on the gateway: start the sub-agent's turn; its run id."""

    async def start() -> str:
        async with GatewayRpc(gateway.url, TOKEN) as rpc:
            run_id, _ = await rpc.start_agent_turn(message, SESSION, label=LABEL,
                                                   idempotency_key=str(uuid.uuid4()))
            return run_id

    return asyncio.run(start())


def save_label(db_path: Path, run_id: str, **columns: Any) -> None:
    """The ledger row `dispatch enqueue` writes, through the Store."""
    now = sqlite_now()
    given: dict[str, Any] = {"timeout_s": 600, **columns}
    record = DispatchLabel(label=LABEL, session_key=SESSION, status=SubagentStatus.RUNNING,
                           gateway_run_id=run_id, task_prompt=TASK, deliver_to="12345",
                           deliver_channel="telegram", delivery_mode="announce-always",
                           spawned_at=now, **given)
    store = open_store(db_path)
    try:
        store.save_dispatch(record, now)
    finally:
        store.close()


def ledger(db_path: Path) -> DispatchLabel:
    store = open_store(db_path)
    try:
        entry = store.get_dispatch(LABEL)
    finally:
        store.close()
    assert entry is not None
    return entry


def mark_done_elsewhere(db_path: Path, completion: str) -> None:
    """What `dispatch done` writes (another process, mid-watch)."""
    store = open_store(db_path)
    try:
        done = store.update_dispatch(LABEL, {"status": "done", "completion": completion,
                                             "summary": completion}, sqlite_now(),
                                     only_if_status=["running"])
    finally:
        store.close()
    assert done is not None


def add_watcher(cli, **overrides: Any) -> dict[str, Any]:
    return add_job(cli, json.dumps(watcher_spec(schedule_at=sqlite_now(), **overrides)))


def add_watchdog(cli) -> dict[str, Any]:
    return add_job(cli, json.dumps({
        "name": f"watchdog:{LABEL}", "schedule_cron": "0 0 1 1 *", "session_target": "shell",
        "payload_message": "true", "job_type": "watchdog", "watchdog_target_label": LABEL,
        "watchdog_check_cmd": f"openclaw-scheduler dispatch result --label '{LABEL}' --json",
        "delivery_mode": "none", "run_timeout_ms": 120000, "origin": "dispatch"}))


def finished_run(daemon: Daemon, job_id: str, timeout: float = 30) -> dict[str, Any]:
    """The daemon's ``run.finished`` event for the job (the watcher job deletes itself after
    its run, as the reference's did, and its runs go with it)."""
    return daemon.wait_for_event("run.finished", lambda e: e.get("job_id") == job_id, timeout=timeout)


def notices(db_path: Path) -> list[dict[str, Any]]:
    return query(db_path, "SELECT * FROM messages WHERE from_agent = 'dispatch' AND kind = 'text' "
                 "ORDER BY created_at, rowid")


def test_an_overloaded_sub_agent_is_retried_on_its_session_and_its_reply_delivered_once(
    cli, daemon, db_path, fake_gateway
) -> None:
    fake_gateway.token = TOKEN
    fake_gateway.rpc.script_runs(RunScript.failed("529 overloaded: the provider is overloaded"),
                                 RunScript.failed("FailoverError: 529 overloaded"),
                                 RunScript.ok(REPLY))
    fake_gateway.on("/hook", lambda request: Reply(204, None))
    first = start_turn(fake_gateway)
    watchdog = add_watchdog(cli)
    save_label(db_path, first, watchdog_job_id=watchdog["id"])
    job = add_watcher(cli)
    d = daemon(env=watch_env(fake_gateway, DISPATCH_WEBHOOK_URL=f"{fake_gateway.url}/hook"))
    run = finished_run(d, job["id"])
    assert run["status"] == "ok", run["error"]
    entry = ledger(db_path)
    assert entry.status == "done" and entry.retry_count == 2
    assert entry.completion and "twelve checks passed" in entry.completion
    turns = fake_gateway.rpc.requests_for("agent")
    assert len(turns) == 3 and {t.params["sessionKey"] for t in turns} == {SESSION}
    assert all(TASK in t.params["message"] for t in turns[1:])  # the stored task, sent again
    assert entry.gateway_run_id == fake_gateway.rpc.runs[-1].run_id != first
    (delivery,) = fake_gateway.wait_for(lambda gw: gw.deliveries, timeout=15)
    assert "twelve checks passed" in delivery["message"] and delivery["target"] == "12345"
    assert query(db_path, "SELECT id FROM jobs WHERE id = ?", (watchdog["id"],)) == []  # disarmed
    retry_notices = [n["body"] for n in notices(db_path)]
    assert len(retry_notices) == 2 and all("529 overload" in body for body in retry_notices)
    (result,) = query(db_path, "SELECT * FROM messages WHERE from_agent = 'dispatch' AND kind = 'result'")
    assert result["subject"] == LABEL and result["delivery_to"] == "12345"  # dispatch.finished
    (hook,) = fake_gateway.wait_for_requests("/hook", 1, timeout=10)
    assert hook.body["event"] == "dispatch.finished" and hook.body["label"] == LABEL
    assert len(d.events("dispatch.finished")) == 1  # logged once, whatever the sinks
    assert d.stop() == 0
    assert len(fake_gateway.deliveries) == 1


def test_a_stuck_sub_agent_gets_one_notice_then_times_out(cli, daemon, db_path, fake_gateway) -> None:
    fake_gateway.token = TOKEN
    fake_gateway.rpc.script_runs(RunScript.hang())
    run_id = start_turn(fake_gateway)
    # The deadline (10 s after the spawn) leaves the stuck window (1.5 s) room on a slow machine.
    save_label(db_path, run_id, timeout_s=10)
    job = add_watcher(cli)
    d = daemon(env=watch_env(fake_gateway))
    run = finished_run(d, job["id"])
    assert run["status"] == "timeout"
    entry = ledger(db_path)
    assert entry.status == "error" and entry.error and entry.error.startswith("timed out")
    stuck = [n for n in notices(db_path) if "no activity" in n["body"]]
    assert len(stuck) == 1 and stuck[0]["subject"] == LABEL  # one notice for one stuck spell
    assert len(d.events("dispatch.stuck")) == 1
    (delivery,) = fake_gateway.wait_for(lambda gw: gw.deliveries, timeout=15)
    assert "failed" in delivery["message"] and "timed out" in delivery["message"]
    assert len(fake_gateway.rpc.requests_for("agent")) == 1  # a stuck session is not restarted
    assert d.stop() == 0


def test_a_label_marked_done_elsewhere_ends_the_watch_with_that_completion(
    cli, daemon, db_path, fake_gateway
) -> None:
    fake_gateway.token = TOKEN
    fake_gateway.rpc.script_runs(RunScript.hang())
    run_id = start_turn(fake_gateway)
    watchdog = add_watchdog(cli)
    save_label(db_path, run_id, watchdog_job_id=watchdog["id"])
    job = add_watcher(cli)
    d = daemon(env=watch_env(fake_gateway))
    wait_until(lambda: ledger(db_path).last_ping, timeout=15)  # the watch is on
    mark_done_elsewhere(db_path, "The agent reported the report as published.")
    run = finished_run(d, job["id"])
    assert run["status"] == "ok"
    (delivery,) = fake_gateway.wait_for(lambda gw: gw.deliveries, timeout=15)
    assert "reported the report as published" in delivery["message"]
    assert query(db_path, "SELECT id FROM jobs WHERE id = ?", (watchdog["id"],)) == []
    assert len(fake_gateway.rpc.requests_for("agent")) == 1
    assert d.stop() == 0


def test_a_daemon_killed_mid_watch_resumes_on_the_same_gateway_run_and_delivers_once(
    cli, daemon, db_path, fake_gateway
) -> None:
    fake_gateway.token = TOKEN
    fake_gateway.rpc.script_runs(RunScript.hang())
    run_id = start_turn(fake_gateway)
    save_label(db_path, run_id)
    job = add_watcher(cli)
    first = daemon(env=watch_env(fake_gateway))
    fake_gateway.rpc.wait_for_request("agent.wait", 2, timeout=15)
    first.kill()  # SIGKILL: the run is left running, the gateway run goes on
    waits_before = len(fake_gateway.rpc.requests_for("agent.wait"))
    finish_the_hung_run(fake_gateway)
    second = daemon(env=watch_env(fake_gateway))
    run = finished_run(second, job["id"])
    assert run["status"] == "ok" and run["job_removed"]
    assert second.wait_for_event("run.crashed", lambda e: e.get("replay") is True)
    resumed = fake_gateway.rpc.requests_for("agent.wait")[waits_before:]
    assert resumed and {r.params["runId"] for r in resumed} == {run_id}
    assert len(fake_gateway.rpc.requests_for("agent")) == 1  # never started again
    (delivery,) = fake_gateway.wait_for(lambda gw: gw.deliveries, timeout=15)
    assert "twelve checks passed" in delivery["message"]
    assert ledger(db_path).status == "done"
    assert second.stop() == 0
    assert len(fake_gateway.deliveries) == 1


def finish_the_hung_run(gateway: FakeGateway) -> None:
    """The sub-agent ends well while no daemon watches it (the fake's hung run stays hung, so
    its answers are scripted instead)."""
    gateway.rpc.on("agent.wait", lambda request: RpcReply({
        "runId": request.params["runId"], "status": "ok", "startedAt": 1, "endedAt": 2,
        "stopReason": "stop"}))
    gateway.rpc.on("chat.history", lambda request: RpcReply({"sessionKey": SESSION, "messages": [
        {"role": "user", "content": TASK},
        {"role": "assistant", "content": [{"type": "text", "text": REPLY}]}]}))


def test_sigterm_hands_the_watch_back_at_once_and_the_next_start_resumes_it(
    cli, daemon, db_path, fake_gateway
) -> None:
    fake_gateway.token = TOKEN
    fake_gateway.rpc.script_runs(RunScript.hang())
    run_id = start_turn(fake_gateway)
    save_label(db_path, run_id)
    job = add_watcher(cli)
    # A grace far longer than the stop's own limit: the watch must not wait it out.
    first = daemon(env=watch_env(fake_gateway, SCHEDULER_SHUTDOWN_GRACE_MS="120000"))
    fake_gateway.rpc.wait_for_request("agent.wait", 2, timeout=15)
    assert first.stop(timeout=30) == 0
    first.wait_for_event("run.deferred", lambda e: e.get("job_id") == job["id"])
    assert ledger(db_path).status == "running"  # the sub-agent is not touched
    assert fake_gateway.rpc.requests_for("sessions.abort") == []
    finish_the_hung_run(fake_gateway)
    second = daemon(env=watch_env(fake_gateway))
    run = finished_run(second, job["id"])
    assert run["status"] == "ok"
    assert len(fake_gateway.rpc.requests_for("agent")) == 1
    (delivery,) = fake_gateway.wait_for(lambda gw: gw.deliveries, timeout=15)
    assert "twelve checks passed" in delivery["message"]
    assert second.stop() == 0


# -- the watch, driven in-process -----------------------------------------------------------------

FAST = WatchSettings(poll_s=0.2, stuck_s=60, retry_base_s=0.05, deadline_margin_s=0, ping_s=0.2)


class Events:
    """An emitter that keeps what it was given."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str, dict[str, Any]]] = []

    async def __call__(self, event: str, label: str, **details: Any) -> None:
        self.seen.append((event, label, details))

    def names(self) -> list[str]:
        return [name for name, _, _ in self.seen]


def watch_here(db_path: Path, url: str, *, token: str = TOKEN, settings: WatchSettings = FAST,
               during: Callable[[], None] | None = None,
               notify_disabled: bool = False) -> tuple[WatchResult, Events]:
    """``watch_dispatch`` on the test's own store; ``during`` runs in a thread meanwhile."""
    events = Events()
    store = open_store(db_path)

    async def watch() -> WatchResult:
        door = LedgerDoor(store_of=lambda: store, call=call_inline, notify_disabled=notify_disabled)
        helper = None if during is None else asyncio.create_task(asyncio.to_thread(during))
        try:
            return await watch_dispatch(LABEL, door=door, rpc_factory=lambda: GatewayRpc(url, token),
                                        emit=events, settings=settings, log=logs.get("test"))
        finally:
            if helper is not None:
                await helper

    try:
        return asyncio.run(watch()), events
    finally:
        store.close()


def test_a_label_already_done_returns_its_completion_without_asking_the_gateway(
    db_path, fake_gateway
) -> None:
    save_label(db_path, "run-1")
    mark_done_elsewhere(db_path, "Published the report.")
    result, events = watch_here(db_path, fake_gateway.url)
    assert (result.status, result.completion) == ("ok", "Published the report.")
    assert fake_gateway.rpc.requests == [] and events.seen == []


def test_a_run_killed_by_a_gateway_restart_is_sent_again_on_its_own_counter(
    db_path, fake_gateway
) -> None:
    fake_gateway.token = TOKEN
    fake_gateway.rpc.script_runs(RunScript.failed("session not found in gateway store"),
                                 RunScript.ok(REPLY))
    save_label(db_path, start_turn(fake_gateway))
    result, events = watch_here(db_path, fake_gateway.url)
    assert result.status == "ok" and result.reply == REPLY
    entry = ledger(db_path)
    assert (entry.restart_retry_count, entry.retry_count, entry.status) == (1, 0, "done")
    again = fake_gateway.rpc.requests_for("agent")[1]
    assert again.params["sessionKey"] == SESSION and "gateway restart" in again.params["message"]
    assert events.names() == ["dispatch.finished"]


def test_overloads_past_the_maximum_end_the_label_in_error(db_path, fake_gateway) -> None:
    fake_gateway.token = TOKEN
    fake_gateway.rpc.script_runs(*[RunScript.failed("529 overloaded")] * 4)
    save_label(db_path, start_turn(fake_gateway))
    result, events = watch_here(db_path, fake_gateway.url)
    assert result.status == "error" and result.error.startswith("max_retries_exceeded (3x 529)")
    entry = ledger(db_path)
    assert entry.status == "error" and entry.retry_count == 3
    assert len(fake_gateway.rpc.requests_for("agent")) == 4
    assert "dispatch.finished" not in events.names()


def test_an_unreachable_gateway_is_tried_until_the_deadline(db_path) -> None:
    save_label(db_path, "run-1", timeout_s=1)
    result, _ = watch_here(db_path, "http://127.0.0.1:9")  # nothing listens: refused
    assert result.status == "timeout" and "could not be reached" in str(result.error)
    assert ledger(db_path).status == "error"


def test_a_refused_token_fails_the_watch_and_leaves_the_label_alone(db_path, fake_gateway) -> None:
    fake_gateway.token = TOKEN
    save_label(db_path, start_turn(fake_gateway))
    result, _ = watch_here(db_path, fake_gateway.url, token="wrong-token")
    assert result.status == "error" and "OPENCLAW_GATEWAY_TOKEN" in str(result.error)
    assert ledger(db_path).status == "running"  # the sub-agent may well be working


def keep_busy(gateway: FakeGateway, db_path: Path, seconds: float, then_done: bool) -> Callable[[], None]:
    """The session shows activity every 0.1 s for ``seconds``; then, optionally, `dispatch done`."""

    def busy() -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            gateway.rpc.touch_session(SESSION)
            time.sleep(0.1)
        if then_done:
            with contextlib.suppress(AssertionError):  # the watch may have ended first
                mark_done_elsewhere(db_path, "Finished while busy.")

    return busy


def test_activity_moves_the_deadline(db_path, fake_gateway) -> None:
    fake_gateway.token = TOKEN
    fake_gateway.rpc.script_runs(RunScript.hang())
    save_label(db_path, start_turn(fake_gateway), timeout_s=2)
    settings = replace(FAST, extend_s=3)
    result, _ = watch_here(db_path, fake_gateway.url, settings=settings,
                           during=keep_busy(fake_gateway, db_path, 6.0, then_done=True))
    assert (result.status, result.completion) == ("ok", "Finished while busy.")
    assert ledger(db_path).activity_tokens


def test_activity_never_moves_the_deadline_past_the_ceiling(db_path, fake_gateway) -> None:
    fake_gateway.token = TOKEN
    fake_gateway.rpc.script_runs(RunScript.hang())
    save_label(db_path, start_turn(fake_gateway), timeout_s=1)
    settings = replace(FAST, extend_s=3, ceiling_s=2)
    result, _ = watch_here(db_path, fake_gateway.url, settings=settings,
                           during=keep_busy(fake_gateway, db_path, 6.0, then_done=True))
    assert result.status == "timeout"  # before the `dispatch done` that came too late
    assert ledger(db_path).status == "error"


def test_a_label_cancelled_elsewhere_ends_the_watch_cancelled(db_path, fake_gateway) -> None:
    fake_gateway.token = TOKEN
    fake_gateway.rpc.script_runs(RunScript.hang())
    save_label(db_path, start_turn(fake_gateway))

    def cancel() -> None:
        fake_gateway.rpc.wait_for_request("agent.wait", 2, timeout=10)
        store = open_store(db_path)
        try:
            store.update_dispatch(LABEL, {"status": "cancelled"}, sqlite_now())
        finally:
            store.close()

    result, events = watch_here(db_path, fake_gateway.url, during=cancel)
    assert result.status == "cancelled" and events.seen == []


def test_jobs_cancel_stops_the_watch_and_leaves_the_sub_agent_alone(
    cli, daemon, db_path, fake_gateway
) -> None:
    fake_gateway.token = TOKEN
    fake_gateway.rpc.script_runs(RunScript.hang())
    save_label(db_path, start_turn(fake_gateway))
    job = add_watcher(cli)
    d = daemon(env=watch_env(fake_gateway))
    fake_gateway.rpc.wait_for_request("agent.wait", 2, timeout=15)
    code, _, stdout, stderr = cli("jobs", "cancel", job["id"])
    assert code == 0, stdout + stderr
    d.wait_for_event("run.aborted", lambda e: e.get("job_id") == job["id"], timeout=15)
    assert ledger(db_path).status == "running"
    assert fake_gateway.rpc.requests_for("sessions.abort") == []
    assert d.stop() == 0


@pytest.mark.parametrize("disabled", [False, True])
def test_retry_notices_follow_the_notify_switch(db_path, fake_gateway, disabled: bool) -> None:
    fake_gateway.token = TOKEN
    fake_gateway.rpc.script_runs(RunScript.failed("529 overloaded"), RunScript.ok(REPLY))
    save_label(db_path, start_turn(fake_gateway))
    result, _ = watch_here(db_path, fake_gateway.url, notify_disabled=disabled)
    assert result.status == "ok" and ledger(db_path).retry_count == 1
    assert len(notices(db_path)) == (0 if disabled else 1)


def test_the_foreground_watch_is_the_same_watch_on_the_clis_store(db_path, fake_gateway) -> None:
    """What `dispatch watch --label` runs: settings from the environment, the store inline."""
    fake_gateway.token = TOKEN
    fake_gateway.rpc.script_runs(RunScript.failed("529 overloaded"), RunScript.ok(REPLY))
    save_label(db_path, start_turn(fake_gateway))
    settings = load_settings({"SCHEDULER_DB": str(db_path), **watch_env(fake_gateway)})
    store = open_store(db_path)
    try:
        result = asyncio.run(watch_in_foreground(LABEL, store, settings, environ={}))
    finally:
        store.close()
    assert result.status == "ok" and result.reply == REPLY and result.retries == 1
    assert ledger(db_path).status == "done"
    finished = query(db_path, "SELECT * FROM messages WHERE from_agent = 'dispatch' AND kind = 'result'")
    assert len(finished) == 1 and "twelve checks passed" in finished[0]["body"]  # dispatch.finished
