"""The agent registry's view of agent turns: ``busy`` with its session while a turn is in flight,
``idle`` after, ``offline`` when the gateway said it does not serve the agent.

Turns of one agent may overlap here (the reference ran one at a time), so the daemon keeps the
turns in flight per agent: the agent is ``idle`` only when its last turn ends, and while others
remain it shows the session of the newest. Status writes are advisory: a database error is
logged and never fails the run (a busy agent left behind is released at the next start).
"""

from __future__ import annotations

import asyncio
import re
from typing import Any, Final

from scheduler.errors import SchedulerError
from scheduler.gateway.client import GatewayRejected
from scheduler.models.enums import AgentStatus
from scheduler.store.thread import StoreThread
from scheduler.timeutil import sqlite_now

# The real gateway's answer (2026.9.6) to a turn for an agent it is not configured with:
# 400 {"error": {"message": "Unknown agent 'ops'.", ...}}. Its chat sessions are created on
# demand, so "no such session" never comes back from a turn; an unknown agent is what says the
# agent is gone.
_UNKNOWN_AGENT: Final = re.compile(r"^\s*unknown agent\b", re.IGNORECASE)


def gateway_disowns_agent(error: BaseException) -> bool:
    """Whether a failed turn means the gateway does not serve the agent at all."""
    return (isinstance(error, GatewayRejected) and error.status in (400, 404)
            and _UNKNOWN_AGENT.search(error.gateway_message) is not None)


class AgentPresence:
    def __init__(self, db: StoreThread, log: Any) -> None:
        self.db = db
        self.log = log
        # agent id -> {run id: session key}, in the order the turns started.
        self._turns: dict[str, dict[str, str]] = {}
        self._disowned: set[str] = set()  # runs whose turn the gateway refused: unknown agent

    async def turn_started(self, agent_id: str, run_id: str, session_key: str) -> None:
        self._turns.setdefault(agent_id, {})[run_id] = session_key
        await self._write(agent_id, AgentStatus.BUSY, session_key)

    def disowned(self, agent_id: str, run_id: str) -> None:
        """The gateway said it does not serve the agent: when this turn ends, it is offline."""
        if run_id in self._turns.get(agent_id, {}):
            self._disowned.add(run_id)

    async def turn_ended(self, agent_id: str, run_id: str) -> None:
        turns = self._turns.get(agent_id, {})
        turns.pop(run_id, None)
        disowned = run_id in self._disowned
        self._disowned.discard(run_id)
        if disowned:
            status, session = AgentStatus.OFFLINE, None
        elif turns:
            status, session = AgentStatus.BUSY, list(turns.values())[-1]
        else:
            status, session = AgentStatus.IDLE, None
        if not turns:
            self._turns.pop(agent_id, None)
        # Shielded: a second cancellation (a forced stop) must not cut the write off midway.
        await asyncio.shield(self._write(agent_id, status, session))
        if disowned:
            self.log.warning("agent.offline", agent_id=agent_id, run_id=run_id,
                             reason="the gateway does not know this agent")

    async def _write(self, agent_id: str, status: AgentStatus, session_key: str | None) -> None:
        try:
            await self.db.run(self.db.store.set_agent_status, agent_id, status.value, session_key,
                              sqlite_now())
        except SchedulerError as exc:
            self.log.warning("agent.status_not_recorded", agent_id=agent_id, status=status.value,
                             error=str(exc))
