"""Loopback stand-ins for the services the real OpenClaw gateway talks to (stdlib only).

``fake_llm`` is an OpenAI-compatible model server, ``fake_telegram`` a Telegram Bot API. Both bind
127.0.0.1 only, log every request as one JSON object per line, and run either as a process
(``python -m tests.peers.fake_llm --port N --log FILE``) or in-process on a daemon thread
(``fake_llm.serve(port, log_path)``). This module holds what the two share.
"""

from __future__ import annotations

import contextlib
import json
import signal
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import FrameType
from typing import Any, Self

LOOPBACK = "127.0.0.1"


class JsonlLog:
    """Appends one JSON object per line to ``path`` (no file: entries are only kept in memory)."""

    def __init__(self, path: Path | str | None) -> None:
        self.path = Path(path) if path is not None else None
        self.entries: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.path.touch()

    def write(self, entry: dict[str, Any]) -> None:
        line = json.dumps(entry, ensure_ascii=False, default=str)
        with self._lock:
            self.entries.append(entry)
            if self.path is not None:
                with self.path.open("a", encoding="utf-8") as handle:
                    handle.write(line + "\n")


def read_jsonl(path: Path | str) -> list[dict[str, Any]]:
    """Every complete JSON object line of ``path`` (a missing file or a torn last line is skipped)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        return []
    entries: list[dict[str, Any]] = []
    for line in text.splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if isinstance(entry, dict):
            entries.append(entry)
    return entries


class PeerServer(ThreadingHTTPServer):
    """A threading HTTP server on loopback that logs to a :class:`JsonlLog`.

    ``start()`` serves on a daemon thread; ``close()`` stops it and wakes any handler waiting on
    ``stopping`` (the Telegram long-poll).
    """

    daemon_threads = True
    allow_reuse_address = True
    block_on_close = False

    def __init__(self, port: int, handler: type[BaseHTTPRequestHandler], log_path: Path | str | None,
                 host: str = LOOPBACK) -> None:
        self.log = JsonlLog(log_path)
        self.stopping = threading.Event()
        self._thread: threading.Thread | None = None
        super().__init__((host, port), handler)

    @property
    def port(self) -> int:
        return int(self.server_address[1])

    @property
    def base_url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    def start(self) -> Self:
        if self._thread is None:
            self._thread = threading.Thread(target=self.serve_forever, name=type(self).__name__,
                                            daemon=True)
            self._thread.start()
        return self

    def close(self) -> None:
        self.stopping.set()
        if self._thread is not None:
            self.shutdown()
            self._thread.join(5)
            self._thread = None
        self.server_close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


class JsonHandler(BaseHTTPRequestHandler):
    """Request helpers shared by the fakes: body reading, JSON replies, quiet logging."""

    protocol_version = "HTTP/1.1"
    server_version = "openclaw-peer-fake/1"

    def read_body(self) -> bytes:
        """The whole request body: by ``Content-Length``, or chunk by chunk (the gateway streams
        uploads such as ``sendPhoto`` multipart bodies with ``Transfer-Encoding: chunked``)."""
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            return self._read_chunked()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def _read_chunked(self) -> bytes:
        body = bytearray()
        while True:
            size_line = self.rfile.readline(1024)
            size = int(size_line.split(b";", 1)[0].strip() or b"0", 16)
            if size == 0:
                while self.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                    pass  # trailer headers
                return bytes(body)
            body += self.rfile.read(size)
            self.rfile.readline(1024)  # the CRLF after each chunk

    def send_json(self, status: int, payload: Any) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def handle(self) -> None:
        # The gateway drops connections (aborted turns, shutdown): not worth a traceback.
        with contextlib.suppress(BrokenPipeError, ConnectionResetError, TimeoutError):
            super().handle()

    def log_message(self, format: str, *args: Any) -> None:
        """Requests go to the JSONL log, not to stderr."""


def run_forever(server: PeerServer, port_file: Path | str | None, name: str) -> None:
    """The ``python -m`` entry: announce the bound port, then serve until SIGTERM or SIGINT."""

    def stop(signum: int, frame: FrameType | None) -> None:
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, stop)
    if port_file is not None:
        # Written whole, then renamed, so a reader never sees a partial number.
        target = Path(port_file)
        partial = target.with_name(target.name + ".partial")
        partial.write_text(str(server.port))
        partial.replace(target)
    print(f"{name} listening on {server.base_url} (log: {server.log.path})", file=sys.stderr, flush=True)
    try:
        server.serve_forever()
    finally:
        server.stopping.set()
        server.server_close()

