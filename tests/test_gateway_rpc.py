"""The WebSocket RPC client (gateway/rpc.py) against the fake gateway's control plane."""

from __future__ import annotations

import asyncio
import socket
import uuid
from collections.abc import AsyncIterator

import pytest

from fakegateway import FakeGateway, fake_gateway  # noqa: F401  (the fixture)
from fakerpc import RpcReply, RpcRequest, RunScript
from scheduler.errors import ConfigError
from scheduler.gateway.client import GatewayError, GatewayTimeout, GatewayUnavailable
from scheduler.gateway.rpc import (
    GatewayAuthRefused,
    GatewayProtocolError,
    GatewayRpc,
    GatewayRpcError,
    message_text,
    websocket_url,
)

TOKEN = "rpc-secret-token-123"


@pytest.fixture
async def rpc(fake_gateway: FakeGateway) -> AsyncIterator[GatewayRpc]:  # noqa: F811
    fake_gateway.token = TOKEN
    async with GatewayRpc(fake_gateway.url, TOKEN) as client:
        yield client


def _key() -> str:
    return f"agent:main:subagent:{uuid.uuid4()}"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_the_websocket_url_keeps_host_port_and_drops_credentials() -> None:
    assert websocket_url("http://127.0.0.1:18789") == "ws://127.0.0.1:18789/"
    assert websocket_url("https://user:pw@gw.example:8443/base") == "wss://gw.example:8443/base"
    with pytest.raises(ConfigError) as caught:
        websocket_url("ftp://user:hunter2@host")
    assert "hunter2" not in str(caught.value)


def test_message_text_accepts_strings_and_text_parts() -> None:
    assert message_text("plain") == "plain"
    assert message_text([{"type": "text", "text": "a"}, {"type": "image", "url": "x"},
                         {"type": "text", "text": "b"}]) == "ab"
    assert message_text(None) == ""


async def test_handshake_sends_the_token_and_operator_scopes(fake_gateway: FakeGateway,  # noqa: F811
                                                             rpc: GatewayRpc) -> None:
    assert rpc.hello["type"] == "hello-ok"
    connect = fake_gateway.rpc.requests_for("connect")[0]
    assert connect.params["auth"] == {"token": TOKEN}
    assert connect.params["role"] == "operator" and "operator.write" in connect.params["scopes"]
    assert connect.params["minProtocol"] == connect.params["maxProtocol"] == 4
    assert TOKEN not in repr(rpc)


async def test_a_wrong_token_is_an_auth_error_without_the_token(fake_gateway: FakeGateway) -> None:  # noqa: F811
    fake_gateway.token = TOKEN
    with pytest.raises(GatewayAuthRefused) as caught:
        async with GatewayRpc(fake_gateway.url, "wrong-token-456"):
            pass
    assert caught.value.code == "UNAUTHORIZED"
    assert "wrong-token-456" not in str(caught.value)


async def test_an_unreachable_port_is_gateway_unavailable() -> None:
    with pytest.raises(GatewayUnavailable):
        await GatewayRpc(f"http://127.0.0.1:{_free_port()}", TOKEN).connect()


async def test_a_gateway_that_never_challenges_times_out_the_handshake(
        fake_gateway: FakeGateway) -> None:  # noqa: F811
    fake_gateway.rpc.challenge = False
    with pytest.raises(GatewayTimeout):
        await GatewayRpc(fake_gateway.url, None, handshake_timeout_s=0.5).connect()


async def test_an_agent_turn_runs_and_its_reply_is_read_back(fake_gateway: FakeGateway,  # noqa: F811
                                                             rpc: GatewayRpc) -> None:
    key = _key()
    run_id, session_key = await rpc.start_agent_turn("do it", key, label="job 7", timeout_s=60,
                                                     idempotency_key="idem-1")
    assert session_key == key
    sent = fake_gateway.rpc.requests_for("agent")[0].params
    assert sent == {"message": "do it", "sessionKey": key, "idempotencyKey": "idem-1", "deliver": False,
                    "lane": "subagent", "label": "job 7", "timeout": 60}
    status = await rpc.wait_run(run_id, timeout_ms=5000)
    assert status.status == "ok" and status.finished and status.ended_at is not None
    history = await rpc.chat_history(key)
    assert [(m.role, m.text) for m in history] == [("user", "do it"), ("assistant", "CANNED-REPLY")]
    assert await rpc.last_assistant_text(key) == "CANNED-REPLY"
    assert len(await rpc.chat_history(key, limit=1)) == 1


