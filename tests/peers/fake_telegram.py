"""A fake Telegram Bot API for the real OpenClaw gateway's telegram channel (stdlib only).

It answers ``/bot<TOKEN>/<method>`` (GET or POST; JSON, form or multipart bodies; any token) the
way Telegram does, ``{"ok": true, "result": …}``:

* ``getMe`` — a bot user; ``getChat`` — a private chat with the requested id;
* ``getUpdates`` — waits ``min(timeout, 20)`` s (at least 1 s), then returns no updates; without
  the wait the gateway would poll in a tight loop;
* ``sendMessage`` (and the other ``send*`` methods but ``sendChatAction``) — a message with a
  fresh ``message_id``;
* anything else (``deleteWebhook``, ``deleteMyCommands``, ``setMyCommands``, …) — ``true``.

Every call becomes one line of the JSONL log: ``{"t", "method", "http", "token", "params"}``,
``params`` being what was sent (for ``sendMessage``: ``chat_id``, ``text``, ``parse_mode``, …).

Run: ``python -m tests.peers.fake_telegram --port 18556 --log telegram.jsonl`` (``--port 0`` and
``--port-file F`` as for the fake LLM). The gateway's ``channels.telegram.apiRoot`` is then
``http://127.0.0.1:18556``. In-process: ``server = serve(0, path)``.
"""

from __future__ import annotations

import argparse
import email.parser
import email.policy
import itertools
import json
import threading
import time
from pathlib import Path
from typing import Any, cast
from urllib.parse import parse_qsl, urlsplit

from . import JsonHandler, PeerServer, read_jsonl, run_forever

DEFAULT_PORT = 18556
MAX_POLL_S = 20.0
BOT_USER = {"id": 4242424242, "is_bot": True, "first_name": "FakeBot", "username": "fake_openclaw_bot",
            "can_join_groups": True, "can_read_all_group_messages": False,
            "supports_inline_queries": False}


def sent_messages(log_path: Path | str) -> list[dict[str, Any]]:
    """The ``params`` of every logged ``sendMessage`` call, oldest first."""
    entries = read_jsonl(log_path)
    return [entry.get("params") or {} for entry in entries if entry.get("method") == "sendMessage"]


def _chat_id(value: Any) -> int | str:
    """Telegram answers with numeric chat ids; ``@channel`` names stay strings."""
    try:
        return int(value)
    except (TypeError, ValueError):
        return str(value)


class FakeTelegramServer(PeerServer):
    def __init__(self, port: int = DEFAULT_PORT, log_path: Path | str | None = None) -> None:
        self._message_ids = itertools.count(101)
        self._ids_lock = threading.Lock()
        super().__init__(port, _Handler, log_path)

    @property
    def api_root(self) -> str:
        return self.base_url

    def next_message_id(self) -> int:
        with self._ids_lock:
            return next(self._message_ids)


class _Handler(JsonHandler):
    @property
    def fake(self) -> FakeTelegramServer:
        return cast(FakeTelegramServer, self.server)

    def do_GET(self) -> None:
        self._dispatch(b"")

    def do_POST(self) -> None:
        self._dispatch(self.read_body())

    def _params(self, query: str, raw: bytes) -> dict[str, Any]:
        params: dict[str, Any] = dict(parse_qsl(query))
        ctype = self.headers.get("Content-Type", "")
        if not raw:
            return params
        if "json" in ctype:
            try:
                body = json.loads(raw)
            except ValueError:
                body = None
            if isinstance(body, dict):
                params.update(body)
        elif "multipart/form-data" in ctype:
            message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
                b"Content-Type: " + ctype.encode("latin-1") + b"\r\n\r\n" + raw)
            for part in message.iter_parts():
                name = part.get_param("name", header="content-disposition")
                if not isinstance(name, str):
                    continue
                payload = part.get_payload(decode=True)
                data = payload if isinstance(payload, bytes) else b""
                filename = part.get_filename()
                # Uploads are logged by name and size, not content.
                params[name] = (f"<file {filename} ({len(data)} bytes)>" if filename
                                else data.decode("utf-8", "replace"))
        else:
            params.update(parse_qsl(raw.decode("utf-8", "replace")))
        return params

    def _dispatch(self, raw: bytes) -> None:
        url = urlsplit(self.path)
        segments = url.path.strip("/").split("/")
        if len(segments) != 2 or not segments[0].startswith("bot"):
            self.send_json(404, {"ok": False, "error_code": 404, "description": "Not Found"})
            return
        token, method = segments[0][3:], segments[1]
        params = self._params(url.query, raw)
        self.fake.log.write({"t": time.time(), "method": method, "http": self.command, "token": token,
                             "params": params})
        self.send_json(200, {"ok": True, "result": self._result(method, params)})

    def _result(self, method: str, params: dict[str, Any]) -> Any:
        if method == "getMe":
            return BOT_USER
        if method == "getUpdates":
            try:
                wait = float(params.get("timeout") or 0)
            except (TypeError, ValueError):
                wait = 0.0
            self.fake.stopping.wait(min(max(wait, 1.0), MAX_POLL_S))
            return []
        if method == "getChat":
            return {"id": _chat_id(params.get("chat_id")), "type": "private", "first_name": "Test"}
        if method.startswith("send") and method != "sendChatAction":
            message: dict[str, Any] = {
                "message_id": self.fake.next_message_id(),
                "date": int(time.time()),
                "chat": {"id": _chat_id(params.get("chat_id")), "type": "private", "first_name": "Test"},
                "from": {k: BOT_USER[k] for k in ("id", "is_bot", "first_name", "username")},
            }
            if "text" in params:
                message["text"] = params["text"]
            if "caption" in params:
                message["caption"] = params["caption"]
            return message
        return True


def serve(port: int = DEFAULT_PORT, log_path: Path | str | None = None) -> FakeTelegramServer:
    """Start the fake on a daemon thread and return it (``.port``, ``.api_root``, ``.close()``)."""
    return FakeTelegramServer(port, log_path).start()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.peers.fake_telegram", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help="0 picks a free port")
    parser.add_argument("--log", help="JSONL call log (appended)")
    parser.add_argument("--port-file", help="write the bound port here once listening")
    args = parser.parse_args(argv)
    run_forever(FakeTelegramServer(args.port, args.log), args.port_file, "fake Telegram")


if __name__ == "__main__":
    main()
