"""Through the REAL OpenClaw gateway: ``webhook-check`` reads its Telegram channel (the peer runs a
fake Bot API, in polling mode), and a main-session system-event job's turn lands in the agent's
main session with the reference's prompt header (features.md §4.3)."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import pytest

from conftest import query, wait_until
from openclaw_peer import OpenClawPeer, openclaw_gateway  # noqa: F401  (the fixture)
from scheduler.gateway.rpc import ChatMessage, GatewayRpc, SessionRecord

pytestmark = [pytest.mark.openclaw, pytest.mark.slow]


def test_webhook_check_reports_the_peers_polling_channel_connected(
        cli: Any, openclaw_gateway: OpenClawPeer) -> None:  # noqa: F811
    env = openclaw_gateway.daemon_env(TELEGRAM_BOT_TOKEN="", TELEGRAM_WEBHOOK_URL="")
    code, report, stdout, stderr = cli("webhook-check", env=env, timeout=90)
    assert code == 0, stdout + stderr
    assert report["status"] == "OK", report
    channel = report["channel"]
    assert (channel["configured"], channel["running"], channel["connected"]) == (True, True, True)
    assert channel["mode"] == "polling" and channel["probe_ok"] is True
    assert report["gateway"] == {"ok": True}
    code, report, _, _ = cli("webhook-check", "--require-webhook", env=env, timeout=90)
    assert code == 1 and report["issues"] == ["webhook_missing (mode=polling)"]
    assert openclaw_gateway.token not in json.dumps(report)


async def _main_session(peer: OpenClawPeer) -> tuple[list[SessionRecord], list[ChatMessage]]:
    async with GatewayRpc(peer.url, peer.token) as rpc:
        return await rpc.list_sessions(), await rpc.chat_history("agent:main:main")


def test_a_main_session_system_event_job_turns_in_the_agents_main_session(
        cli: Any, daemon: Any, db_path: Any, openclaw_gateway: OpenClawPeer) -> None:  # noqa: F811
    marker = f"main-{uuid.uuid4().hex[:8]}"
    spec = {"name": f"morning note {marker}", "session_target": "main", "agent_id": "main",
            "payload_kind": "systemEvent", "payload_message": f"Note the time ({marker})",
            "run_timeout_ms": 120000, "delivery_mode": "none", "delivery_opt_out_reason": "test",
            "origin": "system", "delete_after_run": 0}
    d = daemon(env=openclaw_gateway.daemon_env())
    code, out, stdout, stderr = cli("jobs", "add", json.dumps(spec), "--in", "1s")
    assert code == 0, stdout + stderr
    job = out["job"]
    run = wait_until(
        lambda: [r for r in query(db_path, "SELECT * FROM runs WHERE job_id = ?", (job["id"],))
                 if r["status"] != "running"],
        timeout=150, message="the main-session run finished")[0]
    assert run["status"] == "ok", run
    assert run["session_key"] == "agent:main:main"
    assert run["summary"] == openclaw_gateway.reply

    sessions, history = asyncio.run(_main_session(openclaw_gateway))
    (main,) = [s for s in sessions if s.key == "agent:main:main"]
    assert main.classification == "main"
    header = f"[scheduler:{job['id']} morning note {marker}]"
    prompts = [m.text for m in history if m.role == "user" and marker in m.text]
    assert prompts and prompts[-1].startswith(header), prompts
    replies = [m.text for m in history if m.role == "assistant"]
    assert openclaw_gateway.reply in replies
    assert d.stop() == 0
