"""Two calls of the Telegram Bot API for ``webhook-check --bot-token``: ``getWebhookInfo`` and
``deleteWebhook`` (the reference's ``telegram-webhook-check.mjs``).

The bot belongs to the gateway, which reports its health without the token (``channels.status``);
these calls only add what Telegram alone knows (pending updates, Telegram's own delivery error)
and the reference's repair. The token is part of every URL (``<root>/bot<token>/<method>``), so
no URL, and nothing that may quote one, ever leaves this module: errors are built here, with the
token scrubbed from anything the server said. Bounded: a 10 s timeout, a reply read up to
:data:`MAX_REPLY_BYTES`, no redirects, no proxy from the environment.
"""

from __future__ import annotations

import json
from typing import Any, Final
from urllib.parse import urlsplit

import httpx

from scheduler import __version__
from scheduler.errors import SchedulerError

DEFAULT_API_ROOT: Final = "https://api.telegram.org"
TIMEOUT_S: Final = 10.0
MAX_REPLY_BYTES: Final = 1024 * 1024
_REDACTED: Final = "[redacted]"


class TelegramApiError(SchedulerError):
    """The Bot API could not be reached, or refused the call (its description, token scrubbed)."""


def check_api_root(value: str) -> str:
    """An http(s) URL with a host, without a trailing slash; ``ValueError`` otherwise."""
    root = value.strip().rstrip("/")
    parts = urlsplit(root)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("the Telegram API root must be an http:// or https:// URL with a host")
    return root


def _scrub(text: str, token: str) -> str:
    flat = " ".join(text.split())[:300]
    return flat.replace(token, _REDACTED) if token else flat


def bot_call(api_root: str, token: str, method: str, body: dict[str, Any] | None = None) -> Any:
    """One Bot API call; its ``result``, or :class:`TelegramApiError`."""
    url = f"{api_root}/bot{token}/{method}"
    try:
        with httpx.Client(timeout=TIMEOUT_S, trust_env=False, follow_redirects=False,
                          headers={"user-agent": f"openclaw-scheduler/{__version__}"}) as client:
            request = client.build_request("POST" if body is not None else "GET", url, json=body)
            response = client.send(request, stream=True)
            try:
                raw = _read_bounded(response)
            finally:
                response.close()
    except httpx.HTTPError as exc:
        raise TelegramApiError(f"Telegram Bot API {method}: {type(exc).__name__}") from None
    return _result(method, response.status_code, raw, token)


def _read_bounded(response: httpx.Response) -> bytes:
    chunks: list[bytes] = []
    size = 0
    for chunk in response.iter_bytes():
        size += len(chunk)
        if size > MAX_REPLY_BYTES:
            raise httpx.DecodingError("reply too large")
        chunks.append(chunk)
    return b"".join(chunks)


def _result(method: str, status: int, raw: bytes, token: str) -> Any:
    try:
        data = json.loads(raw.decode("utf-8"))
    except ValueError:
        data = None
    if not isinstance(data, dict):
        raise TelegramApiError(f"Telegram Bot API {method}: HTTP {status}, not a JSON object")
    if status >= 400 or data.get("ok") is not True:
        description = _scrub(str(data.get("description") or f"HTTP {status}"), token)
        raise TelegramApiError(f"Telegram Bot API {method}: {description}")
    return data.get("result")
