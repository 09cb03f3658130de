"""A fake OpenClaw gateway: a real HTTP server on 127.0.0.1 for tests (stdlib only).

It behaves like the real gateway 2026.9.6 where the scheduler can tell (openclaw-gateway.md §5):
``GET /health``; ``POST /v1/chat/completions`` (agent-target ``model`` only, agent-scoped session
keys, reserved namespaces refused, no ``x-openclaw-session-key`` response header unless
``echo_session_key``); ``POST /tools/invoke`` with ``sessions_list`` (the
``result.details.sessions`` shape) and ``message`` (deliveries recorded, with their media: see
``_media_of``); 401 on a wrong or
missing token when one is configured. :meth:`Reply.streamed` answers with a body sent piece by
piece: endless, huge, or stalling, as a runaway server would.

Every request is recorded. Behaviour is scripted per endpoint (``"/health"``,
``"/v1/chat/completions"``, ``"/tools/invoke"``, or ``"tool:<name>"`` for one tool) with a queue
of :class:`Reply` objects or callables (:meth:`FakeGateway.script`), or with a standing handler
(:meth:`FakeGateway.on`). :meth:`FakeGateway.down` and :meth:`FakeGateway.up` stop and restart
listening on the same port. Use it as a context manager, or import the ``fake_gateway``
fixture: ``from fakegateway import fake_gateway``.

A WebSocket upgrade on the same port reaches the RPC control plane, ``fake_gateway.rpc``
(:class:`fakerpc.FakeRpc`; see tests/fakerpc.py), as on the real gateway.
"""

from __future__ import annotations

import base64
import contextlib
import json
import re
import socket
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

import pytest

from fakerpc import FakeRpc, is_upgrade

HEALTH = "/health"
CHAT = "/v1/chat/completions"
INVOKE = "/tools/invoke"

_AGENT_MODEL = re.compile(r"^(?:openclaw[:/]|agent:)(?P<agent>[a-z0-9][a-z0-9_-]{0,63})$", re.IGNORECASE)
_RESERVED = ("subagent", "cron", "acp")


@dataclass(frozen=True)
class RecordedRequest:
    """One request as the fake saw it. Header names are lower case."""

    method: str
    path: str
    query: str
    headers: dict[str, str]
    body: Any  # parsed JSON, or None when the body is empty or not JSON
    raw_body: bytes
    time: float  # time.time() when the request was read
    client_port: int  # the client's source port: equal ports mean a reused (pooled) connection

    @property
    def tool(self) -> str | None:
        return self.body.get("tool") if isinstance(self.body, dict) else None


@dataclass
class Reply:
    """A scripted answer. ``body``: str/bytes are sent as is, anything else as JSON."""

    status: int = 200
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0
    drop: bool = False  # close the connection without answering (after ``delay_s``)
    #: Send the body as these pieces instead of ``body``: chunked, or raw after a Content-Length
    #: of ``content_length`` (which may promise more than is sent).
    chunks: Iterable[bytes] | None = None
    content_length: int | None = None
    #: After the body, keep the connection open without a word until the gateway goes down.
    hold_open: bool = False

    @classmethod
    def error(cls, status: int, message: str, type_: str = "api_error", **kwargs: Any) -> Reply:
        """An error in the gateway's ``{"error": {"message", "type"}}`` shape."""
        return cls(status, {"error": {"message": message, "type": type_}}, **kwargs)

    @classmethod
    def dropped(cls, delay_s: float = 0.0) -> Reply:
        return cls(drop=True, delay_s=delay_s)

    @classmethod
    def streamed(cls, chunks: Iterable[bytes], *, status: int = 200, content_length: int | None = None,
                 hold_open: bool = False) -> Reply:
        """A body written piece by piece (``itertools.repeat(piece)`` never ends)."""
        return cls(status, chunks=chunks, content_length=content_length, hold_open=hold_open)


Script = Reply | Callable[[RecordedRequest], "Reply | None"]


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 512  # like Node's default backlog: bursts of turns are not refused

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # clients that hang up (timeouts) are part of the tests, not errors


