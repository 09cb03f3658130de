"""The real OpenClaw gateway as a live test peer: the session-scoped fixture ``openclaw_gateway``.

Tests import it explicitly (it is not in conftest.py, so the unit suite never pays for it)::

    from openclaw_peer import OpenClawPeer, openclaw_gateway  # noqa: F401

    pytestmark = pytest.mark.openclaw

    def test_x(openclaw_gateway: OpenClawPeer) -> None:
        httpx.get(f"{openclaw_gateway.url}/health")

The fixture runs ``scripts/openclaw-peer install`` (npm: node@24 and openclaw@2026.9.6, cached in
``~/.cache/openclaw-scheduler/openclaw-peer`` or ``$OPENCLAW_PEER_CACHE``; about 30–45 s the first
time, instant after), then ``start`` on free loopback ports with a fresh state dir (15–30 s to
ready plus a warm-up turn), and ``stop`` at the end of the session. When the install is impossible
(no npm, no registry, npm failing) the tests are skipped, unless ``OPENCLAW_PEER_REQUIRED=1`` (set
by CI): then they fail. A gateway that is installed but does not start always fails.

The gateway's model is the fake LLM (``tests/peers/fake_llm.py``): every turn answers
:attr:`OpenClawPeer.reply`; ``[[fake:sleep:N]]`` / ``[[fake:error:CODE]]`` in a prompt delay or fail
that turn. Telegram deliveries land in the fake Bot API's log. Use a fresh session key per test
(:meth:`OpenClawPeer.new_session_key`): the gateway keeps transcripts for the whole session.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import pytest

from conftest import wait_until
from peers import read_jsonl
from peers.fake_llm import request_text

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "openclaw-peer"
INSTALL_TIMEOUT_S = 1200.0
START_TIMEOUT_S = 420.0  # /readyz cap (120 s) + warm-up turn cap (180 s) + margin


@dataclass(frozen=True)
class OpenClawPeer:
    """A running gateway, as ``openclaw-peer start`` described it."""

    url: str
    token: str
    llm_log: Path
    telegram_log: Path
    state_dir: Path
    reply: str
    info: dict[str, Any] = field(repr=False)

    def daemon_env(self, **extra: str) -> dict[str, str]:
        """The variables that point a test daemon at this gateway, plus ``extra``."""
        return {"OPENCLAW_GATEWAY_URL": self.url, "OPENCLAW_GATEWAY_TOKEN": self.token, **extra}

    def auth_headers(self) -> dict[str, str]:
        """What ``/tools/invoke`` gets from the scheduler: the bearer token only."""
        return {"Authorization": f"Bearer {self.token}"}

    def headers(self, session_key: str | None = None, agent_id: str = "main") -> dict[str, str]:
        """The scheduler's chat-completion headers."""
        headers = {**self.auth_headers(), "x-openclaw-agent-id": agent_id}
        if session_key is not None:
            headers["x-openclaw-session-key"] = session_key
        return headers

    @staticmethod
    def new_session_key(agent_id: str = "main") -> str:
        return f"agent:{agent_id}:scheduler:{uuid.uuid4()}"

    def llm_requests(self, containing: str | None = None) -> list[dict[str, Any]]:
        """Requests the gateway made to the fake LLM (oldest first), optionally only those whose
        message text contains ``containing``."""
        entries = read_jsonl(self.llm_log)
        if containing is None:
            return entries
        return [entry for entry in entries if containing in request_text(entry)]

    def telegram_calls(self, method: str | None = None) -> list[dict[str, Any]]:
        """Bot API calls (``{"t", "method", "http", "token", "params"}``), optionally of one method."""
        calls = read_jsonl(self.telegram_log)
        return [c for c in calls if c.get("method") == method] if method is not None else calls

    def telegram_messages(self) -> list[dict[str, Any]]:
        """The params of every ``sendMessage`` (``chat_id``, ``text``, ``parse_mode``, …)."""
        return [call.get("params") or {} for call in self.telegram_calls("sendMessage")]

    def wait_for(self, check: Callable[[], Any], timeout: float = 10, message: str = "condition") -> Any:
        """``conftest.wait_until``, with the gateway's log tail in the failure message."""
        try:
            return wait_until(check, timeout=timeout, message=message)
        except AssertionError as exc:
            raise AssertionError(f"{exc}; gateway log tail:\n{self.gateway_log_tail()}") from None

    def gateway_log_tail(self, lines: int = 40) -> str:
        path = Path(self.info.get("gateway_out") or self.state_dir / "gateway.out")
        try:
            text = re.sub(r"\x1b\[[0-9;]*m", "", path.read_text(errors="replace"))  # colours
            return "\n".join(text.splitlines()[-lines:])
        except OSError:
            return f"({path} not readable)"


