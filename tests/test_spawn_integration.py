"""Spawn messages through the real daemon: ``messages send --kind spawn`` becomes a job that runs.

Every daemon here re-checks for messages only once an hour (``SCHEDULER_MESSAGE_DELIVERY_MS``):
a spawn answered within the tests' waits was answered on the write notice, not on a poll.
"""

from __future__ import annotations

import json
import shlex
import signal
import sqlite3
import sys
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from conftest import add_job, runs_of, shell_job, wait_until
from fakegateway import CHAT, FakeGateway

NO_IDLE_POLL = {"SCHEDULER_MESSAGE_DELIVERY_MS": "3600000"}
TERMINAL = {"ok", "error", "timeout", "skipped", "cancelled", "crashed"}


def send_spawn(cli: Callable[..., Any], body: dict[str, Any], *options: str) -> dict[str, Any]:
    code, out, stdout, stderr = cli("messages", "send", "--from", "planner", "--kind", "spawn",
                                    "--body", json.dumps(body), *options)
    assert code == 0, stdout + stderr
    message: dict[str, Any] = out["message"]
    return message


def appending(out: Path, word: str) -> str:
    return f"echo {shlex.quote(word)} >> {shlex.quote(str(out))}"


def message_row(db: Callable[..., list[dict[str, Any]]], message_id: str) -> dict[str, Any]:
    (row,) = db("SELECT * FROM messages WHERE id = ?", (message_id,))
    return row


def test_a_spawned_shell_job_runs_once_now_and_goes(cli, daemon, db, tmp_path: Path) -> None:
    out = tmp_path / "out"
    d = daemon(env=NO_IDLE_POLL)
    message = send_spawn(cli, {"name": "one-off", "session_target": "shell",
                               "payload_message": appending(out, "ran")})
    created = d.wait_for_event("spawn.created", lambda e: e["message_id"] == message["id"])
    assert created["form"] == "one-off" and created["parent_id"] is None
    finished = d.wait_for_event("run.finished", lambda e: e["job_id"] == created["job_id"])
    assert finished["status"] == "ok" and finished["job_removed"]  # delete_after_run by default
    assert out.read_text() == "ran\n"
    assert db("SELECT id FROM jobs") == []
    answered = message_row(db, message["id"])
    assert answered["status"] == "delivered" and answered["delivered_at"] is not None
    assert json.loads(answered["metadata"]) == {"spawned_job_id": created["job_id"]}
    assert d.events("spawn.rejected") == []


def test_a_bad_body_is_refused_by_the_cli_and_nothing_is_written(cli, db) -> None:
    code, out, _, _ = cli("messages", "send", "--from", "planner", "--kind", "spawn",
                          "--body", '{"name": "no payload"}')
    assert code == 1 and out == {"ok": False, "error": "payload_message is required"}
    assert db("SELECT id FROM messages") == []


def _write_like_another_program(db_path: Path, sender: str, body: str) -> str:
    """A spawn message written by something other than our CLI (the reference's CLI, an agent's
    own SQLite client): nothing checked its body."""
    message_id = str(uuid.uuid4())
    conn = sqlite3.connect(db_path)
    try:
        with conn:
            conn.execute("INSERT INTO messages (id, from_agent, to_agent, kind, body) "
                         "VALUES (?, ?, 'main', 'spawn', ?)", (message_id, sender, body))
    finally:
        conn.close()
    return message_id


def test_a_bad_body_is_answered_with_an_error_to_its_sender(cli, daemon, db, db_path: Path) -> None:
    # The parent a body names may go before the daemon reads the message: the CLI could not know.
    parent = add_job(cli, shell_job(name="parent", schedule_cron="0 0 1 1 *"))
    orphan = send_spawn(cli, {"session_target": "shell", "payload_message": "true",
                              "parent_id": parent["id"], "trigger_on": "success"})
    assert cli("jobs", "delete", parent["id"])[0] == 0
    bad = _write_like_another_program(db_path, "researcher", '{"payload_message": "x", "run_now": 1,'
                                      ' "session_target": "main"}')
    d = daemon(env=NO_IDLE_POLL)
    rejected = d.wait_for_event("spawn.rejected", lambda e: e["message_id"] == bad)
    (reply,) = db("SELECT * FROM messages WHERE reply_to = ?", (bad,))
    assert reply["id"] == rejected["reply_id"]
    assert (reply["from_agent"], reply["to_agent"], reply["kind"], reply["status"]) == (
        "scheduler", "researcher", "system", "pending")
    assert reply["body"] == 'Spawn rejected: spawned jobs run on session_target isolated or shell, not "main"'
    answered = message_row(db, bad)
    assert answered["status"] == "delivered"
    assert json.loads(answered["metadata"])["spawn_error"] in reply["body"]
    d.wait_for_event("spawn.rejected", lambda e: e["message_id"] == orphan["id"])
    (reply,) = db("SELECT body, to_agent FROM messages WHERE reply_to = ?", (orphan["id"],))
    assert reply == {"body": f"Spawn rejected: parent job does not exist: {parent['id']}",
                     "to_agent": "planner"}
    assert db("SELECT id FROM jobs") == []


def test_a_spawn_written_while_the_daemon_runs_is_answered_on_the_write_notice(
        cli, daemon, db, db_path: Path) -> None:
    d = daemon(env=NO_IDLE_POLL)
    bad = _write_like_another_program(db_path, "researcher", "not json")
    d.wait_for_event("spawn.rejected", lambda e: e["message_id"] == bad)
    (reply,) = db("SELECT body FROM messages WHERE reply_to = ?", (bad,))
    assert reply["body"].startswith("Spawn rejected: the spawn body is not valid JSON")