class FakeGateway:
    """The fake gateway. Attributes ``token``, ``reply_content``, ``usage``, ``sessions``,
    ``agents`` and ``echo_session_key`` may be changed while it runs."""

    def __init__(self, *, token: str | None = None, reply_content: Any = "CANNED-REPLY",
                 sessions: list[dict[str, Any]] | None = None, agents: set[str] | None = None,
                 echo_session_key: bool = False) -> None:
        self.token = token
        #: str, a list of content parts, or a callable(request) -> content.
        self.reply_content: Any = reply_content
        self.usage: dict[str, Any] | None = {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18}
        #: Sessions that ``sessions_list`` reports besides those the chat turns created.
        self.sessions: list[dict[str, Any]] = list(sessions or [])
        #: Known agents; None accepts any agent id.
        self.agents = agents
        self.echo_session_key = echo_session_key
        self._cond = threading.Condition()
        self._requests: list[RecordedRequest] = []
        self._deliveries: list[dict[str, Any]] = []
        self._chat_sessions: dict[str, dict[str, Any]] = {}
        self._scripts: dict[str, deque[Script]] = {}
        self._handlers: dict[str, Callable[[RecordedRequest], Reply | None]] = {}
        self._connections: set[socket.socket] = set()
        self._message_id = 100
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._stopped = threading.Event()
        self.port = 0
        #: The WebSocket RPC control plane on the same port (tests/fakerpc.py).
        self.rpc = FakeRpc(lambda: self.token, lambda: self._stopped)

    # -- life cycle ----------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def is_up(self) -> bool:
        return self._server is not None

    def start(self) -> FakeGateway:
        self.up()
        return self

    def up(self) -> None:
        """Listen (again) on the same port."""
        if self._server is not None:
            return
        last_error: OSError | None = None
        for _ in range(50):
            try:
                server = _Server(("127.0.0.1", self.port), self._handler_class())
                break
            except OSError as exc:  # the old socket may linger a moment after down()
                last_error = exc
                time.sleep(0.05)
        else:
            raise RuntimeError(f"fake gateway cannot listen on port {self.port}: {last_error}")
        self.port = server.server_address[1]
        self._stopped = threading.Event()
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name=f"fake-gateway-{self.port}", daemon=True)
        self._thread.start()

    def down(self) -> None:
        """Stop listening and cut every open connection: clients now get 'connection refused'."""
        server, thread = self._server, self._thread
        if server is None:
            return
        self._server = self._thread = None
        self._stopped.set()
        server.shutdown()
        server.server_close()
        with self._cond:
            connections = list(self._connections)
        for conn in connections:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        if thread is not None:
            thread.join(5)

    def stop(self) -> None:
        self.down()

    def __enter__(self) -> FakeGateway:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- scripting -----------------------------------------------------------------------------

    def script(self, endpoint: str, *replies: Script) -> None:
        """Queue answers for ``endpoint`` (a path or ``"tool:<name>"``), used once each, in order."""
        with self._cond:
            self._scripts.setdefault(endpoint, deque()).extend(replies)

    def on(self, endpoint: str, handler: Callable[[RecordedRequest], Reply | None] | None) -> None:
        """A standing handler for ``endpoint``; it returns None to fall back to the default."""
        with self._cond:
            if handler is None:
                self._handlers.pop(endpoint, None)
            else:
                self._handlers[endpoint] = handler

    def reset(self) -> None:
        """Forget requests, deliveries, chat sessions and scripts."""
        with self._cond:
            self._requests.clear()
            self._deliveries.clear()
            self._chat_sessions.clear()
            self._scripts.clear()
            self._handlers.clear()
        self.rpc.reset()

    # -- observations --------------------------------------------------------------------------

    @property
    def requests(self) -> list[RecordedRequest]:
        with self._cond:
            return list(self._requests)

    def requests_to(self, path: str, tool: str | None = None) -> list[RecordedRequest]:
        return [r for r in self.requests if r.path == path and (tool is None or r.tool == tool)]

    @property
    def chats(self) -> list[RecordedRequest]:
        return self.requests_to(CHAT)

    @property
    def deliveries(self) -> list[dict[str, Any]]:
        with self._cond:
            return list(self._deliveries)

    def chat_sessions(self) -> list[dict[str, Any]]:
        with self._cond:
            return [dict(s) for s in self._chat_sessions.values()]

    def wait_for(self, predicate: Callable[[FakeGateway], Any], timeout: float = 10) -> Any:
        """Block until ``predicate(self)`` is truthy (re-checked on each request); fail after timeout."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                value = predicate(self)
                if value:
                    return value
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(f"fake gateway: condition not met within {timeout}s")
                self._cond.wait(min(remaining, 0.1))

    def wait_for_requests(self, path: str, count: int = 1, timeout: float = 10) -> list[RecordedRequest]:
        return list(self.wait_for(lambda gw: len(gw.requests_to(path)) >= count and gw.requests_to(path),
                                  timeout))

    # -- request handling (server threads) -----------------------------------------------------

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        gateway = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            server_version = "FakeOpenClawGateway/1"

            def setup(self) -> None:
                super().setup()
                with gateway._cond:
                    gateway._connections.add(self.connection)

            def finish(self) -> None:
                with gateway._cond:
                    gateway._connections.discard(self.connection)
                with contextlib.suppress(OSError):
                    super().finish()

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                if is_upgrade(self.headers):
                    gateway.rpc.serve(self)
                else:
                    gateway._handle(self)

            def do_POST(self) -> None:
                gateway._handle(self)

        return Handler

    def _handle(self, handler: BaseHTTPRequestHandler) -> None:
        stopped = self._stopped
        length = int(handler.headers.get("Content-Length") or 0)
        raw = handler.rfile.read(length) if length > 0 else b""
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        parts = urlsplit(handler.path)
        request = RecordedRequest(
            method=handler.command,
            path=parts.path,
            query=parts.query,
            headers={name.lower(): value for name, value in handler.headers.items()},
            body=body,
            raw_body=raw,
            time=time.time(),
            client_port=handler.client_address[1],
        )
        with self._cond:
            self._requests.append(request)
            self._cond.notify_all()
        reply = self._choose(request)
        if reply.delay_s > 0 and stopped.wait(reply.delay_s):
            reply = Reply.dropped()  # went down() while waiting
        if reply.drop:
            handler.close_connection = True
            with contextlib.suppress(OSError):
                handler.connection.shutdown(socket.SHUT_RDWR)
            return
        if reply.chunks is not None:
            self._write_streamed(handler, reply, stopped)
        else:
            self._write(handler, reply)

    @staticmethod
    def _write_streamed(handler: BaseHTTPRequestHandler, reply: Reply, stopped: threading.Event) -> None:
        assert reply.chunks is not None
        chunked = reply.content_length is None
        headers = {"Content-Type": "application/json", **reply.headers}
        if chunked:
            headers["Transfer-Encoding"] = "chunked"
        else:
            headers["Content-Length"] = str(reply.content_length)
        try:
            handler.send_response(reply.status)
            for name, value in headers.items():
                handler.send_header(name, value)
            handler.end_headers()
            for piece in reply.chunks:
                if stopped.is_set():
                    break
                if chunked:
                    handler.wfile.write(f"{len(piece):x}\r\n".encode())
                handler.wfile.write(piece)
                if chunked:
                    handler.wfile.write(b"\r\n")
            if reply.hold_open:
                stopped.wait(60)
            elif chunked:
                handler.wfile.write(b"0\r\n\r\n")
            handler.wfile.flush()
        except OSError:
            pass  # the client stopped reading and closed the connection: what the tests want
        handler.close_connection = True

    @staticmethod
    def _write(handler: BaseHTTPRequestHandler, reply: Reply) -> None:
        if isinstance(reply.body, bytes):
            payload, ctype = reply.body, "application/octet-stream"
        elif isinstance(reply.body, str):
            payload, ctype = reply.body.encode(), "text/plain; charset=utf-8"
        elif reply.body is None and reply.status == 204:
            payload, ctype = b"", "application/json"
        else:
            payload, ctype = json.dumps(reply.body).encode(), "application/json; charset=utf-8"
        try:
            handler.send_response(reply.status)
            headers = {"Content-Type": ctype, **reply.headers, "Content-Length": str(len(payload))}
            for name, value in headers.items():
                handler.send_header(name, value)
            handler.end_headers()
            handler.wfile.write(payload)
            handler.wfile.flush()
        except OSError:
            handler.close_connection = True  # the client gave up (timeout test)

    def _choose(self, request: RecordedRequest) -> Reply:
        if (self.token is not None and request.path not in (HEALTH, "/healthz", "/readyz")
                and request.headers.get("authorization") != f"Bearer {self.token}"):
            return Reply.error(401, "Unauthorized", "unauthorized")
        keys = [f"tool:{request.tool}", request.path] if request.path == INVOKE and request.tool else \
            [request.path]
        for key in keys:
            with self._cond:
                queue = self._scripts.get(key)
                scripted = queue.popleft() if queue else None
            if scripted is not None:
                reply = scripted(request) if callable(scripted) else scripted
                if reply is not None:
                    return reply
        for key in keys:
            with self._cond:
                handler = self._handlers.get(key)
            if handler is not None:
                reply = handler(request)
                if reply is not None:
                    return reply
        return self._default(request)

    # -- default behaviour (the real gateway's) ------------------------------------------------

    def _default(self, request: RecordedRequest) -> Reply:
        if request.path in (HEALTH, "/healthz"):
            return Reply(200, {"ok": True, "status": "live"}, headers={"Cache-Control": "no-store"})
        if request.path == "/readyz":
            return Reply(200, {"ready": True, "failing": []})
        if request.path == CHAT:
            if request.method != "POST":
                return Reply.error(405, "Method Not Allowed", "invalid_request_error")
            return self._chat(request)
        if request.path == INVOKE:
            if request.method != "POST":
                return Reply.error(405, "Method Not Allowed", "invalid_request_error")
            return self._invoke(request)
        return Reply(404, "Not Found")

    def _chat(self, request: RecordedRequest) -> Reply:
        body = request.body if isinstance(request.body, dict) else {}
        model = str(body.get("model") or "").strip()
        match = _AGENT_MODEL.match(model)
        if model and not match and model.lower() not in ("openclaw", "openclaw/default"):
            return Reply.error(400, "Invalid `model`. Use `openclaw` or `openclaw/<agentId>`.",
                               "invalid_request_error")
        agent = (request.headers.get("x-openclaw-agent-id") or (match.group("agent") if match else "")
                 or "main").lower()
        if self.agents is not None and agent not in self.agents:
            return Reply.error(400, f"Unknown agent '{agent}'.", "invalid_request_error")
        if not isinstance(body.get("messages"), list) or not body["messages"]:
            return Reply.error(400, "Missing `messages`.", "invalid_request_error")
        key = (request.headers.get("x-openclaw-session-key") or "").strip()
        lowered = key.lower()
        if any(lowered.startswith(f"{ns}:") or f":{ns}:" in lowered for ns in _RESERVED):
            return Reply.error(400, "`x-openclaw-session-key` cannot use reserved internal session "
                               "namespaces.", "invalid_request_error")
        if not key:
            key = f"agent:{agent}:openai:{uuid.uuid4()}"
        elif not key.startswith("agent:"):
            key = f"agent:{agent}:{key}"
        content = self.reply_content(request) if callable(self.reply_content) else self.reply_content
        now_ms = int(time.time() * 1000)
        with self._cond:
            session = self._chat_sessions.setdefault(
                key, {"key": key, "sessionId": str(uuid.uuid4()), "agentId": agent, "kind": "other"})
            session.update(updatedAt=now_ms, status="done", model=request.headers.get("x-openclaw-model"))
        headers = {"x-openclaw-session-key": key} if self.echo_session_key else {}
        reply: dict[str, Any] = {
            "id": f"chatcmpl_{uuid.uuid4()}",
            "object": "chat.completion",
            "created": now_ms // 1000,
            "model": model or "openclaw",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content},
                         "finish_reason": "stop"}],
        }
        if self.usage is not None:
            reply["usage"] = self.usage
        return Reply(200, reply, headers=headers)

    def _invoke(self, request: RecordedRequest) -> Reply:
        body = request.body
        if not isinstance(body, dict) or not isinstance(body.get("tool"), str):
            return Reply(400, {"ok": False, "error": {"type": "invalid_request",
                                                      "message": "tools.invoke requires body.tool"}})
        args = body.get("args") if isinstance(body.get("args"), dict) else {}
        if body["tool"] == "sessions_list":
            return self._sessions_list(args)
        if body["tool"] == "message":
            return self._message(args, body.get("sessionKey"))
        return Reply(404, {"ok": False, "error": {"type": "not_found",
                                                  "message": f"Tool not available: {body['tool']}"}})

    def _sessions_list(self, args: dict[str, Any]) -> Reply:
        with self._cond:
            sessions = [dict(s) for s in self.sessions] + [dict(s) for s in self._chat_sessions.values()]
        kinds = args.get("kinds")
        if isinstance(kinds, list) and kinds:
            sessions = [s for s in sessions if s.get("kind") in kinds]
        active = args.get("activeMinutes")
        if isinstance(active, int | float) and active > 0:
            cutoff = time.time() * 1000 - active * 60_000
            sessions = [s for s in sessions
                        if not isinstance(s.get("updatedAt"), int | float) or s["updatedAt"] >= cutoff]
        limit = args.get("limit")
        limit_applied = limit if isinstance(limit, int) and limit > 0 else 50
        details = {"count": min(len(sessions), limit_applied), "sessions": sessions[:limit_applied],
                   "hasMore": len(sessions) > limit_applied, "limitApplied": limit_applied}
        return Reply(200, {"ok": True, "result": {
            "content": [{"type": "text", "text": json.dumps(details, indent=2)}], "details": details}})

    def _message(self, args: dict[str, Any], session_key: Any) -> Reply:
        text = args.get("message")
        media = _media_of(args)
        if args.get("action") != "send" or not (isinstance(text, str) or media is not None):
            return Reply(400, {"ok": False, "error": {"type": "invalid_request",
                                                      "message": "message: action send needs a message"}})
        with self._cond:
            self._message_id += 1
            message_id = str(self._message_id)
            self._deliveries.append({"channel": args.get("channel"), "target": args.get("target"),
                                     "message": text, "media": media, "session_key": session_key,
                                     "message_id": message_id, "time": time.time()})
            self._cond.notify_all()
        details: dict[str, Any] = {"ok": True, "messageId": message_id}
        if args.get("target"):
            details["chatId"] = args["target"]
        return Reply(200, {"ok": True, "result": {
            "content": [{"type": "text", "text": json.dumps(details)}], "details": details}})


def _media_of(args: dict[str, Any]) -> dict[str, Any] | None:
    """The media parameters of a ``message`` send, as the real gateway reads them: ``buffer``
    (base64 or a data URL; decoded into ``data``) with ``filename`` and ``mimeType``, or a URL/path
    in ``media`` / ``mediaUrl`` / ``path`` / ``filePath``. None for a text-only send."""
    reference = next((args[key] for key in ("media", "mediaUrl", "path", "filePath")
                      if isinstance(args.get(key), str) and args[key]), None)
    buffer = args.get("buffer")
    if not isinstance(buffer, str) and reference is None:
        return None
    data: bytes | None = None
    if isinstance(buffer, str):
        encoded = buffer.split(",", 1)[1] if buffer.startswith("data:") else buffer
        data = base64.b64decode(encoded, validate=True)
    return {"data": data, "size": None if data is None else len(data), "reference": reference,
            "filename": args.get("filename"), "mime_type": args.get("mimeType") or args.get("contentType")}


@pytest.fixture
def fake_gateway() -> Iterator[FakeGateway]:
    """A running fake gateway without a token; set ``fake_gateway.token`` to require one."""
    with FakeGateway() as gateway:
        yield gateway
