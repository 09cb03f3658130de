"""SQL for spawn messages: the ``spawn`` messages still to handle, and their answers.

A spawn message is answered once, in one transaction: either its job is created (with, for a
linked one-off, the queue row of its one run) or an error message goes back to its sender, and
either way the spawn message is marked ``delivered``. The mark is a compare-and-set on
``status = 'pending'``, so a message is answered once whoever else looks at it, and a process
killed before the commit leaves it ``pending``, to be answered by the next one.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Mapping
from typing import Any

from scheduler.errors import StoreConstraintError
from scheduler.models.enums import MessageKind
from scheduler.models.messages import NewMessage
from scheduler.models.records import Job, Message, parse_metadata
from scheduler.store.api import SpawnRejection
from scheduler.store.sqlite import jobs, queue
from scheduler.store.sqlite.db import Database
from scheduler.store.sqlite.messages import OUTBOUND, SENDER, insert_message, receipt

REPLY_SUBJECT = "spawn rejected"


def pending_spawns(db: Database, limit: int) -> list[Message]:
    """Spawn messages not yet answered, oldest first, whoever they are addressed to."""
    rows = db.query(
        "SELECT * FROM messages WHERE kind = 'spawn' AND status = 'pending' "
        "ORDER BY created_at, rowid LIMIT ?",
        (limit,),
    )
    return [Message.from_row(row) for row in rows]


def _mark_answered(conn: sqlite3.Connection, message_id: str, answer: Mapping[str, Any],
                   now_text: str) -> Message | None:
    """``pending`` → ``delivered``, the answer kept in its metadata; None if it was not pending."""
    row = conn.execute(
        "SELECT * FROM messages WHERE id = ? AND status = 'pending'", (message_id,)
    ).fetchone()
    if row is None:
        return None
    metadata = {**parse_metadata(row["metadata"]), **answer}
    conn.execute(
        "UPDATE messages SET status = 'delivered', delivered_at = ?, metadata = ?, "
        "delivery_attempts = delivery_attempts + 1 WHERE id = ? AND status = 'pending'",
        (now_text, json.dumps(metadata), message_id),
    )
    return Message.from_row(row)


def accept_spawn(db: Database, message_id: str, job_row: Mapping[str, Any], queue_at: str | None,
                 now_text: str) -> Job | None:
    """Create the spawned job (and, with ``queue_at``, a manual run of it due then) and mark the
    message answered, in one transaction. None when the message was no longer pending (nothing
    written); a missing parent or a taken id raises ValidationError (nothing written)."""
    job_id = str(job_row["id"])
    try:
        with db.transaction() as conn:
            if _mark_answered(conn, message_id, {"spawned_job_id": job_id}, now_text) is None:
                return None
            jobs.insert_job_in(conn, job_row)
            if queue_at is not None:
                queue.insert(conn, job_id, "manual", queue_at)
            receipt(conn, message_id, "attempt", SENDER, f"spawned job {job_id}", now_text)
    except StoreConstraintError as exc:
        raise jobs.explain_integrity(exc) from None
    return jobs.require_job(db, job_id)


def reject_spawn(db: Database, message_id: str, error: str, now_text: str) -> SpawnRejection | None:
    """Answer the message with ``error``: a ``system`` message from the scheduler back to its
    sender, replying to it (none when the sender is the scheduler's own outbox), and mark it
    answered, in one transaction. None when the message was no longer pending."""
    with db.transaction() as conn:
        message = _mark_answered(conn, message_id, {"spawn_error": error}, now_text)
        if message is None:
            return None
        reply = None
        if message.from_agent != OUTBOUND:
            reply = insert_message(conn, NewMessage(
                from_agent=SENDER, to_agent=message.from_agent, kind=MessageKind.SYSTEM.value,
                subject=REPLY_SUBJECT, body=f"Spawn rejected: {error}", reply_to=message.id,
            ), now_text)
        receipt(conn, message_id, "error", SENDER, error[:1000], now_text)
    return SpawnRejection(reply=None if reply is None else Message.from_row(reply))
