"""A message to write into the ``messages`` table, checked before anything is written.

``new_message`` is what ``messages send`` and ``msg send`` call: the routing names, the kind (one
of the reference's ``MessageKind`` values, with its error text) and the text fields are checked
here, so the store only checks what needs the database (that a named job or run exists).

Recipients that start with ``@`` are the scheduler's own (``@outbound`` holds the results it
sends through the gateway): nobody may send from or to one.

Imports are the standard library and the scheduler's light modules: the CLI imports this.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from scheduler.errors import ValidationError
from scheduler.models.enums import MessageKind, values
from scheduler.text import LINE_BREAKING, UNSAFE_CONTROLS, first_lone_surrogate, quoted
from scheduler.timeutil import parse_in_duration, parse_user_datetime, to_sqlite

RESERVED_PREFIX: Final = "@"
MAX_NAME_LENGTH: Final = 128  # as a job's agent_id: a recipient may become one (spawn)
MAX_CHANNEL_LENGTH: Final = 64  # as a job's delivery_channel
MAX_TARGET_LENGTH: Final = 256  # as a job's delivery_to
MAX_ID_LENGTH: Final = 128
MAX_SUBJECT_LENGTH: Final = 500
MAX_METADATA_LENGTH: Final = 65536
# The reference's priorities: 0 normal, 1 high, 2 urgent.
PRIORITIES: Final = ("0", "1", "2")
# The recipient that reaches every agent; each keeps its own state of it (store/sqlite/inbox.py).
BROADCAST: Final = "broadcast"
# A spawn body carries a whole job spec, whose payload_message alone may hold 100,000 characters.
MAX_BODY_LENGTH: Final = 1_000_000


@dataclass(frozen=True)
class NewMessage:
    """A message as its sender gives it; the store adds the id, the status and the times."""

    from_agent: str
    to_agent: str
    body: str
    kind: str = MessageKind.TEXT.value
    subject: str | None = None
    channel: str | None = None
    delivery_to: str | None = None
    job_id: str | None = None
    run_id: str | None = None
    reply_to: str | None = None
    priority: int = 0
    expires_at: str | None = None  # UTC, as stored
    ack_required: bool = False
    metadata: str | None = None  # a JSON object, as stored
    owner: str | None = None
    team_id: str | None = None  # the team adapter's routing (store/sqlite/teams.py)
    member_id: str | None = None
    task_id: str | None = None


def check_kind(kind: str) -> str:
    if kind not in values(MessageKind):
        raise ValidationError(
            f"Invalid message kind {quoted(kind)}. Valid: {', '.join(values(MessageKind))}"
        )
    return kind


def _one_line(value: str, name: str, limit: int) -> str:
    """1-``limit`` characters on one line, none of them a control character."""
    if (not value.strip() or len(value) > limit or UNSAFE_CONTROLS.search(value)
            or LINE_BREAKING.search(value) or first_lone_surrogate(value)):
        raise ValidationError(f"{name} must be 1-{limit} printable characters on one line, "
                              f"got {quoted(value)}")
    return value


def _routing_name(value: str, name: str) -> str:
    _one_line(value, name, MAX_NAME_LENGTH)
    if value.startswith(RESERVED_PREFIX):
        raise ValidationError(f"{name} {quoted(value)}: names starting with "
                              f"{RESERVED_PREFIX!r} are reserved for the scheduler")
    return value


def _body(value: str) -> str:
    if not value:
        raise ValidationError("the message body cannot be empty")
    if len(value) > MAX_BODY_LENGTH:
        raise ValidationError(f"the message body exceeds {MAX_BODY_LENGTH} characters")
    if UNSAFE_CONTROLS.search(value) or first_lone_surrogate(value):
        raise ValidationError("the message body contains control characters (only tab, line "
                              "feed and carriage return are allowed)")
    return value


def _optional(value: str | None, name: str, limit: int) -> str | None:
    return None if value is None else _one_line(value, name, limit)


def check_agent_name(value: str, name: str = "agent") -> str:
    """An agent whose inbox or state a command reads or changes: not one of the scheduler's own
    ``@`` recipients, and not ``broadcast``, which is every agent rather than one."""
    _routing_name(value, name)
    if value == BROADCAST:
        raise ValidationError(f"{name} {quoted(value)}: broadcast is every agent, not one; "
                              "name the agent")
    return value


def parse_priority(text: str) -> int:
    if text.strip() not in PRIORITIES:
        raise ValidationError(f"--priority must be 0 (normal), 1 (high) or 2 (urgent), got {quoted(text)}")
    return int(text)


def expiry(expires_in: str | None, expires_at: str | None, now: datetime) -> str | None:
    """``expires_at`` as stored (UTC text) from ``--expires-in <duration>`` or ``--expires-at
    <datetime>``; a message that would be expired when written is refused."""
    if expires_in is not None and expires_at is not None:
        raise ValidationError("give --expires-in or --expires-at, not both")
    if expires_in is None and expires_at is None:
        return None
    flag = "--expires-in" if expires_in is not None else "--expires-at"
    try:
        instant = (now + parse_in_duration(expires_in) if expires_in is not None
                   else parse_user_datetime(str(expires_at)))
    except ValueError as exc:
        raise ValidationError(f"{flag}: {str(exc).replace('--in duration', 'duration')}") from None
    if to_sqlite(instant) <= to_sqlite(now):
        raise ValidationError(f"{flag}: the message would expire at once ({to_sqlite(instant)} UTC "
                              "is not in the future)")
    return to_sqlite(instant)


def parse_metadata_object(text: str) -> str:
    """``--metadata``: a JSON object, stored as compact JSON text."""
    if len(text) > MAX_METADATA_LENGTH:
        raise ValidationError(f"--metadata exceeds {MAX_METADATA_LENGTH} characters")
    try:
        value: Any = json.loads(text, parse_constant=_refuse_constant)
    except (ValueError, RecursionError) as exc:
        raise ValidationError(f"--metadata is not valid JSON ({exc})") from None
    if not isinstance(value, dict):
        raise ValidationError("--metadata must be a JSON object, e.g. '{\"pr\": 12}'")
    return json.dumps(value, ensure_ascii=False)


def _refuse_constant(token: str) -> Any:
    raise ValueError(f"{token} is not JSON")


def new_message(
    *,
    from_agent: str,
    to_agent: str,
    body: str,
    kind: str = MessageKind.TEXT.value,
    channel: str | None = None,
    delivery_to: str | None = None,
    job_id: str | None = None,
    run_id: str | None = None,
    subject: str | None = None,
    reply_to: str | None = None,
    priority: int = 0,
    expires_at: str | None = None,
    ack_required: bool = False,
    metadata: str | None = None,
    owner: str | None = None,
    team_id: str | None = None,
    member_id: str | None = None,
    task_id: str | None = None,
) -> NewMessage:
    """A checked ``NewMessage``; raises ``ValidationError`` naming the first bad value.
    ``expires_at`` and ``metadata`` come checked (:func:`expiry`, :func:`parse_metadata_object`)."""
    return NewMessage(
        from_agent=_routing_name(from_agent, "from"),
        to_agent=_routing_name(to_agent, "to"),
        body=_body(body),
        kind=check_kind(kind),
        channel=_optional(channel, "channel", MAX_CHANNEL_LENGTH),
        delivery_to=_optional(delivery_to, "delivery-to", MAX_TARGET_LENGTH),
        job_id=_optional(job_id, "job-id", MAX_ID_LENGTH),
        run_id=_optional(run_id, "run-id", MAX_ID_LENGTH),
        subject=_optional(subject, "subject", MAX_SUBJECT_LENGTH),
        reply_to=_optional(reply_to, "reply-to", MAX_ID_LENGTH),
        priority=priority,
        expires_at=expires_at,
        ack_required=ack_required,
        metadata=metadata,
        owner=None if owner is None else _routing_name(owner, "owner"),
        team_id=_optional(team_id, "team", MAX_ID_LENGTH),
        member_id=_optional(member_id, "member", MAX_ID_LENGTH),
        task_id=_optional(task_id, "task", MAX_ID_LENGTH),
    )
