"""This daemon's row in the fleet: registered at start, refreshed by a heartbeat, stopped at exit.

An instance is live for the others (``status``, ``jobs explain``) while its ``last_seen`` is
within ``SCHEDULER_LEASE_S``; the heartbeat refreshes it three times per lease (at least every
second), so a busy database or a slow beat does not make a live instance look dead. A beat that
fails is logged and tried again at the next interval; a row found gone (pruned while this
instance was suspended for days) is registered again.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

from scheduler import __version__
from scheduler.errors import SchedulerError
from scheduler.models.placement import beat_interval_s
from scheduler.store.api import Owner
from scheduler.store.thread import StoreThread
from scheduler.timeutil import sqlite_now


class InstanceHeartbeat:
    def __init__(self, db: StoreThread, owner: Owner, log: Any, *, lease_s: int) -> None:
        self.db = db
        self.owner = owner
        self.log = log
        self.interval_s = beat_interval_s(lease_s)

    async def register(self) -> None:
        """At start: the instance appears in the fleet (a failure here stops the start)."""
        await self.db.run(self.db.store.register_instance, self.owner, __version__, os.getpid(),
                          sqlite_now())
        self.log.info("instance.registered", instance=self.owner.instance, host=self.owner.host,
                      labels=list(self.owner.labels))

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            await self.beat_once()

    async def beat_once(self) -> bool:
        """One beat; False when it could not be written (logged; the next one tries again)."""
        try:
            if await self.db.run(self.db.store.beat_instance, self.owner, sqlite_now()):
                return True
            self.log.warning("instance.row_missing", instance=self.owner.instance,
                             note="registering again")
            await self.register()
            return True
        except SchedulerError as exc:
            self.log.warning("instance.beat_failed", error=str(exc), retry_in_s=self.interval_s)
            return False

    async def stop(self) -> None:
        """A clean stop: the instance shows as stopped at once (not only once its lease ran out)."""
        try:
            await self.db.run(self.db.store.stop_instance, self.owner, sqlite_now())
        except SchedulerError as exc:
            self.log.warning("instance.stop_not_recorded", error=str(exc),
                             note="it shows as not live once its lease runs out")
