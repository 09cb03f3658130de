"""Task groups (the dead-man switch for sub-agents): create one, read its status, and the
sub-agents' reports (heartbeats, completion, failure, their gateway session).

The status is the reference's ``getTaskGroupStatus`` shape, with ``notice`` (ours) saying what
was, or will be, sent when the group finishes. Unknown groups and labels are NotFoundError.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, Final

from scheduler.errors import NotFoundError, UsageError
from scheduler.models.tasks import MAX_LABEL_LENGTH, check_reported_state, parse_task_group
from scheduler.text import LINE_BREAKING, UNSAFE_CONTROLS, first_lone_surrogate, quoted
from scheduler.timeutil import from_sqlite, to_sqlite

if TYPE_CHECKING:
    from scheduler.store.api import FinishedGroup, Row, Store

MAX_KEY_LENGTH: Final = 256
MAX_NOTE_LENGTH: Final = 1000
MAX_LIMIT: Final = 10000
NO_TARGET: Final = ("none: the group has no delivery target (delivery_to, and delivery_channel "
                    "unless the target is an @alias)")


def check_word(value: str, name: str, limit: int = MAX_LABEL_LENGTH) -> str:
    """An id or label: 1-``limit`` printable characters on one line."""
    if (not value.strip() or len(value) > limit or UNSAFE_CONTROLS.search(value)
            or LINE_BREAKING.search(value) or first_lone_surrogate(value)):
        raise UsageError(f"{name} must be 1-{limit} printable characters on one line, "
                         f"got {quoted(value, limit=40)}")
    return value


def check_note(words: Sequence[str], name: str) -> str | None:
    """A report's message (words joined by spaces); None when there is none."""
    text = " ".join(words)
    if not text:
        return None
    if len(text) > MAX_NOTE_LENGTH or UNSAFE_CONTROLS.search(text) or first_lone_surrogate(text):
        raise UsageError(f"{name} must be at most {MAX_NOTE_LENGTH} printable characters")
    return text


def check_limit(limit: int) -> int:
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_LIMIT:
        raise UsageError(f"limit must be a whole number from 1 to {MAX_LIMIT}, got {limit!r}")
    return limit


# -- reading ----------------------------------------------------------------------------------

def elapsed_s(since: str | None, now: datetime) -> int:
    if not since:
        return 0
    return max(0, int((now - from_sqlite(since)).total_seconds()))


def _span_s(start: str | None, end: str | None, now: datetime) -> int | None:
    if not start:
        return None
    if not end:
        return elapsed_s(start, now)
    return max(0, int((from_sqlite(end) - from_sqlite(start)).total_seconds()))


def _defined(row: dict[str, Any]) -> dict[str, Any]:
    """Without the keys the reference leaves ``undefined`` (absent from its JSON)."""
    return {key: value for key, value in row.items() if value is not None or key in
            ("duration", "delivery_channel", "delivery_to")}


def _notice_of(group: dict[str, Any]) -> dict[str, Any] | str:
    notice: Row | None = group["notice"]
    if notice is not None:
        return {"message_id": notice["id"], "status": notice["status"],
                "delivered_at": notice["delivered_at"], "last_error": notice["last_error"]}
    target, channel = group["delivery_to"], group["delivery_channel"]
    if not target or not (channel or str(target).startswith("@")):
        return NO_TARGET
    return "sent when the group finishes" if group["status"] == "active" else "none recorded"


def group_status(group: dict[str, Any], now: datetime) -> dict[str, Any]:
    """A ``Store.task_group`` result in the reference's status shape."""
    elapsed = elapsed_s(group["created_at"], now)
    agents = [_defined({
        "label": a["agent_label"], "status": a["status"], "session_key": a["session_key"] or None,
        "last_heartbeat": a["last_heartbeat"] or None,
        "duration": _span_s(a["started_at"], a["finished_at"], now),
        "exit_message": a["exit_message"] or None, "error": a["error"] or None,
    }) for a in group["agents"]]
    return _defined({
        "id": group["id"], "name": group["name"], "status": group["status"], "agents": agents,
        "elapsed": elapsed, "remaining_timeout": max(0, group["timeout_s"] - elapsed),
        "summary": group["summary"] or None, "delivery_channel": group["delivery_channel"],
        "delivery_to": group["delivery_to"], "notice": _notice_of(group),
    })


def status(store: Store, tracker_id: str, now: datetime) -> dict[str, Any]:
    group = store.task_group(tracker_id)
    if group is None:
        raise NotFoundError(f"Task group not found: {tracker_id}")
    return group_status(group, now)


def history(store: Store, limit: int) -> list[Row]:
    """Finished groups, newest first."""
    return store.task_group_history(check_limit(limit))


# -- writing ----------------------------------------------------------------------------------

def create(store: Store, spec: object, now: datetime) -> Row:
    """A new ``active`` group from a ``tasks create`` object (``name``, ``expected_agents``,
    ``timeout_s``, ``delivery_channel``, ``delivery_to``, ``created_by``; camelCase too)."""
    return store.create_task_group(parse_task_group(spec), to_sqlite(now))


def report(store: Store, tracker_id: str, label: str, state: str, message: str | None,
           now: datetime) -> FinishedGroup | None:
    """A sub-agent's report, ``running``, ``completed`` or ``failed``; the finished group when it
    was the last agent to finish."""
    checked_state = check_reported_state(state)
    checked_message = None if message is None else check_note([message], "message")
    return store.report_task_agent(check_word(tracker_id, "trackerId"),
                                   check_word(label, "agentLabel"), checked_state.value,
                                   checked_message, to_sqlite(now))


def register_session(store: Store, tracker_id: str, label: str, session_key: str,
                     now: datetime) -> Row:
    """Link the agent's gateway session key (a heartbeat: pending becomes running)."""
    return store.register_task_session(check_word(tracker_id, "trackerId"),
                                       check_word(label, "agentLabel"),
                                       check_word(session_key, "sessionKey", MAX_KEY_LENGTH),
                                       to_sqlite(now))
