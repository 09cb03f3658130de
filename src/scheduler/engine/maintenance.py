"""The daemon's message upkeep: expiry on the messaging cadence.

Every ``SCHEDULER_MESSAGE_DELIVERY_MS`` (and once at start), unread messages past their
``expires_at`` become ``expired`` (store/sqlite/inbox.py; a broadcast for every agent's unread
copy). Inboxes and prompt injection already skip a message past its expiry, so this sweep only
makes the status say so; a late sweep loses nothing. The prune (old messages by the retention
rules, never an outbound delivery not yet sent) runs in the daemon's prune task, on
``SCHEDULER_PRUNE_MS``, with the rest of retention (engine/retention.py).
"""

from __future__ import annotations

import asyncio
from typing import Any

from scheduler.errors import SchedulerError
from scheduler.store.thread import StoreThread
from scheduler.timeutil import sqlite_now


class MessageExpiry:
    def __init__(self, db: StoreThread, log: Any, *, interval_s: float) -> None:
        self.db = db
        self.log = log
        self.interval_s = interval_s

    async def run(self) -> None:
        while True:
            await self.expire_once()
            await asyncio.sleep(self.interval_s)

    async def expire_once(self) -> int:
        """One sweep; a database error is logged and the next sweep tries again."""
        try:
            expired = await self.db.run(self.db.store.expire_messages, sqlite_now())
        except SchedulerError as exc:
            self.log.warning("messages.expiry_failed", error=str(exc))
            return 0
        if expired:
            self.log.info("messages.expired", count=expired)
        return int(expired)

