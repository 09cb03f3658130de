"""One JSON POST to an operator's webhook (``DISPATCH_WEBHOOK_URL``), with a bounded wait.

Kept beside the gateway client because it is the other HTTP the scheduler speaks; unlike the
gateway it is fire-and-forget: the caller logs a failure and carries on.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final
from urllib.parse import urlsplit

import httpx

from scheduler import __version__

WEBHOOK_TIMEOUT_S: Final = 5.0
MAX_WEBHOOK_URL_LENGTH: Final = 2048


class WebhookError(Exception):
    """The webhook could not be reached or answered with a non-2xx status."""


def check_webhook_url(value: str) -> str:
    """``value`` if it is an absolute http(s) URL with a host; else ``ValueError`` (no URL echoed)."""
    url = value.strip()
    if len(url) > MAX_WEBHOOK_URL_LENGTH:
        raise ValueError(f"longer than {MAX_WEBHOOK_URL_LENGTH} characters")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - parsing the port raises on a bad one
    except ValueError:
        raise ValueError("not a valid URL") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("must be an http:// or https:// URL with a host")
    return url


def post_json(url: str, body: Mapping[str, Any], timeout_s: float = WEBHOOK_TIMEOUT_S) -> int:
    """POST ``body`` as JSON to ``url``; the status code, or ``WebhookError`` (its text has no URL).

    Redirects are not followed: a webhook that moves is a configuration to fix, and following
    one could carry the body somewhere the operator did not name.
    """
    try:
        response = httpx.post(url, json=dict(body), timeout=timeout_s, follow_redirects=False,
                              headers={"user-agent": f"openclaw-scheduler/{__version__}"})
    except (httpx.HTTPError, httpx.InvalidURL) as exc:
        raise WebhookError(type(exc).__name__) from None
    if not 200 <= response.status_code < 300:
        raise WebhookError(f"HTTP {response.status_code}")
    return response.status_code
