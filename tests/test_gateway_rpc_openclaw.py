"""The WebSocket RPC client (gateway/rpc.py) against the REAL OpenClaw gateway: a sub-agent turn
is started, waited for, read back and steered; system events and the session list work."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from openclaw_peer import OpenClawPeer, openclaw_gateway  # noqa: F401  (the fixture)
from scheduler.gateway.rpc import GatewayAuthRefused, GatewayRpc

pytestmark = [pytest.mark.openclaw, pytest.mark.slow]

WAIT_MS = 120_000


async def _wait_for_user_text(rpc: GatewayRpc, key: str, text: str) -> list[str]:
    for _ in range(120):
        users = [m.text for m in await rpc.chat_history(key) if m.role == "user"]
        if any(text in t for t in users):
            return users
        await asyncio.sleep(0.5)
    raise AssertionError(f"{text!r} never reached the transcript of {key}")


async def test_a_subagent_turn_is_started_waited_for_read_and_steered(
        openclaw_gateway: OpenClawPeer) -> None:  # noqa: F811
    key = f"agent:main:subagent:{uuid.uuid4()}"
    marker = f"rpc-{uuid.uuid4().hex[:8]}"
    async with GatewayRpc(openclaw_gateway.url, openclaw_gateway.token) as rpc:
        run_id, session_key = await rpc.start_agent_turn(
            f"hello {marker}", key, label=f"rpc test {marker}", timeout_s=120,
            idempotency_key=str(uuid.uuid4()))
        assert session_key == key
        status = await rpc.wait_run(run_id, WAIT_MS)
        assert status.status == "ok", status.raw
        assert await rpc.last_assistant_text(key) == openclaw_gateway.reply

        listed = [s for s in await rpc.list_sessions(active_minutes=10) if s.key == key]
        assert listed and listed[0].classification == "subagent"

        steer_run = await rpc.send_to_session(key, f"steer {marker}")
        assert steer_run
        await rpc.wait_run(steer_run, WAIT_MS)
        assert any(f"steer {marker}" in t for t in await _wait_for_user_text(rpc, key, f"steer {marker}"))

        await rpc.system_event(f"system event {marker}")
        assert "agent.wait" in rpc.hello["features"]["methods"]


async def test_a_wrong_token_is_refused_by_the_real_gateway(openclaw_gateway: OpenClawPeer) -> None:  # noqa: F811
    with pytest.raises(GatewayAuthRefused) as caught:
        async with GatewayRpc(openclaw_gateway.url, "not-the-token-" + uuid.uuid4().hex):
            pass
    assert "not-the-token" not in str(caught.value)


async def test_a_long_turn_is_aborted(openclaw_gateway: OpenClawPeer) -> None:  # noqa: F811
    key = f"agent:main:subagent:{uuid.uuid4()}"
    async with GatewayRpc(openclaw_gateway.url, openclaw_gateway.token) as rpc:
        run_id, _ = await rpc.start_agent_turn("take your time [[fake:sleep:120]]", key, timeout_s=300,
                                               idempotency_key=str(uuid.uuid4()))
        assert (await rpc.wait_run(run_id, 1500)).status == "timeout"
        assert (await rpc.abort_session(key))["abortedRunId"] == run_id
        status = await rpc.wait_run(run_id, 30_000)
        assert status.finished and status.status == "error", status.raw
        assert [s.status for s in await rpc.list_sessions(active_minutes=10) if s.key == key] == ["killed"]