def _script(*args: str, timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(SCRIPT), *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL)


def _tail(text: str | bytes | None, lines: int = 15) -> str:
    if isinstance(text, bytes):
        text = text.decode(errors="replace")
    return "\n".join((text or "").strip().splitlines()[-lines:])


class _SharedPeer:
    """One gateway per pytest session, however many test modules import the fixture (pytest makes
    one session fixture per importing module); stopped when the last of them is torn down. A
    failure is remembered, so later modules skip or fail at once instead of retrying."""

    def __init__(self) -> None:
        self.peer: OpenClawPeer | None = None
        self.state: Path | None = None
        self.users = 0
        self.skip_reason: str | None = None
        self.fail_reason: str | None = None

    def acquire(self, tmp_path_factory: pytest.TempPathFactory) -> OpenClawPeer:
        if self.peer is None:
            self._start(tmp_path_factory)
        assert self.peer is not None
        self.users += 1
        return self.peer

    def release(self) -> None:
        self.users -= 1
        if self.users <= 0:
            self._stop()

    def _unavailable(self, reason: str) -> NoReturn:
        if os.environ.get("OPENCLAW_PEER_REQUIRED") == "1":
            self._fail(f"OpenClaw peer required (OPENCLAW_PEER_REQUIRED=1) but not installable: {reason}")
        self.skip_reason = f"OpenClaw peer not installable: {reason}"
        pytest.skip(self.skip_reason)

    def _fail(self, reason: str) -> NoReturn:
        self.fail_reason = reason
        pytest.fail(reason, pytrace=False)

    def _start(self, tmp_path_factory: pytest.TempPathFactory) -> None:
        if self.skip_reason is not None:
            pytest.skip(self.skip_reason)
        if self.fail_reason is not None:
            pytest.fail(self.fail_reason, pytrace=False)
        try:
            install = _script("install", timeout=INSTALL_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self._unavailable(f"`openclaw-peer install` did not finish within {INSTALL_TIMEOUT_S:.0f}s")
        if install.returncode != 0:
            self._unavailable(
                f"`openclaw-peer install` exited {install.returncode}:\n{_tail(install.stderr)}")

        self.state = tmp_path_factory.mktemp("openclaw-peer")
        try:
            start = _script("start", "--state", str(self.state), "--port", "0", "--llm-port", "0",
                            "--telegram-port", "0", timeout=START_TIMEOUT_S)
        except subprocess.TimeoutExpired as exc:
            self._stop()
            self._fail(f"`openclaw-peer start` did not finish within {START_TIMEOUT_S:.0f}s:\n"
                       f"{_tail(exc.stderr, 60)}")
        if start.returncode != 0:
            self._stop()
            self._fail(f"`openclaw-peer start` exited {start.returncode}:\n{_tail(start.stderr, 80)}")
        info = json.loads(start.stdout.strip().splitlines()[-1])
        self.peer = OpenClawPeer(url=info["url"], token=info["token"], llm_log=Path(info["llm_log"]),
                                 telegram_log=Path(info["telegram_log"]), state_dir=self.state,
                                 reply=info["reply"], info=info)

    def _stop(self) -> None:
        if self.state is not None:
            stop = _script("stop", "--state", str(self.state), timeout=120)
            if stop.returncode != 0:
                print(f"openclaw-peer stop exited {stop.returncode}:\n{stop.stderr}", file=sys.stderr)
        self.peer = None
        self.state = None


_shared = _SharedPeer()


@pytest.fixture(scope="session")
def openclaw_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OpenClawPeer]:
    """Install (cached), start on free ports, yield, stop. See the module docstring."""
    peer = _shared.acquire(tmp_path_factory)
    try:
        yield peer
    finally:
        _shared.release()
