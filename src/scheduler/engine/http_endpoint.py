"""The daemon's HTTP endpoint (``SCHEDULER_HTTP_ADDR``): /healthz, /readyz, /metrics.

Served inside the daemon's asyncio loop, not on a thread of its own: an idle endpoint is one
listening socket and costs nothing, and a handler reads the daemon's state without locks. The
HTTP is the least a probe or a Prometheus scraper needs: one ``GET`` (or ``HEAD``) per
connection, no body, ``Connection: close``. Everything a client sends is bounded: the request
head (``MAX_REQUEST_BYTES``), the time to send it (``READ_TIMEOUT_S``), the time to take the
answer (``WRITE_TIMEOUT_S``), and the connections served at once (``MAX_CONNECTIONS``; more are
answered 503 and closed). A malformed request gets a 4xx and never reaches a handler; a handler
that fails answers 500 and is logged; nothing a client does can stop the daemon.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from scheduler.config import parse_http_addr
from scheduler.errors import ConfigError

MAX_REQUEST_BYTES = 8192
READ_TIMEOUT_S = 5.0
WRITE_TIMEOUT_S = 10.0
MAX_CONNECTIONS = 16
# After answering, what the client still sends is read and dropped (up to this much, this long)
# before closing: closing with unread input would reset the connection, and the client could
# lose the answer (a "lingering close").
LINGER_BYTES = 65536
LINGER_S = 1.0
_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed",
            408: "Request Timeout", 431: "Request Header Fields Too Large",
            500: "Internal Server Error", 503: "Service Unavailable", 505: "HTTP Version Not Supported"}


@dataclass(frozen=True)
class Answer:
    status: int
    body: bytes
    content_type: str = "application/json"
    headers: Mapping[str, str] = field(default_factory=dict)


Handler = Callable[[], Awaitable[Answer]]


class HttpEndpoint:
    def __init__(self, routes: Mapping[str, Handler], log: Any) -> None:
        self.routes = dict(routes)
        self.log = log
        self._server: asyncio.Server | None = None
        self._open = 0

    async def start(self, address: str) -> str:
        """Listen on ``host:port``; the address bound (port 0 picks a free one). A port in use
        or an address not on this host is a ConfigError naming the variable."""
        host, port = parse_http_addr(address)
        try:
            self._server = await asyncio.start_server(self._serve_one, host, port,
                                                      limit=MAX_REQUEST_BYTES)
        except OSError as exc:
            why = exc.strerror or str(exc)
            raise ConfigError(f"SCHEDULER_HTTP_ADDR {address}: cannot listen ({why})") from None
        bound = self._server.sockets[0].getsockname()
        return f"[{bound[0]}]:{bound[1]}" if ":" in bound[0] else f"{bound[0]}:{bound[1]}"

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._server.wait_closed(), timeout=2)

    async def _serve_one(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._open += 1
        try:
            answer: Answer | None
            if self._open > MAX_CONNECTIONS:
                answer, head_only = _plain(503, "too many connections"), False
            else:
                answer, head_only = await self._answer(reader)
            if answer is not None:
                await asyncio.wait_for(_send(writer, answer, head_only), timeout=WRITE_TIMEOUT_S)
                await _linger(reader, writer)
        except (TimeoutError, ConnectionError):
            pass  # the client went away or would not read: nothing to tell it
        finally:
            self._open -= 1
            writer.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(writer.wait_closed(), timeout=1)

    async def _answer(self, reader: asyncio.StreamReader) -> tuple[Answer | None, bool]:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=READ_TIMEOUT_S)
        except asyncio.LimitOverrunError:
            return _plain(431, "request head over 8192 bytes"), False
        except asyncio.IncompleteReadError:
            return None, False  # closed before a whole request: no one to answer
        except TimeoutError:
            return _plain(408, "request not received in time"), False
        method, path, problem = _request_line(head)
        if problem is not None:
            return problem, False
        handler = self.routes.get(path)
        if handler is None:
            return _plain(404, f"no such path; try {', '.join(sorted(self.routes))}"), False
        if method not in ("GET", "HEAD"):
            return Answer(405, b"only GET and HEAD\n", "text/plain", {"Allow": "GET, HEAD"}), False
        try:
            return await handler(), method == "HEAD"
        except Exception as exc:
            self.log.error("http.handler_failed", path=path, error=repr(exc), exc_info=exc)
            return _plain(500, "internal error; see the daemon's log"), False


async def _linger(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    if writer.can_write_eof():
        writer.write_eof()
    dropped = 0
    with contextlib.suppress(TimeoutError, ConnectionError):
        async with asyncio.timeout(LINGER_S):
            while dropped < LINGER_BYTES and (chunk := await reader.read(8192)):
                dropped += len(chunk)


def _request_line(head: bytes) -> tuple[str, str, Answer | None]:
    line = head.split(b"\r\n", 1)[0].decode("latin-1")
    parts = line.split(" ")
    if len(parts) != 3 or not parts[0].isalpha() or not parts[1].startswith("/"):
        return "", "", _plain(400, "malformed request line")
    method, target, version = parts
    if version not in ("HTTP/1.0", "HTTP/1.1"):
        return "", "", _plain(505, "HTTP/1.0 or HTTP/1.1 only")
    return method, target.split("?", 1)[0], None


def _plain(status: int, text: str) -> Answer:
    return Answer(status, text.encode() + b"\n", "text/plain; charset=utf-8")


async def _send(writer: asyncio.StreamWriter, answer: Answer, head_only: bool) -> None:
    lines = [f"HTTP/1.1 {answer.status} {_REASONS.get(answer.status, 'Unknown')}",
             f"Content-Type: {answer.content_type}", f"Content-Length: {len(answer.body)}",
             "Cache-Control: no-store", "Connection: close",
             *(f"{name}: {value}" for name, value in answer.headers.items())]
    writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
    if not head_only:
        writer.write(answer.body)
    await writer.drain()
