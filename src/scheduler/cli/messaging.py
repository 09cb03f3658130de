"""The messages CLI: ``messages send``, ``msg send|inbox|outbox|thread|ack|read|readall|unread|
receipts`` and ``queue list|clear|prune``, with the reference's arguments, texts and JSON.

The checks and writes are service/messages.py's (shared with the Python API); a spawn message's
body is checked there as the daemon will check it, so a body that would be rejected is refused at
once, with the daemon's words, and nothing is written.

A broadcast reaches every agent and each agent reads it for itself (store/sqlite/inbox.py): the
commands that change a message's state name the agent whose copy they change (``msg read <id>
<agent>``, ``msg ack <id> <agent>``), and refuse a broadcast without one.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Final

from scheduler.cli.context import Context, UsageError
from scheduler.cli.output import dumps, printable_lines, table
from scheduler.models.enums import MessageKind
from scheduler.models.messages import (
    BROADCAST,
    NewMessage,
    check_agent_name,
    expiry,
    new_message,
    parse_metadata_object,
    parse_priority,
)
from scheduler.models.records import Message
from scheduler.text import quoted
from scheduler.timeutil import to_sqlite, utcnow

if TYPE_CHECKING:
    from scheduler.store.api import Row, Store

SEND_USAGE: Final = (
    "messages send --from <label> [--to <agent>] [--kind <kind>] [--subject <text>] "
    "[--priority 0|1|2] [--expires-in <duration> | --expires-at <datetime>] [--reply-to <id>] "
    "[--ack-required] [--metadata '<json>'] [--owner <agent>] [--channel <channel>] "
    "[--delivery-to <target>] [--job-id <id>] [--run-id <id>] "
    "[--team <team> [--member <member>] [--task <task>]] --body <text>"
)
MSG_SEND_USAGE: Final = "msg send <from> <to> <body>"
# The reference's defaults for `messages send` (its `msg send` writes kind "text").
DEFAULT_TO: Final = "main"
DEFAULT_KIND: Final = MessageKind.STATUS.value
# The reference's default limits and agent.
INBOX_LIMIT: Final = 20
QUEUE_LIMIT: Final = 50
QUEUE_AGENT: Final = "main"
MAX_LIMIT: Final = 10000
_WHOLE_NUMBER: Final = re.compile(r"[0-9]+")
_SEND_OPTIONS: Final = ("from", "to", "kind", "channel", "delivery-to", "job-id", "run-id", "body",
                        "subject", "priority", "expires-in", "expires-at", "reply-to", "metadata",
                        "owner", "team", "member", "task")


def _now() -> str:
    return to_sqlite(utcnow())


def _limit(ctx: Context, index: int, default: int) -> int:
    if len(ctx.args) <= index:
        return default
    text = ctx.args[index]
    digits = text.lstrip("0") or "0"
    if not _WHOLE_NUMBER.fullmatch(text) or len(digits) > 5 or not 1 <= int(digits) <= MAX_LIMIT:
        raise UsageError(f"limit must be a whole number from 1 to {MAX_LIMIT}, got {quoted(text)}")
    return int(text)


def _arg(ctx: Context, index: int, usage: str) -> str:
    if index >= len(ctx.args):
        raise UsageError(f"usage: openclaw-scheduler {usage}")
    return ctx.args[index]


def _agent(ctx: Context, index: int, usage: str, default: str | None = None) -> str:
    if index >= len(ctx.args) and default is not None:
        return default
    return check_agent_name(_arg(ctx, index, usage))


def _json_rows(rows: Sequence[Row]) -> list[dict[str, Any]]:
    """Rows as the reference's JSON: every column, ``metadata`` parsed."""
    return [Message.from_row(row).as_row() for row in rows]


def _short(value: Any, limit: int) -> str | None:
    return None if value is None else str(value)[:limit]


# -- sending ----------------------------------------------------------------------------------------


def messages_send(ctx: Context) -> int:
    options = {name: ctx.option(f"--{name}") for name in _SEND_OPTIONS}
    ack_required = ctx.flag("--ack-required")
    ctx.no_extra(0, SEND_USAGE)
    sender, body = options["from"], options["body"]
    if sender is None or body is None:
        raise UsageError(f"usage: openclaw-scheduler {SEND_USAGE}")
    priority = options["priority"]
    metadata = options["metadata"]
    message = new_message(
        from_agent=sender, to_agent=options["to"] or DEFAULT_TO, body=body,
        kind=options["kind"] or DEFAULT_KIND, channel=options["channel"],
        delivery_to=options["delivery-to"], job_id=options["job-id"], run_id=options["run-id"],
        subject=options["subject"], reply_to=options["reply-to"],
        priority=0 if priority is None else parse_priority(priority),
        expires_at=expiry(options["expires-in"], options["expires-at"], utcnow()),
        ack_required=ack_required, owner=options["owner"],
        metadata=None if metadata is None else parse_metadata_object(metadata),
        team_id=options["team"], member_id=options["member"], task_id=options["task"],
    )
    return _send(ctx, message)


