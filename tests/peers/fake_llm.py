"""A fake OpenAI-compatible model server for the real OpenClaw gateway (stdlib only).

Endpoints: ``GET /v1/models`` and ``POST /v1/chat/completions``. The reply is always the canned
text (``--reply``, else ``$FAKE_REPLY``, else :data:`DEFAULT_REPLY`), as one JSON object, or as
server-sent events when the request has ``"stream": true`` — the gateway always streams from its
provider through the OpenAI SDK, so SSE is not optional.

Markers in the text of the current turn (the trailing user messages) change the answer:

* ``[[fake:sleep:N]]`` — wait N seconds (a decimal) before answering;
* ``[[fake:error:CODE]]`` — answer HTTP CODE with an OpenAI-style error body.

Only the current turn counts, so a marker from an earlier turn of the same session does not fire
again although the gateway resends the transcript. Other ``[[…]]`` text is ignored.

Every request becomes one line of the JSONL log: ``t``, ``method``, ``path``, ``status``,
``model``, ``stream``, ``body_keys``, ``n_tools``, ``tool_names``, ``messages`` (``role`` and the
flattened text of each) and ``prompt`` (the current turn's text).

Run: ``python -m tests.peers.fake_llm --port 18555 --log llm.jsonl`` (``--port 0`` picks a free
port; ``--port-file F`` writes the bound port to F). In-process: ``server = serve(0, path)``, then
``server.port`` and ``server.close()``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import time
import uuid
from pathlib import Path
from typing import Any, cast

from . import JsonHandler, PeerServer, run_forever

DEFAULT_REPLY = "CANNED-REPLY-FROM-FAKE-LLM"
DEFAULT_PORT = 18555
MODEL_ID = "fake-model"
SLEEP_MARKER = re.compile(r"\[\[fake:sleep:(\d+(?:\.\d+)?)\]\]")
ERROR_MARKER = re.compile(r"\[\[fake:error:(\d{3})\]\]")
USAGE = {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18}


def content_text(content: Any) -> str:
    """The text of an OpenAI message ``content``: a string, or a list of parts with ``text``."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = [part.get("text", "") if isinstance(part, dict) else str(part) for part in content]
        return "\n".join(p for p in parts if isinstance(p, str) and p)
    return "" if content is None else json.dumps(content)


def current_turn_text(messages: list[Any]) -> str:
    """The text of the trailing user messages: this turn's input. OpenClaw sends the prompt (with a
    timestamp and a runtime line) and then an internal-context user message; earlier turns end
    with an assistant message."""
    trailing: list[str] = []
    for message in reversed(messages):
        if not isinstance(message, dict) or message.get("role") != "user":
            break
        trailing.append(content_text(message.get("content")))
    return "\n".join(reversed(trailing))


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def request_text(entry: dict[str, Any]) -> str:
    """All message text of one logged request, joined (for "did the prompt arrive" checks)."""
    return "\n".join(str(m.get("content", "")) for m in entry.get("messages") or [] if isinstance(m, dict))


class FakeLLMServer(PeerServer):
    """The fake model server; ``reply`` may be changed while it runs."""

    def __init__(self, port: int = DEFAULT_PORT, log_path: Path | str | None = None,
                 reply: str = DEFAULT_REPLY) -> None:
        self.reply = reply
        super().__init__(port, _Handler, log_path)

    @property
    def url(self) -> str:
        """The ``baseUrl`` to give an OpenAI client (ends in ``/v1``)."""
        return f"{self.base_url}/v1"


