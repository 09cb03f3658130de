"""A typed asyncio client for the OpenClaw gateway's WebSocket RPC control plane.

The gateway offers agent runs (``agent``, ``agent.wait``), session control (``sessions.send``,
``sessions.abort``, ``sessions.list``), transcripts (``chat.history``) and system events only
over the WebSocket it serves on the same host and port as its HTTP API. :class:`GatewayRpc`
opens one connection, performs the handshake and then multiplexes calls on it::

    async with GatewayRpc(settings.gateway_url, resolve_token(...)) as rpc:
        run_id, key = await rpc.start_agent_turn("hi", key, label="job 7", idempotency_key=...)
        status = await rpc.wait_run(run_id, timeout_ms=60_000)

It is built from the same two values as :class:`~scheduler.gateway.client.GatewayClient`: the
gateway URL (``http://`` becomes ``ws://``, ``https://`` becomes ``wss://``) and the token from
:func:`~scheduler.gateway.client.resolve_token`. Without a token, a password in the URL is sent
as ``auth.password``. Neither ever appears in a message, a ``repr`` or a log field.

Handshake: the gateway speaks first with a ``connect.challenge`` event; we answer with a
``connect`` request (protocol 4, operator role, backend client, shared-secret auth) and require
a ``hello-ok`` payload, all within ``handshake_timeout_s``. Then each call is a ``req`` frame with
a fresh id; its ``res`` frame is matched by id by one reader task, which skips the ``event``
frames the gateway interleaves (the last :data:`EVENT_BACKLOG` are kept in :attr:`events`).

Bounds: a frame larger than :data:`MAX_FRAME_BYTES` closes the connection (code 1009) and fails
every call in flight with :class:`GatewayProtocolError`; each call has its own deadline
(:class:`~scheduler.gateway.client.GatewayTimeout`); no compression, no proxy from the
environment.

Failures, all in the gateway error tree: :class:`GatewayUnavailable` (cannot connect, or the
connection dropped), :class:`GatewayAuthRefused` (``ok: false`` to ``connect``),
:class:`GatewayRpcError` (``ok: false`` to a call, with the gateway's ``code``), ``GatewayTimeout``
and :class:`GatewayProtocolError` (not JSON, an unexpected frame, a frame too large).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import ssl
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

import websockets
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI

from scheduler import __version__, logs
from scheduler.errors import ConfigError
from scheduler.gateway.client import GatewayError, GatewayTimeout, GatewayUnavailable

#: The largest frame read from the gateway: 16 MiB, as for an HTTP reply (``MAX_REPLY_BYTES``).
#: The gateway's own cap is 25 MiB; a longer transcript page is refused rather than buffered.
MAX_FRAME_BYTES = 16 * 1024 * 1024
#: Connect, challenge, ``connect`` request and ``hello-ok`` must all fit in this.
HANDSHAKE_TIMEOUT_S = 10.0
#: A call's deadline unless the caller gives one.
CALL_TIMEOUT_S = 30.0
#: ``agent.wait`` is given this much longer than the wait it asks the gateway for.
WAIT_MARGIN_S = 10.0
#: Events kept for :attr:`GatewayRpc.events` (the oldest are dropped).
EVENT_BACKLOG = 256
PROTOCOL_VERSION = 4
OPERATOR_SCOPES = ("operator.read", "operator.write", "operator.admin")

_CLOSE_TIMEOUT_S = 2.0
_REDACTED = "[redacted]"
_EXCERPT_CHARS = 300

_log = logs.get("scheduler.gateway.rpc")


class GatewayProtocolError(GatewayError):
    """The gateway sent something the control protocol does not allow (not JSON, an unexpected
    frame, a frame over :data:`MAX_FRAME_BYTES`). The connection is closed."""


class GatewayRpcError(GatewayError):
    """The gateway answered a call with ``ok: false``; ``code`` is its error code."""

    def __init__(self, message: str, *, method: str, code: str, gateway_message: str,
                 retryable: bool = False, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.method = method
        self.code = code
        self.gateway_message = gateway_message
        self.retryable = retryable
        self.retry_after_s = retry_after_s


class GatewayAuthRefused(GatewayRpcError):
    """The gateway refused the ``connect`` handshake (wrong or missing token, scopes)."""


@dataclass(frozen=True)
class GatewayEvent:
    """One ``event`` frame: its name and payload."""

    event: str
    payload: Any


@dataclass(frozen=True)
class RunStatus:
    """What ``agent.wait`` reported: ``status`` is ``ok``, ``error``, ``timeout``, ``pending``…"""

    status: str
    started_at: int | None  # ms since the epoch
    ended_at: int | None
    stop_reason: str | None
    error: str | None
    raw: dict[str, Any]

    @property
    def finished(self) -> bool:
        return self.status not in ("timeout", "pending", "running", "accepted")


@dataclass(frozen=True)
class ChatMessage:
    """One transcript entry of ``chat.history``; ``text`` joins its text parts."""

    role: str
    text: str
    raw: dict[str, Any]


@dataclass(frozen=True)
class SessionRecord:
    """One entry of ``sessions.list``."""

    key: str
    status: str | None
    updated_at: int | None  # ms since the epoch
    total_tokens: int | None
    classification: str | None  # "subagent", "main", "custom"…
    label: str | None
    kind: str | None
    raw: dict[str, Any]


def websocket_url(base_url: str) -> str:
    """The control plane's URL for a gateway base URL, without any ``user:password`` part."""
    parts = urlsplit(base_url.strip())
    scheme = {"http": "ws", "https": "wss", "ws": "ws", "wss": "wss"}.get(parts.scheme.lower())
    if scheme is None or not parts.hostname:
        raise ConfigError(f"OPENCLAW_GATEWAY_URL {logs.redact_url(base_url)!r} must be an http:// or "
                          "https:// URL with a host")
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((scheme, netloc, parts.path or "/", parts.query, ""))


