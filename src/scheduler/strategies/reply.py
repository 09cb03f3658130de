"""What an agent's reply means for its run: sentinels, transient and drain errors, the verdict.

Port of the reference's ``dispatcher-utils.js`` (sentinels §4.7, transient/drain detection §4.8)
and the reply interpretation of ``executeAgent`` (§4.2 step 8). Agents depend on the exact
tokens and patterns, so they match the reference's. Pure functions: no database, no I/O.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final, Literal

from scheduler.gateway.client import DRAIN_PATTERN, DRAIN_SOURCES
from scheduler.jstext import JS_WS_CLASS, js_regex, js_trim
from scheduler.models.enums import ANNOUNCE_MODES

# -- Sentinels (§4.7) ---------------------------------------------------------------------------

SENTINELS: Final = ("HEARTBEAT_OK", "NO_FLUSH", "IDEMPOTENT_SKIP", "TASK_FAILED")
# Sentinels that suppress delivery (status stays ok).
SUPPRESSING_SENTINELS: Final = frozenset({"HEARTBEAT_OK", "NO_FLUSH", "IDEMPOTENT_SKIP"})
FAILURE_SENTINEL: Final = "TASK_FAILED"
# The reply of a pre_compaction_flush job with nothing to flush (logged; delivery suppressed).
NO_FLUSH: Final = "NO_FLUSH"


def matches_sentinel(content: str | None, token: str) -> bool:
    """Whether the trimmed reply starts with ``token`` followed by end, whitespace or ``:``."""
    if not content:
        return False
    pattern = re.escape(token) + rf"(?:\Z|[{JS_WS_CLASS}:])"
    return re.match(pattern, js_trim(content)) is not None


# -- Transient / drain errors (§4.8) ------------------------------------------------------------

TRANSIENT_SCAN_CHARS: Final = 500

# The reference's patterns, written as JavaScript regex sources (see jstext.js_regex).
_TRANSIENT_SOURCES: Final = (
    r"\btemporarily overloaded\b",
    r"\bservice\s+(?:is\s+)?unavailable\b",
    r"\brate\s*limit(?:ed|s?)?\b",
    r"\btoo\s+many\s+requests\b",
    r"\b5[0-9]{2}\b\s+(?:internal\s+)?server\s+error\b",
    r"\bgateway\s+timeout\b",
    r"\bbad\s+gateway\b",
    r"\bmodel\s+(?:is\s+)?(?:overloaded|unavailable)\b",
    r"\bAPI\s+(?:error|unavailable|timeout)\b",
    r"\bcapacity\s+(?:exceeded|limit)\b",
    r"\bretry\s+(?:after|later|in\s+\d)\b",
    r"\bcontext\s+(?:length|window)\s+exceeded\b",
    r"\btoken\s+limit\s+exceeded\b",
    *DRAIN_SOURCES,
    r"gateway.*draining.*restart",
)

TRANSIENT_ERROR_PATTERNS: Final = tuple(js_regex(source) for source in _TRANSIENT_SOURCES)


def detect_transient_error(content: str | None) -> bool:
    """Whether the first 500 characters of the trimmed reply look like a gateway/model error."""
    if not content:
        return False
    trimmed = js_trim(content)
    if not trimmed:
        return False
    head = trimmed[:TRANSIENT_SCAN_CHARS]
    return any(pattern.search(head) for pattern in TRANSIENT_ERROR_PATTERNS)


def is_drain_error(message: str | None) -> bool:
    """Whether an exception message says the gateway is draining (restart pending)."""
    trimmed = js_trim("" if message is None else str(message))
    if not trimmed:
        return False
    return DRAIN_PATTERN.search(trimmed) is not None


# -- Reply interpretation (§4.2 step 8) ---------------------------------------------------------

SUMMARY_LIMIT: Final = 5000
TASK_FAILED_MESSAGE: Final = "Agent signalled TASK_FAILED"
TRANSIENT_MESSAGE: Final = "Transient error in agent reply"


@dataclass(frozen=True)
class ReplyVerdict:
    """What an agent's reply means for its run.

    ``deliver`` is whether the reply is announced: mode ``announce`` only when the run is not ok,
    ``announce-always`` unless HEARTBEAT_OK / NO_FLUSH / IDEMPOTENT_SKIP matched, ``none`` (or any
    other mode) never, and never for a blank reply. An error reply is announced with the
    soft-fail prefix, which the caller adds (it knows whether a retry follows).
    """

    status: Literal["ok", "error"]
    error_message: str | None
    sentinel: str | None
    deliver: bool
    summary: str
    keep_idempotency_key: bool


def interpret_reply(content: str | None, delivery_mode: str | None) -> ReplyVerdict:
    """Interpret an agent's final reply like the reference's ``executeAgent``."""
    text = content or ""
    sentinel = next((token for token in SENTINELS if matches_sentinel(text, token)), None)
    task_failed = sentinel == FAILURE_SENTINEL
    transient = detect_transient_error(text)
    status: Literal["ok", "error"] = "error" if task_failed or transient else "ok"
    error_message = None
    if status == "error":
        error_message = TASK_FAILED_MESSAGE if task_failed else TRANSIENT_MESSAGE

    deliver = (
        delivery_mode in ANNOUNCE_MODES
        and sentinel not in SUPPRESSING_SENTINELS
        and not (delivery_mode == "announce" and status == "ok")
        and bool(js_trim(text))
    )
    return ReplyVerdict(
        status=status,
        error_message=error_message,
        sentinel=sentinel,
        deliver=deliver,
        summary=text[:SUMMARY_LIMIT],
        keep_idempotency_key=status == "ok",
    )
