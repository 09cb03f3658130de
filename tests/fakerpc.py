"""The fake gateway's WebSocket RPC control plane (served by tests/fakegateway.py, same port).

Like the real gateway 2026.9.6, :class:`FakeGateway` answers a WebSocket upgrade on any GET path
of its HTTP port (``ws://127.0.0.1:<port>/``); ``fake_gateway.rpc`` is the :class:`FakeRpc` that
speaks on it. Handshake: a ``connect.challenge`` event, then a ``connect`` request whose
``auth.token`` must equal ``fake_gateway.token`` (when one is set; else ok:false ``UNAUTHORIZED``
and close code 1008), answered with ``hello-ok``. Each later request is answered in its own
thread, so a blocking ``agent.wait`` does not hold up an ``sessions.abort`` on the same socket.

Methods (the payload shapes the real gateway uses):

* ``agent`` {message, sessionKey, idempotencyKey, label, lane, timeout} → {runId, sessionKey,
  status:"accepted"}; the run's outcome is the next :class:`RunScript` queued with
  :meth:`FakeRpc.script_runs` (default: :meth:`RunScript.ok` with :attr:`FakeRpc.reply`). The same
  idempotencyKey returns the same run.
* ``agent.wait`` {runId, timeoutMs} → {status:"ok"|"error"|"timeout", startedAt, endedAt,
  stopReason, error?}; blocks up to timeoutMs while the run is running.
* ``chat.history`` {sessionKey, limit?} → {messages}: user content as a string, assistant content
  as ``[{type:"text", text}]`` parts (a failed run's assistant message is its error text).
* ``sessions.send`` {key, message} → {runId, status:"started"} (a new run of the session, scripted
  like ``agent``); unknown key → ok:false ``INVALID_REQUEST``.
* ``sessions.list`` {activeMinutes?} → {sessions:[{key, kind:"direct", status, updatedAt,
  totalTokens, classification, label}]}; classification is "subagent" for ``:subagent:`` keys,
  "main" for ``agent:<id>:main``, else "custom".
* ``system-event`` {text, mode} → {ok:true}, recorded in :attr:`FakeRpc.system_events`.
* ``sessions.abort`` {key, runId?} → {ok:true, abortedRunId, status:"aborted"} (or
  ``abortedRunId: null, status: "no-active-run"``, a guess): the running run ends as the real one
  does, ``agent.wait`` status "error" with stopReason "rpc", and the session lists as "killed".

Seen on the real gateway (with the peer's fake LLM) and NOT imitated by default: a run whose
provider answers 529 is retried inside the gateway, so ``agent.wait`` keeps answering "timeout"
for over a minute; script :meth:`RunScript.failed` to get the terminal error at once.

Scripting: :meth:`FakeRpc.script_runs` (outcomes of the next runs, e.g.
``RunScript.error("529 overloaded")`` N times then ``RunScript.ok()``; ``RunScript.hang()`` stays
running, with no activity, until aborted); :meth:`FakeRpc.on` (a standing handler per method
returning an :class:`RpcReply` or None for the default: errors, delays, silence, raw frames,
events sent before the answer); :meth:`FakeRpc.touch_session` (session activity: updatedAt now and
totalTokens grown); :meth:`FakeRpc.push_event`. Observations: :attr:`FakeRpc.requests` (every
request, ``connect`` included, as :class:`RpcRequest`), :meth:`FakeRpc.requests_for`,
:meth:`FakeRpc.wait_for_request`, :meth:`FakeRpc.run`, :attr:`FakeRpc.runs`.
"""

from __future__ import annotations

import base64
import hashlib
import json
import struct
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, BinaryIO

_WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
_TEXT, _CLOSE, _PING, _PONG = 0x1, 0x8, 0x9, 0xA
_RUNNING = "running"


@dataclass(frozen=True)
class RpcRequest:
    """One request frame as the fake read it."""

    method: str
    params: dict[str, Any]
    id: str
    connection: int  # which WebSocket connection (1, 2, ...)
    time: float