async def test_overloaded_runs_report_their_error_then_one_succeeds(fake_gateway: FakeGateway,  # noqa: F811
                                                                    rpc: GatewayRpc) -> None:
    fake_gateway.rpc.script_runs(RunScript.failed(), RunScript.failed(), RunScript.ok("finally"))
    outcomes = []
    for attempt in range(3):
        run_id, key = await rpc.start_agent_turn("x", _key(), idempotency_key=f"k{attempt}")
        outcomes.append(((await rpc.wait_run(run_id, 5000)).error, await rpc.last_assistant_text(key)))
    assert [error for error, _ in outcomes[:2]] == ["529 overloaded: the provider is overloaded"] * 2
    assert outcomes[2] == (None, "finally")


async def test_a_hanging_run_waits_out_then_is_aborted(fake_gateway: FakeGateway,  # noqa: F811
                                                       rpc: GatewayRpc) -> None:
    fake_gateway.rpc.script_runs(RunScript.hang())
    key = _key()
    run_id, _ = await rpc.start_agent_turn("x", key, idempotency_key="hang")
    assert (await rpc.wait_run(run_id, 200)).status == "timeout"
    assert [s.status for s in await rpc.list_sessions() if s.key == key] == ["running"]
    waiting = asyncio.create_task(rpc.wait_run(run_id, 20_000))  # abort goes on the same socket
    await asyncio.to_thread(fake_gateway.rpc.wait_for_request, "agent.wait", 2)
    assert (await rpc.abort_session(key))["abortedRunId"] == run_id
    status = await waiting
    assert (status.status, status.stop_reason) == ("error", "rpc") and status.finished
    assert [s.status for s in await rpc.list_sessions() if s.key == key] == ["killed"]
    assert fake_gateway.rpc.requests_for("sessions.abort")[0].params == {"key": key}


async def test_steering_a_session_starts_a_run_there(fake_gateway: FakeGateway,  # noqa: F811
                                                     rpc: GatewayRpc) -> None:
    key = _key()
    await rpc.start_agent_turn("first", key, idempotency_key="s1")
    run_id = await rpc.send_to_session(key, "change course")
    assert run_id and fake_gateway.rpc.run(run_id).session_key == key
    assert [m.text for m in await rpc.chat_history(key) if m.role == "user"] == ["first", "change course"]
    with pytest.raises(GatewayRpcError) as caught:
        await rpc.send_to_session("agent:main:subagent:nope", "hi")
    assert caught.value.code == "INVALID_REQUEST" and caught.value.method == "sessions.send"


async def test_sessions_are_listed_as_typed_records_with_activity(fake_gateway: FakeGateway,  # noqa: F811
                                                                  rpc: GatewayRpc) -> None:
    key = _key()
    await rpc.start_agent_turn("x", key, label="lbl", idempotency_key="l1")
    before = next(s for s in await rpc.list_sessions(active_minutes=5) if s.key == key)
    assert (before.classification, before.label, before.status) == ("subagent", "lbl", "done")
    fake_gateway.rpc.touch_session(key, tokens=500)
    after = next(s for s in await rpc.list_sessions(active_minutes=5) if s.key == key)
    assert after.total_tokens == (before.total_tokens or 0) + 500
    assert after.updated_at is not None and before.updated_at is not None
    assert after.updated_at >= before.updated_at
    assert fake_gateway.rpc.requests_for("sessions.list")[0].params == {"activeMinutes": 5}