class _Handler(JsonHandler):
    @property
    def fake(self) -> FakeLLMServer:
        return cast(FakeLLMServer, self.server)

    def _error(self, status: int, message: str, kind: str = "invalid_request_error") -> None:
        self.send_json(status, {"error": {"message": message, "type": kind, "code": None}})

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0].rstrip("/")
        found = path.endswith("/models")
        self.fake.log.write({"t": time.time(), "method": "GET", "path": self.path,
                             "status": 200 if found else 404})
        if not found:
            self._error(404, "not found")
            return
        self.send_json(200, {"object": "list", "data": [
            {"id": MODEL_ID, "object": "model", "created": 0, "owned_by": "fake"}]})

    def do_POST(self) -> None:
        raw = self.read_body()
        try:
            parsed = json.loads(raw or b"{}")
        except ValueError:
            parsed = None
        body: dict[str, Any] = parsed if isinstance(parsed, dict) else {}
        messages = _as_list(body.get("messages"))
        tools = _as_list(body.get("tools"))
        prompt = current_turn_text(messages)

        status, delay = 200, 0.0
        if not self.path.split("?", 1)[0].rstrip("/").endswith("/chat/completions"):
            status = 404
        elif parsed is None:
            status = 400
        else:
            if match := SLEEP_MARKER.search(prompt):
                delay = float(match.group(1))
            if match := ERROR_MARKER.search(prompt):
                status = int(match.group(1))

        self.fake.log.write({
            "t": time.time(),
            "method": "POST",
            "path": self.path,
            "status": status,
            "sleep_s": delay,
            "model": body.get("model"),
            "stream": body.get("stream"),
            "body_keys": sorted(body),
            "n_tools": len(tools),
            "tool_names": [
                t.get("function", {}).get("name") if isinstance(t, dict) else None for t in tools],
            "messages": [
                {"role": m.get("role"), "content": content_text(m.get("content"))}
                for m in messages if isinstance(m, dict)],
            "prompt": prompt,
        })

        if delay:
            time.sleep(delay)
        if status == 404:
            self._error(404, "not found")
        elif status == 400 and parsed is None:
            self._error(400, "request body is not JSON")
        elif status != 200:
            self._error(status, "fake upstream error", "server_error")
        elif body.get("stream"):
            self._stream(body)
        else:
            self.send_json(200, {
                "id": "chatcmpl-" + uuid.uuid4().hex[:12],
                "object": "chat.completion",
                "created": int(time.time()),
                "model": MODEL_ID,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": self.fake.reply},
                             "finish_reason": "stop"}],
                "usage": USAGE,
            })

    def _stream(self, body: dict[str, Any]) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Connection", "close")
        self.end_headers()
        self.close_connection = True
        base = {"id": "chatcmpl-" + uuid.uuid4().hex[:12], "object": "chat.completion.chunk",
                "created": int(time.time()), "model": MODEL_ID}

        def event(payload: object) -> None:
            self.wfile.write(b"data: " + json.dumps(payload).encode() + b"\n\n")
            self.wfile.flush()

        event({**base, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""},
                                    "finish_reason": None}]})
        event({**base, "choices": [{"index": 0, "delta": {"content": self.fake.reply},
                                    "finish_reason": None}]})
        event({**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
        options = body.get("stream_options")
        if isinstance(options, dict) and options.get("include_usage"):
            event({**base, "choices": [], "usage": USAGE})
        self.wfile.write(b"data: [DONE]\n\n")
        self.wfile.flush()


def serve(port: int = DEFAULT_PORT, log_path: Path | str | None = None,
          reply: str = DEFAULT_REPLY) -> FakeLLMServer:
    """Start the fake on a daemon thread and return it (``.port``, ``.url``, ``.close()``)."""
    return FakeLLMServer(port, log_path, reply).start()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.peers.fake_llm", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help="0 picks a free port")
    parser.add_argument("--log", help="JSONL request log (appended)")
    parser.add_argument("--reply", default=os.environ.get("FAKE_REPLY", DEFAULT_REPLY))
    parser.add_argument("--port-file", help="write the bound port here once listening")
    args = parser.parse_args(argv)
    run_forever(FakeLLMServer(args.port, args.log, args.reply), args.port_file, "fake LLM")


if __name__ == "__main__":
    main()