@dataclass
class RpcReply:
    """A scripted answer to one request: ``payload`` (ok:true) or ``error`` ({code, message}),
    after ``delay_s``; ``events`` are sent first; ``raw`` replaces the frame with this text;
    ``silent`` sends nothing at all."""

    payload: Any = None
    error: dict[str, Any] | None = None
    delay_s: float = 0.0
    events: list[tuple[str, Any]] = field(default_factory=list)
    raw: str | None = None
    silent: bool = False

    @classmethod
    def fail(cls, code: str, message: str, **extra: Any) -> RpcReply:
        return cls(error={"code": code, "message": message, **extra})


@dataclass(frozen=True)
class RunScript:
    """How one agent run ends: ``ok`` with ``reply``, ``error`` with ``error`` text, or ``hang``."""

    outcome: str = "ok"
    reply: str | None = None
    error: str | None = None
    tokens: int = 120

    @classmethod
    def ok(cls, reply: str | None = None, tokens: int = 120) -> RunScript:
        return cls("ok", reply=reply, tokens=tokens)

    @classmethod
    def failed(cls, error: str = "529 overloaded: the provider is overloaded") -> RunScript:
        return cls("error", error=error, tokens=0)

    @classmethod
    def hang(cls) -> RunScript:
        """Stays running, with no activity, until ``sessions.abort``."""
        return cls("hang", tokens=0)


@dataclass
class FakeRun:
    run_id: str
    session_key: str
    message: str
    label: str | None
    lane: str | None
    status: str
    started_at: int
    ended_at: int | None = None
    stop_reason: str | None = None
    error: str | None = None


@dataclass
class _Session:
    key: str
    label: str | None
    updated_at: int
    total_tokens: int = 0
    messages: list[dict[str, Any]] = field(default_factory=list)


def _now_ms() -> int:
    return int(time.time() * 1000)


def classification(key: str) -> str:
    if ":subagent:" in key:
        return "subagent"
    parts = key.split(":")
    return "main" if len(parts) == 3 and parts[0] == "agent" and parts[2] == "main" else "custom"


class _Socket:
    """Server side of one WebSocket (RFC 6455 framing, enough for the tests)."""

    def __init__(self, rfile: BinaryIO, wfile: BinaryIO) -> None:
        self.rfile, self.wfile = rfile, wfile
        self.lock = threading.Lock()
        self.closed = False

    def read_message(self) -> str | None:
        """The next text message; None when the client closed or the socket dropped."""
        while True:
            header = self.rfile.read(2)
            if len(header) < 2:
                return None
            opcode, length = header[0] & 0x0F, header[1] & 0x7F
            if length == 126:
                length = struct.unpack("!H", self.rfile.read(2))[0]
            elif length == 127:
                length = struct.unpack("!Q", self.rfile.read(8))[0]
            mask = self.rfile.read(4) if header[1] & 0x80 else b"\0\0\0\0"
            data = bytes(b ^ mask[i % 4] for i, b in enumerate(self.rfile.read(length)))
            if opcode == _CLOSE:
                self.send(_CLOSE, data[:2])
                return None
            if opcode == _PING:
                self.send(_PONG, data)
            elif opcode == _TEXT:
                return data.decode("utf-8", errors="replace")

    def send(self, opcode: int, data: bytes) -> None:
        size = len(data)
        if size < 126:
            header = struct.pack("!BB", 0x80 | opcode, size)
        elif size < 1 << 16:
            header = struct.pack("!BBH", 0x80 | opcode, 126, size)
        else:
            header = struct.pack("!BBQ", 0x80 | opcode, 127, size)
        with self.lock:
            if self.closed:
                return
            try:
                self.wfile.write(header + data)
                self.wfile.flush()
            except OSError:
                self.closed = True
            if opcode == _CLOSE:
                self.closed = True

    def send_json(self, frame: Any) -> None:
        self.send(_TEXT, json.dumps(frame).encode())

    def close(self, code: int, reason: str = "") -> None:
        self.send(_CLOSE, struct.pack("!H", code) + reason.encode())


