"""SQL for task groups (``task_tracker``, ``task_tracker_agents``): the dead-man switch.

A group finishes in the transaction that makes its last agent terminal, whoever does that: a
sub-agent's report from the CLI, the daemon's dead-man sweep, or a team gate check. Its
completion notice is recorded as an outbound message in that same transaction, so no path that
finishes a group can leave it unannounced (the reference announced only the groups its own
notifier finished, §17 #14), and a crash cannot lose the notice of a group already finished.
"""

from __future__ import annotations

import json
import sqlite3
import uuid
from collections.abc import Collection

from scheduler.errors import NotFoundError, ValidationError
from scheduler.models.tasks import (
    DEAD_ERROR,
    HEARTBEAT_GRACE_MAX_S,
    AgentState,
    GroupStatus,
    NewTaskGroup,
    group_status_of,
    notice_text,
    summary_line,
)
from scheduler.store.api import Delivery, FinishedGroup, TrackerSweep
from scheduler.store.sqlite.db import Database, Row
from scheduler.store.sqlite.messages import OUTBOUND, enqueue_outbound

NOTICE_KIND = "system"
# Whole seconds between two stored instants (SQLite reads both the stored and the ISO forms).
_AGE = "(CAST(strftime('%s', ?) AS INTEGER) - CAST(strftime('%s', {column}) AS INTEGER))"
_KEYS_PER_QUERY = 500


def notice_subject(tracker_id: str) -> str:
    """How a group's notice is found again: its subject names the group."""
    return f"task-group:{tracker_id}"


def insert_group(conn: sqlite3.Connection, group: NewTaskGroup, now_text: str) -> Row:
    tracker_id = str(uuid.uuid4())
    conn.execute(
        "INSERT INTO task_tracker (id, name, created_at, created_by, expected_agents, timeout_s, "
        "status, delivery_channel, delivery_to) VALUES (?, ?, ?, ?, ?, ?, 'active', ?, ?)",
        (tracker_id, group.name, now_text, group.created_by, json.dumps(list(group.expected_agents)),
         group.timeout_s, group.delivery_channel, group.delivery_to),
    )
    for label in group.expected_agents:
        conn.execute(
            "INSERT INTO task_tracker_agents (id, tracker_id, agent_label, status) "
            "VALUES (?, ?, ?, 'pending')",
            (str(uuid.uuid4()), tracker_id, label),
        )
    return {"id": tracker_id, "name": group.name, "status": GroupStatus.ACTIVE.value,
            "created_at": now_text, "created_by": group.created_by,
            "agents": [{"agent_label": label, "status": AgentState.PENDING.value}
                       for label in group.expected_agents]}


def create_group(db: Database, group: NewTaskGroup, now_text: str) -> Row:
    with db.transaction() as conn:
        return insert_group(conn, group, now_text)


def get_group(db: Database, tracker_id: str) -> Row | None:
    group = db.query_one("SELECT * FROM task_tracker WHERE id = ?", (tracker_id,))
    if group is None:
        return None
    group["agents"] = db.query(
        "SELECT * FROM task_tracker_agents WHERE tracker_id = ? ORDER BY agent_label, rowid",
        (tracker_id,),
    )
    group["notice"] = db.query_one(
        "SELECT id, status, delivered_at, last_error FROM messages "
        "WHERE to_agent = ? AND subject = ? ORDER BY created_at DESC LIMIT 1",
        (OUTBOUND, notice_subject(tracker_id)),
    )
    return group


def active_groups(db: Database) -> list[Row]:
    return db.query("SELECT * FROM task_tracker WHERE status = 'active' ORDER BY created_at DESC")


def history(db: Database, limit: int) -> list[Row]:
    return db.query(
        "SELECT * FROM task_tracker WHERE status != 'active' ORDER BY completed_at DESC LIMIT ?",
        (limit,),
    )


def _agent_of_active_group(conn: sqlite3.Connection, tracker_id: str, label: str) -> Row:
    group = conn.execute("SELECT status FROM task_tracker WHERE id = ?", (tracker_id,)).fetchone()
    if group is None:
        raise NotFoundError(f"Task group not found: {tracker_id}")
    if group["status"] != GroupStatus.ACTIVE:
        raise ValidationError(f"Task group {tracker_id} is {group['status']}: it takes no more "
                              "reports")
    agent: Row | None = conn.execute(
        "SELECT * FROM task_tracker_agents WHERE tracker_id = ? AND agent_label = ?",
        (tracker_id, label),
    ).fetchone()
    if agent is None:
        raise NotFoundError(f"Agent {label!r} is not in task group {tracker_id}")
    return agent


_REPORTS = {
    # The reference's agentStarted, agentCompleted and agentFailed.
    AgentState.RUNNING.value: "UPDATE task_tracker_agents SET status = 'running', started_at = :now, "
                        "last_heartbeat = :now WHERE id = :id",
    AgentState.COMPLETED.value: "UPDATE task_tracker_agents SET status = 'completed', finished_at = :now, "
                          "exit_message = :message WHERE id = :id",
    AgentState.FAILED.value: "UPDATE task_tracker_agents SET status = 'failed', finished_at = :now, "
                       "error = COALESCE(:message, 'failed') WHERE id = :id",
}


