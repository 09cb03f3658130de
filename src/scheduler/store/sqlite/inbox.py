"""SQL for what agents see of ``messages``: inboxes, outboxes, threads, reads and acks, receipts,
prompt injection, expiry and pruning.

A message to ``broadcast`` is one row that reaches every agent. Each agent's state of it (taken
into a prompt, read, acknowledged, expired) lives in ``message_recipients`` under (message,
agent); an agent with no row there still has the broadcast pending. So one agent reading a
broadcast no longer consumes it for the others (reference defect §17 #15). The broadcast's own
row keeps ``status = 'pending'`` until it expires (``expired``) or is pruned; each agent's view
of it shows that agent's status, ``delivered_at``, ``read_at`` and ``ack_at``.

Outbound deliveries (``to_agent = '@outbound'``) are no agent's messages: they never appear in
an inbox, an outbox, a count or a prompt, and no read or ack touches them.
"""

from __future__ import annotations

import sqlite3
import uuid
from datetime import timedelta
from typing import Any, Final

from scheduler.errors import NotFoundError, ValidationError
from scheduler.models.messages import BROADCAST
from scheduler.store.sqlite.db import Database, Row
from scheduler.store.sqlite.messages import OUTBOUND, receipt
from scheduler.timeutil import from_sqlite, to_sqlite

# The inbox order (the reference's "typed priority"): kind first, then priority, then age; the
# rowid breaks ties between messages written in the same second, in the order they were written.
_KIND_RANK: Final = (
    "CASE m.kind WHEN 'constraint' THEN 0 WHEN 'decision' THEN 1 WHEN 'fact' THEN 2 "
    "WHEN 'task' THEN 3 WHEN 'preference' THEN 4 ELSE 5 END"
)
INBOX_ORDER: Final = f"{_KIND_RANK}, m.priority DESC, m.created_at, m.rowid"
# Each row with the agent's own state of a broadcast beside it (NULL for a direct message, or
# for a broadcast the agent has not touched).
_VIEW: Final = (
    "SELECT m.*, r.status AS r_status, r.delivered_at AS r_delivered_at, r.read_at AS r_read_at, "
    "r.ack_at AS r_ack_at FROM messages m LEFT JOIN message_recipients r "
    "ON m.to_agent = 'broadcast' AND r.message_id = m.id AND r.agent_id = :agent "
)
_STATUS: Final = "COALESCE(r.status, m.status)"
_ADDRESSED: Final = "(m.to_agent = :agent OR m.to_agent = 'broadcast')"
_LIVE: Final = "(m.expires_at IS NULL OR m.expires_at > :now)"
_UNREAD: Final = ("pending", "delivered")
_RECIPIENT_COLUMNS: Final = ("status", "delivered_at", "read_at", "ack_at")

# Retention (§17 #16 kept: an outbound delivery not yet sent is never pruned).
KEEP_DAYS: Final = 30  # read, expired, failed; and broadcasts, whatever their status
DELIVERED_KEEP_DAYS: Final = 3
NOTIFICATION_KEEP_DAYS: Final = 3  # kinds system and result, whatever their status


def _agent_view(row: Row) -> Row:
    """The row as ``agent`` sees it: for a broadcast it has touched, its own state."""
    own = {name: row.pop(f"r_{name}") for name in _RECIPIENT_COLUMNS}
    if row["to_agent"] == BROADCAST and own["status"] is not None:
        row.update(own)
    return row


def _one(conn: sqlite3.Connection, message_id: str) -> Row:
    row: Row | None = conn.execute("SELECT * FROM messages WHERE id = ?", (message_id,)).fetchone()
    if row is None:
        raise NotFoundError(f"Message not found: {message_id}")
    if row["to_agent"] == OUTBOUND:
        raise ValidationError(f"message {message_id} is an outbound delivery the scheduler sends, "
                              "not an agent's message")
    return row


def _viewed(conn: sqlite3.Connection, message_id: str, agent: str) -> Row:
    row: Row = conn.execute(_VIEW + "WHERE m.id = :id", {"agent": agent, "id": message_id}).fetchone()
    return _agent_view(row)


# -- reading ----------------------------------------------------------------------------------------