class FakeRpc:
    """The scriptable control plane; see the module docstring. Thread-safe."""

    def __init__(self, token: Callable[[], str | None], stopped: Callable[[], threading.Event]) -> None:
        self._token = token
        self._stopped = stopped
        self.reply = "CANNED-REPLY"
        #: False: never send connect.challenge (a handshake that stalls).
        self.challenge = True
        self.system_events: list[dict[str, Any]] = []
        self._cond = threading.Condition()
        self._requests: list[RpcRequest] = []
        self._runs: dict[str, FakeRun] = {}
        self._by_idempotency: dict[str, str] = {}
        self._sessions: dict[str, _Session] = {}
        self._killed: set[str] = set()  # sessions whose last run was aborted
        self._run_scripts: deque[RunScript] = deque()
        self._handlers: dict[str, Callable[[RpcRequest], RpcReply | None]] = {}
        self._sockets: list[_Socket] = []
        self._connections = 0

    # -- scripting -----------------------------------------------------------------------------

    def script_runs(self, *outcomes: RunScript) -> None:
        """Outcomes of the next runs (``agent`` and ``sessions.send``), in order."""
        with self._cond:
            self._run_scripts.extend(outcomes)

    def on(self, method: str, handler: Callable[[RpcRequest], RpcReply | None] | None) -> None:
        """A standing handler for ``method``; it returns None to fall back to the default."""
        with self._cond:
            if handler is None:
                self._handlers.pop(method, None)
            else:
                self._handlers[method] = handler

    def touch_session(self, key: str, tokens: int = 100) -> None:
        """Session activity: ``updatedAt`` becomes now and ``totalTokens`` grows by ``tokens``."""
        with self._cond:
            session = self._session(key, None)
            session.updated_at = _now_ms()
            session.total_tokens += tokens
            self._cond.notify_all()

    def push_event(self, event: str, payload: Any = None) -> None:
        """Send an event frame on every open connection."""
        with self._cond:
            sockets = list(self._sockets)
        for sock in sockets:
            sock.send_json({"type": "event", "event": event, "payload": payload})

    def reset(self) -> None:
        with self._cond:
            self._requests.clear()
            self._runs.clear()
            self._by_idempotency.clear()
            self._sessions.clear()
            self._killed.clear()
            self._run_scripts.clear()
            self._handlers.clear()
            self.system_events.clear()

    # -- observations --------------------------------------------------------------------------

    @property
    def requests(self) -> list[RpcRequest]:
        with self._cond:
            return list(self._requests)

    def requests_for(self, method: str) -> list[RpcRequest]:
        return [r for r in self.requests if r.method == method]

    def wait_for_request(self, method: str, count: int = 1, timeout: float = 10) -> list[RpcRequest]:
        deadline = time.monotonic() + timeout
        with self._cond:
            while len(found := [r for r in self._requests if r.method == method]) < count:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(f"fake rpc: {count} {method} request(s) not seen in {timeout}s")
                self._cond.wait(min(remaining, 0.1))
            return found

    @property
    def runs(self) -> list[FakeRun]:
        with self._cond:
            return [FakeRun(**vars(run)) for run in self._runs.values()]

    def run(self, run_id: str) -> FakeRun:
        with self._cond:
            return FakeRun(**vars(self._runs[run_id]))

    def session_messages(self, key: str) -> list[dict[str, Any]]:
        with self._cond:
            session = self._sessions.get(key)
            return [dict(m) for m in session.messages] if session else []

    # -- connection (a server thread of FakeGateway) -------------------------------------------

    def serve(self, handler: Any) -> None:
        """Take over an HTTP request that asks for a WebSocket upgrade."""
        key = handler.headers.get("Sec-WebSocket-Key") or ""
        accept = base64.b64encode(hashlib.sha1((key + _WS_GUID).encode()).digest()).decode()
        handler.send_response(101, "Switching Protocols")
        for name, value in (("Upgrade", "websocket"), ("Connection", "Upgrade"),
                            ("Sec-WebSocket-Accept", accept)):
            handler.send_header(name, value)
        handler.end_headers()
        handler.wfile.flush()
        handler.close_connection = True
        sock = _Socket(handler.rfile, handler.wfile)
        with self._cond:
            self._connections += 1
            number = self._connections
            self._sockets.append(sock)
        try:
            self._converse(sock, number)
        except (OSError, ValueError, struct.error):
            pass  # the client went away mid-frame
        finally:
            with self._cond:
                self._sockets.remove(sock)

    def _converse(self, sock: _Socket, number: int) -> None:
        if self.challenge:
            sock.send_json({"type": "event", "event": "connect.challenge",
                            "payload": {"nonce": str(uuid.uuid4()), "ts": _now_ms()}})
        authenticated = False
        while (text := sock.read_message()) is not None:
            frame = json.loads(text)
            request = RpcRequest(str(frame.get("method")), dict(frame.get("params") or {}),
                                 str(frame.get("id")), number, time.time())
            with self._cond:
                self._requests.append(request)
                self._cond.notify_all()
            if not authenticated:
                if request.method != "connect" or not self._connect(sock, request):
                    return
                authenticated = True
                continue
            threading.Thread(target=self._answer, args=(sock, request), daemon=True).start()

    def _connect(self, sock: _Socket, request: RpcRequest) -> bool:
        token = self._token()
        auth = request.params.get("auth") or {}
        if token is not None and auth.get("token") != token:
            sock.send_json({"type": "res", "id": request.id, "ok": False, "error": {
                "code": "UNAUTHORIZED", "message": "unauthorized: gateway token mismatch"}})
            sock.close(1008, "unauthorized")
            return False
        sock.send_json({"type": "res", "id": request.id, "ok": True, "payload": {
            "type": "hello-ok", "protocol": 4, "features": {"methods": sorted(_METHODS)},
            "policy": {"maxPayload": 26214400, "maxBufferedBytes": 52428800, "tickIntervalMs": 30000}}})
        return True

    def _answer(self, sock: _Socket, request: RpcRequest) -> None:
        with self._cond:
            handler = self._handlers.get(request.method)
        reply = handler(request) if handler is not None else None
        if reply is None:
            reply = self._default(request)
        if reply.delay_s > 0 and self._stopped().wait(reply.delay_s):
            return
        for event, payload in reply.events:
            sock.send_json({"type": "event", "event": event, "payload": payload})
        if reply.silent:
            return
        if reply.raw is not None:
            sock.send(_TEXT, reply.raw.encode())
        elif reply.error is not None:
            sock.send_json({"type": "res", "id": request.id, "ok": False, "error": reply.error})
        else:
            sock.send_json({"type": "res", "id": request.id, "ok": True, "payload": reply.payload})

    # -- default behaviour ---------------------------------------------------------------------

    def _default(self, request: RpcRequest) -> RpcReply:
        method = _METHODS.get(request.method)
        if method is None:
            return RpcReply.fail("INVALID_REQUEST", f"unknown method: {request.method}")
        return method(self, request.params)

    def _session(self, key: str, label: str | None) -> _Session:
        session = self._sessions.get(key)
        if session is None:
            session = self._sessions[key] = _Session(key, label, _now_ms())
        elif label is not None:
            session.label = label
        return session

    def _start_run(self, key: str, message: str, label: str | None, lane: str | None) -> FakeRun:
        with self._cond:
            script = self._run_scripts.popleft() if self._run_scripts else RunScript.ok()
            session = self._session(key, label)
            session.messages.append({"role": "user", "content": message, "timestamp": _now_ms()})
            self._killed.discard(key)
            run = FakeRun(str(uuid.uuid4()), key, message, label, lane, _RUNNING, _now_ms())
            self._runs[run.run_id] = run
            if script.outcome == "ok":
                self._end_run(run, session, "ok", script.reply or self.reply, None, script.tokens)
            elif script.outcome == "error":
                self._end_run(run, session, "error", script.error or "error", script.error, 0)
            session.updated_at = _now_ms()
            self._cond.notify_all()
            return run

    @staticmethod
    def _end_run(run: FakeRun, session: _Session, status: str, text: str, error: str | None,
                 tokens: int) -> None:
        run.status, run.ended_at, run.error = status, _now_ms(), error
        run.stop_reason = "stop" if status == "ok" else "error"
        session.messages.append({"role": "assistant", "content": [{"type": "text", "text": text}],
                                 "usage": {"totalTokens": tokens}, "timestamp": run.ended_at})
        session.total_tokens += tokens
        session.updated_at = run.ended_at

    def _agent(self, params: dict[str, Any]) -> RpcReply:
        key, message = params.get("sessionKey"), params.get("message")
        if not isinstance(key, str) or not key or not isinstance(message, str):
            return RpcReply.fail("INVALID_REQUEST", "agent requires message and sessionKey")
        idem = str(params.get("idempotencyKey") or "")
        with self._cond:
            known = self._by_idempotency.get(idem) if idem else None
        if known is None:
            run = self._start_run(key, message, params.get("label"), params.get("lane"))
            known = run.run_id
            if idem:
                with self._cond:
                    self._by_idempotency[idem] = known
        return RpcReply({"runId": known, "sessionKey": key, "status": "accepted"})

    def _agent_wait(self, params: dict[str, Any]) -> RpcReply:
        run_id = str(params.get("runId"))
        timeout_ms = params.get("timeoutMs") if isinstance(params.get("timeoutMs"), int) else 30_000
        deadline = time.monotonic() + timeout_ms / 1000
        with self._cond:
            run = self._runs.get(run_id)
            if run is None:
                return RpcReply.fail("INVALID_REQUEST", f"unknown runId: {run_id}")
            while run.status == _RUNNING and (remaining := deadline - time.monotonic()) > 0:
                self._cond.wait(min(remaining, 0.1))
            if run.status == _RUNNING:
                return RpcReply({"runId": run_id, "status": "timeout"})
            payload = {"runId": run_id, "status": run.status, "startedAt": run.started_at,
                       "endedAt": run.ended_at, "stopReason": run.stop_reason}
            if run.error is not None:
                payload["error"] = run.error
            return RpcReply(payload)

    def _chat_history(self, params: dict[str, Any]) -> RpcReply:
        messages = self.session_messages(str(params.get("sessionKey")))
        limit = params.get("limit")
        if isinstance(limit, int) and limit > 0:
            messages = messages[-limit:]
        return RpcReply({"sessionKey": params.get("sessionKey"), "messages": messages})

    def _sessions_send(self, params: dict[str, Any]) -> RpcReply:
        key, message = params.get("key"), params.get("message")
        with self._cond:
            known = isinstance(key, str) and key in self._sessions
        if not known or not isinstance(message, str):
            return RpcReply.fail("INVALID_REQUEST", f"session not found: {key}")
        run = self._start_run(str(key), str(message), None, None)
        return RpcReply({"runId": run.run_id, "status": "started"})

    def _sessions_list(self, params: dict[str, Any]) -> RpcReply:
        active = params.get("activeMinutes")
        cutoff = _now_ms() - active * 60_000 if isinstance(active, int | float) and active > 0 else 0
        with self._cond:
            running = {run.session_key for run in self._runs.values() if run.status == _RUNNING}
            sessions = [{"key": s.key, "kind": "direct", "label": s.label, "updatedAt": s.updated_at,
                         "totalTokens": s.total_tokens, "classification": classification(s.key),
                         "status": "running" if s.key in running else
                         "killed" if s.key in self._killed else "done"}
                        for s in self._sessions.values() if s.updated_at >= cutoff]
        return RpcReply({"sessions": sessions, "count": len(sessions)})

    def _system_event(self, params: dict[str, Any]) -> RpcReply:
        if not isinstance(params.get("text"), str) or not params["text"]:
            return RpcReply.fail("INVALID_REQUEST", "system-event requires text")
        with self._cond:
            self.system_events.append(dict(params))
            self._cond.notify_all()
        return RpcReply({"ok": True})

    def _sessions_abort(self, params: dict[str, Any]) -> RpcReply:
        key, run_id = params.get("key"), params.get("runId")
        aborted: str | None = None
        with self._cond:
            for run in self._runs.values():
                if run.status == _RUNNING and run.session_key == key and run_id in (None, run.run_id):
                    run.status, run.ended_at, run.stop_reason, run.error = "error", _now_ms(), "rpc", None
                    self._killed.add(run.session_key)
                    aborted = run.run_id
            self._cond.notify_all()
        if aborted is None:
            return RpcReply({"ok": True, "abortedRunId": None, "status": "no-active-run"})
        return RpcReply({"ok": True, "abortedRunId": aborted, "status": "aborted"})


_METHODS: dict[str, Callable[[FakeRpc, dict[str, Any]], RpcReply]] = {
    "agent": FakeRpc._agent, "agent.wait": FakeRpc._agent_wait, "chat.history": FakeRpc._chat_history,
    "sessions.send": FakeRpc._sessions_send, "sessions.list": FakeRpc._sessions_list,
    "system-event": FakeRpc._system_event, "sessions.abort": FakeRpc._sessions_abort,
}


def is_upgrade(headers: Any) -> bool:
    return "websocket" in str(headers.get("Upgrade") or "").lower()


__all__ = ["FakeRpc", "RpcReply", "RpcRequest", "RunScript", "classification", "is_upgrade"]