def test_a_spawn_from_a_running_job_is_linked_to_it(cli, daemon, db, tmp_path: Path) -> None:
    out = tmp_path / "out"
    body = {"name": "linked", "session_target": "shell", "payload_message": appending(out, "child"),
            "delete_after_run": False}
    spawn = (f"{shlex.quote(sys.executable)} -m scheduler messages send --from parent-job --to researcher "
             '--kind spawn --job-id "$SCHEDULER_JOB_ID" --run-id "$SCHEDULER_RUN_ID" '
             f"--body {shlex.quote(json.dumps(body))}")
    parent = add_job(cli, shell_job(name="parent", schedule_cron="0 0 1 1 *", payload_message=spawn))
    d = daemon(env=NO_IDLE_POLL)
    assert cli("jobs", "run", parent["id"])[0] == 0
    created = d.wait_for_event("spawn.created", timeout=20)
    assert created["form"] == "linked" and created["parent_id"] == parent["id"]
    finished = d.wait_for_event("run.finished", lambda e: e["job_id"] == created["job_id"], timeout=20)
    assert finished["status"] == "ok" and not finished["job_removed"]
    (child,) = db("SELECT * FROM jobs WHERE id = ?", (created["job_id"],))
    assert (child["parent_id"], child["trigger_on"], child["agent_id"]) == (parent["id"], None, "researcher")
    assert child["enabled"] == 0 and child["next_run_at"] is None  # ran once; never due again
    (run,) = runs_of(db, child["id"])
    (dispatch,) = db("SELECT dispatch_kind, status FROM job_dispatch_queue WHERE job_id = ?", (child["id"],))
    assert run["status"] == "ok" and dispatch == {"dispatch_kind": "manual", "status": "done"}
    (parent_run,) = runs_of(db, parent["id"])
    message = message_row(db, created["message_id"])
    assert (message["job_id"], message["run_id"], message["status"]) == (
        parent["id"], parent_run["id"], "delivered")
    assert out.read_text() == "child\n"


def test_spawns_survive_a_sigkill_without_being_lost_or_doubled(cli, daemon, db, tmp_path: Path) -> None:
    out = tmp_path / "out"
    count = 30
    sent = [send_spawn(cli, {"name": f"spawn-{i}", "session_target": "shell", "delete_after_run": False,
                             "payload_message": appending(out, str(i))}) for i in range(count)]
    first = daemon()
    first.wait_for_event("spawn.created")
    first.stop(signal.SIGKILL)
    second = daemon()

    def settled() -> bool:
        pending = db("SELECT COUNT(*) AS n FROM messages WHERE kind = 'spawn' AND status = 'pending'")
        runs = db("SELECT status FROM runs")
        return pending[0]["n"] == 0 and len(runs) >= count and all(r["status"] in TERMINAL for r in runs)

    wait_until(settled, timeout=30, message="every spawn answered and run")
    assert second.stop() == 0
    jobs = db("SELECT id, name FROM jobs ORDER BY name")
    assert sorted(j["name"] for j in jobs) == sorted(f"spawn-{i}" for i in range(count))
    spawned = {json.loads(message_row(db, m["id"])["metadata"])["spawned_job_id"] for m in sent}
    assert spawned == {j["id"] for j in jobs}
    for job in jobs:
        (run,) = runs_of(db, job["id"])  # one run each: a crashed one is not replayed (at-most-once)
        assert run["status"] in ("ok", "crashed")
    lines = out.read_text().split()
    assert len(lines) == len(set(lines)) <= count
    assert db("SELECT COUNT(*) AS n FROM messages WHERE reply_to IS NOT NULL") == [{"n": 0}]


def test_an_agent_spawn_runs_on_the_recipient_and_a_rejection_reaches_the_senders_prompt(
        cli, daemon, db, db_path: Path, fake_gateway: FakeGateway) -> None:
    d = daemon(env={**NO_IDLE_POLL, "OPENCLAW_GATEWAY_URL": fake_gateway.url})
    message = send_spawn(cli, {"name": "look", "payload_message": "Look into the outage"},
                         "--to", "researcher")
    (chat,) = fake_gateway.wait_for_requests(CHAT, 1, timeout=20)
    assert chat.headers["x-openclaw-agent-id"] == "researcher"
    assert chat.body["messages"][0]["content"].endswith("\n\nLook into the outage")
    created = d.wait_for_event("spawn.created", lambda e: e["message_id"] == message["id"])
    finished = d.wait_for_event("run.finished", lambda e: e["job_id"] == created["job_id"], timeout=20)
    assert finished["status"] == "ok" and finished["delivery"] is None  # delivery_mode none
    bad = _write_like_another_program(db_path, "planner",
                                      '{"payload_message": "x", "schedule_cron": "@often"}')
    d.wait_for_event("spawn.rejected", lambda e: e["message_id"] == bad)
    add_job(cli, json.dumps({"name": "plan", "payload_message": "Plan the day", "agent_id": "planner",
                             "run_timeout_ms": 30000, "origin": "system", "delivery_mode": "none",
                             "delivery_opt_out_reason": "test"}), "--in", "1s")
    chats = fake_gateway.wait_for_requests(CHAT, 2, timeout=20)
    prompt = chats[1].body["messages"][0]["content"]
    assert chats[1].headers["x-openclaw-agent-id"] == "planner"
    assert "Spawn rejected: " in prompt and "@often" in prompt
