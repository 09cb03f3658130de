"""Messages with the real daemon and the loopback fake gateway: broadcasts injected per agent,
expiry on the daemon's cadence, and the prune that keeps a result not yet sent."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

from conftest import query, wait_until
from fakegateway import CHAT, FakeGateway, Reply
from test_agent_integration import agent_job, finished_runs, gateway_env

QUIET = {"delivery_mode": "none", "delivery_opt_out_reason": "test"}


def add(cli, **overrides: Any) -> dict[str, Any]:
    code, out, stdout, stderr = cli("jobs", "add", agent_job(**QUIET, **overrides), "--in", "1s")
    assert code == 0, stdout + stderr
    return dict(out["job"])


def prompt_of(gateway: FakeGateway, job: dict[str, Any]) -> str:
    header = f"[scheduler:{job['id']} {job['name']}]"
    chat = gateway.wait_for(
        lambda gw: [c for c in gw.chats if c.body["messages"][0]["content"].startswith(header)],
        timeout=20)[0]
    return str(chat.body["messages"][0]["content"])


def send(cli, *args: str) -> str:
    code, out, stdout, stderr = cli("messages", "send", *args)
    assert code == 0, stdout + stderr
    return str(out["message"]["id"])


def sql(db_path: Path, statement: str, params: tuple[Any, ...] = ()) -> None:
    with sqlite3.connect(db_path) as conn:
        conn.execute(statement, params)
    conn.close()


def test_a_broadcast_reaches_every_agents_prompt_once(cli, daemon, db_path, fake_gateway) -> None:
    """Reference defect §17 #15: the first agent to take a broadcast consumed it for everyone."""
    d = daemon(env=gateway_env(fake_gateway))
    news = send(cli, "--from", "ops", "--to", "broadcast", "--kind", "constraint", "--subject",
                "freeze", "--body", "no deploys today")
    first = add(cli, name="a first", agent_id="a")
    prompt = prompt_of(fake_gateway, first)
    assert "--- Pending Messages ---\nFrom: ops | constraint | freeze\n[constraint] no deploys today\n---" \
        in prompt, prompt
    wait_until(lambda: finished_runs(db_path, first["id"]), timeout=20)
    assert cli("msg", "unread", "b")[1]["unread"] == 1  # still pending for b
    (seen,) = cli("msg", "inbox", "a")[1]
    assert (seen["id"], seen["status"]) == (news, "delivered")
    other = add(cli, name="b runs", agent_id="b")
    assert "no deploys today" in prompt_of(fake_gateway, other)
    again = add(cli, name="a again", agent_id="a")
    assert "Pending Messages" not in prompt_of(fake_gateway, again)  # a had it already
    receipts = cli("msg", "receipts", news)[1]
    assert sorted(r["detail"] for r in receipts if r["event_type"] == "attempt") == [
        "injected into the prompt of a", "injected into the prompt of b"]
    assert d.stop() == 0


def test_the_daemon_expires_messages_past_their_expiry(cli, daemon, db_path, fake_gateway) -> None:
    assert cli("status")[0] == 0
    for message_id, to in (("old-direct", "main"), ("old-news", "broadcast")):
        sql(db_path, "INSERT INTO messages (id, from_agent, to_agent, body, expires_at) "
                     "VALUES (?, 'ops', ?, 'stale', datetime('now', '-1 minute'))", (message_id, to))
    lasting = send(cli, "--from", "ops", "--body", "still true", "--expires-in", "1d")
    d = daemon(env=gateway_env(fake_gateway))
    wait_until(lambda: {r["id"]: r["status"] for r in query(db_path, "SELECT id, status FROM messages")}
               == {"old-direct": "expired", "old-news": "expired", lasting: "pending"}, timeout=20)
    assert d.wait_for_event("messages.expired", timeout=10)["count"] == 2
    job = add(cli, name="reader")
    prompt = prompt_of(fake_gateway, job)
    assert "still true" in prompt and "stale" not in prompt
    assert d.stop() == 0


def test_the_daemons_prune_keeps_a_result_not_yet_sent(cli, daemon, db_path, fake_gateway) -> None:
    """Reference defect §17 #16: results older than 3 days were pruned even if never sent."""
    assert cli("status")[0] == 0
    rows = (("unsent", "@outbound", "result", "pending", "-40 days"),
            ("sent", "@outbound", "result", "delivered", "-4 days"),
            ("read", "main", "text", "read", "-31 days"),
            ("waiting", "main", "text", "pending", "-40 days"),
            ("recent", "main", "text", "read", "-1 days"))
    for message_id, to, kind, status, age in rows:
        sql(db_path, "INSERT INTO messages (id, from_agent, to_agent, kind, body, status, channel, "
                     "delivery_to, created_at, next_attempt_at) VALUES (?, 'scheduler', ?, ?, 'x', ?, "
                     "'telegram', '42', datetime('now', ?), datetime('now', '+1 day'))",
            (message_id, to, kind, status, age))
    d = daemon(env=gateway_env(fake_gateway))
    event = d.wait_for_event("messages.pruned", timeout=20)
    assert event["total"] == 2 and event["delivered"] == 1 and event["read_expired_failed"] == 1
    assert sorted(r["id"] for r in query(db_path, "SELECT id FROM messages")) == [
        "recent", "unsent", "waiting"]
    assert d.stop() == 0


def test_a_refused_prompt_gives_back_only_that_agents_copy_of_a_broadcast(
    cli, daemon, db_path, fake_gateway
) -> None:
    fake_gateway.script(CHAT, Reply.error(400, "Unknown agent 'a'.", "invalid_request_error"))
    d = daemon(env=gateway_env(fake_gateway))
    news = send(cli, "--from", "ops", "--to", "broadcast", "--body", "rotate the keys")
    refused = add(cli, name="refused", agent_id="a")
    (run,) = wait_until(lambda: finished_runs(db_path, refused["id"]), timeout=20)
    assert run["status"] == "error" and "rotate the keys" in prompt_of(fake_gateway, refused)
    assert [m["status"] for m in cli("msg", "inbox", "a")[1]] == ["pending"]
    other = add(cli, name="b takes it", agent_id="b")
    assert "rotate the keys" in prompt_of(fake_gateway, other)
    wait_until(lambda: finished_runs(db_path, other["id"]), timeout=20)
    again = add(cli, name="a again", agent_id="a")
    assert "rotate the keys" in prompt_of(fake_gateway, again)
    wait_until(lambda: finished_runs(db_path, again["id"]), timeout=20)
    assert [m["status"] for m in cli("msg", "inbox", "a")[1]] == ["delivered"]
    assert [m["status"] for m in cli("msg", "inbox", "b")[1]] == ["delivered"]
    details = [r["detail"] for r in cli("msg", "receipts", news)[1]]
    assert details.count("prompt not accepted; back in the inbox") == 1
    assert d.stop() == 0
