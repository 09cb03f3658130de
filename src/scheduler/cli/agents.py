"""``agents list|get|register``: the agent registry (features §9.2), with the reference's JSON.

An agent is registered by ``agents register``, by the daemon at start (``main``), and by the
first turn of a job naming it; the daemon keeps its status (idle, busy, offline) and session.
"""

from __future__ import annotations

import json
import sys
from typing import Any, Final

from scheduler.cli.context import Context, UsageError
from scheduler.cli.output import dumps, printable_lines, table
from scheduler.errors import NotFoundError, ValidationError
from scheduler.text import LINE_BREAKING, UNSAFE_CONTROLS, first_lone_surrogate, quoted
from scheduler.timeutil import to_sqlite, utcnow

REGISTER_USAGE: Final = "agents register <agent-id> [name] [--capabilities '<json array>']"
GET_USAGE: Final = "agents get <agent-id>"
# As a job's agent_id (models/fields.py) and a name of the same size.
MAX_AGENT_ID: Final = 128
MAX_NAME: Final = 256
MAX_CAPABILITIES: Final = 100


def _checked(value: str, what: str, limit: int, *, spaces: bool) -> str:
    bad = UNSAFE_CONTROLS.search(value) or LINE_BREAKING.search(value) or first_lone_surrogate(value)
    if not value.strip() or len(value) > limit or bad or (not spaces and value != value.strip()):
        raise ValidationError(f"{what} must be 1-{limit} printable characters, got {quoted(value)}")
    return value


def agent_id_argument(value: str) -> str:
    _checked(value, "agent id", MAX_AGENT_ID, spaces=False)
    if value.startswith("@") or any(ch.isspace() for ch in value):
        # "@..." names outbound deliveries and aliases, never an agent.
        raise ValidationError(f"agent id {quoted(value)} must not start with '@' or hold spaces")
    return value


def _capabilities(text: str) -> list[str]:
    try:
        value: Any = json.loads(text)
    except (ValueError, RecursionError):  # RecursionError: nested too deeply to be a list of names
        value = None
    if (not isinstance(value, list) or len(value) > MAX_CAPABILITIES
            or not all(isinstance(item, str) and item.strip() for item in value)):
        raise ValidationError(
            f"--capabilities must be a JSON array of at most {MAX_CAPABILITIES} non-empty strings, "
            f"got {quoted(text, limit=60)}"
        )
    return [_checked(item, "a capability", MAX_NAME, spaces=True) for item in value]


def agents_list(ctx: Context) -> int:
    ctx.no_extra(0, "agents list")
    agents = ctx.store.list_agents()
    rows = [{"id": a["id"], "name": a["name"], "status": a["status"], "lastSeen": a["last_seen_at"],
             "sessionKey": a["session_key"]} for a in agents]
    ctx.out.emit(agents, lambda: table(rows, ["id", "name", "status", "lastSeen", "sessionKey"]))
    return 0


def agents_get(ctx: Context) -> int:
    agent_id = ctx.positional(0, GET_USAGE)
    ctx.no_extra(1, GET_USAGE)
    agent = ctx.store.get_agent(agent_id)
    if agent is None:
        raise NotFoundError(f"Agent not found: {agent_id}")
    ctx.out.emit(agent)
    return 0


def agents_register(ctx: Context) -> int:
    capabilities_text = ctx.option("--capabilities")
    if not ctx.args:
        raise UsageError(f"usage: openclaw-scheduler {REGISTER_USAGE}")
    ctx.no_extra(2, REGISTER_USAGE)
    agent_id = agent_id_argument(ctx.args[0])
    name = _checked(ctx.args[1], "agent name", MAX_NAME, spaces=True) if len(ctx.args) > 1 else agent_id
    capabilities = None if capabilities_text is None else _capabilities(capabilities_text)
    agent = ctx.store.register_agent(agent_id, name, to_sqlite(utcnow()), capabilities=capabilities)
    data = {"ok": True, "agent": agent}

    def human() -> None:
        sys.stdout.write(printable_lines(f"Registered: {dumps(agent)}") + "\n")

    ctx.out.emit(data, human)
    return 0
