"""``messages send`` and ``msg send``: write a message for an agent, or a spawn request for the
daemon. (The rest of the messages CLI, inboxes and threads, comes with the messaging work.)

A spawn message's body is checked here as the daemon will check it (models/spawn.py), so a body
that would be rejected is refused at once, with the daemon's words, and nothing is written.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from scheduler.cli.context import Context, UsageError
from scheduler.errors import ValidationError
from scheduler.models.enums import MessageKind
from scheduler.models.messages import NewMessage, new_message
from scheduler.timeutil import to_sqlite, utcnow

if TYPE_CHECKING:
    from scheduler.models.records import Message
    from scheduler.store.api import Store

SEND_USAGE: Final = (
    "messages send --from <label> [--to <agent>] [--kind <kind>] [--channel <channel>] "
    "[--delivery-to <target>] [--job-id <id>] [--run-id <id>] --body <text>"
)
MSG_SEND_USAGE: Final = "msg send <from> <to> <body>"
# The reference's defaults for `messages send` (its `msg send` writes kind "text").
DEFAULT_TO: Final = "main"
DEFAULT_KIND: Final = MessageKind.STATUS.value


def messages_send(ctx: Context) -> int:
    options = {name: ctx.option(f"--{name}") for name in
               ("from", "to", "kind", "channel", "delivery-to", "job-id", "run-id", "body")}
    ctx.no_extra(0, SEND_USAGE)
    sender, body = options["from"], options["body"]
    if sender is None or body is None:
        raise UsageError(f"usage: openclaw-scheduler {SEND_USAGE}")
    message = new_message(
        from_agent=sender, to_agent=options["to"] or DEFAULT_TO, body=body,
        kind=options["kind"] or DEFAULT_KIND, channel=options["channel"],
        delivery_to=options["delivery-to"], job_id=options["job-id"], run_id=options["run-id"],
    )
    return _send(ctx, message)


def msg_send(ctx: Context) -> int:
    if len(ctx.args) < 3:
        raise UsageError(f"usage: openclaw-scheduler {MSG_SEND_USAGE}")
    sender, recipient, *words = ctx.args
    return _send(ctx, new_message(from_agent=sender, to_agent=recipient, body=" ".join(words)))


def _send(ctx: Context, message: NewMessage) -> int:
    if message.kind == MessageKind.SPAWN:
        check_spawn(ctx.store, message)
    sent = ctx.store.send_message(message, to_sqlite(utcnow()))
    ctx.out.emit({"ok": True, "message": sent.as_row()}, _sent_line(sent))
    return 0


def check_spawn(store: Store, message: NewMessage) -> None:
    """Refuse a spawn body the daemon would reject (so the sender learns it now, not from an
    error message in its inbox later). What may change before the daemon reads it, the parent
    above all, is checked again then."""
    from scheduler.models.spawn import plan_spawn

    plan = plan_spawn(message.body, from_agent=message.from_agent, to_agent=message.to_agent,
                      job_id=message.job_id, now=utcnow())
    parent = plan.row.get("parent_id")
    if parent and store.get_job(str(parent)) is None:
        raise ValidationError(f"parent job does not exist: {parent}")


def _sent_line(message: Message) -> str:
    return (f"Sent message {message.id} ({message.kind}) from {message.from_agent} "
            f"to {message.to_agent}")