def msg_send(ctx: Context) -> int:
    if len(ctx.args) < 3:
        raise UsageError(f"usage: openclaw-scheduler {MSG_SEND_USAGE}")
    sender, recipient, *words = ctx.args
    return _send(ctx, new_message(from_agent=sender, to_agent=recipient, body=" ".join(words)))


def _send(ctx: Context, message: NewMessage) -> int:
    from scheduler.service import messages

    sent = messages.send(ctx.store, message, utcnow())
    ctx.out.emit({"ok": True, "message": sent.as_row()}, _sent_line(sent))
    return 0


def _sent_line(message: Message) -> str:
    return (f"Sent message {message.id} ({message.kind}) from {message.from_agent} "
            f"to {message.to_agent}")


# -- reading ----------------------------------------------------------------------------------------


def msg_inbox(ctx: Context) -> int:
    from scheduler.service import messages

    usage = "msg inbox <agent-id> [limit]"
    agent = _agent(ctx, 0, usage)
    limit = _limit(ctx, 1, INBOX_LIMIT)
    ctx.no_extra(2, usage)
    rows = messages.inbox(ctx.store, agent, utcnow(), limit)
    if not rows:
        ctx.out.emit([], "Inbox empty")
        return 0
    shown = [_inbox_line(row, 40) for row in rows]
    ctx.out.emit(_json_rows(rows), lambda: table(shown, list(shown[0])))
    return 0


def _inbox_line(row: Row, subject_width: int) -> dict[str, Any]:
    return {"id": row["id"][:8], "from": row["from_agent"], "kind": row["kind"],
            "subject": _short(row["subject"], subject_width), "status": row["status"],
            "priority": row["priority"], "created": row["created_at"]}


def msg_outbox(ctx: Context) -> int:
    usage = "msg outbox <agent-id> [limit]"
    agent = _agent(ctx, 0, usage)
    limit = _limit(ctx, 1, INBOX_LIMIT)
    ctx.no_extra(2, usage)
    rows = ctx.store.outbox(agent, limit)
    if not rows:
        ctx.out.emit([], "Outbox empty")
        return 0
    shown = [{"id": r["id"][:8], "to": r["to_agent"], "kind": r["kind"],
              "subject": _short(r["subject"], 40), "status": r["status"], "created": r["created_at"]}
             for r in rows]
    ctx.out.emit(_json_rows(rows), lambda: table(shown, list(shown[0])))
    return 0


def msg_thread(ctx: Context) -> int:
    usage = "msg thread <message-id>"
    message_id = _arg(ctx, 0, usage)
    ctx.no_extra(1, usage)
    rows = ctx.store.thread(message_id)

    def human() -> None:
        for row in rows:
            sys.stdout.write(printable_lines(
                f"[{row['from_agent']} -> {row['to_agent']}] ({row['status']}) {row['created_at']}\n"
                f"  {str(row['body'] or '')[:200]}\n") + "\n")

    ctx.out.emit(_json_rows(rows), human)
    return 0


def msg_receipts(ctx: Context) -> int:
    usage = "msg receipts <message-id> [limit]"
    message_id = _arg(ctx, 0, usage)
    limit = _limit(ctx, 1, INBOX_LIMIT)
    ctx.no_extra(2, usage)
    rows = ctx.store.message_receipts(message_id, limit)
    if not rows:
        ctx.out.emit([], "No receipts for message")
        return 0
    shown = [{"id": r["id"][:8], "type": r["event_type"],
              "attempt": "-" if r["attempt"] is None else r["attempt"], "actor": r["actor"] or "-",
              "detail": str(r["detail"] or "")[:80], "at": r["created_at"]} for r in rows]
    ctx.out.emit(rows, lambda: table(shown, list(shown[0])))
    return 0


def msg_unread(ctx: Context) -> int:
    usage = "msg unread <agent-id>"
    agent = _agent(ctx, 0, usage)
    ctx.no_extra(1, usage)
    count = ctx.store.unread_count(agent, _now())
    ctx.out.emit({"agent": agent, "unread": count}, f"Unread: {count}")
    return 0


# -- reads and acknowledgements -----------------------------------------------------------------------


