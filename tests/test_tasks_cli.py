"""``tasks`` and ``team`` through the real CLI on a real database: both key styles of ``tasks
create``, the reference's shapes, heartbeats that finish a group and record its notice, and bad
input refused in one line with nothing written."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from conftest import CliResult

Cli = Callable[..., CliResult]
Query = Callable[..., list[dict[str, Any]]]

SNAKE = {"name": "nightly fanout", "expected_agents": ["a", "b"], "timeout_s": 900,
         "created_by": "planner", "delivery_channel": "telegram", "delivery_to": "@ops"}
CAMEL = {"name": "nightly fanout", "expectedAgents": ["a", "b"], "timeoutS": 900,
         "createdBy": "planner", "deliveryChannel": "telegram", "deliveryTo": "@ops"}


def create(cli: Cli, spec: dict[str, Any]) -> str:
    code, out, stdout, stderr = cli("tasks", "create", json.dumps(spec))
    assert code == 0, stdout + stderr
    return str(out["group"]["id"])


def tables_are_empty(db: Query) -> bool:
    return all(db(f"SELECT COUNT(*) AS n FROM {t}")[0]["n"] == 0
               for t in ("task_tracker", "task_tracker_agents", "messages", "team_tasks",
                         "team_mailbox_events", "message_receipts"))


@pytest.mark.parametrize("spec", [SNAKE, CAMEL], ids=["snake_case", "camelCase"])
def test_create_takes_both_key_styles(cli: Cli, db: Query, spec: dict[str, Any]) -> None:
    code, out, _, _ = cli("tasks", "create", json.dumps(spec))
    assert code == 0 and out["ok"] is True
    group = out["group"]
    assert set(group) == {"id", "name", "status", "created_at", "created_by", "agents"}
    assert group["agents"] == [{"agent_label": "a", "status": "pending"},
                               {"agent_label": "b", "status": "pending"}]
    (row,) = db("SELECT * FROM task_tracker")
    assert (row["name"], json.loads(row["expected_agents"]), row["timeout_s"], row["created_by"],
            row["delivery_channel"], row["delivery_to"], row["status"]) == \
        ("nightly fanout", ["a", "b"], 900, "planner", "telegram", "@ops", "active")


def test_defaults_are_the_references(cli: Cli, db: Query) -> None:
    create(cli, {"name": "g", "expected_agents": ["a"]})
    (row,) = db("SELECT * FROM task_tracker")
    assert (row["timeout_s"], row["created_by"], row["delivery_channel"], row["delivery_to"]) == \
        (600, "main", None, None)


@pytest.mark.parametrize(("text", "error"), [
    ("{", "Invalid JSON"),
    ("[1]", "must be a JSON object"),
    ('{"expected_agents": ["a"]}', "name is required"),
    ('{"name": "g"}', "expected_agents must be a non-empty array"),
    ('{"name": "g", "expected_agents": []}', "expected_agents must be a non-empty array"),
    ('{"name": "g", "expected_agents": "a"}', "expected_agents must be a non-empty array"),
    ('{"name": "g", "expected_agents": ["a", ""]}', "expected_agents[1] must be 1-128"),
    ('{"name": "g", "expected_agents": ["a", 7]}', "expected_agents[1] must be a string"),
    ('{"name": "g", "expected_agents": ["a", "b", "a"]}', 'duplicate label "a"'),
    ('{"name": "g", "expected_agents": ["a"], "timeout_s": 0}', "between 1 and 604800"),
    ('{"name": "g", "expected_agents": ["a"], "timeoutS": 604801}', "between 1 and 604800"),
    ('{"name": "g", "expected_agents": ["a"], "timeout_s": "600"}', "whole number of seconds"),
    ('{"name": "g", "expected_agents": ["a"], "timeout_s": true}', "whole number of seconds"),
    ('{"name": "g", "expected_agents": ["a"], "timeout_s": 5, "timeoutS": 6}', "use one"),
    ('{"name": "g", "expected_agents": ["a"], "timeout": 5}', 'unknown task group key "timeout"'),
    ('{"name": "g\\nx", "expected_agents": ["a"]}', "name must be 1-200 printable"),
])
def test_bad_create_input_is_one_line_and_writes_nothing(cli: Cli, db: Query, text: str,
                                                         error: str) -> None:
    code, out, _, _ = cli("tasks", "create", text)
    assert code != 0 and out["ok"] is False and error in out["error"]
    code, _, stdout, stderr = cli("tasks", "create", text, json_mode=False)
    assert code != 0 and stdout == "" and stderr.count("\n") == 1 and "Traceback" not in stderr
    assert tables_are_empty(db)


def test_heartbeats_finish_the_group_and_record_its_notice(cli: Cli, db: Query) -> None:
    assert cli("alias", "add", "ops", "telegram", "ops-chat")[0] == 0
    gid = create(cli, SNAKE)
    code, out, _, _ = cli("tasks", "heartbeat", gid, "a", "running")
    assert code == 0 and out == {"ok": True, "tracker_id": gid, "agent": "a", "status": "running"}
    code, out, _, _ = cli("tasks", "heartbeat", gid, "a", "completed", "merged", "PR", "12")
    assert out == {"ok": True, "tracker_id": gid, "agent": "a", "status": "completed",
                   "message": "merged PR 12"}
    assert db("SELECT * FROM messages") == []
    code, _, stdout, _ = cli("tasks", "heartbeat", gid, "b", "failed", json_mode=False)
    assert code == 0 and stdout == "Heartbeat recorded: b -> failed; task group failed\n"
    (notice,) = db("SELECT * FROM messages")
    assert notice["to_agent"] == "@outbound" and notice["status"] == "pending"
    assert (notice["channel"], notice["delivery_to"]) == ("telegram", "ops-chat")  # the alias's
    assert notice["body"] == ('[FAILED] Task group "nightly fanout" failed\n\n'
                              "[ok] a: merged PR 12\n[FAILED] b: failed")
    code, status, _, _ = cli("tasks", "status", gid)
    assert status["status"] == "failed" and status["summary"] == "[ok] a: merged PR 12\n[FAILED] b: failed"
    assert [(a["label"], a["status"]) for a in status["agents"]] == [("a", "completed"), ("b", "failed")]
    assert set(status) >= {"id", "name", "agents", "elapsed", "remaining_timeout",
                           "delivery_channel", "delivery_to", "notice"}
    assert status["notice"]["message_id"] == notice["id"]
    code, history, _, _ = cli("tasks", "history")
    assert [g["id"] for g in history] == [gid]
    code, active, _, _ = cli("tasks", "list")
    assert active == []
    code, out, _, _ = cli("tasks", "heartbeat", gid, "a", "running")
    assert code != 0 and "takes no more reports" in out["error"]


def test_status_of_an_active_group_has_the_references_shape(cli: Cli) -> None:
    gid = create(cli, {"name": "g", "expected_agents": ["b", "a"], "timeout_s": 60})
    code, out, _, _ = cli("tasks", "register-session", gid, "a", "agent:main:subagent:x")
    assert out == {"ok": True, "tracker_id": gid, "agent": "a", "session_key": "agent:main:subagent:x"}
    code, status, _, _ = cli("tasks", "status", gid)
    assert code == 0
    assert [a["label"] for a in status["agents"]] == ["a", "b"]
    a, b = status["agents"]
    assert a["status"] == "running" and a["session_key"] == "agent:main:subagent:x"
    assert "last_heartbeat" in a and "session_key" not in b and b["duration"] is None
    assert status["remaining_timeout"] == 60 - status["elapsed"]
    assert "summary" not in status and status["delivery_to"] is None
    assert status["notice"].startswith("none: the group has no delivery target")
    code, _, stdout, _ = cli("tasks", "status", gid, json_mode=False)
    assert "Task Group: g" in stdout and "[..] a: running" in stdout and "Notice:     none" in stdout
    code, groups, _, _ = cli("tasks", "list")
    assert [g["id"] for g in groups] == [gid]


@pytest.mark.parametrize(("args", "error"), [
    (("tasks", "status", "nope"), "Task group not found: nope"),
    (("tasks", "heartbeat", "nope", "a", "running"), "Task group not found: nope"),
    (("tasks", "heartbeat", "{gid}", "zz", "running"), "'zz' is not in task group"),
    (("tasks", "heartbeat", "{gid}", "a", "dead"), 'Unknown status: "dead"'),
    (("tasks", "heartbeat", "{gid}", "a"), "Usage: tasks heartbeat"),
    (("tasks", "register-session", "{gid}", "zz", "key"), "'zz' is not in task group"),
    (("tasks", "register-session", "{gid}", "a"), "Usage: tasks register-session"),
    (("tasks", "history", "0"), "limit must be >= 1"),
    (("tasks", "bogus"), "unknown subcommand 'bogus' for tasks"),
])
def test_unknown_groups_labels_and_statuses_are_errors_that_write_nothing(
        cli: Cli, db: Query, args: tuple[str, ...], error: str) -> None:
    gid = create(cli, {"name": "g", "expected_agents": ["a"]})
    before = db("SELECT * FROM task_tracker_agents")
    code, out, _, _ = cli(*(arg.replace("{gid}", gid) for arg in args))
    assert code != 0 and out["ok"] is False and error in out["error"]
    assert db("SELECT * FROM task_tracker_agents") == before


def add_team_message(db_path: Path, message_id: str, **columns: Any) -> None:
    """A team message with chosen ids and times, written directly (``messages send --team`` is
    tested below)."""
    row = {"id": message_id, "from_agent": "lead", "to_agent": "writer", "body": "do it",
           "kind": "text", "team_id": "core", **columns}
    conn = sqlite3.connect(db_path)
    try:
        conn.execute(f"INSERT INTO messages ({', '.join(row)}) VALUES ({', '.join('?' * len(row))})",
                     tuple(row.values()))
        conn.commit()
    finally:
        conn.close()


def test_team_map_tasks_events_inbox_and_ack(cli: Cli, db_path: Path) -> None:
    cli("status")  # creates the database
    add_team_message(db_path, "m1", kind="task", subject="Write docs", member_id="writer",
                     created_at="2026-01-01 00:00:00")
    add_team_message(db_path, "m2", task_id="m1", kind="status", member_id="writer",
                     created_at="2026-01-01 00:00:01")
    code, out, _, _ = cli("team", "map")
    assert out == {"ok": True, "mapped": 2}
    code, tasks, _, _ = cli("team", "tasks", "core")
    assert [(t["id"], t["title"], t["status"]) for t in tasks] == [("m1", "Write docs", "open")]
    code, events, _, _ = cli("team", "events", "core", "10", "m1")
    assert sorted(e["event_type"] for e in events) == ["task_created", "task_message"]
    code, inbox, _, _ = cli("msg", "team-inbox", "core", "20", "writer")
    assert [m["id"] for m in inbox] == ["m1", "m2"]
    code, out, _, _ = cli("team", "ack", "m2", "writer", "on", "it")
    assert code == 0 and out["ok"] is True and (out["id"], out["status"]) == ("m2", "read")
    assert out["ack_at"]
    code, out, _, _ = cli("team", "ack", "nope")
    assert code != 0 and out == {"ok": False, "error": "Team message not found: nope"}
    code, out, _, _ = cli("team", "tasks", "other")
    assert out == []


def test_messages_send_writes_team_messages_the_adapter_maps(cli: Cli, db: Query) -> None:
    code, out, stdout, stderr = cli("messages", "send", "--from", "lead", "--to", "writer",
                                    "--kind", "task", "--team", "core", "--member", "writer",
                                    "--subject", "Write docs", "--body", "the manual")
    assert code == 0, stdout + stderr
    task_id = out["message"]["id"]
    assert (out["message"]["team_id"], out["message"]["member_id"]) == ("core", "writer")
    code, out, _, _ = cli("messages", "send", "--from", "writer", "--to", "lead", "--team", "core",
                          "--task", task_id, "--body", "half done")
    assert code == 0 and out["message"]["task_id"] == task_id
    assert cli("team", "map")[1] == {"ok": True, "mapped": 2}
    code, tasks, _, _ = cli("team", "tasks", "core")
    assert [(t["id"], t["title"], t["member_id"]) for t in tasks] == [(task_id, "Write docs",
                                                                       "writer")]
    code, events, _, _ = cli("team", "events", "core", "10", task_id)
    assert sorted(e["event_type"] for e in events) == ["task_created", "task_message"]


@pytest.mark.parametrize("flags", [("--member", "writer"), ("--task", "t1"), ("--team", "a\nb"),
                                   ("--team", "")])
def test_team_routing_without_a_team_or_on_two_lines_is_refused(cli: Cli, db: Query,
                                                                flags: tuple[str, str]) -> None:
    cli("status")
    code, out, _, _ = cli("messages", "send", "--from", "lead", "--body", "x",
                          *flags)
    assert code != 0 and out["ok"] is False
    assert db("SELECT COUNT(*) AS n FROM messages")[0]["n"] == 0


def test_a_gate_passes_once_its_members_report(cli: Cli, db: Query) -> None:
    code, out, _, _ = cli("team", "gate", "core", "deploy", '["writer","reviewer"]', "900",
                          "--delivery-channel", "telegram", "--delivery-to", "ops")
    assert code == 0
    gate = out["gate"]
    assert (gate["team_id"], gate["task_id"], gate["gate_status"], gate["expected_members"]) == \
        ("core", "deploy", "waiting", ["writer", "reviewer"])
    code, out, _, _ = cli("team", "check-gates")
    assert out == {"passed": 0, "failed": 0, "pending": 1}
    for member in ("writer", "reviewer"):
        cli("tasks", "heartbeat", gate["tracker_id"], member, "completed")
    code, out, _, _ = cli("team", "check-gates")
    assert out == {"passed": 1, "failed": 0, "pending": 0}
    (notice,) = db("SELECT body FROM messages WHERE to_agent = '@outbound'")
    assert notice["body"].startswith('[ok] Task group "team:core:task:deploy" completed')


@pytest.mark.parametrize(("args", "error"), [
    (("team", "gate", "core", "deploy", "nope"), "Invalid JSON"),
    (("team", "gate", "core", "deploy", "[]"), "members must be a non-empty array"),
    (("team", "gate", "core", "deploy", '["a","a"]'), 'duplicate label "a"'),
    (("team", "gate", "core", "deploy", '["a"]', "0"), "timeout-s must be >= 1"),
    (("team", "gate", "core", "deploy", '["a"]', "604801"), "timeout-s must be <= 604800"),
    (("team", "gate", "core"), "Usage: team gate"),
    (("team", "tasks"), "usage: openclaw-scheduler team tasks"),
    (("msg", "team-inbox"), "usage: openclaw-scheduler msg team-inbox"),
    (("team", "map", "x"), "limit must be a whole number"),
])
def test_bad_team_input_is_refused_and_writes_nothing(cli: Cli, db: Query, args: tuple[str, ...],
                                                      error: str) -> None:
    cli("status")  # creates the database
    code, out, _, _ = cli(*args)
    assert code != 0 and out["ok"] is False and error in out["error"]
    assert tables_are_empty(db)
