"""SQL for the team adapter (``team_tasks``, ``team_mailbox_events``): team messages projected
into tasks and mailbox events, and gates that hold a team task until a task group finishes.

A gate is a task group (store/sqlite/tracker.py) named ``team:<team>:task:<task>``; checking the
gates finishes the groups that are done, with their notices, in the transaction that moves the
gate on (the reference finished them there without a notice, §17 #14).
"""

from __future__ import annotations

import json
import sqlite3
import uuid
from dataclasses import replace
from typing import Any

from scheduler.models.records import parse_metadata
from scheduler.models.tasks import GroupStatus, NewTaskGroup, gate_name
from scheduler.store.api import GateCheck
from scheduler.store.sqlite.db import Database, Row
from scheduler.store.sqlite.messages import receipt
from scheduler.store.sqlite.tracker import finish_if_done, insert_group

TITLE_CHARS = 120


def _event(conn: sqlite3.Connection, team_id: str, event_type: str, payload: dict[str, Any],
           now_text: str, *, member_id: str | None = None, task_id: str | None = None,
           message_id: str | None = None) -> None:
    conn.execute(
        "INSERT INTO team_mailbox_events (id, team_id, member_id, task_id, message_id, event_type, "
        "payload, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        (str(uuid.uuid4()), team_id, member_id, task_id, message_id, event_type,
         json.dumps(payload), now_text),
    )


def task_key(message: Row) -> str | None:
    """The team task a message belongs to: its ``task_id``, or itself when it is a ``task``."""
    if message["task_id"]:
        return str(message["task_id"])
    if message["kind"] == "task":
        return str(message["id"])
    return None


# -- mapping messages ------------------------------------------------------------------------------

def map_messages(db: Database, limit: int, now_text: str) -> int:
    messages = db.query(
        "SELECT * FROM messages WHERE team_id IS NOT NULL AND team_mapped_at IS NULL "
        "ORDER BY created_at, rowid LIMIT ?",
        (limit,),
    )
    mapped = 0
    for message in messages:
        # One transaction per message, as the reference: each is mapped exactly once.
        with db.transaction() as conn:
            if _map_one(conn, message["id"], now_text):
                mapped += 1
    return mapped


def _map_one(conn: sqlite3.Connection, message_id: str, now_text: str) -> bool:
    message: Row | None = conn.execute(
        "SELECT * FROM messages WHERE id = ? AND team_mapped_at IS NULL", (message_id,)
    ).fetchone()
    if message is None:  # mapped meanwhile by another process
        return False
    team_id, member_id = message["team_id"], message["member_id"] or None
    task_id = task_key(message)
    event_type = "mailbox"
    if task_id is not None:
        exists = conn.execute("SELECT 1 FROM team_tasks WHERE team_id = ? AND id = ?",
                              (team_id, task_id)).fetchone()
        if exists is None:
            title = message["subject"] or (message["body"] or "")[:TITLE_CHARS] or "Team task"
            conn.execute(
                "INSERT INTO team_tasks (team_id, id, member_id, source_message_id, title, status, "
                "created_at, updated_at) VALUES (?, ?, ?, ?, ?, 'open', ?, ?)",
                (team_id, task_id, member_id, message["id"], title, now_text, now_text),
            )
            event_type = "task_created"
        else:
            conn.execute(
                "UPDATE team_tasks SET member_id = COALESCE(member_id, ?), "
                "source_message_id = COALESCE(source_message_id, ?), updated_at = ? "
                "WHERE team_id = ? AND id = ?",
                (member_id, message["id"], now_text, team_id, task_id),
            )
            event_type = "task_message"
    payload = {"kind": message["kind"], "from_agent": message["from_agent"],
               "to_agent": message["to_agent"], "subject": message["subject"],
               "status": message["status"], "priority": message["priority"],
               "ack_required": bool(message["ack_required"])}
    _event(conn, team_id, event_type, payload, now_text, member_id=member_id, task_id=task_id,
           message_id=message["id"])
    conn.execute("UPDATE messages SET team_mapped_at = COALESCE(team_mapped_at, ?) WHERE id = ?",
                 (now_text, message["id"]))
    return True


# -- listings ---------------------------------------------------------------------------------------

def tasks(db: Database, team_id: str, limit: int) -> list[Row]:
    return db.query("SELECT * FROM team_tasks WHERE team_id = ? ORDER BY updated_at DESC LIMIT ?",
                    (team_id, limit))


def events(db: Database, team_id: str, limit: int, task_id: str | None) -> list[Row]:
    if task_id:
        return db.query(
            "SELECT * FROM team_mailbox_events WHERE team_id = ? AND task_id = ? "
            "ORDER BY created_at DESC, rowid DESC LIMIT ?",
            (team_id, task_id, limit),
        )
    return db.query(
        "SELECT * FROM team_mailbox_events WHERE team_id = ? ORDER BY created_at DESC, rowid DESC "
        "LIMIT ?",
        (team_id, limit),
    )


def inbox(db: Database, team_id: str, limit: int, member_id: str | None,
          task_id: str | None) -> list[Row]:
    where, params = ["team_id = ?"], [team_id]
    if member_id:
        where.append("(member_id IS NULL OR member_id = ?)")
        params.append(member_id)
    if task_id:
        where.append("task_id = ?")
        params.append(task_id)
    rows = db.query(
        f"SELECT * FROM messages WHERE {' AND '.join(where)} ORDER BY created_at, rowid LIMIT ?",
        (*params, limit),
    )
    for row in rows:
        row["metadata"] = parse_metadata(row["metadata"]) if row["metadata"] else None
    return rows