def report(db: Database, tracker_id: str, label: str, state: str, message: str | None,
           now_text: str) -> FinishedGroup | None:
    sql = _REPORTS.get(state)
    if sql is None:
        raise ValidationError(f'Unknown status: "{state}". Valid values: running | completed | failed')
    with db.transaction() as conn:
        agent = _agent_of_active_group(conn, tracker_id, label)
        conn.execute(sql, {"now": now_text, "message": message or None, "id": agent["id"]})
        return finish_if_done(conn, tracker_id, now_text)


def register_session(db: Database, tracker_id: str, label: str, session_key: str,
                     now_text: str) -> Row:
    with db.transaction() as conn:
        agent = _agent_of_active_group(conn, tracker_id, label)
        conn.execute(
            "UPDATE task_tracker_agents SET session_key = ?, last_heartbeat = ?, "
            "status = CASE WHEN status = 'pending' THEN 'running' ELSE status END, "
            "started_at = COALESCE(started_at, ?) WHERE id = ?",
            (session_key, now_text, now_text, agent["id"]),
        )
        row: Row = conn.execute("SELECT * FROM task_tracker_agents WHERE id = ?",
                                (agent["id"],)).fetchone()
    return row


def touch_sessions(db: Database, session_keys: Collection[str], now_text: str) -> int:
    keys = sorted(set(session_keys))
    if not keys:
        return 0
    touched = 0
    with db.transaction() as conn:
        for start in range(0, len(keys), _KEYS_PER_QUERY):
            chunk = keys[start:start + _KEYS_PER_QUERY]
            marks = ", ".join("?" * len(chunk))
            touched += conn.execute(
                "UPDATE task_tracker_agents SET last_heartbeat = ?, "
                "status = CASE WHEN status = 'pending' THEN 'running' ELSE status END, "
                "started_at = COALESCE(started_at, ?) "
                f"WHERE session_key IN ({marks}) AND status IN ('pending', 'running') "
                "AND tracker_id IN (SELECT id FROM task_tracker WHERE status = 'active')",
                (now_text, now_text, *chunk),
            ).rowcount
    return touched


def sweep(db: Database, now_text: str) -> TrackerSweep:
    """The reference's rule: an agent is dead once its group is at least ``timeout_s`` old and it
    has no heartbeat, or none within ``min(timeout_s, 300)`` seconds."""
    result = TrackerSweep()
    with db.transaction() as conn:
        result.dead = [dict(row) for row in conn.execute(
            "SELECT a.id, a.tracker_id, a.agent_label, a.status, a.last_heartbeat "
            "FROM task_tracker_agents a JOIN task_tracker t ON a.tracker_id = t.id "
            "WHERE a.status IN ('pending', 'running') AND t.status = 'active' "
            f"AND {_AGE.format(column='t.created_at')} >= t.timeout_s "
            f"AND (a.last_heartbeat IS NULL OR {_AGE.format(column='a.last_heartbeat')} > "
            "MIN(t.timeout_s, ?)) ORDER BY t.created_at, a.rowid",
            (now_text, now_text, HEARTBEAT_GRACE_MAX_S),
        ).fetchall()]
        for agent in result.dead:
            conn.execute(
                "UPDATE task_tracker_agents SET status = 'dead', finished_at = ?, error = ? "
                "WHERE id = ?",
                (now_text, DEAD_ERROR, agent["id"]),
            )
        active = [row["id"] for row in conn.execute(
            "SELECT id FROM task_tracker WHERE status = 'active' ORDER BY created_at"
        ).fetchall()]
        for tracker_id in active:
            finished = finish_if_done(conn, tracker_id, now_text)
            if finished is not None:
                result.finished.append(finished)
    return result


def finish_if_done(conn: sqlite3.Connection, tracker_id: str, now_text: str) -> FinishedGroup | None:
    """Finish the active group once every agent is terminal, recording its notice (when it has a
    target) in the caller's transaction; None when it is not done (or not active)."""
    group = conn.execute("SELECT * FROM task_tracker WHERE id = ?", (tracker_id,)).fetchone()
    if group is None or group["status"] != GroupStatus.ACTIVE:
        return None
    agents = conn.execute(
        "SELECT agent_label, status, exit_message, error FROM task_tracker_agents "
        "WHERE tracker_id = ? ORDER BY rowid",
        (tracker_id,),
    ).fetchall()
    status = group_status_of([agent["status"] for agent in agents])
    if status is None:
        return None
    summary = "\n".join(summary_line(a["agent_label"], a["status"], a["exit_message"], a["error"])
                        for a in agents)
    conn.execute("UPDATE task_tracker SET status = ?, completed_at = ?, summary = ? WHERE id = ?",
                 (status.value, now_text, summary, tracker_id))
    finished: Row = conn.execute("SELECT * FROM task_tracker WHERE id = ?", (tracker_id,)).fetchone()
    notice = None
    if has_target(finished):
        delivery = Delivery(text=notice_text(finished["name"], status, summary),
                            channel=finished["delivery_channel"], target=finished["delivery_to"])
        notice = enqueue_outbound(conn, delivery, subject=notice_subject(tracker_id), job_id=None,
                                  run_id=None, now_text=now_text, kind=NOTICE_KIND)
    return FinishedGroup(group=finished, notice=notice)


def has_target(group: Row) -> bool:
    """A notice needs a target, and a channel unless the target is an alias (which names one)."""
    target = group["delivery_to"]
    return bool(target) and (bool(group["delivery_channel"]) or str(target).startswith("@"))
