"""The daemon's task-group and team work, every ``SCHEDULER_MESSAGE_DELIVERY_MS``.

One pass, in the reference's order (tick phase 3):

Steps 1 and 2 run only while some group is active.

1. auto-heartbeat: the gateway's sessions active in the last 10 minutes keep alive the agents
   whose session key was registered (``tasks register-session``); only while the gateway is
   healthy;
2. the dead-man switch: agents past their group's timeout without a recent heartbeat are dead,
   and every group whose agents have all finished finishes, with its notice;
3. team messages are mapped into team tasks and events; waiting team gates move on.

Every notice is recorded in the transaction that finishes its group (store/sqlite/tracker.py);
this loop only wakes the outbound sender, which sends it.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable, Iterable
from typing import Any, Final

from scheduler.errors import SchedulerError
from scheduler.gateway.client import GatewayClient, GatewayError
from scheduler.store.api import FinishedGroup, TrackerSweep
from scheduler.store.thread import StoreThread
from scheduler.timeutil import sqlite_now

ACTIVE_MINUTES: Final = 10
SESSIONS_LIMIT: Final = 200
TEAM_MAP_LIMIT: Final = 200
GATE_CHECK_LIMIT: Final = 100
# The gateway lists agent-scoped keys (``agent:<id>:<key>``); orchestrators often register the
# key they spawned with, without the prefix. Either form matches.
_AGENT_SCOPED: Final = re.compile(r"agent:[^:]+:(.+)")


def session_keys(sessions: Iterable[dict[str, Any]]) -> set[str]:
    """Every key a registered agent may have been given for these sessions."""
    keys: set[str] = set()
    for session in sessions:
        key = session.get("key") or session.get("sessionKey")
        if not isinstance(key, str) or not key:
            continue
        keys.add(key)
        scoped = _AGENT_SCOPED.fullmatch(key)
        if scoped:
            keys.add(scoped.group(1))
    return keys


class TaskTracker:
    def __init__(self, db: StoreThread, gateway: GatewayClient, gateway_healthy: Callable[[], bool],
                 on_notice: Callable[[], None], log: Any, *, interval_s: float) -> None:
        self.db = db
        self.gateway = gateway
        self.gateway_healthy = gateway_healthy
        self.on_notice = on_notice  # wakes the outbound sender
        self.log = log
        self.interval_s = interval_s

    async def run(self) -> None:
        while True:
            try:
                await self.one_pass()
            except SchedulerError as exc:
                self.log.warning("tracker.db_error", error=str(exc), retry_in_s=self.interval_s)
            await asyncio.sleep(self.interval_s)

    async def one_pass(self) -> None:
        store = self.db.store
        # No active group, nothing to keep alive or to kill (and no write transaction to take).
        active: list[dict[str, Any]] = await self.db.run(store.active_task_groups)
        sweep = TrackerSweep()
        if active:
            if self.gateway_healthy():
                await self.auto_heartbeat()
            sweep = await self.db.run(store.sweep_task_groups, sqlite_now())
        for agent in sweep.dead:
            self.log.warning("tracker.agent_dead", tracker_id=agent["tracker_id"],
                             agent=agent["agent_label"], last_heartbeat=agent["last_heartbeat"])
        mapped = await self.db.run(store.map_team_messages, TEAM_MAP_LIMIT, sqlite_now())
        if mapped:
            self.log.info("team.mapped", messages=mapped)
        gates = await self.db.run(store.check_team_gates, GATE_CHECK_LIMIT, sqlite_now())
        if gates.passed or gates.failed:
            self.log.info("team.gates_checked", passed=gates.passed, failed=gates.failed,
                          pending=gates.pending)
        finished = [*sweep.finished, *gates.finished]
        for group in finished:
            self._log_finished(group)
        if any(group.notice is not None for group in finished):
            self.on_notice()

    async def auto_heartbeat(self) -> None:
        try:
            sessions = await self.gateway.sessions_list(activeMinutes=ACTIVE_MINUTES,
                                                        limit=SESSIONS_LIMIT)
        except GatewayError as exc:  # a missed beat is harmless; the next pass tries again
            self.log.info("tracker.sessions_unavailable", error=str(exc))
            return
        touched = await self.db.run(self.db.store.touch_task_sessions, session_keys(sessions),
                                    sqlite_now())
        if touched:
            self.log.debug("tracker.auto_heartbeat", agents=touched, sessions=len(sessions))

    def _log_finished(self, finished: FinishedGroup) -> None:
        group = finished.group
        notice = finished.notice
        self.log.info("tracker.group_finished", tracker_id=group["id"], name=group["name"],
                      status=group["status"], notice_id=None if notice is None else notice["id"])
