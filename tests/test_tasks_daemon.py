"""Task groups and team gates with the real daemon and the loopback gateway as the chat channel:
the dead-man switch finishes a silent group and its notice reaches the chat; a group finished by
heartbeats from the CLI is announced at once; team gates pass and fail with their notices; the
gateway's sub-agent sessions keep a registered agent alive, whatever shape the reply takes."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from conftest import CliResult, DaemonFactory, wait_until
from fakegateway import FakeGateway, RecordedRequest, Reply
from test_tasks_cli import add_team_message

Cli = Callable[..., CliResult]
Query = Callable[..., list[dict[str, Any]]]
# The tracker's cadence at its minimum (SCHEDULER_MESSAGE_DELIVERY_MS >= 5000).
FAST = {"SCHEDULER_MESSAGE_DELIVERY_MS": "5000"}
# A cadence far beyond any wait below: what happens in time is due to the write notice.
SLOW = {"SCHEDULER_MESSAGE_DELIVERY_MS": "600000"}


def create(cli: Cli, **spec: Any) -> str:
    code, out, stdout, stderr = cli("tasks", "create", json.dumps(spec))
    assert code == 0, stdout + stderr
    return str(out["group"]["id"])


def agents(db: Query, gid: str) -> dict[str, dict[str, Any]]:
    return {a["agent_label"]: a for a in
            db("SELECT * FROM task_tracker_agents WHERE tracker_id = ?", (gid,))}


def notices(gateway: FakeGateway) -> list[dict[str, Any]]:
    return [d for d in gateway.deliveries if "Task group" in d["message"]]


def test_the_dead_man_switch_notice_reaches_the_chat(cli: Cli, daemon: DaemonFactory, db: Query,
                                                    fake_gateway: FakeGateway) -> None:
    gid = create(cli, name="nightly fanout", expected_agents=["a", "b"], timeout_s=1,
                 delivery_channel="telegram", delivery_to="ops-chat")
    cli("tasks", "heartbeat", gid, "a", "completed", "all merged")
    d = daemon(env={"OPENCLAW_GATEWAY_URL": fake_gateway.url, **FAST})
    (notice,) = fake_gateway.wait_for(notices, timeout=30)
    assert (notice["channel"], notice["target"]) == ("telegram", "ops-chat")
    assert notice["message"] == ('[FAILED] Task group "nightly fanout" timed_out\n\n'
                                 "[ok] a: all merged\n[DEAD] b: timed out")
    dead = d.wait_for_event("tracker.agent_dead")
    assert (dead["tracker_id"], dead["agent"]) == (gid, "b")
    (group,) = db("SELECT * FROM task_tracker")
    assert group["status"] == "timed_out"
    assert agents(db, gid)["b"]["error"] == "Timed out (dead-man switch)"
    wait_until(lambda: db("SELECT status FROM messages")[0]["status"] == "delivered", timeout=10)
    _, status, _, _ = cli("tasks", "status", gid)
    assert status["notice"]["status"] == "delivered"


def test_a_group_finished_from_the_cli_is_announced_at_once(
        cli: Cli, daemon: DaemonFactory, fake_gateway: FakeGateway) -> None:
    gid = create(cli, name="g", expectedAgents=["a", "b"], timeoutS=600,
                 deliveryChannel="telegram", deliveryTo="ops-chat")
    daemon(env={"OPENCLAW_GATEWAY_URL": fake_gateway.url, **SLOW})
    cli("tasks", "heartbeat", gid, "a", "completed")
    assert notices(fake_gateway) == []
    cli("tasks", "heartbeat", gid, "b", "completed", "shipped")
    (notice,) = fake_gateway.wait_for(notices, timeout=15)
    assert notice["message"] == '[ok] Task group "g" completed\n\n[ok] a: done\n[ok] b: shipped'


def test_team_gates_pass_and_fail_with_notices(cli: Cli, daemon: DaemonFactory, db: Query,
                                               db_path: Path, fake_gateway: FakeGateway) -> None:
    target = ("--delivery-channel", "telegram", "--delivery-to", "team-chat")
    code, passing, _, _ = cli("team", "gate", "core", "build", '["writer"]', "600", *target)
    assert code == 0
    assert cli("team", "gate", "core", "deploy", '["deployer"]', "1", *target)[0] == 0
    add_team_message(db_path, "m1", kind="task", subject="Write docs", member_id="writer")
    daemon(env={"OPENCLAW_GATEWAY_URL": fake_gateway.url, **FAST})
    cli("tasks", "heartbeat", passing["gate"]["tracker_id"], "writer", "completed", "built")
    fake_gateway.wait_for(lambda gw: len(notices(gw)) == 2, timeout=30)
    texts = sorted(n["message"] for n in notices(fake_gateway))
    assert texts == ['[FAILED] Task group "team:core:task:deploy" timed_out\n\n'
                     "[DEAD] deployer: timed out",
                     '[ok] Task group "team:core:task:build" completed\n\n[ok] writer: built']
    wait_until(lambda: {t["id"]: t["gate_status"] for t in db("SELECT * FROM team_tasks")} ==
               {"build": "passed", "deploy": "failed", "m1": None}, timeout=30)
    events = {e["task_id"]: e["event_type"] for e in
              db("SELECT * FROM team_mailbox_events WHERE event_type LIKE 'gate_%' "
                 "AND event_type != 'gate_open'")}
    assert events == {"build": "gate_passed", "deploy": "gate_failed"}
    assert db("SELECT team_mapped_at FROM messages WHERE id = 'm1'")[0]["team_mapped_at"]


SESSION = "agent:main:subagent:worker-1"


def _shape(name: str, sessions: list[dict[str, Any]]) -> dict[str, Any]:
    if name == "content-text":  # the list only in the tool result's text
        return {"ok": True, "result": {"content": [{"type": "text", "text": json.dumps(
            {"count": len(sessions), "sessions": sessions})}]}}
    if name == "result.result.details":
        return {"ok": True, "result": {"result": {"details": {"sessions": sessions}}}}
    raise AssertionError(name)


@pytest.mark.parametrize(("shape", "registered"), [
    ("real gateway", "subagent:worker-1"),  # result.details.sessions; registered without agent:
    ("content-text", SESSION),
    ("result.result.details", SESSION),
])
def test_auto_heartbeat_keeps_a_registered_agent_alive(
        cli: Cli, daemon: DaemonFactory, db: Query, fake_gateway: FakeGateway, shape: str,
        registered: str) -> None:
    now_ms = int(time.time() * 1000)
    listed = [{"sessionKey" if shape != "real gateway" else "key": SESSION, "kind": "subagent",
               "updatedAt": now_ms, "status": "running"}]
    if shape == "real gateway":
        fake_gateway.sessions = listed
    else:
        def reply(_: RecordedRequest) -> Reply:
            return Reply(200, _shape(shape, listed))
        fake_gateway.on("tool:sessions_list", reply)
    gid = create(cli, name="g", expected_agents=["alive", "quiet"], timeout_s=6)
    cli("tasks", "register-session", gid, "alive", registered)
    registered_at = agents(db, gid)["alive"]["last_heartbeat"]
    daemon(env={"OPENCLAW_GATEWAY_URL": fake_gateway.url, **FAST})
    wait_until(lambda: agents(db, gid)["quiet"]["status"] == "dead", timeout=40)
    alive = agents(db, gid)["alive"]
    assert alive["status"] == "running"
    assert alive["last_heartbeat"] > registered_at
    request = fake_gateway.requests_to("/tools/invoke", tool="sessions_list")[0]
    assert request.body["args"] == {"messageLimit": 0, "activeMinutes": 10, "limit": 200}
