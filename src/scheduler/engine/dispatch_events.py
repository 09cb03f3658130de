"""Dispatch lifecycle events: a log line, a post-office message, an optional webhook POST.

The reference's ``dispatch/hooks.mjs`` and the watcher's notices, in one place. ``emit`` is best
effort and never raises into the caller: a dispatch must not fail because its announcement did.

For each event:

1. a structlog event named after it (``dispatch.started`` ... with ``label``, ``session_key`` and
   the caller's fields) - the journal carries it to whatever collects logs;
2. a ``messages`` row from ``dispatch`` to ``main`` (the post office):
   - ``dispatch.finished`` with a ``deliver_to``: kind ``result``, subject the label, body
     ``✅ [<label>] done`` and the normalised completion text (models/completion.py); nothing is
     written when that text is empty (nothing meaningful to say);
   - any other event with a ``notice``: kind ``text``, the notice as body, unless
     ``OPENCLAW_SCHEDULER_NOTIFY_DISABLED=1`` (the reference silences exactly these notices);
3. when ``DISPATCH_WEBHOOK_URL`` is set, a JSON POST ``{"event", "ts" (ms), "host", "label",
   "session_key", ...fields}`` with a 5 s timeout.

Synchronous: the dispatch CLI and the watcher are short processes holding their own ``Store``.
"""

from __future__ import annotations

import contextlib
import os
import socket
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Final

from scheduler import logs
from scheduler.gateway.webhook import WebhookError, check_webhook_url, post_json
from scheduler.models.completion import normalize_completion
from scheduler.models.enums import MessageKind
from scheduler.models.messages import new_message
from scheduler.store.api import Store
from scheduler.timeutil import to_sqlite, utcnow

WEBHOOK_ENV: Final = "DISPATCH_WEBHOOK_URL"
NOTIFY_DISABLED_ENV: Final = "OPENCLAW_SCHEDULER_NOTIFY_DISABLED"
HOST_ENV: Final = "DISPATCH_HOST"
SENDER: Final = "dispatch"
RECIPIENT: Final = "main"
DEFAULT_CHANNEL: Final = "telegram"
# A label or session key longer than this is cut in the log and webhook (the message keeps the
# store's own limits): an event is an announcement, not a transport.
MAX_FIELD_CHARS: Final = 500

Scalar = str | int | float | bool | None


class DispatchEvent(StrEnum):
    STARTED = "dispatch.started"
    FINISHED = "dispatch.finished"
    STUCK = "dispatch.stuck"
    CANCELLED = "dispatch.cancelled"


@dataclass(frozen=True)
class Emitted:
    """What ``emit`` did, for callers that report it and for tests."""

    logged: bool = False
    message_id: str | None = None
    webhook_status: int | None = None
    failures: tuple[str, ...] = ()


@dataclass(frozen=True)
class EventSinks:
    """Where events go: the settings the emitter reads once, from the environment or a test."""

    webhook_url: str | None = None
    notify_disabled: bool = False
    host: str = field(default_factory=lambda: socket.gethostname() or "unknown-host")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> EventSinks:
        """The sinks the environment names; ``ValueError`` naming the variable for a bad URL."""
        env = os.environ if environ is None else environ
        raw = (env.get(WEBHOOK_ENV) or "").strip()
        try:
            url = check_webhook_url(raw) if raw else None
        except ValueError as exc:
            raise ValueError(f"{WEBHOOK_ENV}: {exc}") from None
        host = (env.get(HOST_ENV) or "").strip() or socket.gethostname() or "unknown-host"
        return cls(webhook_url=url, notify_disabled=env.get(NOTIFY_DISABLED_ENV) == "1", host=host)


def emit(event: DispatchEvent, label: str, *, sinks: EventSinks, store: Store | None = None,
         session_key: str | None = None, completion: str | None = None,
         deliver_to: str | None = None, channel: str | None = None, notice: str | None = None,
         fields: Mapping[str, Scalar] | None = None, log: Any = None) -> Emitted:
    """Announce ``event`` for ``label`` on every configured sink; never raises."""
    log = log or logs.get("scheduler.dispatch")
    fields = _bounded_fields(fields or {})
    failures: list[str] = []
    logged = _log_event(log, event, label, session_key, fields, failures)
    message_id = None
    if store is not None:
        message_id = _post(store, event, label, completion=completion, deliver_to=deliver_to,
                           channel=channel, notice=notice, sinks=sinks, log=log, failures=failures)
    status = None
    if sinks.webhook_url:
        status = _webhook(sinks, event, label, session_key, fields, log, failures)
    return Emitted(logged=logged, message_id=message_id, webhook_status=status,
                   failures=tuple(failures))