def inbox(db: Database, agent: str, now: str, limit: int,
          statuses: tuple[str, ...] = _UNREAD) -> list[Row]:
    """Messages to ``agent`` or ``broadcast`` in one of ``statuses`` (as the agent sees them),
    not past their expiry, in the inbox order."""
    marks = ", ".join(f":s{i}" for i in range(len(statuses)))
    params: dict[str, Any] = {"agent": agent, "now": now, "limit": limit,
                              **{f"s{i}": s for i, s in enumerate(statuses)}}
    rows = db.query(
        _VIEW + f"WHERE {_ADDRESSED} AND m.to_agent != '{OUTBOUND}' AND {_STATUS} IN ({marks}) "
        f"AND {_LIVE} ORDER BY {INBOX_ORDER} LIMIT :limit",
        params,
    )
    return [_agent_view(row) for row in rows]


def unread_count(db: Database, agent: str, now: str) -> int:
    return int(db.scalar(
        f"SELECT COUNT(*) FROM messages m LEFT JOIN message_recipients r "
        f"ON m.to_agent = 'broadcast' AND r.message_id = m.id AND r.agent_id = :agent "
        f"WHERE {_ADDRESSED} AND m.to_agent != '{OUTBOUND}' AND {_STATUS} IN ('pending', 'delivered') "
        f"AND {_LIVE}",
        {"agent": agent, "now": now},
    ) or 0)


def outbox(db: Database, agent: str, limit: int) -> list[Row]:
    """What ``agent`` sent, newest first (the scheduler's outbound deliveries are not in it)."""
    return db.query(
        "SELECT * FROM messages WHERE from_agent = ? AND to_agent != ? "
        "ORDER BY created_at DESC, rowid DESC LIMIT ?",
        (agent, OUTBOUND, limit),
    )


def thread(db: Database, message_id: str) -> list[Row]:
    """The message and its direct replies, oldest first."""
    rows = db.query(
        "SELECT * FROM messages WHERE id = ? OR reply_to = ? ORDER BY created_at, rowid",
        (message_id, message_id),
    )
    if not any(row["id"] == message_id for row in rows):
        raise NotFoundError(f"Message not found: {message_id}")
    return rows


def receipts(db: Database, message_id: str, limit: int) -> list[Row]:
    """What happened to the message, newest first."""
    if db.query_one("SELECT 1 FROM messages WHERE id = ?", (message_id,)) is None:
        raise NotFoundError(f"Message not found: {message_id}")
    return db.query(
        "SELECT * FROM message_receipts WHERE message_id = ? ORDER BY created_at DESC, rowid DESC "
        "LIMIT ?",
        (message_id, limit),
    )


# -- reads and acknowledgements ---------------------------------------------------------------------


def _ack_receipt(conn: sqlite3.Connection, message_id: str, actor: str, detail: str | None,
                 now: str) -> None:
    conn.execute(
        "INSERT INTO message_receipts (id, message_id, event_type, attempt, actor, detail, created_at) "
        "VALUES (?, ?, 'ack', NULL, ?, ?, ?)",
        (str(uuid.uuid4()), message_id, actor, detail, now),
    )


def _set_recipient(conn: sqlite3.Connection, message_id: str, agent: str, state: Row) -> None:
    conn.execute(
        "INSERT INTO message_recipients (message_id, agent_id, status, delivered_at, read_at, ack_at) "
        "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT(message_id, agent_id) DO UPDATE SET "
        "status = excluded.status, delivered_at = excluded.delivered_at, "
        "read_at = excluded.read_at, ack_at = excluded.ack_at",
        (message_id, agent, state["status"], state["delivered_at"], state["read_at"], state["ack_at"]),
    )


def _broadcast_agent(row: Row, agent: str | None) -> str | None:
    """The agent whose copy a read or ack changes: required for a broadcast, unused otherwise."""
    if row["to_agent"] != BROADCAST:
        return None
    if agent is None:
        raise ValidationError(f"message {row['id']} is a broadcast, which every agent reads for "
                              "itself: name the agent whose copy this is")
    return agent


