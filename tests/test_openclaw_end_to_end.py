"""End to end through the REAL OpenClaw gateway: the daemon runs an isolated agent job, the
gateway answers with its (fake) model, and the result is announced through the gateway's
`message` tool to a (fake) Telegram chat."""

from __future__ import annotations

import json
import uuid

import pytest

from conftest import query, wait_until
from openclaw_peer import OpenClawPeer, openclaw_gateway  # noqa: F401  (the fixture)

pytestmark = [pytest.mark.openclaw, pytest.mark.slow]

CHAT_ID = "987654321"


def test_isolated_job_with_announce_delivery_end_to_end(
    cli, daemon, db_path, openclaw_gateway: OpenClawPeer  # noqa: F811
) -> None:
    marker = f"e2e-{uuid.uuid4().hex[:8]}"
    spec = {
        "name": f"digest {marker}",
        "session_target": "isolated",
        "agent_id": "main",
        "payload_message": f"Write the daily digest ({marker})",
        "run_timeout_ms": 120000,
        "delivery_mode": "announce-always",
        "delivery_channel": "telegram",
        "delivery_to": CHAT_ID,
        "origin": "system",
        "delete_after_run": 0,
    }
    d = daemon(env=openclaw_gateway.daemon_env())
    code, out, stdout, stderr = cli("jobs", "add", json.dumps(spec), "--in", "1s")
    assert code == 0, stdout + stderr
    job = out["job"]

    run = wait_until(
        lambda: [r for r in query(db_path, "SELECT * FROM runs WHERE job_id = ?", (job["id"],))
                 if r["status"] != "running"],
        timeout=150, message="the agent run finished",
    )[0]
    assert run["status"] == "ok", run
    assert run["summary"] == openclaw_gateway.reply
    assert run["session_key"] == f"agent:main:scheduler:{job['id']}"

    # The prompt reached the model with the reference's header.
    forwarded = openclaw_gateway.llm_requests(containing=marker)
    assert forwarded, "the fake model never saw the job's prompt"
    assert f"[scheduler:{job['id']} digest {marker}]" in json.dumps(forwarded[0])

    # The result was announced through the gateway to the chat, and recorded as delivered.
    sent = openclaw_gateway.wait_for(
        lambda: [m for m in openclaw_gateway.telegram_messages()
                 if str(m.get("chat_id")) == CHAT_ID and openclaw_gateway.reply in str(m.get("text"))],
        timeout=60, message="the result reached the Telegram chat",
    )
    assert sent
    message = wait_until(
        lambda: [m for m in query(db_path, "SELECT * FROM messages WHERE run_id = ?", (run["id"],))
                 if m["status"] == "delivered"],
        timeout=30, message="the outbound message marked delivered",
    )[0]
    assert message["to_agent"] == "@outbound" and message["channel"] == "telegram"
    assert d.stop() == 0
    assert not [line for line in d.lines if openclaw_gateway.token in line]


def test_an_agent_parents_reply_reaches_its_agent_childs_prompt(
    cli, daemon, db_path, openclaw_gateway: OpenClawPeer  # noqa: F811
) -> None:
    marker = f"e2e-{uuid.uuid4().hex[:8]}"
    quiet = {"session_target": "isolated", "agent_id": "main", "run_timeout_ms": 120000,
             "delivery_mode": "none", "delivery_opt_out_reason": "test", "origin": "system"}
    code, out, stdout, stderr = cli("jobs", "add", json.dumps({
        **quiet, "name": f"report {marker}", "schedule_cron": "0 0 1 1 *",
        "payload_message": f"Write the report ({marker}-parent)"}))
    assert code == 0, stdout + stderr
    parent = out["job"]
    code, out, stdout, stderr = cli("jobs", "add", json.dumps({
        **quiet, "name": f"act {marker}", "parent_id": parent["id"], "trigger_on": "success",
        "payload_message": f"Act on the report ({marker}-child)"}))
    assert code == 0, stdout + stderr
    child = out["job"]
    d = daemon(env=openclaw_gateway.daemon_env())
    assert cli("jobs", "run", parent["id"])[0] == 0

    child_run = wait_until(
        lambda: [r for r in query(db_path, "SELECT * FROM runs WHERE job_id = ?", (child["id"],))
                 if r["status"] != "running"],
        timeout=300, message="the child's agent run finished",
    )[0]
    (parent_run,) = query(db_path, "SELECT * FROM runs WHERE job_id = ?", (parent["id"],))
    assert parent_run["status"] == "ok" and parent_run["summary"] == openclaw_gateway.reply
    assert child_run["status"] == "ok" and child_run["triggered_by_run"] == parent_run["id"]

    # The model, behind the real gateway, saw the parent's reply in the child's prompt.
    forwarded = openclaw_gateway.llm_requests(containing=f"{marker}-child")
    assert forwarded, "the fake model never saw the child's prompt"
    text = json.dumps(forwarded[0])
    assert json.dumps(f"Triggered by: report {marker}\nParent run status: ok\nParent run output:\n"
                      f"{openclaw_gateway.reply}\n---")[1:-1] in text
    assert d.stop() == 0
