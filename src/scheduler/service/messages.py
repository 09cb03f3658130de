"""Messages between agents: send (spawn bodies checked as the daemon will check them), read an
inbox, acknowledge.

A spawn message's body is a job spec the daemon turns into a job (models/spawn.py): it is checked
here, with the daemon's words, so a body that would be rejected is refused at once and nothing
is written. What may change before the daemon reads it, the parent above all, is checked again.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Final

from scheduler.errors import UsageError, ValidationError
from scheduler.models.enums import MessageKind
from scheduler.models.messages import NewMessage, check_agent_name
from scheduler.text import UNSAFE_CONTROLS, first_lone_surrogate
from scheduler.timeutil import to_sqlite

if TYPE_CHECKING:
    from scheduler.models.records import Message
    from scheduler.store.api import Row, Store

# An ack with no actor is the operator's; for a broadcast the actor names the agent.
OPERATOR: Final = "operator"
MAX_NOTE_LENGTH: Final = 2000
MAX_LIMIT: Final = 10000


def send(store: Store, message: NewMessage, now: datetime) -> Message:
    """Write the message ``pending``; NotFoundError when the job, run or message it names does
    not exist; ValidationError for a spawn body the daemon would refuse."""
    if message.team_id is None and (message.member_id or message.task_id):
        raise ValidationError("--member and --task route a team message: give --team too")
    if message.kind == MessageKind.SPAWN:
        check_spawn(store, message, now)
    return store.send_message(message, to_sqlite(now))


def check_spawn(store: Store, message: NewMessage, now: datetime) -> None:
    """Refuse a spawn body the daemon would reject (so the sender learns it now, not from an
    error message in its inbox later)."""
    from scheduler.models.spawn import plan_spawn

    plan = plan_spawn(message.body, from_agent=message.from_agent, to_agent=message.to_agent,
                      job_id=message.job_id, now=now)
    parent = plan.row.get("parent_id")
    if parent and store.get_job(str(parent)) is None:
        raise ValidationError(f"parent job does not exist: {parent}")


def check_limit(limit: int) -> int:
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_LIMIT:
        raise UsageError(f"limit must be a whole number from 1 to {MAX_LIMIT}, got {limit!r}")
    return limit


def inbox(store: Store, agent: str, now: datetime, limit: int) -> list[Row]:
    """The agent's unread messages (pending and delivered, unexpired): kind rank, priority,
    age. Reading does not change them."""
    return store.inbox(check_agent_name(agent), to_sqlite(now), check_limit(limit))


def check_note(words: Sequence[str]) -> str | None:
    """An ack's note (words joined by spaces); None when there is none."""
    note = " ".join(words)
    if not note:
        return None
    if len(note) > MAX_NOTE_LENGTH or UNSAFE_CONTROLS.search(note) or first_lone_surrogate(note):
        raise ValidationError(f"the note must be at most {MAX_NOTE_LENGTH} printable characters")
    return note


def ack(store: Store, message_id: str, actor: str, note: str | None, now: datetime) -> Row:
    """Acknowledge the message as ``actor`` (``OPERATOR``, or the agent whose copy of a
    broadcast it is); the message row afterwards."""
    check_agent_name(actor, "actor")
    checked = None if note is None else check_note([note])
    agent = None if actor == OPERATOR else actor
    return store.ack_message(message_id, agent, actor, checked, to_sqlite(now))
