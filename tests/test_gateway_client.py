"""GatewayClient against the fake gateway over real HTTP on 127.0.0.1 (no httpx mocking)."""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import socket
import time
import tracemalloc
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path
from typing import Any

import pytest

from fakegateway import CHAT, HEALTH, INVOKE, FakeGateway, RecordedRequest, Reply, fake_gateway
from scheduler.errors import ConfigError, SchedulerError, ValidationError
from scheduler.gateway.client import (
    HEALTH_TIMEOUT_S,
    MAX_REPLY_BYTES,
    ChatReply,
    GatewayBusy,
    GatewayClient,
    GatewayError,
    GatewayRejected,
    GatewayTimeout,
    GatewayUnavailable,
    canonical_session_key,
    gateway_error_message,
    normalise_sessions,
    parse_retry_after,
    resolve_token,
)

__all__ = ["fake_gateway"]  # a fixture, imported for pytest to find by name

TOKEN = "tok-9f8e7d6c5b4a-SECRET"
MiB = 1024 * 1024


@pytest.fixture
async def client(fake_gateway: FakeGateway) -> AsyncIterator[GatewayClient]:
    gw = GatewayClient(fake_gateway.url, None)
    yield gw
    await gw.aclose()


@pytest.fixture
def secured() -> Iterator[FakeGateway]:
    with FakeGateway(token=TOKEN) as gateway:
        yield gateway


async def _chat(client: GatewayClient, **overrides: Any) -> ChatReply:
    kwargs: dict[str, Any] = {"message": "hello", "agent_id": "main",
                              "session_key": "agent:main:scheduler:job-1", "timeout_s": 5}
    kwargs.update(overrides)
    return await client.chat(**kwargs)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# -- request shape -------------------------------------------------------------------------------


async def test_chat_sends_exact_body_and_headers_with_token(secured: FakeGateway) -> None:
    async with GatewayClient(secured.url, TOKEN) as gw:
        reply = await gw.chat(message="do the thing", agent_id="ops", session_key="agent:ops:scheduler:j1",
                              model_override="anthropic/claude-sonnet", auth_profile="anthropic:work",
                              timeout_s=5)
    assert reply.content == "CANNED-REPLY"
    [req] = secured.chats
    assert req.method == "POST"
    assert req.body == {"model": "openclaw:ops", "messages": [{"role": "user", "content": "do the thing"}],
                        "stream": False}
    assert req.headers["authorization"] == f"Bearer {TOKEN}"
    assert req.headers["x-openclaw-scopes"] == "operator.write"
    assert req.headers["x-openclaw-agent-id"] == "ops"
    assert req.headers["x-openclaw-session-key"] == "agent:ops:scheduler:j1"
    assert req.headers["x-openclaw-auth-profile"] == "anthropic:work"
    assert req.headers["x-openclaw-model"] == "anthropic/claude-sonnet"
    assert req.headers["content-type"] == "application/json"


async def test_chat_without_token_sends_no_auth_scopes_or_optional_headers(
        fake_gateway: FakeGateway, client: GatewayClient) -> None:
    await _chat(client, agent_id="")
    [req] = fake_gateway.chats
    for header in ("authorization", "x-openclaw-scopes", "x-openclaw-auth-profile", "x-openclaw-model"):
        assert header not in req.headers
    assert req.headers["x-openclaw-agent-id"] == "main"
    assert req.body["model"] == "openclaw:main"


async def test_connections_are_pooled(fake_gateway: FakeGateway, client: GatewayClient) -> None:
    await _chat(client)
    await _chat(client)
    assert await client.health()
    ports = {r.client_port for r in fake_gateway.requests}
    assert len(ports) == 1


