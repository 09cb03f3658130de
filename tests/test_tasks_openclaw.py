"""Task groups through the REAL OpenClaw gateway: a group the dead-man switch finishes is announced
to the (fake) Telegram chat, and a gateway session registered for an agent keeps it alive (the
real gateway lists it under its agent-scoped key, with ``kind: "other"``)."""

from __future__ import annotations

import json
import uuid

import httpx
import pytest

from conftest import query, wait_until
from openclaw_peer import OpenClawPeer, openclaw_gateway  # noqa: F401  (the fixture)

pytestmark = [pytest.mark.openclaw, pytest.mark.slow]

CHAT_ID = "987654321"


def test_a_task_group_notice_reaches_telegram_and_a_live_session_keeps_its_agent(
    cli, daemon, db_path, openclaw_gateway: OpenClawPeer  # noqa: F811
) -> None:
    marker = f"tg-{uuid.uuid4().hex[:8]}"
    # A session the gateway knows: one chat turn, as the scheduler makes them.
    key = openclaw_gateway.new_session_key()
    with httpx.Client(base_url=openclaw_gateway.url, timeout=120) as client:
        turn = client.post("/v1/chat/completions", headers=openclaw_gateway.headers(key),
                           json={"model": "openclaw:main", "stream": False,
                                 "messages": [{"role": "user", "content": f"hello {marker}"}]})
    assert turn.status_code == 200, turn.text

    def create(spec: dict[str, object]) -> str:
        code, out, stdout, stderr = cli("tasks", "create", json.dumps(spec))
        assert code == 0, stdout + stderr
        return str(out["group"]["id"])

    silent = create({"name": f"fanout {marker}", "expected_agents": ["worker"], "timeout_s": 1,
                     "delivery_channel": "telegram", "delivery_to": CHAT_ID})
    watched = create({"name": f"watched {marker}", "expected_agents": ["alive", "quiet"],
                      "timeout_s": 6})
    # Registered without the agent scope, as an orchestrator that spawned it would know it.
    assert cli("tasks", "register-session", watched, "alive", key.split(":", 2)[2])[0] == 0
    daemon(env=openclaw_gateway.daemon_env(SCHEDULER_MESSAGE_DELIVERY_MS="5000"))

    expected = f'[FAILED] Task group "fanout {marker}" timed_out\n\n[DEAD] worker: timed out'
    sent = openclaw_gateway.wait_for(
        lambda: [m for m in openclaw_gateway.telegram_messages()
                 if str(m.get("chat_id")) == CHAT_ID and m.get("text") == expected],
        timeout=90, message="the task group's notice reached the Telegram chat",
    )
    assert sent
    wait_until(lambda: query(db_path, "SELECT status FROM task_tracker WHERE id = ?",
                             (silent,))[0]["status"] == "timed_out", timeout=10)

    def state(label: str) -> dict[str, object]:
        return query(db_path, "SELECT * FROM task_tracker_agents WHERE tracker_id = ? "
                     "AND agent_label = ?", (watched, label))[0]

    wait_until(lambda: state("quiet")["status"] == "dead", timeout=60)
    assert state("alive")["status"] == "running", state("alive")