def _read_state(state: Row, now: str, *, ack: bool) -> Row:
    """``state`` after a read (only of an unread message) or an ack (of any message)."""
    unread = state["status"] in _UNREAD
    if not unread and not ack:
        return state
    return {**state, "status": "read" if unread else state["status"],
            "read_at": (state["read_at"] or now) if ack else now,
            "ack_at": state["ack_at"] or now}


def _apply(conn: sqlite3.Connection, row: Row, agent: str | None, now: str, *, ack: bool) -> bool:
    """Read or acknowledge ``row`` (a broadcast: ``agent``'s copy); True when it changed."""
    target = _broadcast_agent(row, agent)
    state = (_viewed(conn, row["id"], target) if target is not None else row)
    before = {name: state[name] for name in _RECIPIENT_COLUMNS}
    after = _read_state(before, now, ack=ack)
    if after == before and not ack:
        return False
    if target is not None:
        _set_recipient(conn, row["id"], target, after)
    else:
        conn.execute("UPDATE messages SET status = ?, read_at = ?, ack_at = ? WHERE id = ?",
                     (after["status"], after["read_at"], after["ack_at"], row["id"]))
    return True


def mark_read(db: Database, message_id: str, agent: str | None, now: str) -> Row:
    """An unread message becomes ``read`` (a broadcast: for ``agent`` only), with an ``ack``
    receipt; the message as its reader now sees it."""
    with db.transaction() as conn:
        row = _one(conn, message_id)
        if _apply(conn, row, agent, now, ack=False):
            _ack_receipt(conn, message_id, agent or "agent", None, now)
        return _seen_by(conn, row, agent)


def ack_message(db: Database, message_id: str, agent: str | None, actor: str, detail: str | None,
                now: str) -> Row:
    """Acknowledge: unread becomes ``read``; ``read_at`` and ``ack_at`` are set if unset; an
    ``ack`` receipt names ``actor``. A broadcast is acknowledged for ``agent`` only."""
    with db.transaction() as conn:
        row = _one(conn, message_id)
        _apply(conn, row, agent, now, ack=True)
        _ack_receipt(conn, message_id, actor, detail, now)
        return _seen_by(conn, row, agent)


def _seen_by(conn: sqlite3.Connection, row: Row, agent: str | None) -> Row:
    if row["to_agent"] == BROADCAST and agent is not None:
        return _viewed(conn, row["id"], agent)
    fresh: Row = conn.execute("SELECT * FROM messages WHERE id = ?", (row["id"],)).fetchone()
    return fresh


def read_all(db: Database, agent: str, now: str) -> int:
    """Every unread message of ``agent`` (its copy of each broadcast) becomes ``read``, each with
    an ``ack`` receipt; how many."""
    with db.transaction() as conn:
        rows = conn.execute(
            _VIEW + f"WHERE {_ADDRESSED} AND m.to_agent != '{OUTBOUND}' "
            f"AND {_STATUS} IN ('pending', 'delivered') AND {_LIVE} ORDER BY m.rowid",
            {"agent": agent, "now": now},
        ).fetchall()
        for row in rows:
            _apply(conn, _agent_view(row), agent, now, ack=False)
            _ack_receipt(conn, row["id"], agent, "read all", now)
    return len(rows)


# -- prompt injection --------------------------------------------------------------------------------


def take_inbox(db: Database, agent: str, now: str, limit: int = 5) -> list[Row]:
    """Up to ``limit`` pending messages of ``agent`` for its next prompt, in the inbox order,
    marked ``delivered`` (a broadcast: for ``agent`` only); returned as they were (pending).
    Spawn messages ask the scheduler for a job (store/sqlite/spawn.py), not the agent for an
    answer: never taken."""
    with db.transaction() as conn:
        rows = [_agent_view(row) for row in conn.execute(
            _VIEW + f"WHERE {_ADDRESSED} AND m.to_agent != '{OUTBOUND}' AND {_STATUS} = 'pending' "
            f"AND m.kind != 'spawn' AND {_LIVE} ORDER BY {INBOX_ORDER} LIMIT :limit",
            {"agent": agent, "now": now, "limit": limit},
        ).fetchall()]
        for row in rows:
            _mark_taken(conn, row, agent, now)
    return rows