async def test_proxy_environment_is_ignored(fake_gateway: FakeGateway,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    dead = f"http://127.0.0.1:{_free_port()}"
    for name in ("HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.setenv(name, dead)
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    async with GatewayClient(fake_gateway.url, None) as gw:
        assert (await _chat(gw)).content == "CANNED-REPLY"


async def test_redirects_are_not_followed(fake_gateway: FakeGateway, client: GatewayClient) -> None:
    fake_gateway.script(CHAT, Reply(307, "", headers={"Location": f"{fake_gateway.url}/elsewhere"}))
    with pytest.raises(GatewayRejected) as info:
        await _chat(client)
    assert info.value.status == 307
    assert len(fake_gateway.requests) == 1


# -- reply parsing -------------------------------------------------------------------------------


async def test_content_usage_model_and_sent_session_key(client: GatewayClient) -> None:
    reply = await _chat(client, session_key="agent:main:scheduler:job-9")
    assert reply == ChatReply(content="CANNED-REPLY",
                              usage={"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18},
                              session_key="agent:main:scheduler:job-9", model="openclaw:main")


async def test_session_key_from_response_header(fake_gateway: FakeGateway, client: GatewayClient) -> None:
    fake_gateway.echo_session_key = True
    reply = await _chat(client, session_key="scheduler:job-3")
    assert reply.session_key == "agent:main:scheduler:job-3"


async def test_content_as_list_of_parts(fake_gateway: FakeGateway, client: GatewayClient) -> None:
    fake_gateway.reply_content = [{"type": "text", "text": "HEARTBEAT_OK"}, {"type": "image_url"},
                                  {"type": "text", "text": " and more"}]
    assert (await _chat(client)).content == "HEARTBEAT_OK and more"


@pytest.mark.parametrize("body", [
    {"id": "x"},
    {"choices": []},
    {"choices": [{}]},
    {"choices": [{"message": {"role": "assistant"}}]},
    {"choices": [{"message": {"content": None}}], "usage": "n/a", "model": 7},
])
async def test_missing_fields_give_empty_content(fake_gateway: FakeGateway, client: GatewayClient,
                                                 body: dict[str, Any]) -> None:
    fake_gateway.script(CHAT, Reply(200, body))
    reply = await _chat(client)
    assert (reply.content, reply.usage, reply.model) == ("", None, None)


async def test_non_json_success_is_rejected(fake_gateway: FakeGateway, client: GatewayClient) -> None:
    fake_gateway.script(CHAT, Reply(200, "<html>control ui</html>"))
    with pytest.raises(GatewayRejected, match="not JSON"):
        await _chat(client)


# -- HTTP errors ---------------------------------------------------------------------------------


@pytest.mark.parametrize("token", [None, "wrong-token-value"])
async def test_401_is_rejected_with_unauthorized(secured: FakeGateway, token: str | None) -> None:
    async with GatewayClient(secured.url, token) as gw:
        with pytest.raises(GatewayRejected) as info:
            await _chat(gw)
    assert info.value.status == 401
    assert info.value.gateway_message == "Unauthorized"
    assert str(info.value).startswith("gateway rejected the agent turn (401): Unauthorized")


async def test_400_message_is_extracted(fake_gateway: FakeGateway, client: GatewayClient) -> None:
    fake_gateway.agents = {"main"}
    with pytest.raises(GatewayRejected) as info:
        await _chat(client, agent_id="ops", session_key="agent:ops:scheduler:j")
    assert str(info.value) == "gateway rejected the agent turn (400): Unknown agent 'ops'."
    assert info.value.status == 400
    assert info.value.gateway_message == "Unknown agent 'ops'."


async def test_non_json_error_body_is_cut_to_one_line(fake_gateway: FakeGateway,
                                                      client: GatewayClient) -> None:
    fake_gateway.script(CHAT, Reply(502, "upstream\nexploded " * 100))
    with pytest.raises(GatewayRejected) as info:
        await _chat(client)
    assert info.value.status == 502
    assert len(info.value.gateway_message) <= 500
    assert "\n" not in str(info.value)
    assert info.value.gateway_message.startswith("upstream exploded upstream")


@pytest.mark.parametrize("status", [429, 503, 529])
async def test_busy_statuses_with_retry_after_seconds(fake_gateway: FakeGateway, client: GatewayClient,
                                                      status: int) -> None:
    fake_gateway.script(CHAT, Reply.error(status, "slow down", "rate_limit_error",
                                          headers={"Retry-After": "7"}))
    with pytest.raises(GatewayBusy) as info:
        await _chat(client)
    assert info.value.status == status
    assert info.value.retry_after_s == 7
    assert str(info.value) == f"gateway is busy ({status}) and did not take the agent turn: slow down; " \
                              "retry after 7s"


async def test_busy_with_retry_after_http_date(fake_gateway: FakeGateway, client: GatewayClient) -> None:
    when = datetime.now(UTC) + timedelta(seconds=120)
    fake_gateway.script(CHAT, Reply.error(503, "maintenance", headers={"Retry-After": format_datetime(
        when, usegmt=True)}))
    with pytest.raises(GatewayBusy) as info:
        await _chat(client)
    assert info.value.retry_after_s is not None
    assert 110 <= info.value.retry_after_s <= 121


async def test_busy_without_usable_retry_after(fake_gateway: FakeGateway, client: GatewayClient) -> None:
    fake_gateway.script(CHAT, Reply.error(429, "later", headers={"Retry-After": "soon-ish"}))
    with pytest.raises(GatewayBusy) as info:
        await _chat(client)
    assert info.value.retry_after_s is None


@pytest.mark.parametrize("text", ["Gateway is draining for restart", "new tasks are NOT accepted"])
async def test_drain_text_in_500_is_busy(fake_gateway: FakeGateway, client: GatewayClient,
                                         text: str) -> None:
    fake_gateway.script(CHAT, Reply.error(500, text))
    with pytest.raises(GatewayBusy) as info:
        await _chat(client)
    assert info.value.status == 500
    assert "draining" in str(info.value)


async def test_drain_text_in_tool_call_is_busy(fake_gateway: FakeGateway, client: GatewayClient) -> None:
    fake_gateway.script("tool:message", Reply(500, "gateway is draining; new tasks are not accepted"))
    with pytest.raises(GatewayBusy):
        await client.send_message(text="hi", channel="telegram", target="1")


# -- transport failures --------------------------------------------------------------------------


async def test_connection_refused_is_unavailable() -> None:
    url = f"http://127.0.0.1:{_free_port()}"
    async with GatewayClient(url, TOKEN) as gw:
        with pytest.raises(GatewayUnavailable) as info:
            await _chat(gw)
        assert not await gw.health()
    message = str(info.value)
    assert message.startswith(f"cannot reach the gateway at {url} for the agent turn")
    assert "is the OpenClaw gateway running?" in message


async def test_gateway_down_then_up_again(fake_gateway: FakeGateway, client: GatewayClient) -> None:
    assert (await _chat(client)).content == "CANNED-REPLY"
    port = fake_gateway.port
    fake_gateway.down()
    with pytest.raises(GatewayUnavailable):
        await _chat(client)
    assert not await client.health()
    fake_gateway.up()
    assert fake_gateway.port == port
    assert await client.health()
    assert (await _chat(client)).content == "CANNED-REPLY"


async def test_dropped_connection_is_unavailable(fake_gateway: FakeGateway, client: GatewayClient) -> None:
    fake_gateway.script(CHAT, Reply.dropped())
    with pytest.raises(GatewayUnavailable, match="dropped the connection during the agent turn"):
        await _chat(client)
    assert (await _chat(client)).content == "CANNED-REPLY"  # the pool recovers


async def test_slow_reply_beyond_timeout(fake_gateway: FakeGateway, client: GatewayClient) -> None:
    fake_gateway.script(CHAT, Reply(200, {"choices": []}, delay_s=5))
    started = time.monotonic()
    with pytest.raises(GatewayTimeout) as info:
        await _chat(client, timeout_s=0.5)
    assert time.monotonic() - started < 2
    assert info.value.timeout_s == 0.5
    assert str(info.value) == "gateway did not finish the agent turn within 0.5s (hard timeout)"


async def test_gateway_going_down_mid_turn(fake_gateway: FakeGateway, client: GatewayClient) -> None:
    fake_gateway.script(CHAT, Reply(200, {"choices": []}, delay_s=5))
    turn = asyncio.create_task(_chat(client, timeout_s=10))
    await asyncio.to_thread(fake_gateway.wait_for_requests, CHAT)
    await asyncio.to_thread(fake_gateway.down)
    with pytest.raises(GatewayUnavailable):
        await turn


# -- health --------------------------------------------------------------------------------------


async def test_health(fake_gateway: FakeGateway, client: GatewayClient) -> None:
    assert await client.health() is True
    fake_gateway.script(HEALTH, Reply(503, {"ok": False}))
    assert await client.health() is False
    fake_gateway.script(HEALTH, Reply(200, {"ok": True}, delay_s=3))
    assert await client.health(timeout_s=0.3) is False
    [first, *_] = fake_gateway.requests_to(HEALTH)
    assert first.method == "GET"


async def test_wait_until_reachable(fake_gateway: FakeGateway, client: GatewayClient) -> None:
    fake_gateway.script(HEALTH, Reply(503, {"ok": False}))
    assert await client.wait_until_reachable(timeout_s=2, interval_s=0.1)  # any answer counts
    fake_gateway.down()
    assert not await client.wait_until_reachable(timeout_s=0.5, interval_s=0.1)
    loop = asyncio.get_running_loop()
    loop.call_later(0.3, fake_gateway.up)
    assert await client.wait_until_reachable(timeout_s=5, interval_s=0.1)


async def test_health_never_answered_is_false_within_its_documented_timeout(
        fake_gateway: FakeGateway, client: GatewayClient) -> None:
    # A gateway that accepts the connection and never answers.
    fake_gateway.script(HEALTH, Reply(200, {"ok": True}, delay_s=60))
    assert HEALTH_TIMEOUT_S <= 3
    assert await asyncio.wait_for(client.health(), timeout=60) is False


async def test_health_does_not_read_the_body(fake_gateway: FakeGateway, client: GatewayClient) -> None:
    # The status says it all: a body that promises much and never comes does not hold it up.
    fake_gateway.script(HEALTH, Reply.streamed([b"{"], content_length=100 * MiB, hold_open=True))
    assert await client.health(timeout_s=10) is True


# -- reply size ----------------------------------------------------------------------------------


def _completion_of(size: int) -> bytes:
    """A valid chat completion of exactly ``size`` bytes."""
    def encode(content: str) -> bytes:
        return json.dumps({"choices": [{"message": {"role": "assistant", "content": content}}]}).encode()

    return encode("x" * (size - len(encode(""))))


def _peak_bytes_while(call: Any) -> Any:
    """(result or exception, peak traced bytes) of awaiting ``call()``."""
    async def run() -> tuple[BaseException | None, int]:
        tracemalloc.start()
        try:
            try:
                await call()
            except BaseException as exc:  # handed to the test to judge
                error: BaseException | None = exc
            else:
                error = None
            return error, tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()

    return run()


def test_default_reply_limit_is_16_mib() -> None:
    assert MAX_REPLY_BYTES == 16 * 1024 * 1024


@pytest.mark.parametrize("declared", [True, False], ids=["content-length", "chunked"])
async def test_a_reply_of_the_limit_is_read_and_one_byte_more_fails(fake_gateway: FakeGateway,
                                                                    declared: bool) -> None:
    limit = 64 * 1024

    def reply(size: int) -> Reply:
        body = _completion_of(size)
        return Reply(200, body) if declared else Reply.streamed([body[:1000], body[1000:]])

    async with GatewayClient(fake_gateway.url, None, max_reply_bytes=limit) as gw:
        fake_gateway.script(CHAT, reply(limit), reply(limit + 1))
        assert len((await _chat(gw)).content) > limit - 100
        with pytest.raises(GatewayRejected) as info:
            await _chat(gw)
    assert str(info.value) == (
        f"gateway reply to the agent turn exceeded {limit} bytes (64 KiB), the most the scheduler "
        "reads of one reply; the rest was not read"
    )
    assert info.value.status == 200


async def test_an_endless_reply_fails_with_the_reason_and_memory_stays_bounded(
        fake_gateway: FakeGateway) -> None:
    limit = 1 * MiB
    fake_gateway.script(CHAT, Reply.streamed(itertools.repeat(b"x" * 65536)))
    async with GatewayClient(fake_gateway.url, None, max_reply_bytes=limit) as gw:
        error, peak = await _peak_bytes_while(lambda: _chat(gw, timeout_s=60))
    assert isinstance(error, GatewayRejected), error
    assert "exceeded 1048576 bytes (1 MiB)" in str(error)
    assert peak < 8 * limit, peak


async def test_a_huge_reply_stops_at_the_default_limit(fake_gateway: FakeGateway,
                                                       client: GatewayClient) -> None:
    fake_gateway.script(CHAT, Reply.streamed(itertools.repeat(b" " * 65536, 40 * 16)))  # 40 MiB
    error, peak = await _peak_bytes_while(lambda: _chat(client, timeout_s=60))
    assert isinstance(error, GatewayRejected), error
    assert "exceeded 16777216 bytes (16 MiB)" in str(error)
    assert peak < 24 * MiB, peak


async def test_a_declared_length_over_the_limit_fails_before_reading(fake_gateway: FakeGateway) -> None:
    fake_gateway.script(CHAT, Reply.streamed([b"{"], content_length=100 * MiB, hold_open=True))
    async with GatewayClient(fake_gateway.url, None, max_reply_bytes=MiB) as gw:
        with pytest.raises(GatewayRejected, match="exceeded 1048576 bytes"):
            await _chat(gw, timeout_s=30)


async def test_a_huge_tool_reply_fails_the_call(fake_gateway: FakeGateway) -> None:
    fake_gateway.script(INVOKE, Reply.streamed(itertools.repeat(b"[" * 65536)))
    async with GatewayClient(fake_gateway.url, None, max_reply_bytes=MiB) as gw:
        with pytest.raises(GatewayRejected, match="reply to the sessions_list tool call exceeded"):
            await gw.sessions_list(timeout_s=30)
        fake_gateway.script(INVOKE, Reply.streamed(itertools.repeat(b"[" * 65536)))
        with pytest.raises(GatewayRejected, match="reply to the message tool call exceeded"):
            await gw.send_message(text="hi", channel=None, target=None)


async def test_a_huge_error_reply_keeps_its_status_and_only_its_start_is_read(
        fake_gateway: FakeGateway, client: GatewayClient) -> None:
    body = b"upstream exploded " + b"x" * (40 * MiB)
    fake_gateway.script(CHAT, Reply.streamed([body[i:i + 65536] for i in range(0, len(body), 65536)],
                                             status=500))
    error, peak = await _peak_bytes_while(lambda: _chat(client, timeout_s=60))
    assert isinstance(error, GatewayRejected), error
    assert error.status == 500
    assert error.gateway_message.startswith("upstream exploded xxx")
    assert peak < 50 * MiB  # the 40 MiB body itself is held by the test; the client adds little


async def test_deeply_nested_json_is_rejected_not_raised(fake_gateway: FakeGateway,
                                                         client: GatewayClient) -> None:
    fake_gateway.script(CHAT, Reply(200, b"[" * 200_000 + b"]" * 200_000))
    with pytest.raises(GatewayRejected, match="not JSON"):
        await _chat(client)


# -- credentials in the URL ----------------------------------------------------------------------


async def test_url_credentials_go_as_basic_auth_and_never_into_the_shown_url(
        fake_gateway: FakeGateway) -> None:
    url = fake_gateway.url.replace("http://", "http://ops%40home:s3cr%2Ft-pass@")
    async with GatewayClient(url, None) as gw:
        assert "s3cr" not in repr(gw) and "s3cr" not in gw.base_url
        assert gw.base_url == fake_gateway.url
        await _chat(gw)
        assert await gw.health()
    expected = "Basic " + base64.b64encode(b"ops@home:s3cr/t-pass").decode()
    assert [r.headers.get("authorization") for r in fake_gateway.requests] == [expected, expected]


async def test_a_token_wins_over_url_credentials(secured: FakeGateway) -> None:
    url = secured.url.replace("http://", "http://ops:s3cret-pass@")
    async with GatewayClient(url, TOKEN) as gw:
        assert (await _chat(gw)).content == "CANNED-REPLY"
    assert secured.chats[0].headers["authorization"] == f"Bearer {TOKEN}"


def test_an_invalid_url_with_credentials_is_refused_without_showing_them() -> None:
    with pytest.raises(ConfigError) as info:
        GatewayClient("http://user:pa55/word@127.0.0.1:1", None)
    assert "pa55" not in str(info.value)
    assert "percent-encode" in str(info.value)
    with pytest.raises(ConfigError) as info:
        GatewayClient("ftp://user:pa55word@example", None)
    assert "pa55word" not in str(info.value)


# -- tools ---------------------------------------------------------------------------------------


async def test_sessions_list_real_shape_and_request(secured: FakeGateway) -> None:
    now_ms = int(time.time() * 1000)
    secured.sessions = [{"key": "agent:main:scheduler:a", "kind": "other", "updatedAt": now_ms},
                        {"sessionKey": "agent:main:subagent:b", "kind": "subagent", "updatedAt": now_ms}]
    async with GatewayClient(secured.url, TOKEN) as gw:
        sessions = await gw.sessions_list(kinds=["subagent"], activeMinutes=60, limit=None)
    assert sessions == [{"sessionKey": "agent:main:subagent:b", "key": "agent:main:subagent:b",
                         "kind": "subagent", "updatedAt": now_ms}]
    [req] = secured.requests_to(INVOKE)
    assert req.body == {"tool": "sessions_list", "args": {"messageLimit": 0, "kinds": ["subagent"],
                                                          "activeMinutes": 60}, "sessionKey": "main"}
    assert req.headers["authorization"] == f"Bearer {TOKEN}"
    assert "x-openclaw-scopes" not in req.headers


async def test_sessions_list_includes_chat_sessions(client: GatewayClient) -> None:
    await _chat(client, session_key="agent:main:scheduler:j7")
    sessions = await client.sessions_list(activeMinutes=60)
    assert [s["key"] for s in sessions] == ["agent:main:scheduler:j7"]


SESSIONS = [{"key": "k1", "updatedAt": 1}, {"key": "k2", "updatedAt": "2026-01-01T00:00:00Z"}]


@pytest.mark.parametrize("body", [
    {"result": {"result": {"details": {"sessions": SESSIONS}}}},
    {"ok": True, "result": {"details": {"sessions": SESSIONS}}},
    {"result": {"result": {"sessions": SESSIONS}}},
    {"result": {"sessions": SESSIONS}},
    {"details": {"sessions": SESSIONS}},
    {"sessions": SESSIONS},
    SESSIONS,
    # The tool result's text content, when no structured field holds the list (§17 #18).
    {"ok": True, "result": {"content": [{"type": "text", "text": json.dumps(
        {"count": 2, "sessions": SESSIONS}, indent=2)}]}},
    {"result": {"result": {"content": [{"type": "text", "text": json.dumps(
        {"details": {"sessions": SESSIONS}})}]}}},
    {"content": [{"type": "image", "data": "x"}, {"type": "text", "text": json.dumps(SESSIONS)}]},
])
async def test_sessions_list_every_shape(fake_gateway: FakeGateway, client: GatewayClient,
                                         body: Any) -> None:
    fake_gateway.script("tool:sessions_list", Reply(200, body))
    assert await client.sessions_list() == SESSIONS


def test_normalise_sessions_odd_input() -> None:
    assert normalise_sessions(None) == []
    assert normalise_sessions({"result": {"details": {"sessions": "nope"}}}) == []
    assert normalise_sessions([1, "x", {"key": "a"}]) == [{"key": "a"}]
    assert normalise_sessions({"result": {"content": [{"type": "text", "text": "not json"}]}}) == []
    assert normalise_sessions({"result": {"content": [{"type": "text", "text": "{\"count\": 0}"}]}}) == []


async def test_send_message_body_and_answer(fake_gateway: FakeGateway, client: GatewayClient) -> None:
    answer = await client.send_message(text="job done", channel="telegram", target="987654321")
    assert answer["ok"] is True
    assert answer["result"]["details"]["ok"] is True
    assert answer["result"]["details"]["messageId"]
    [req] = fake_gateway.requests_to(INVOKE, tool="message")
    assert req.body == {"tool": "message", "args": {"action": "send", "message": "job done",
                                                    "channel": "telegram", "target": "987654321"},
                        "sessionKey": "main"}
    [delivery] = fake_gateway.deliveries
    assert (delivery["channel"], delivery["target"], delivery["message"]) == ("telegram", "987654321",
                                                                               "job done")


async def test_send_message_without_channel_or_target(fake_gateway: FakeGateway,
                                                      client: GatewayClient) -> None:
    await client.send_message(text="hi", channel=None, target="")
    [req] = fake_gateway.requests_to(INVOKE)
    assert req.body["args"] == {"action": "send", "message": "hi"}


async def test_tool_errors(fake_gateway: FakeGateway, client: GatewayClient) -> None:
    with pytest.raises(GatewayRejected) as info:
        await client.invoke("nope_tool", {})
    assert str(info.value) == "gateway rejected the nope_tool tool call (404): Tool not available: nope_tool"
    fake_gateway.script("tool:message", Reply(200, {"ok": False, "error": {"message": "no channel"}}))
    with pytest.raises(GatewayRejected, match="no channel"):
        await client.send_message(text="hi", channel="x", target="y")


async def test_invoke_timeout(fake_gateway: FakeGateway, client: GatewayClient) -> None:
    fake_gateway.script(INVOKE, Reply(200, {"ok": True}, delay_s=3))
    with pytest.raises(GatewayTimeout, match=r"the sessions_list tool call within 0\.3s"):
        await client.sessions_list(timeout_s=0.3)


# -- token handling ------------------------------------------------------------------------------


def test_resolve_token_env_first(tmp_path: Path) -> None:
    path = tmp_path / "token"
    path.write_text("from-file\n")
    assert resolve_token("from-env", path) == "from-env"
    assert resolve_token(None, path) == "from-file"
    assert resolve_token("", path) == "from-file"


def test_resolve_token_missing_or_empty(tmp_path: Path) -> None:
    assert resolve_token(None, tmp_path / "absent") is None
    (tmp_path / "empty").write_text("  \n")
    assert resolve_token(None, tmp_path / "empty") is None


def test_resolve_token_unreadable_names_path_not_content(tmp_path: Path) -> None:
    folder = tmp_path / "token-dir"
    folder.mkdir()
    with pytest.raises(ConfigError) as info:
        resolve_token(None, folder)
    assert str(folder) in str(info.value)
    bad = tmp_path / "latin1"
    bad.write_bytes(b"secr\xe9t-value")
    with pytest.raises(ConfigError) as info2:
        resolve_token(None, bad)
    assert str(bad) in str(info2.value)
    assert "secr" not in str(info2.value)


def test_resolve_token_expands_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / ".gateway-token").write_text(TOKEN)
    assert resolve_token(None, Path("~/.gateway-token")) == TOKEN


async def test_token_never_in_exception_text_or_repr(secured: FakeGateway) -> None:
    def echo_auth(request: RecordedRequest) -> Reply:
        return Reply.error(400, f"bad header {request.headers.get('authorization')}")

    errors: list[BaseException] = []
    async with GatewayClient(secured.url, TOKEN) as gw:
        assert TOKEN not in repr(gw)
        secured.on(CHAT, echo_auth)
        secured.script(INVOKE, Reply(500, f"Authorization: Bearer {TOKEN}"),
                       Reply(429, {"error": {"message": TOKEN}}), Reply.dropped(),
                       Reply(200, f"not json {TOKEN}"), Reply(200, {"ok": True}, delay_s=2))
        for call in (lambda: _chat(gw), lambda: gw.invoke("x", {}), lambda: gw.invoke("x", {}),
                     lambda: gw.invoke("x", {}), lambda: gw.invoke("x", {}),
                     lambda: gw.invoke("x", {}, timeout_s=0.2)):
            with pytest.raises(GatewayError) as info:
                await call()
            errors.append(info.value)
        secured.down()
        with pytest.raises(GatewayUnavailable) as down:
            await _chat(gw)
        errors.append(down.value)
    assert {type(e) for e in errors} == {GatewayRejected, GatewayBusy, GatewayUnavailable, GatewayTimeout}
    for error in errors:
        assert isinstance(error, SchedulerError)
        for text in (str(error), repr(error), repr(error.__cause__), repr(error.__context__),
                     repr(vars(error))):
            assert TOKEN not in text
    assert "[redacted]" in str(errors[0])


def test_bad_token_or_url_is_config_error() -> None:
    with pytest.raises(ConfigError) as info:
        GatewayClient("http://127.0.0.1:1", "has space inside")
    assert "has space" not in str(info.value)
    with pytest.raises(ConfigError, match="OPENCLAW_GATEWAY_URL"):
        GatewayClient("ftp://example", None)
    with pytest.raises(ConfigError, match="OPENCLAW_GATEWAY_URL"):
        GatewayClient("not a url", None)


# -- session keys and helpers --------------------------------------------------------------------


def test_canonical_session_key() -> None:
    assert canonical_session_key("ops", None, "j1") == "agent:ops:scheduler:j1"
    assert canonical_session_key("", None, "j1") == "agent:main:scheduler:j1"
    assert canonical_session_key("ops", "", "j1") == "agent:ops:scheduler:j1"
    assert canonical_session_key("ops", "main", "j1") == "agent:ops:main"
    assert canonical_session_key("ops", "agent:other:custom", "j1") == "agent:other:custom"


@pytest.mark.parametrize("requested", ["subagent:1234", "agent:main:subagent:1234", "cron:daily",
                                       "agent:main:cron:x", "acp:run-1", "team:ACP:run"])
def test_canonical_session_key_rejects_reserved_namespaces(requested: str) -> None:
    with pytest.raises(ValidationError, match="reserved namespace"):
        canonical_session_key("main", requested, "j1")


def test_canonical_session_key_allows_lookalikes() -> None:
    assert canonical_session_key("main", "mycron:1", "j") == "agent:main:mycron:1"
    assert canonical_session_key("main", "subagents", "j") == "agent:main:subagents"


async def test_canonical_key_is_accepted_by_the_fake(fake_gateway: FakeGateway,
                                                     client: GatewayClient) -> None:
    key = canonical_session_key("main", None, "job-42")
    await _chat(client, session_key=key)
    assert [s["key"] for s in fake_gateway.chat_sessions()] == [key]


def test_parse_retry_after() -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    assert parse_retry_after("12", now=now) == 12
    assert parse_retry_after(" 1.5 ", now=now) == 1.5
    assert parse_retry_after("-3", now=now) == 0
    assert parse_retry_after("Thu, 01 Jan 2026 00:01:00 GMT", now=now) == 60
    assert parse_retry_after("Wed, 31 Dec 2025 00:00:00 GMT", now=now) == 0
    for bad in (None, "", "nan", "inf", "tomorrow"):
        assert parse_retry_after(bad, now=now) is None


def test_gateway_error_message() -> None:
    assert gateway_error_message('{"error":{"message":"Unknown agent \'ops\'.","type":"x"}}') == \
        "Unknown agent 'ops'."
    assert gateway_error_message('{"error":"plain"}') == "plain"
    assert gateway_error_message('{"ok":false}') == '{"ok":false}'
    assert gateway_error_message("x" * 900) == "x" * 500
    assert gateway_error_message("word " * 200) == ("word " * 100).strip()
