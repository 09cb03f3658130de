"""When a dispatched sub-agent's failure is worth a retry, and how long to wait first.

Two failures are transient, as the reference's ``dispatch/watcher.mjs`` and
``dispatch/529-recovery.mjs`` treat them:

- an *overload*: the model provider answered 529 / "overloaded" (``is_overload_error``); the
  session is continued up to ``MAX_OVERLOAD_RETRIES`` times;
- a *gateway-restart kill*: the gateway restarted and forgot the in-flight session, so its status
  reads "session not found in ... store" / "session never found" (``is_gateway_restart_kill``);
  the task is started afresh up to ``MAX_RESTART_RETRIES`` times.

The wait before retry *n* (1-based) is ``RETRY_BASE_DELAY_S * n``: 30 s, 60 s, 90 s.
Pure: the watcher and the safety-net job decide and act; this only classifies.
"""

from __future__ import annotations

import re
from typing import Final

MAX_OVERLOAD_RETRIES: Final = 3
MAX_RESTART_RETRIES: Final = 2
RETRY_BASE_DELAY_S: Final = 30
# Error texts can be whole transcripts; the markers sit near the start.
MAX_CLASSIFIED_CHARS: Final = 16 * 1024

_OVERLOAD_RE: Final = re.compile(
    r"529|failover\s*error|overload|temporarily\s+overloaded|service.*overloaded", re.IGNORECASE)
_RESTART_KILL_RE: Final = re.compile(
    r"session not found in sessions store|session not found in gateway store|session never found"
    r"|auto-resolved.*session not found|auto-resolved.*never found", re.IGNORECASE)


def is_overload_error(text: str | None) -> bool:
    """Whether an error text says the provider was overloaded (529, "overloaded", FailoverError)."""
    return bool(text and _OVERLOAD_RE.search(text[:MAX_CLASSIFIED_CHARS]))


def is_gateway_restart_kill(text: str | None) -> bool:
    """Whether a status summary says the gateway lost the session (it restarted mid-run)."""
    return bool(text and _RESTART_KILL_RE.search(text[:MAX_CLASSIFIED_CHARS]))


def retry_delay_s(retry_count: int) -> int:
    """Seconds to wait before retry number ``retry_count`` (1-based; below 1 counts as 1)."""
    return RETRY_BASE_DELAY_S * max(1, retry_count)


def may_retry_overload(retries_so_far: int) -> bool:
    """Whether another overload retry is allowed after ``retries_so_far`` of them."""
    return retries_so_far < MAX_OVERLOAD_RETRIES


def may_retry_restart_kill(retries_so_far: int) -> bool:
    """Whether another restart-kill retry is allowed after ``retries_so_far`` of them."""
    return retries_so_far < MAX_RESTART_RETRIES
