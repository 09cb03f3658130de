"""SQL for ``agents``: the registry of the agents the scheduler knows, and their status.

An agent is ``busy`` with a session while a turn of it is in flight, ``idle`` otherwise, and
``offline`` when the gateway said it does not serve it. ``capabilities`` is a JSON array in the
column and a list once read (raw text is passed through if it is not JSON, as the reference does).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from scheduler.store.sqlite.db import Database, Row

# What names a job's agent in SQL: a NULL or empty agent_id (older rows) is the default agent.
_JOB_AGENT = "COALESCE(NULLIF(j.agent_id, ''), 'main')"
_AGENT_TARGETS = "('isolated', 'main')"


def _parsed(row: Row) -> Row:
    raw = row.get("capabilities")
    if isinstance(raw, str):
        try:
            value: Any = json.loads(raw)
        except ValueError:
            value = raw
        row["capabilities"] = value
    return row


def _capabilities_text(capabilities: Sequence[str] | None) -> str | None:
    return None if capabilities is None else json.dumps(list(capabilities), ensure_ascii=False)


def list_agents(db: Database) -> list[Row]:
    return [_parsed(row) for row in db.query("SELECT * FROM agents ORDER BY id")]


def get_agent(db: Database, agent_id: str) -> Row | None:
    row = db.query_one("SELECT * FROM agents WHERE id = ?", (agent_id,))
    return None if row is None else _parsed(row)


def register_agent(db: Database, agent_id: str, name: str | None, now_text: str, *,
                   capabilities: Sequence[str] | None = None) -> Row:
    with db.transaction() as conn:
        conn.execute(
            "INSERT INTO agents (id, name, status, capabilities, last_seen_at, created_at) "
            "VALUES (?, ?, 'idle', ?, ?, ?) ON CONFLICT(id) DO UPDATE SET "
            "name = COALESCE(excluded.name, agents.name), "
            "capabilities = COALESCE(excluded.capabilities, agents.capabilities), "
            "last_seen_at = excluded.last_seen_at",
            (agent_id, name, _capabilities_text(capabilities), now_text, now_text),
        )
    row = get_agent(db, agent_id)
    assert row is not None
    return row


def ensure_agent(db: Database, agent_id: str, name: str, capabilities: Sequence[str],
                 now_text: str) -> bool:
    with db.transaction() as conn:
        cursor = conn.execute(
            "INSERT INTO agents (id, name, status, capabilities, created_at) "
            "VALUES (?, ?, 'idle', ?, ?) ON CONFLICT(id) DO NOTHING",
            (agent_id, name, _capabilities_text(capabilities), now_text),
        )
        return cursor.rowcount > 0


def set_status(db: Database, agent_id: str, status: str, session_key: str | None,
               now_text: str) -> None:
    """An agent a job names is registered by its first turn (the reference updated known rows
    only, so an agent nobody registered never showed as busy)."""
    with db.transaction() as conn:
        conn.execute(
            "INSERT INTO agents (id, name, status, session_key, last_seen_at, created_at) "
            "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT(id) DO UPDATE SET status = excluded.status, "
            "session_key = excluded.session_key, last_seen_at = excluded.last_seen_at",
            (agent_id, agent_id, status, session_key, now_text, now_text),
        )


def release_without_turns(db: Database, now_text: str) -> list[str]:
    with db.transaction() as conn:
        rows = conn.execute(
            "UPDATE agents SET status = 'idle', session_key = NULL WHERE status = 'busy' "
            "AND NOT EXISTS (SELECT 1 FROM runs r JOIN jobs j ON j.id = r.job_id "
            f"WHERE r.status = 'running' AND j.session_target IN {_AGENT_TARGETS} "
            f"AND {_JOB_AGENT} = agents.id) RETURNING id"
        ).fetchall()
    return sorted(str(row["id"]) for row in rows)
