"""SQL for ``messages``: messages sent between agents, outbound deliveries of results, and the
agents' inboxes.

Results a job announces are written as *outbound* messages, addressed to the reserved recipient
``@outbound`` rather than to an agent, in the same transaction that records the run: durable
before anything is sent, and never visible to an agent's inbox, so no prompt injection can
consume them (reference defect §17 #12). The daemon sends them through the gateway and marks
them ``delivered`` only once the gateway has accepted every chunk.

What agents see of their messages (inboxes, reads, acks, prompt injection, expiry, pruning) is
in store/sqlite/inbox.py.
"""

from __future__ import annotations

import json
import sqlite3
import uuid

from scheduler.errors import NotFoundError
from scheduler.models.messages import NewMessage
from scheduler.models.records import Message, OutboundMessage, parse_metadata
from scheduler.store.api import Delivery
from scheduler.store.sqlite.db import Database, Row

OUTBOUND = "@outbound"
SENDER = "scheduler"
# Give up on an outbound message after this many failed attempts (the last error stays on it).
MAX_DELIVERY_ATTEMPTS = 20


def resolve_target(conn: sqlite3.Connection, channel: str | None, target: str | None) -> tuple[
    str | None, str | None, str | None
]:
    """(channel, target, problem): ``@alias`` targets are looked up in ``delivery_aliases``."""
    if target and target.startswith("@"):
        alias = conn.execute(
            "SELECT channel, target FROM delivery_aliases WHERE alias = ?", (target[1:],)
        ).fetchone()
        if alias is None:
            return channel, target, f"unknown delivery alias {target}; add it with: alias add"
        return alias["channel"], alias["target"], None
    return channel, target, None


def enqueue_outbound(
    conn: sqlite3.Connection, delivery: Delivery, *, subject: str, job_id: str | None,
    run_id: str | None, now_text: str, kind: str = "result",
) -> Row:
    """Record an outbound message inside the caller's transaction: a job's result, an approval
    request, or a notice with no job behind it (``job_id``/``run_id`` None). An unknown alias is
    recorded as ``failed`` with the reason (the reference sent it to the literal ``@name``,
    §17 #17)."""
    channel, target, problem = resolve_target(conn, delivery.channel, delivery.target)
    message_id = str(uuid.uuid4())
    metadata: dict[str, object] = {"chunks_sent": 0, "requested_to": delivery.target}
    if delivery.attachments:
        metadata.update(attachments=list(delivery.attachments), media_sent=0)
    conn.execute(
        "INSERT INTO messages (id, from_agent, to_agent, kind, subject, body, channel, delivery_to, "
        "status, last_error, created_at, job_id, run_id, metadata, next_attempt_at) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            message_id, SENDER, OUTBOUND, kind, subject[:100], delivery.text, channel, target,
            "failed" if problem else "pending", problem, now_text, job_id, run_id,
            json.dumps(metadata), now_text,
        ),
    )
    row: Row = conn.execute("SELECT * FROM messages WHERE id = ?", (message_id,)).fetchone()
    return row


def due_outbound(db: Database, now_text: str, limit: int = 50) -> list[OutboundMessage]:
    rows = db.query(
        "SELECT * FROM messages WHERE to_agent = ? AND status = 'pending' "
        "AND (next_attempt_at IS NULL OR next_attempt_at <= ?) ORDER BY created_at LIMIT ?",
        (OUTBOUND, now_text, limit),
    )
    return [OutboundMessage.from_row(row) for row in rows]


def next_outbound_at(db: Database) -> str | None:
    value = db.scalar(
        "SELECT MIN(COALESCE(next_attempt_at, created_at)) FROM messages "
        "WHERE to_agent = ? AND status = 'pending'",
        (OUTBOUND,),
    )
    return None if value is None else str(value)


def record_progress(db: Database, message_id: str, sent: int) -> None:
    """Chunks the gateway accepted so far: a retry resumes after them."""
    with db.transaction() as conn:
        row = conn.execute("SELECT metadata FROM messages WHERE id = ?", (message_id,)).fetchone()
        meta = parse_metadata(row["metadata"] if row is not None else None)
        meta["chunks_sent"] = sent
        conn.execute("UPDATE messages SET metadata = ? WHERE id = ?", (json.dumps(meta), message_id))


def record_media_progress(db: Database, message_id: str, media_sent: int, skipped: str | None,
                          now_text: str) -> None:
    """Attachments done so far (sent, or given up when their file could no longer be sent: that
    reason is kept in ``media_skipped`` and a receipt). A retry resumes after them."""
    with db.transaction() as conn:
        row = conn.execute("SELECT metadata FROM messages WHERE id = ?", (message_id,)).fetchone()
        if row is None:
            return
        meta = parse_metadata(row["metadata"])
        meta["media_sent"] = media_sent
        if skipped is not None:
            meta["media_skipped"] = [*_str_list(meta.get("media_skipped")), skipped[:1000]]
            receipt(conn, message_id, "error", "dispatcher", skipped[:1000], now_text)
        conn.execute("UPDATE messages SET metadata = ? WHERE id = ?", (json.dumps(meta), message_id))