def _require_reader(store: Store, message_id: str, agent: str | None, usage: str) -> None:
    """A broadcast is read by each agent for itself: refuse one when no agent is named."""
    message = store.get_message(message_id)
    if message is not None and message.to_agent == BROADCAST and agent is None:
        raise UsageError(f"message {message_id} is a broadcast, which every agent reads for "
                         f"itself: name the agent (usage: openclaw-scheduler {usage})")


def msg_ack(ctx: Context) -> int:
    from scheduler.service import messages

    usage = "msg ack <message-id> [actor] [note]"
    message_id = _arg(ctx, 0, usage)
    actor = check_agent_name(ctx.args[1], "actor") if len(ctx.args) > 1 else messages.OPERATOR
    note = messages.check_note(ctx.args[2:])
    agent = None if actor == messages.OPERATOR else actor
    _require_reader(ctx.store, message_id, agent, "msg ack <message-id> <agent> [note]")
    row = messages.ack(ctx.store, message_id, actor, note, utcnow())
    result = {"id": row["id"], "status": row["status"], "ack_at": row["ack_at"],
              "read_at": row["read_at"]}
    ctx.out.emit({"ok": True, **result}, f"Acknowledged: {dumps(result)}")
    return 0


def msg_read(ctx: Context) -> int:
    usage = "msg read <message-id> [agent-id]"
    message_id = _arg(ctx, 0, usage)
    agent = check_agent_name(ctx.args[1]) if len(ctx.args) > 1 else None
    ctx.no_extra(2, usage)
    _require_reader(ctx.store, message_id, agent, "msg read <message-id> <agent-id>")
    row = ctx.store.mark_read(message_id, agent, _now())
    read = row["status"] == "read"
    result: dict[str, Any] = {"ok": True, "message_id": message_id, "read": read,
                              "status": row["status"]}
    if agent is not None:
        result["agent"] = agent
    ctx.out.emit(result, "Marked read" if read else f"Not marked read: the message is {row['status']}")
    return 0


def msg_readall(ctx: Context) -> int:
    usage = "msg readall <agent-id>"
    agent = _agent(ctx, 0, usage)
    ctx.no_extra(1, usage)
    changes = ctx.store.read_all(agent, _now())
    ctx.out.emit({"ok": True, "agent": agent, "changes": changes}, f"Marked {changes} read")
    return 0


# -- queue ----------------------------------------------------------------------------------------------


def queue_list(ctx: Context) -> int:
    usage = "queue list [agent] [limit]"
    agent = _agent(ctx, 0, usage, default=QUEUE_AGENT)
    limit = _limit(ctx, 1, QUEUE_LIMIT)
    ctx.no_extra(2, usage)
    now = _now()
    rows = ctx.store.inbox(agent, now, limit)
    unread = ctx.store.unread_count(agent, now)
    delivered = sum(1 for row in rows if row["status"] == "delivered")
    # As the reference: "pending" counts every unread message (pending and delivered).
    data = {"agent": agent, "pending": unread, "delivered": delivered, "messages": _json_rows(rows)}
    if not rows:
        ctx.out.emit(data, "Queue empty")
        return 0
    shown = [_inbox_line(row, 45) for row in rows]

    def human() -> None:
        sys.stdout.write(printable_lines(
            f"\nQueue for agent: {agent} | {unread} pending | {delivered} delivered "
            f"(showing last {limit})\n") + "\n")
        table(shown, list(shown[0]))

    ctx.out.emit(data, human)
    return 0


def queue_bare(ctx: Context) -> int:
    """``queue`` alone lists main's queue, as the reference; anything else is a subcommand."""
    if ctx.args:
        raise UsageError(f"unknown subcommand {ctx.args[0]!r} for queue; expected one of: "
                         "clear, list, prune")
    return queue_list(ctx)


def queue_clear(ctx: Context) -> int:
    usage = "queue clear [agent]"
    agent = _agent(ctx, 0, usage, default=QUEUE_AGENT)
    ctx.no_extra(1, usage)
    changes = ctx.store.read_all(agent, _now())
    ctx.out.emit({"ok": True, "agent": agent, "changes": changes}, f"Cleared {changes} messages")
    return 0


def queue_prune(ctx: Context) -> int:
    ctx.no_extra(0, "queue prune")
    counts = ctx.store.prune_messages(_now())
    total = sum(counts.values())
    ctx.out.emit(
        {"ok": True, "pruned": True, "deleted": total, "by_rule": counts},
        f"Pruned {total} old messages (delivered >3d, system/result >3d, read/expired/failed and "
        "broadcasts >30d; results not yet sent are kept)",
    )
    return 0
