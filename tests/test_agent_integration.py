"""Agent jobs end to end: the real daemon, a real HTTP fake gateway on 127.0.0.1."""

from __future__ import annotations

import json
import sqlite3
import time
from typing import Any

import pytest

from conftest import query, shell_job, wait_until
from fakegateway import CHAT, FakeGateway, Reply

TOKEN = "tok-secret-4711-xyz"


def agent_job(**overrides: Any) -> str:
    spec = {
        "name": "digest",
        "session_target": "isolated",
        "payload_message": "Summarise the day",
        "run_timeout_ms": 30000,
        "delivery_mode": "announce-always",
        "delivery_channel": "telegram",
        "delivery_to": "12345",
        "origin": "system",
        "delete_after_run": 0,
        **overrides,
    }
    return json.dumps(spec)


def add(cli, spec: str, *options: str) -> dict[str, Any]:
    code, out, stdout, stderr = cli("jobs", "add", spec, *options)
    assert code == 0, stdout + stderr
    return out["job"]


def gateway_env(gateway: FakeGateway, **extra: str) -> dict[str, str]:
    return {"OPENCLAW_GATEWAY_URL": gateway.url, "OPENCLAW_GATEWAY_TOKEN": TOKEN, "SCHEDULER_DEBUG": "1",
            **extra}


def runs_of(db_path, job_id: str) -> list[dict[str, Any]]:
    return query(db_path, "SELECT * FROM runs WHERE job_id = ? ORDER BY started_at, rowid", (job_id,))


def finished_runs(db_path, job_id: str) -> list[dict[str, Any]]:
    return [r for r in runs_of(db_path, job_id) if r["status"] not in ("running",)]


def outbound(db_path, job_id: str) -> list[dict[str, Any]]:
    return query(db_path, "SELECT * FROM messages WHERE job_id = ? AND to_agent = '@outbound'", (job_id,))


def test_agent_turn_carries_token_and_prompt_and_delivers_the_reply(
    cli, daemon, db_path, fake_gateway
) -> None:
    fake_gateway.token = TOKEN
    fake_gateway.reply_content = "All quiet today."
    d = daemon(env=gateway_env(fake_gateway))
    job = add(cli, agent_job(payload_model="fast-model"), "--in", "1s")
    (chat,) = fake_gateway.wait_for_requests(CHAT, 1, timeout=15)
    assert chat.headers["authorization"] == f"Bearer {TOKEN}"
    assert chat.headers["x-openclaw-agent-id"] == "main"
    assert chat.headers["x-openclaw-session-key"] == f"agent:main:scheduler:{job['id']}"
    assert chat.headers["x-openclaw-model"] == "fast-model"
    assert chat.body["model"] == "openclaw:main" and chat.body["stream"] is False
    prompt = chat.body["messages"][0]["content"]
    assert prompt.startswith(f"[scheduler:{job['id']} digest]")
    assert prompt.endswith("\n\nSummarise the day")

    delivery = fake_gateway.wait_for(lambda gw: gw.deliveries, timeout=15)[0]
    assert delivery["message"] == "All quiet today."
    assert (delivery["channel"], delivery["target"]) == ("telegram", "12345")
    (run,) = wait_until(lambda: finished_runs(db_path, job["id"]), timeout=10)
    assert run["status"] == "ok" and run["summary"] == "All quiet today."
    assert run["session_key"] == f"agent:main:scheduler:{job['id']}"
    wait_until(lambda: outbound(db_path, job["id"])[0]["status"] == "delivered", timeout=10)
    assert d.stop() == 0
    assert not [line for line in d.lines if TOKEN in line], "the token leaked into a log line"


@pytest.mark.parametrize(
    ("mode", "reply", "delivered"),
    [
        ("announce", "HEARTBEAT_OK", None),
        ("announce-always", "HEARTBEAT_OK", None),  # sentinels suppress delivery (reference §4.7)
        ("announce", "Everything fine", None),  # announce: only failures are announced
        ("announce-always", "Everything fine", "Everything fine"),
        ("announce", "TASK_FAILED: disk full",
         "\u26a0\ufe0f Job soft-failed (no retries configured): digest\n\nTASK_FAILED: disk full"),
    ],
)
def test_delivery_rules_for_replies(cli, daemon, db_path, fake_gateway, mode, reply, delivered) -> None:
    fake_gateway.reply_content = reply
    d = daemon(env=gateway_env(fake_gateway))
    job = add(cli, agent_job(delivery_mode=mode), "--in", "1s")
    (run,) = wait_until(lambda: finished_runs(db_path, job["id"]), timeout=15)
    assert run["status"] == ("error" if reply.startswith("TASK_FAILED") else "ok")
    if delivered is None:
        time.sleep(0.5)
        assert fake_gateway.deliveries == [] and outbound(db_path, job["id"]) == []
    else:
        assert fake_gateway.wait_for(lambda gw: gw.deliveries, timeout=10)[0]["message"] == delivered
    assert d.stop() == 0


