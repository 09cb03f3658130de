"""The real OpenClaw gateway (npm openclaw@2026.9.6, offline on loopback) answers the requests the
scheduler makes, checked with plain httpx against the fixture in ``openclaw_peer.py``.

Run alone with ``python -m pytest -m openclaw tests/test_openclaw_peer.py``; the first run installs
about 840 MB from the npm registry into the cache.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import httpx
import pytest

from openclaw_peer import OpenClawPeer, openclaw_gateway  # noqa: F401  (the fixture)

pytestmark = pytest.mark.openclaw

TELEGRAM_TARGET = "987654321"


@pytest.fixture(scope="module")
def client(openclaw_gateway: OpenClawPeer) -> Iterator[httpx.Client]:  # noqa: F811
    # trust_env=False: loopback only, whatever proxy the environment names.
    with httpx.Client(base_url=openclaw_gateway.url, timeout=httpx.Timeout(120, connect=5),
                      trust_env=False) as client:
        yield client


@pytest.fixture(scope="module")
def chat_turn(openclaw_gateway: OpenClawPeer, client: httpx.Client) -> tuple[str, httpx.Response]:  # noqa: F811
    """One chat completion exactly as the scheduler sends it: (session key, response)."""
    key = openclaw_gateway.new_session_key()
    response = client.post(
        "/v1/chat/completions",
        headers=openclaw_gateway.headers(key),
        json={"model": "openclaw:main", "messages": [{"role": "user", "content": "hello [[test]]"}],
              "stream": False},
    )
    return key, response


def test_health_is_200(client: httpx.Client) -> None:
    response = client.get("/health")
    assert response.status_code == 200, response.text
    assert response.json()["ok"] is True


def test_chat_completion_returns_the_fake_llm_reply(
        openclaw_gateway: OpenClawPeer, chat_turn: tuple[str, httpx.Response]) -> None:  # noqa: F811
    key, response = chat_turn
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["object"] == "chat.completion"
    assert body["choices"][0]["message"] == {"role": "assistant", "content": openclaw_gateway.reply}
    assert body["choices"][0]["finish_reason"] == "stop"

    # The prompt reached the model, streamed (the gateway always streams from its provider).
    forwarded = openclaw_gateway.llm_requests(containing="hello [[test]]")
    assert forwarded, f"prompt not in the fake LLM log {openclaw_gateway.llm_log}"
    assert forwarded[-1]["stream"] is True
    assert "hello [[test]]" in forwarded[-1]["prompt"]
    assert key in forwarded[-1]["prompt"]  # openclaw's runtime line names the session


def test_sessions_list_shows_the_scheduler_session(
        openclaw_gateway: OpenClawPeer, client: httpx.Client,  # noqa: F811
        chat_turn: tuple[str, httpx.Response]) -> None:
    key, _ = chat_turn
    response = client.post(
        "/tools/invoke",
        headers=openclaw_gateway.auth_headers(),
        json={"tool": "sessions_list", "args": {"activeMinutes": 60, "limit": 200, "messageLimit": 0},
              "sessionKey": "main"},
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["ok"] is True
    sessions = body["result"]["details"]["sessions"]
    assert key in {session["key"] for session in sessions}, sessions


def test_message_send_reaches_fake_telegram(openclaw_gateway: OpenClawPeer, client: httpx.Client) -> None:  # noqa: F811
    text = f"scheduler delivery {uuid.uuid4().hex}"
    response = client.post(
        "/tools/invoke",
        headers=openclaw_gateway.auth_headers(),
        json={"tool": "message", "args": {"action": "send", "message": text, "channel": "telegram",
                                          "target": TELEGRAM_TARGET}, "sessionKey": "main"},
    )
    assert response.status_code == 200, response.text
    assert response.json()["ok"] is True

    sent = [m for m in openclaw_gateway.telegram_messages() if m.get("text") == text]
    assert sent, f"no sendMessage with {text!r} in {openclaw_gateway.telegram_log}"
    assert str(sent[0]["chat_id"]) == TELEGRAM_TARGET