def message_text(content: Any) -> str:
    """A message's text: ``content`` as a string, or the joined ``text`` of its text parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(_part_text(part) for part in content)
    return ""


def _part_text(part: Any) -> str:
    if isinstance(part, str):
        return part
    if isinstance(part, dict) and part.get("type", "text") == "text" and isinstance(part.get("text"), str):
        return str(part["text"])
    return ""  # images, tool calls, thinking: not part of the reply's text


def _int_or_none(value: Any) -> int | None:
    return int(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _str_or_none(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _one_line(text: str, limit: int = _EXCERPT_CHARS) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


def _run_status(payload: Mapping[str, Any]) -> RunStatus:
    error = payload.get("error")
    if isinstance(error, dict):
        error = error.get("message")
    return RunStatus(status=str(payload.get("status") or "unknown"),
                     started_at=_int_or_none(payload.get("startedAt")),
                     ended_at=_int_or_none(payload.get("endedAt")),
                     stop_reason=_str_or_none(payload.get("stopReason")),
                     error=_str_or_none(error), raw=dict(payload))


def _session_record(entry: Mapping[str, Any]) -> SessionRecord:
    return SessionRecord(key=str(entry.get("key") or entry.get("sessionKey") or ""),
                         status=_str_or_none(entry.get("status")),
                         updated_at=_int_or_none(entry.get("updatedAt")),
                         total_tokens=_int_or_none(entry.get("totalTokens")),
                         classification=_str_or_none(entry.get("classification")),
                         label=_str_or_none(entry.get("label")),
                         kind=_str_or_none(entry.get("kind")), raw=dict(entry))


class GatewayRpc:
    """One WebSocket connection to the gateway's control plane. Use it as an async context
    manager (or :meth:`connect` then :meth:`aclose`); calls may run concurrently."""

    def __init__(self, base_url: str, token: str | None, *,
                 handshake_timeout_s: float = HANDSHAKE_TIMEOUT_S,
                 max_frame_bytes: int = MAX_FRAME_BYTES) -> None:
        self._url = websocket_url(base_url)
        self._token = token or None
        # Only without a token: a URL password then stands for the gateway's shared password.
        password = urlsplit(base_url.strip()).password
        self._password = unquote(password) if password and not self._token else None
        self._handshake_timeout_s = handshake_timeout_s
        self._max_frame_bytes = max_frame_bytes
        self._ws: ClientConnection | None = None
        self._reader: asyncio.Task[None] | None = None
        self._pending: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._ids = itertools.count(1)
        self._failure: GatewayError | None = None
        self.hello: dict[str, Any] = {}
        #: The most recent event frames (bounded by :data:`EVENT_BACKLOG`).
        self.events: deque[GatewayEvent] = deque(maxlen=EVENT_BACKLOG)

    def __repr__(self) -> str:
        return f"GatewayRpc({self._url!r}, token={'set' if self._token else 'none'})"

    @property
    def url(self) -> str:
        return self._url

    async def __aenter__(self) -> GatewayRpc:
        await self.connect()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.aclose()

    # -- connection ----------------------------------------------------------------------------

    async def connect(self) -> None:
        """Open the connection and complete the handshake, or raise (and leave nothing open)."""
        try:
            async with asyncio.timeout(self._handshake_timeout_s):
                self._ws = await self._open()
                self.hello = await self._handshake(self._ws)
        except TimeoutError:
            await self.aclose()
            raise GatewayTimeout(f"the gateway at {self._url} did not complete the control-plane "
                                 f"handshake within {self._handshake_timeout_s:g}s",
                                 timeout_s=self._handshake_timeout_s) from None
        except BaseException:
            await self.aclose()
            raise
        self._reader = asyncio.create_task(self._read_loop(self._ws), name="gateway-rpc-reader")
        _log.debug("gateway.rpc_connected", url=self._url)

    async def aclose(self) -> None:
        ws, reader, self._ws, self._reader = self._ws, self._reader, None, None
        if ws is not None:
            with contextlib.suppress(Exception):
                await ws.close()
        if reader is not None:
            reader.cancel()
            with contextlib.suppress(BaseException):
                await reader
        self._fail_pending(self._failure or GatewayUnavailable("the control connection was closed"))

    async def _open(self) -> ClientConnection:
        try:
            return await websockets.connect(
                self._url, max_size=self._max_frame_bytes, compression=None, proxy=None,
                open_timeout=None, close_timeout=_CLOSE_TIMEOUT_S,
                user_agent_header=f"openclaw-scheduler-python/{__version__}")
        except (OSError, InvalidHandshake, InvalidURI, ssl.SSLError) as exc:
            reason = self._scrub(_one_line(str(exc), 200)) or type(exc).__name__
            raise GatewayUnavailable(f"cannot reach the gateway's control plane at {self._url}: {reason} "
                                     "(is the OpenClaw gateway running?)") from None

    async def _handshake(self, ws: ClientConnection) -> dict[str, Any]:
        frame = await self._next_frame(ws)
        while frame.get("type") == "event" and frame.get("event") != "connect.challenge":
            frame = await self._next_frame(ws)
        if frame.get("type") != "event":
            raise GatewayProtocolError(f"the gateway at {self._url} did not open with connect.challenge")
        request_id = self._new_id()
        await ws.send(json.dumps({"type": "req", "id": request_id, "method": "connect",
                                  "params": self._connect_params()}))
        while True:
            frame = await self._next_frame(ws)
            if frame.get("type") == "event":
                continue
            if frame.get("type") != "res" or frame.get("id") != request_id:
                raise GatewayProtocolError(f"the gateway at {self._url} answered connect with an "
                                           "unexpected frame")
            break
        if frame.get("ok") is not True:
            raise self._rpc_error("connect", frame.get("error"), GatewayAuthRefused,
                                  hint=" (check OPENCLAW_GATEWAY_TOKEN or the token file)")
        payload = frame.get("payload")
        if not isinstance(payload, dict) or payload.get("type") != "hello-ok":
            raise GatewayProtocolError(f"the gateway at {self._url} answered connect without hello-ok")
        return payload

    def _connect_params(self) -> dict[str, Any]:
        auth = {"token": self._token} if self._token else {"password": self._password} \
            if self._password else {}
        return {"minProtocol": PROTOCOL_VERSION, "maxProtocol": PROTOCOL_VERSION,
                "client": {"id": "gateway-client", "version": __version__, "platform": "linux",
                           "mode": "backend"},
                "role": "operator", "scopes": list(OPERATOR_SCOPES), "caps": [], "commands": [],
                "permissions": {}, "auth": auth}

    async def _next_frame(self, ws: ClientConnection) -> dict[str, Any]:
        try:
            raw = await ws.recv()
        except ConnectionClosed as exc:
            raise self._closed_error(exc) from None
        return self._decode(raw)

    def _decode(self, raw: str | bytes) -> dict[str, Any]:
        if isinstance(raw, bytes):
            raise GatewayProtocolError(f"the gateway at {self._url} sent a binary frame")
        try:
            frame = json.loads(raw)
        except (ValueError, RecursionError):
            raise GatewayProtocolError(f"the gateway at {self._url} sent a frame that is not JSON: "
                                       f"{self._scrub(_one_line(raw[:1000], 120))}") from None
        if not isinstance(frame, dict) or frame.get("type") not in ("res", "event"):
            raise GatewayProtocolError(f"the gateway at {self._url} sent an unexpected frame: "
                                       f"{self._scrub(_one_line(raw[:1000], 120))}")
        return frame

    def _closed_error(self, exc: ConnectionClosed) -> GatewayError:
        if exc.sent is not None and exc.sent.code == 1009:
            return GatewayProtocolError(f"the gateway at {self._url} sent a frame larger than "
                                        f"{self._max_frame_bytes} bytes, the most the scheduler reads")
        code = exc.rcvd.code if exc.rcvd is not None else None
        reason = self._scrub(_one_line(exc.rcvd.reason, 200)) if exc.rcvd is not None else ""
        return GatewayUnavailable(f"the gateway at {self._url} closed the control connection"
                                  f" (code {code}{': ' + reason if reason else ''})",
                                  may_have_started=True)

    async def _read_loop(self, ws: ClientConnection) -> None:
        """Hand each response to its caller; keep events; fail every caller when it ends."""
        failure: GatewayError
        try:
            while True:
                self._dispatch(await self._next_frame(ws))
        except GatewayError as exc:
            failure = exc
        except Exception as exc:  # a bug here must not leave callers waiting for their deadline
            failure = GatewayProtocolError(f"reading from the gateway at {self._url} failed: "
                                           f"{type(exc).__name__}")
        if isinstance(failure, GatewayProtocolError):
            _log.warning("gateway.rpc_protocol_error", url=self._url, error=str(failure))
            with contextlib.suppress(Exception):  # after a frame too large it is closed already
                await ws.close(code=1002)
        self._failure = failure
        self._fail_pending(failure)

    def _dispatch(self, frame: dict[str, Any]) -> None:
        if frame["type"] == "event":
            self.events.append(GatewayEvent(str(frame.get("event")), frame.get("payload")))
            return
        future = self._pending.pop(str(frame.get("id")), None)
        if future is not None and not future.done():  # else: the caller gave up (timeout)
            future.set_result(frame)

    def _fail_pending(self, failure: GatewayError) -> None:
        pending, self._pending = self._pending, {}
        for future in pending.values():
            if not future.done():
                future.set_exception(failure)

    def _new_id(self) -> str:
        return str(next(self._ids))

    def _scrub(self, text: str) -> str:
        for secret in (self._token, self._password):
            if secret:
                text = text.replace(secret, _REDACTED)
        return text

    def _rpc_error(self, method: str, error: Any, cls: type[GatewayRpcError] = GatewayRpcError,
                   hint: str = "") -> GatewayRpcError:
        details = error if isinstance(error, dict) else {"message": str(error or "")}
        code = str(details.get("code") or "UNKNOWN")
        message = self._scrub(_one_line(str(details.get("message") or "(no error message)")))
        retry_after_ms = _int_or_none(details.get("retryAfterMs"))
        return cls(f"gateway refused {method} ({code}): {message}{hint}", method=method, code=code,
                   gateway_message=message, retryable=details.get("retryable") is True,
                   retry_after_s=None if retry_after_ms is None else retry_after_ms / 1000)

    # -- calls ---------------------------------------------------------------------------------

    async def call(self, method: str, params: Mapping[str, Any] | None = None, *,
                   timeout_s: float = CALL_TIMEOUT_S) -> dict[str, Any]:
        """One RPC: its ``payload`` (``{}`` when there is none), or a gateway error."""
        ws = self._ws
        if self._failure is not None:
            raise self._failure
        if ws is None:
            raise GatewayUnavailable(f"the control connection to {self._url} is not open")
        request_id = self._new_id()
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[request_id] = future
        try:
            async with asyncio.timeout(timeout_s):
                await ws.send(json.dumps({"type": "req", "id": request_id, "method": method,
                                          "params": dict(params or {})}))
                frame = await future
        except TimeoutError:
            raise GatewayTimeout(f"the gateway did not answer {method} within {timeout_s:g}s",
                                 timeout_s=timeout_s) from None
        except ConnectionClosed as exc:
            raise self._closed_error(exc) from None
        finally:
            self._pending.pop(request_id, None)
        if frame.get("ok") is not True:
            raise self._rpc_error(method, frame.get("error"))
        payload = frame.get("payload")
        return payload if isinstance(payload, dict) else {} if payload is None else {"value": payload}

    async def start_agent_turn(self, message: str, session_key: str, *, label: str | None = None,
                               timeout_s: float | None = None, lane: str = "subagent",
                               idempotency_key: str) -> tuple[str, str]:
        """Start an agent turn (``agent``, not delivered anywhere); returns (run_id, session_key)
        at once. ``timeout_s`` is the run's own limit on the gateway; the same
        ``idempotency_key`` never starts a second run."""
        params: dict[str, Any] = {"message": message, "sessionKey": session_key,
                                  "idempotencyKey": idempotency_key, "deliver": False, "lane": lane}
        if label is not None:
            params["label"] = label
        if timeout_s is not None:
            params["timeout"] = max(1, round(timeout_s))
        payload = await self.call("agent", params)
        run_id = payload.get("runId")
        if not isinstance(run_id, str) or not run_id:
            raise GatewayProtocolError("the gateway accepted an agent turn without a runId")
        return run_id, str(payload.get("sessionKey") or session_key)

    async def wait_run(self, run_id: str, timeout_ms: int) -> RunStatus:
        """``agent.wait``: the run's terminal status, or status ``timeout`` if still running."""
        payload = await self.call("agent.wait", {"runId": run_id, "timeoutMs": timeout_ms},
                                  timeout_s=timeout_ms / 1000 + WAIT_MARGIN_S)
        return _run_status(payload)

    async def chat_history(self, session_key: str, limit: int | None = None) -> list[ChatMessage]:
        """``chat.history``: the session's transcript, oldest first, with text normalised."""
        params: dict[str, Any] = {"sessionKey": session_key}
        if limit is not None:
            params["limit"] = limit
        messages = (await self.call("chat.history", params)).get("messages")
        return [ChatMessage(str(m.get("role") or ""), message_text(m.get("content")), m)
                for m in messages or [] if isinstance(m, dict)]

    async def last_assistant_text(self, session_key: str) -> str | None:
        """The text of the session's latest assistant message (None when there is none)."""
        replies = [m for m in await self.chat_history(session_key) if m.role == "assistant"]
        return replies[-1].text if replies else None

    async def send_to_session(self, key: str, message: str) -> str | None:
        """``sessions.send``: steer a session with a message; returns the run id it started."""
        return _str_or_none((await self.call("sessions.send", {"key": key, "message": message})).get("runId"))

    async def list_sessions(self, active_minutes: int | None = None) -> list[SessionRecord]:
        """``sessions.list``, optionally only those updated in the last ``active_minutes``."""
        params = {} if active_minutes is None else {"activeMinutes": active_minutes}
        sessions = (await self.call("sessions.list", params)).get("sessions")
        return [_session_record(s) for s in sessions or [] if isinstance(s, dict)]

    async def system_event(self, text: str, mode: str = "now") -> None:
        """``system-event``: queue ``text`` for the main session (``mode`` ``now`` wakes it)."""
        await self.call("system-event", {"text": text, "mode": mode})

    async def abort_session(self, key: str, run_id: str | None = None) -> dict[str, Any]:
        """``sessions.abort``: stop the session's active work (only ``run_id`` when given)."""
        params = {"key": key} if run_id is None else {"key": key, "runId": run_id}
        return await self.call("sessions.abort", params)