async def test_a_system_event_is_delivered(fake_gateway: FakeGateway, rpc: GatewayRpc) -> None:  # noqa: F811
    await rpc.system_event("wake up")
    assert fake_gateway.rpc.system_events == [{"text": "wake up", "mode": "now"}]


async def test_interleaved_events_are_skipped_and_kept(fake_gateway: FakeGateway,  # noqa: F811
                                                       rpc: GatewayRpc) -> None:
    fake_gateway.rpc.on("wake", lambda request: RpcReply(
        {"woke": True}, events=[("tick", {"n": 1}), ("agent", {"n": 2})]))
    assert await rpc.call("wake", {}) == {"woke": True}
    assert [e.event for e in rpc.events][-2:] == ["tick", "agent"]


async def test_concurrent_calls_get_their_own_answers(fake_gateway: FakeGateway,  # noqa: F811
                                                      rpc: GatewayRpc) -> None:
    def echo(request: RpcRequest) -> RpcReply:
        delay = 0.3 if request.params["n"] == 0 else 0.0  # the first answer comes last
        return RpcReply({"n": request.params["n"]}, delay_s=delay)

    fake_gateway.rpc.on("echo", echo)
    answers = await asyncio.gather(*(rpc.call("echo", {"n": n}) for n in range(5)))
    assert [a["n"] for a in answers] == list(range(5))


async def test_an_rpc_error_carries_code_and_retry_hint(fake_gateway: FakeGateway,  # noqa: F811
                                                        rpc: GatewayRpc) -> None:
    fake_gateway.rpc.on("wake", lambda request: RpcReply.fail(
        "UNAVAILABLE", f"busy {TOKEN}", retryable=True, retryAfterMs=1500))
    with pytest.raises(GatewayRpcError) as caught:
        await rpc.call("wake", {})
    error = caught.value
    assert (error.code, error.retryable, error.retry_after_s) == ("UNAVAILABLE", True, 1.5)
    assert TOKEN not in str(error) and "[redacted]" in str(error)


async def test_a_call_without_an_answer_times_out_and_the_connection_stays_usable(
        fake_gateway: FakeGateway, rpc: GatewayRpc) -> None:  # noqa: F811
    fake_gateway.rpc.on("wake", lambda request: RpcReply(silent=True))
    with pytest.raises(GatewayTimeout):
        await rpc.call("wake", {}, timeout_s=0.3)
    await rpc.system_event("still here")
    assert fake_gateway.rpc.system_events[-1]["text"] == "still here"


@pytest.mark.parametrize("raw", ["{not json", '{"type": "weird"}', "[1, 2]"])
async def test_a_frame_outside_the_protocol_is_a_protocol_error(fake_gateway: FakeGateway,  # noqa: F811
                                                                rpc: GatewayRpc, raw: str) -> None:
    fake_gateway.rpc.on("wake", lambda request: RpcReply(raw=raw))
    with pytest.raises(GatewayProtocolError):
        await rpc.call("wake", {})
    with pytest.raises(GatewayProtocolError):  # the connection is closed for good
        await rpc.system_event("after")


async def test_an_oversized_frame_is_refused(fake_gateway: FakeGateway) -> None:  # noqa: F811
    fake_gateway.rpc.on("wake", lambda request: RpcReply({"blob": "x" * 5000}))
    async with GatewayRpc(fake_gateway.url, None, max_frame_bytes=4096) as client:
        with pytest.raises(GatewayProtocolError) as caught:
            await client.call("wake", {})
    assert "4096" in str(caught.value)


async def test_a_gateway_going_down_fails_calls_in_flight(fake_gateway: FakeGateway,  # noqa: F811
                                                          rpc: GatewayRpc) -> None:
    fake_gateway.rpc.on("wake", lambda request: RpcReply(silent=True))
    pending = asyncio.create_task(rpc.call("wake", {}, timeout_s=30))
    await asyncio.to_thread(fake_gateway.rpc.wait_for_request, "wake")
    await asyncio.to_thread(fake_gateway.down)
    with pytest.raises(GatewayUnavailable) as caught:
        await pending
    assert caught.value.may_have_started
    assert isinstance(caught.value, GatewayError)