def _str_list(value: object) -> list[str]:
    return [item for item in value if isinstance(item, str)] if isinstance(value, list) else []


def mark_delivered(db: Database, message_id: str, now_text: str) -> None:
    with db.transaction() as conn:
        conn.execute(
            "UPDATE messages SET status = 'delivered', delivered_at = ?, next_attempt_at = NULL, "
            "delivery_attempts = delivery_attempts + 1, last_error = NULL WHERE id = ?",
            (now_text, message_id),
        )
        receipt(conn, message_id, "attempt", "dispatcher", "delivered", now_text)


def mark_attempt_failed(
    db: Database, message_id: str, error: str, retry_at: str | None, now_text: str
) -> Row:
    """Count a failed attempt; ``retry_at`` None (or too many attempts) gives up: ``failed``."""
    with db.transaction() as conn:
        conn.execute(
            "UPDATE messages SET delivery_attempts = delivery_attempts + 1, last_error = ?, "
            "next_attempt_at = ? WHERE id = ?",
            (error[:1000], retry_at, message_id),
        )
        row = conn.execute("SELECT * FROM messages WHERE id = ?", (message_id,)).fetchone()
        if retry_at is None or row["delivery_attempts"] >= MAX_DELIVERY_ATTEMPTS:
            conn.execute("UPDATE messages SET status = 'failed', next_attempt_at = NULL WHERE id = ?",
                         (message_id,))
        receipt(conn, message_id, "error", "dispatcher", error[:1000], now_text)
        result: Row = conn.execute("SELECT * FROM messages WHERE id = ?", (message_id,)).fetchone()
    return result


def receipt(conn: sqlite3.Connection, message_id: str, event: str, actor: str, detail: str,
            now_text: str) -> None:
    """Record what happened to a message (``message_receipts``), in the caller's transaction."""
    attempt = conn.execute(
        "SELECT delivery_attempts FROM messages WHERE id = ?", (message_id,)
    ).fetchone()["delivery_attempts"]
    conn.execute(
        "INSERT INTO message_receipts (id, message_id, event_type, attempt, actor, detail, created_at) "
        "VALUES (?, ?, ?, ?, ?, ?, ?)",
        (str(uuid.uuid4()), message_id, event, attempt, actor, detail, now_text),
    )


# -- messages between agents ---------------------------------------------------------------------

_LINKS = (("job_id", "jobs", "Job"), ("run_id", "runs", "Run"), ("reply_to", "messages", "Message"))


def insert_message(conn: sqlite3.Connection, message: NewMessage, now_text: str) -> Row:
    """Write a ``pending`` message inside the caller's transaction; the job, run or message it
    names must exist (NotFoundError otherwise)."""
    for column, table, what in _LINKS:
        value = getattr(message, column)
        if value is not None and conn.execute(
            f"SELECT 1 FROM {table} WHERE id = ?", (value,)
        ).fetchone() is None:
            raise NotFoundError(f"{what} not found: {value}")
    message_id = str(uuid.uuid4())
    conn.execute(
        "INSERT INTO messages (id, from_agent, to_agent, kind, subject, body, channel, delivery_to, "
        "status, created_at, job_id, run_id, reply_to, priority, expires_at, ack_required, "
        "metadata, owner, team_id, member_id, task_id) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'pending', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (message_id, message.from_agent, message.to_agent, message.kind, message.subject,
         message.body, message.channel, message.delivery_to, now_text, message.job_id,
         message.run_id, message.reply_to, message.priority, message.expires_at,
         int(message.ack_required), message.metadata, message.owner, message.team_id,
         message.member_id, message.task_id),
    )
    row: Row = conn.execute("SELECT * FROM messages WHERE id = ?", (message_id,)).fetchone()
    return row


def send_message(db: Database, message: NewMessage, now_text: str) -> Message:
    with db.transaction() as conn:
        row = insert_message(conn, message, now_text)
    return Message.from_row(row)


def get_message(db: Database, message_id: str) -> Message | None:
    row = db.query_one("SELECT * FROM messages WHERE id = ?", (message_id,))
    return None if row is None else Message.from_row(row)


# -- delivery aliases ----------------------------------------------------------------------------


def list_aliases(db: Database) -> list[Row]:
    return db.query("SELECT * FROM delivery_aliases ORDER BY alias")


def add_alias(db: Database, alias: str, channel: str, target: str, description: str | None) -> Row:
    with db.transaction() as conn:
        conn.execute(
            "INSERT INTO delivery_aliases (alias, channel, target, description) VALUES (?, ?, ?, ?) "
            "ON CONFLICT(alias) DO UPDATE SET channel = excluded.channel, target = excluded.target, "
            "description = excluded.description",
            (alias, channel, target, description),
        )
    row = db.query_one("SELECT * FROM delivery_aliases WHERE alias = ?", (alias,))
    assert row is not None
    return row


def remove_alias(db: Database, alias: str) -> bool:
    with db.transaction() as conn:
        return conn.execute("DELETE FROM delivery_aliases WHERE alias = ?", (alias,)).rowcount > 0
