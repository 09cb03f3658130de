"""A message to write into the ``messages`` table, checked before anything is written.

``new_message`` is what ``messages send`` and ``msg send`` call: the routing names, the kind (one
of the reference's ``MessageKind`` values, with its error text) and the text fields are checked
here, so the store only checks what needs the database (that a named job or run exists).

Recipients that start with ``@`` are the scheduler's own (``@outbound`` holds the results it
sends through the gateway): nobody may send from or to one.

Imports are the standard library and the scheduler's light modules: the CLI imports this.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from scheduler.errors import ValidationError
from scheduler.models.enums import MessageKind, values
from scheduler.text import LINE_BREAKING, UNSAFE_CONTROLS, first_lone_surrogate, quoted

RESERVED_PREFIX: Final = "@"
MAX_NAME_LENGTH: Final = 128  # as a job's agent_id: a recipient may become one (spawn)
MAX_CHANNEL_LENGTH: Final = 64  # as a job's delivery_channel
MAX_TARGET_LENGTH: Final = 256  # as a job's delivery_to
MAX_ID_LENGTH: Final = 128
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
) -> NewMessage:
    """A checked ``NewMessage``; raises ``ValidationError`` naming the first bad value."""
    return NewMessage(
        from_agent=_routing_name(from_agent, "from"),
        to_agent=_routing_name(to_agent, "to"),
        body=_body(body),
        kind=check_kind(kind),
        channel=_optional(channel, "channel", MAX_CHANNEL_LENGTH),
        delivery_to=_optional(delivery_to, "delivery-to", MAX_TARGET_LENGTH),
        job_id=_optional(job_id, "job-id", MAX_ID_LENGTH),
        run_id=_optional(run_id, "run-id", MAX_ID_LENGTH),
    )