# -- gates --------------------------------------------------------------------------------------------

def open_gate(db: Database, team_id: str, task_id: str, group: NewTaskGroup, now_text: str) -> Row:
    group = replace(group, name=gate_name(team_id, task_id))
    with db.transaction() as conn:
        tracker = insert_group(conn, group, now_text)
        conn.execute(
            "INSERT INTO team_tasks (team_id, id, title, status, gate_tracker_id, gate_status, "
            "created_at, updated_at) VALUES (?, ?, ?, 'blocked', ?, 'waiting', ?, ?) "
            "ON CONFLICT(team_id, id) DO UPDATE SET status = 'blocked', "
            "gate_tracker_id = excluded.gate_tracker_id, gate_status = 'waiting', "
            "updated_at = excluded.updated_at",
            (team_id, task_id, f"Team task {task_id}", tracker["id"], now_text, now_text),
        )
        members = list(group.expected_agents)
        _event(conn, team_id, "gate_open", {"tracker_id": tracker["id"], "expected_members": members,
                                            "timeout_s": group.timeout_s}, now_text, task_id=task_id)
    return {"team_id": team_id, "task_id": task_id, "gate_status": "waiting",
            "tracker_id": tracker["id"], "expected_members": members}


def check_gates(db: Database, limit: int, now_text: str) -> GateCheck:
    result = GateCheck()
    gates = db.query(
        "SELECT team_id, id AS task_id, gate_tracker_id FROM team_tasks "
        "WHERE gate_status = 'waiting' AND gate_tracker_id IS NOT NULL "
        "ORDER BY updated_at, rowid LIMIT ?",
        (limit,),
    )
    for gate in gates:
        with db.transaction() as conn:
            outcome = _check_gate(conn, gate, now_text, result)
        if outcome == "passed":
            result.passed += 1
        elif outcome == "failed":
            result.failed += 1
        elif outcome == "pending":
            result.pending += 1
    return result


def _check_gate(conn: sqlite3.Connection, gate: Row, now_text: str, result: GateCheck) -> str:
    team_id, task_id, tracker_id = gate["team_id"], gate["task_id"], gate["gate_tracker_id"]
    still = conn.execute(
        "SELECT 1 FROM team_tasks WHERE team_id = ? AND id = ? AND gate_status = 'waiting' "
        "AND gate_tracker_id = ?", (team_id, task_id, tracker_id),
    ).fetchone()
    if still is None:  # moved on meanwhile by another process
        return "skipped"
    finished = finish_if_done(conn, tracker_id, now_text)
    if finished is not None:
        result.finished.append(finished)
    tracker = conn.execute("SELECT status, summary FROM task_tracker WHERE id = ?",
                           (tracker_id,)).fetchone()
    if tracker is not None and tracker["status"] == GroupStatus.ACTIVE:
        return "pending"
    if tracker is not None and tracker["status"] == GroupStatus.COMPLETED:
        conn.execute("UPDATE team_tasks SET gate_status = 'passed', status = 'open', updated_at = ? "
                     "WHERE team_id = ? AND id = ?", (now_text, team_id, task_id))
        _event(conn, team_id, "gate_passed", {"tracker_id": tracker_id,
                                              "summary": tracker["summary"]}, now_text,
               task_id=task_id)
        return "passed"
    if tracker is None:
        error, payload = "Missing tracker", {"tracker_id": tracker_id, "reason": "missing_tracker"}
    else:
        error = tracker["summary"] or f"Gate {tracker['status']}"
        payload = {"tracker_id": tracker_id, "summary": tracker["summary"],
                   "status": tracker["status"]}
    conn.execute(
        "UPDATE team_tasks SET gate_status = 'failed', status = 'failed', last_error = ?, "
        "updated_at = ?, completed_at = COALESCE(completed_at, ?) WHERE team_id = ? AND id = ?",
        (error, now_text, now_text, team_id, task_id),
    )
    _event(conn, team_id, "gate_failed", payload, now_text, task_id=task_id)
    return "failed"


# -- acknowledgements -----------------------------------------------------------------------------------

def ack(db: Database, message_id: str, actor: str, detail: str | None, now_text: str) -> Row | None:
    with db.transaction() as conn:
        message: Row | None = conn.execute(
            "SELECT * FROM messages WHERE id = ? AND team_id IS NOT NULL", (message_id,)
        ).fetchone()
        if message is None:
            return None
        conn.execute(
            "UPDATE messages SET status = CASE WHEN status IN ('pending', 'delivered') THEN 'read' "
            "ELSE status END, read_at = COALESCE(read_at, ?), ack_at = COALESCE(ack_at, ?) "
            "WHERE id = ?",
            (now_text, now_text, message_id),
        )
        receipt(conn, message_id, "ack", actor, detail or "", now_text)
        _event(conn, message["team_id"], "ack", {"actor": actor, "detail": detail}, now_text,
               member_id=message["member_id"] or None, task_id=task_key(message),
               message_id=message_id)
        updated: Row = conn.execute("SELECT * FROM messages WHERE id = ?", (message_id,)).fetchone()
    return updated