def finished_body(label: str, completion: str | None) -> str | None:
    """The post-office body for a finished dispatch, or ``None`` when there is nothing to say."""
    text = normalize_completion(completion or "")
    return f"✅ [{label}] done\n\n{text}" if text else None


def webhook_body(event: DispatchEvent, label: str, session_key: str | None,
                 fields: Mapping[str, Scalar], host: str, now_ms: int) -> dict[str, Any]:
    """The JSON the webhook receives (the reference's shape: event, ts in ms, host, then fields)."""
    return {**fields, "event": event.value, "ts": now_ms, "host": host,
            "label": _cut(label), "session_key": _cut(session_key) if session_key else None}


def _cut(text: str) -> str:
    return text if len(text) <= MAX_FIELD_CHARS else text[:MAX_FIELD_CHARS]


def _bounded_fields(fields: Mapping[str, Scalar]) -> dict[str, Scalar]:
    return {str(k)[:64]: (_cut(v) if isinstance(v, str) else v) for k, v in list(fields.items())[:32]
            if k not in ("event", "ts", "host", "label", "session_key")}


def _warn(log: Any, name: str, **fields: Any) -> None:
    with contextlib.suppress(Exception):  # the failure reported must not become the caller's
        log.warning(name, **fields)


def _info(log: Any, name: str, **fields: Any) -> None:
    with contextlib.suppress(Exception):  # as _warn
        log.info(name, **fields)


def _log_event(log: Any, event: DispatchEvent, label: str, session_key: str | None,
               fields: Mapping[str, Scalar], failures: list[str]) -> bool:
    try:
        log.info(event.value, label=_cut(label), session_key=session_key, **fields)
        return True
    except Exception as exc:  # a broken log sink must not stop the dispatch
        failures.append(f"log: {type(exc).__name__}")
        return False


def _post(store: Store, event: DispatchEvent, label: str, *, completion: str | None,
          deliver_to: str | None, channel: str | None, notice: str | None, sinks: EventSinks,
          log: Any, failures: list[str]) -> str | None:
    try:
        if event is DispatchEvent.FINISHED:
            if not deliver_to:
                return None
            body = finished_body(label, completion)
            if body is None:
                _info(log, "dispatch.delivery_suppressed", label=_cut(label),
                      reason="no meaningful completion text")
                return None
            message = new_message(from_agent=SENDER, to_agent=RECIPIENT, body=body,
                                  kind=MessageKind.RESULT.value, subject=_cut(label),
                                  channel=channel or DEFAULT_CHANNEL, delivery_to=deliver_to)
        else:
            if not notice or sinks.notify_disabled:
                return None
            message = new_message(from_agent=SENDER, to_agent=RECIPIENT, body=notice,
                                  kind=MessageKind.TEXT.value, subject=_cut(label))
        return store.send_message(message, to_sqlite(utcnow())).id
    except Exception as exc:  # best effort: logged, never raised
        failures.append(f"post-office: {type(exc).__name__}")
        _warn(log, "dispatch.post_office_failed", label=_cut(label), dispatch_event=event.value,
                    error=f"{type(exc).__name__}: {exc}"[:300])
        return None


def _webhook(sinks: EventSinks, event: DispatchEvent, label: str, session_key: str | None,
             fields: Mapping[str, Scalar], log: Any, failures: list[str]) -> int | None:
    assert sinks.webhook_url is not None
    body = webhook_body(event, label, session_key, fields, sinks.host, int(time.time() * 1000))
    try:
        return post_json(sinks.webhook_url, body)
    except WebhookError as exc:
        failures.append(f"webhook: {exc}")
        _warn(log, "dispatch.webhook_failed", label=_cut(label), dispatch_event=event.value,
              error=str(exc))
        return None
    except Exception as exc:  # an unencodable field, a bug: still never raised into the dispatch
        failures.append(f"webhook: {type(exc).__name__}")
        _warn(log, "dispatch.webhook_failed", label=_cut(label), dispatch_event=event.value,
                    error=type(exc).__name__)
        return None