def test_busy_gateway_is_waited_for_and_the_run_ends_ok(cli, daemon, db_path, fake_gateway) -> None:
    fake_gateway.script(CHAT, Reply.error(529, "overloaded", headers={"Retry-After": "1"}))
    fake_gateway.reply_content = "done after the wait"
    d = daemon(env=gateway_env(fake_gateway))
    job = add(cli, agent_job(delivery_mode="none", delivery_opt_out_reason="test"), "--in", "1s")
    (run,) = wait_until(lambda: finished_runs(db_path, job["id"]), timeout=20)
    assert run["status"] == "ok" and run["summary"] == "done after the wait"
    first, second = fake_gateway.chats
    assert second.time - first.time >= 0.9  # Retry-After honoured
    assert run["retry_count"] == 0  # outside the retry ladder
    assert d.stop() == 0


def test_job_due_while_the_gateway_is_down_runs_when_it_is_back(
    cli, daemon, db_path, fake_gateway
) -> None:
    fake_gateway.down()
    d = daemon(env=gateway_env(fake_gateway))
    job = add(cli, agent_job(delivery_mode="none", delivery_opt_out_reason="test"), "--in", "1s")
    time.sleep(3)
    assert not [r for r in runs_of(db_path, job["id"]) if r["status"] in ("ok", "error", "timeout")]
    fake_gateway.up()
    (run,) = wait_until(lambda: [r for r in runs_of(db_path, job["id"]) if r["status"] == "ok"],
                        timeout=30, message="the deferred job ran after the gateway came back")
    assert run["summary"] == "CANNED-REPLY"
    assert len(fake_gateway.chats) == 1
    assert d.stop() == 0


def test_slow_agent_turn_does_not_delay_a_shell_job(cli, daemon, db_path, fake_gateway, tmp_path) -> None:
    fake_gateway.on(CHAT, lambda request: Reply(200, {"choices": [{"message": {"content": "slow"}}]},
                                                delay_s=8))
    d = daemon(env=gateway_env(fake_gateway))
    agent = add(cli, agent_job(delivery_mode="none", delivery_opt_out_reason="test"), "--in", "1s")
    out = tmp_path / "shell.txt"
    shell = add(cli, shell_job(name="quick", payload_message=f"date +%s.%N > {out}", delete_after_run=0),
                "--in", "3s")
    fake_gateway.wait_for_requests(CHAT, 1, timeout=15)
    wait_until(lambda: out.exists(), timeout=10)
    due = time.mktime(time.strptime(shell["schedule_at"], "%Y-%m-%d %H:%M:%S")) - time.timezone
    assert float(out.read_text()) - due < 1.5
    assert [r["status"] for r in runs_of(db_path, agent["id"])] == ["running"]
    (run,) = wait_until(lambda: finished_runs(db_path, agent["id"]), timeout=15)
    assert run["status"] == "ok"
    assert d.stop() == 0


def test_failed_delivery_is_retried_until_accepted(cli, daemon, db_path, fake_gateway) -> None:
    failure = {"ok": False, "error": {"type": "tool_error", "message": "tool execution failed"}}
    fake_gateway.script("tool:message", Reply(500, failure))
    d = daemon(env=gateway_env(fake_gateway))
    job = add(cli, agent_job(), "--in", "1s")
    message = wait_until(lambda: [m for m in outbound(db_path, job["id"]) if m["delivery_attempts"] >= 1],
                         timeout=15)[0]
    assert message["status"] == "pending" and "tool execution failed" in (message["last_error"] or "")
    wait_until(lambda: outbound(db_path, job["id"])[0]["status"] == "delivered", timeout=20)
    assert len(fake_gateway.deliveries) == 1
    assert d.stop() == 0


def test_alias_targets_resolve_and_unknown_aliases_are_reported(
    cli, daemon, db_path, fake_gateway
) -> None:
    code, out, _, err = cli("alias", "add", "ops", "telegram", "999", "ops room")
    assert code == 0 and out["target"] == "999", err
    d = daemon(env=gateway_env(fake_gateway))
    good = add(cli, agent_job(name="to alias", delivery_to="@ops", delivery_channel=None), "--in", "1s")
    bad = add(cli, agent_job(name="to nowhere", delivery_to="@nobody"), "--in", "1s")
    delivery = fake_gateway.wait_for(lambda gw: gw.deliveries, timeout=15)[0]
    assert (delivery["channel"], delivery["target"]) == ("telegram", "999")
    missing = wait_until(lambda: outbound(db_path, bad["id"]), timeout=10)[0]
    assert missing["status"] == "failed" and "unknown delivery alias @nobody" in missing["last_error"]
    assert outbound(db_path, good["id"])
    assert d.stop() == 0


