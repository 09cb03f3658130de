"""``contract_max_cost_usd`` on agent turns (docs/trust.md): the real daemon and the
loopback fake gateway, whose chat-completions ``usage`` is scripted with a cost."""

from __future__ import annotations

import json
from typing import Any

import pytest

from conftest import add_job, wait_until
from fakegateway import FakeGateway

TOKEN = "tok-cost-4711"
REPLY = "The report is ready."
TOKENS = {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18}


def agent_job(**overrides: Any) -> str:
    return json.dumps({
        "name": "costly", "session_target": "isolated", "payload_message": "Write the report",
        "schedule_cron": "0 3 * * *", "run_timeout_ms": 30000, "origin": "system",
        "delivery_mode": "announce-always", "delivery_channel": "telegram", "delivery_to": "12345",
        **overrides,
    })


def _start(daemon: Any, gateway: FakeGateway, usage: dict[str, Any] | None) -> Any:
    gateway.token = TOKEN
    gateway.reply_content = REPLY
    gateway.usage = usage
    return daemon(env={"OPENCLAW_GATEWAY_URL": gateway.url, "OPENCLAW_GATEWAY_TOKEN": TOKEN})


def _run_now(cli: Any, db: Any, job_id: str) -> dict[str, Any]:
    code, out, stdout, stderr = cli("jobs", "run", job_id)
    assert code == 0, stdout + stderr
    finished = "SELECT * FROM runs WHERE dispatch_queue_id = ? AND status != 'running'"
    rows = wait_until(lambda: db(finished, (out["dispatch_id"],)), timeout=30, message="run finished")
    run: dict[str, Any] = rows[0]
    return run


def _cost_note(run: dict[str, Any]) -> Any:
    return json.loads(run["context_summary"]).get("cost_cap")


def test_a_turn_within_its_cap_records_its_cost_and_delivers(cli, daemon, db, fake_gateway) -> None:
    _start(daemon, fake_gateway, {**TOKENS, "cost": {"input": 0.01, "output": 0.02, "total": 0.03}})
    job = add_job(cli, agent_job(contract_max_cost_usd=0.05))
    run = _run_now(cli, db, job["id"])
    assert run["status"] == "ok", run
    assert run["cost_usd"] == 0.03
    assert _cost_note(run) == {"max_usd": 0.05, "checked": True, "cost_usd": 0.03, "exceeded": False}
    assert fake_gateway.wait_for(lambda gw: gw.deliveries, timeout=15)[0]["message"] == REPLY


def test_a_turn_over_its_cap_fails_keeps_the_reply_and_neither_delivers_nor_retries(
    cli, daemon, db, fake_gateway
) -> None:
    d = _start(daemon, fake_gateway, {**TOKENS, "cost": {"total": 0.25}})
    job = add_job(cli, agent_job(contract_max_cost_usd=0.1, max_retries=2))
    run = _run_now(cli, db, job["id"])
    assert run["status"] == "error"
    assert run["error_message"] == ("Turn cost $0.25 exceeded contract_max_cost_usd $0.1; the reply is "
                                    "kept on the run but not delivered, and no retry follows")
    assert run["summary"] == REPLY
    assert run["cost_usd"] == 0.25
    assert _cost_note(run)["exceeded"] is True
    notice = fake_gateway.wait_for(lambda gw: gw.deliveries, timeout=15)[0]["message"]
    assert "exceeded contract_max_cost_usd" in notice and REPLY not in notice
    assert db("SELECT * FROM job_dispatch_queue WHERE dispatch_kind = 'retry'") == []
    assert len(fake_gateway.chats) == 1
    d.wait_for_event("agent.cost_cap_exceeded", lambda e: e["run_id"] == run["id"])


def test_a_cap_without_a_reported_cost_is_recorded_as_not_checked(cli, daemon, db, fake_gateway) -> None:
    # The real gateway 2026.9.6: tokens, no cost, in the chat-completions usage.
    d = _start(daemon, fake_gateway, dict(TOKENS))
    job = add_job(cli, agent_job(contract_max_cost_usd=0.01))
    run = _run_now(cli, db, job["id"])
    assert run["status"] == "ok"
    assert run["cost_usd"] is None
    note = _cost_note(run)
    assert note["checked"] is False and note["max_usd"] == 0.01
    assert "could not be checked" in note["reason"]
    event = d.wait_for_event("agent.cost_unchecked", lambda e: e["run_id"] == run["id"])
    assert event["max_usd"] == 0.01


def test_a_flat_cost_is_recorded_without_a_cap(cli, daemon, db, fake_gateway) -> None:
    _start(daemon, fake_gateway, {**TOKENS, "cost": 0.5})
    job = add_job(cli, agent_job())
    run = _run_now(cli, db, job["id"])
    assert (run["status"], run["cost_usd"]) == ("ok", 0.5)
    assert _cost_note(run) is None


@pytest.mark.parametrize(("usage", "cost"), [
    ({"cost": {"input": 0.1, "output": 0.2, "total": 0.3}}, 0.3),
    ({"cost": 2}, 2.0),
    ({"cost": 0}, 0.0),  # a reported zero is a cost (the fake model's price), checked as such
    ({"prompt_tokens": 1, "total_tokens": 2}, None),  # the real gateway 2026.9.6
    (None, None),
    ({"cost": "0.3"}, None),
    ({"cost": True}, None),
    ({"cost": -1}, None),
    ({"cost": float("nan")}, None),
    ({"cost": {"input": 0.1}}, None),
    ({"total_cost_usd": 0.3}, None),
])
def test_the_cost_is_read_from_the_gateways_usage_shape_only(usage: Any, cost: float | None) -> None:
    from scheduler.strategies.cost_cap import check_cost, reported_cost_usd

    assert reported_cost_usd(usage) == cost
    assert check_cost(usage, 0.25).exceeded is (cost is not None and cost > 0.25)
    assert check_cost(usage, None).note is None