def _mark_taken(conn: sqlite3.Connection, row: Row, agent: str, now: str) -> None:
    conn.execute("UPDATE messages SET delivery_attempts = delivery_attempts + 1 WHERE id = ?",
                 (row["id"],))
    if row["to_agent"] == BROADCAST:
        _set_recipient(conn, row["id"], agent, {**row, "status": "delivered", "delivered_at": now})
        detail = f"injected into the prompt of {agent}"
    else:
        conn.execute("UPDATE messages SET status = 'delivered', delivered_at = ? WHERE id = ?",
                     (now, row["id"]))
        detail = "injected into prompt"
    receipt(conn, row["id"], "attempt", "dispatcher", detail, now)


def return_to_inbox(db: Database, agent: str, message_ids: list[str], now: str) -> None:
    """Messages taken for a prompt the gateway never accepted go back to ``pending`` (a
    broadcast: ``agent``'s copy only)."""
    if not message_ids:
        return
    with db.transaction() as conn:
        for message_id in message_ids:
            changed = conn.execute(
                "UPDATE message_recipients SET status = 'pending', delivered_at = NULL "
                "WHERE message_id = ? AND agent_id = ? AND status = 'delivered'",
                (message_id, agent),
            ).rowcount + conn.execute(
                "UPDATE messages SET status = 'pending', delivered_at = NULL "
                "WHERE id = ? AND status = 'delivered' AND to_agent NOT IN (?, ?)",
                (message_id, BROADCAST, OUTBOUND),
            ).rowcount
            if changed:
                receipt(conn, message_id, "error", "dispatcher",
                        "prompt not accepted; back in the inbox", now)


# -- expiry and pruning ------------------------------------------------------------------------------


def expire(db: Database, now: str) -> int:
    """Unread messages past ``expires_at`` become ``expired`` (a broadcast: its row, and every
    agent's unread copy); how many rows. Spawn messages are left to the spawn handler, which
    answers an expired one with an error to its sender."""
    with db.transaction() as conn:
        copies = conn.execute(
            "UPDATE message_recipients SET status = 'expired' WHERE status IN ('pending', 'delivered') "
            "AND message_id IN (SELECT id FROM messages WHERE to_agent = 'broadcast' "
            "AND expires_at IS NOT NULL AND expires_at <= ?)",
            (now,),
        ).rowcount
        rows = conn.execute(
            "UPDATE messages SET status = 'expired' WHERE expires_at IS NOT NULL AND expires_at <= ? "
            "AND status IN ('pending', 'delivered') AND to_agent != ? AND kind != 'spawn'",
            (now, OUTBOUND),
        ).rowcount
    return int(rows + copies)


def _days_before(now: str, days: int) -> str:
    return to_sqlite(from_sqlite(now) - timedelta(days=days))


_UNSENT: Final = f"(to_agent = '{OUTBOUND}' AND status = 'pending')"
_PRUNE_RULES: Final = (
    ("broadcasts", f"to_agent = 'broadcast' AND created_at < :keep AND NOT {_UNSENT}"),
    ("read_expired_failed", "status IN ('read', 'expired', 'failed') AND created_at < :keep"),
    ("delivered", "status = 'delivered' AND created_at < :delivered"),
    ("notifications", f"kind IN ('system', 'result') AND created_at < :notification "
                      f"AND NOT {_UNSENT}"),
)


def prune(db: Database, now: str, *, dry_run: bool = False) -> dict[str, int]:
    """Delete old messages (their receipts and recipients' states go with them); how many by
    rule. An outbound delivery still pending (not yet sent) is never deleted, whatever its age.
    With ``dry_run``, count what would go (a message matching two rules counts under both)."""
    cutoffs = {"keep": _days_before(now, KEEP_DAYS),
               "delivered": _days_before(now, DELIVERED_KEEP_DAYS),
               "notification": _days_before(now, NOTIFICATION_KEEP_DAYS)}
    counts: dict[str, int] = {}
    if dry_run:
        for name, where in _PRUNE_RULES:
            counts[name] = int(db.scalar(f"SELECT COUNT(*) FROM messages WHERE {where}", cutoffs))
        return counts
    with db.transaction() as conn:
        for name, where in _PRUNE_RULES:
            counts[name] = conn.execute(f"DELETE FROM messages WHERE {where}", cutoffs).rowcount
    return counts