def test_outbound_results_are_never_injected_into_an_agent_prompt(
    cli, daemon, db_path, fake_gateway
) -> None:
    """Reference defect §17 #12: another job's pending result was eaten by the next prompt."""
    fake_gateway.on("tool:message", lambda request: Reply(503, "busy"))  # results stay pending
    d = daemon(env=gateway_env(fake_gateway))
    first = add(cli, agent_job(name="first"), "--in", "1s")
    wait_until(lambda: outbound(db_path, first["id"]), timeout=15)
    conn = sqlite3.connect(db_path)
    conn.execute("INSERT INTO messages (id, from_agent, to_agent, kind, body) "
                 "VALUES ('m1', 'ops', 'main', 'text', 'please check the backups')")
    conn.commit()
    conn.close()
    second = add(cli, agent_job(name="second"), "--in", "1s")
    header = f"[scheduler:{second['id']} second]"
    chat = fake_gateway.wait_for(
        lambda gw: [c for c in gw.chats if c.body["messages"][0]["content"].startswith(header)], timeout=15
    )[0]
    prompt = chat.body["messages"][0]["content"]
    assert "please check the backups" in prompt, prompt  # a real inbox message is injected
    assert "CANNED-REPLY" not in prompt, prompt  # the first job's pending result is not
    assert outbound(db_path, first["id"])[0]["status"] == "pending"
    assert d.stop() == 0


def test_inbox_messages_of_a_refused_prompt_stay_for_the_next_turn(
    cli, daemon, db_path, fake_gateway
) -> None:
    fake_gateway.script(CHAT, Reply.error(400, "Unknown agent 'main'.", "invalid_request_error"))
    d = daemon(env=gateway_env(fake_gateway))
    conn = sqlite3.connect(db_path)
    conn.execute("INSERT INTO messages (id, from_agent, to_agent, kind, body) "
                 "VALUES ('keep-me', 'ops', 'main', 'text', 'rotate the keys')")
    conn.commit()
    conn.close()
    job = add(cli, agent_job(name="refused", delivery_mode="none", delivery_opt_out_reason="test"),
              "--in", "1s")
    (run,) = wait_until(lambda: finished_runs(db_path, job["id"]), timeout=15)
    assert run["status"] == "error" and "Unknown agent 'main'." in run["error_message"]
    (message,) = query(db_path, "SELECT status FROM messages WHERE id = 'keep-me'")
    assert message["status"] == "pending"
    again = add(cli, agent_job(name="accepted", delivery_mode="none", delivery_opt_out_reason="test"),
                "--in", "1s")
    wait_until(lambda: finished_runs(db_path, again["id"]), timeout=15)
    assert "rotate the keys" in fake_gateway.chats[-1].body["messages"][0]["content"]
    (message,) = query(db_path, "SELECT status FROM messages WHERE id = 'keep-me'")
    assert message["status"] == "delivered"
    assert d.stop() == 0


@pytest.mark.parametrize(("guarantee", "expected"), [("at-most-once", "error"), ("at-least-once", "ok")])
def test_connection_dropped_mid_turn(cli, daemon, db_path, fake_gateway, guarantee, expected) -> None:
    """The gateway may already be working on a turn whose connection dropped: an at-most-once
    job fails rather than risk doing the work twice; an at-least-once job runs it again."""
    fake_gateway.script(CHAT, Reply.dropped())
    d = daemon(env=gateway_env(fake_gateway))
    job = add(cli, agent_job(name="dropped", delivery_mode="none", delivery_opt_out_reason="test",
                             delivery_guarantee=guarantee), "--in", "1s")
    final = wait_until(lambda: [r for r in runs_of(db_path, job["id"]) if r["status"] in ("ok", "error")],
                       timeout=30)[0]
    assert final["status"] == expected
    if expected == "error":
        assert "dropped the connection" in final["error_message"]
        assert "at-most-once" in final["error_message"]
        assert len(fake_gateway.chats) == 1
    else:
        assert len(fake_gateway.chats) == 2
    assert d.stop() == 0


def test_a_token_file_others_can_read_is_reported(cli, daemon, tmp_path, fake_gateway) -> None:
    token_file = tmp_path / "gateway-token"
    token_file.write_text(TOKEN + "\n")
    token_file.chmod(0o644)
    fake_gateway.token = TOKEN
    d = daemon(env={"OPENCLAW_GATEWAY_URL": fake_gateway.url, "OPENCLAW_GATEWAY_TOKEN_PATH": str(token_file)})
    warning = d.wait_for_event("gateway.token_file_permissions", timeout=5)
    assert warning["mode"] == "0o644" and warning["fix"] == f"chmod 600 {token_file}"
    # The token is still read from the file and used, never logged.
    add(cli, agent_job(delivery_mode="none", delivery_opt_out_reason="test"), "--in", "1s")
    (chat,) = fake_gateway.wait_for_requests(CHAT, 1, timeout=15)
    assert chat.headers["authorization"] == f"Bearer {TOKEN}"
    assert d.stop() == 0
    assert not [line for line in d.lines if TOKEN in line]
