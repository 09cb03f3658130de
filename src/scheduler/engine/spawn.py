"""The daemon's spawn handler: ``spawn`` messages become jobs as soon as they are written.

The daemon's write watcher sets ``ready`` whenever another process commits (``PRAGMA
data_version``, every ``SCHEDULER_WAKE_POLL_MS``), so a message the CLI writes is answered within
a fraction of a second; ``idle_check_s`` (``SCHEDULER_MESSAGE_DELIVERY_MS``) only bounds how late
one is seen should a notice be missed. Each message is answered once, in one transaction: its job
is created (models/spawn.py says which job) or an error goes back to its sender
(store/sqlite/spawn.py). A database that fails leaves the message ``pending``, answered later.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any

from scheduler.errors import (
    NotFoundError,
    SchedulerError,
    StoreConstraintError,
    StoreValueError,
    ValidationError,
)
from scheduler.models.records import Message
from scheduler.models.spawn import SpawnPlan, check_not_expired, plan_spawn
from scheduler.store.thread import StoreThread
from scheduler.timeutil import sqlite_now, to_sqlite, utcnow

# Messages answered per database read; a full batch is followed by the next at once.
BATCH = 50
# After a database error, wait this long before looking again.
DB_RETRY_S = 1.0
# Errors of the message itself, not of the database: answered, never retried.
REJECTED = (ValidationError, NotFoundError, StoreConstraintError, StoreValueError)


class SpawnHandler:
    def __init__(self, db: StoreThread, ready: asyncio.Event, on_created: Callable[[], None],
                 log: Any, *, idle_check_s: float = 15.0) -> None:
        self.db = db
        self.ready = ready
        self.on_created = on_created  # the daemon's own write is no notice: wake its loop
        self.log = log
        self.idle_check_s = idle_check_s

    async def run(self) -> None:
        while True:
            self.ready.clear()  # before reading: a write from now on means another look
            try:
                if await self.answer_pending():
                    continue
                wait = self.idle_check_s
            except SchedulerError as exc:
                self.log.warning("spawn.db_error", error=str(exc), retry_in_s=DB_RETRY_S)
                wait = DB_RETRY_S
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.ready.wait(), timeout=wait)

    async def answer_pending(self) -> bool:
        """Answer the oldest pending spawn messages; True when more may be waiting."""
        messages = await self.db.run(self.db.store.pending_spawns, BATCH)
        for message in messages:
            await self.answer(message)
        return len(messages) == BATCH

    async def answer(self, message: Message) -> None:
        plan = self._plan(message)
        if isinstance(plan, str):
            await self._reject(message, plan)
            return
        try:
            job = await self.db.run(self.db.store.accept_spawn, message.id, plan.row,
                                    plan.queue_at, sqlite_now())
        except REJECTED as exc:
            await self._reject(message, str(exc))
            return
        if job is None:
            self.log.info("spawn.already_answered", message_id=message.id)
            return
        self.log.info("spawn.created", message_id=message.id, job_id=job.id, job=job.name,
                      form=plan.form.value, parent_id=job.parent_id, agent_id=job.agent_id,
                      from_agent=message.from_agent, next_run_at=job.next_run_at,
                      queued_at=plan.queue_at)
        self.on_created()

    def _plan(self, message: Message) -> SpawnPlan | str:
        """The job the message asks for, or why there is none (an error for its sender)."""
        now = utcnow()
        try:
            check_not_expired(message.expires_at, now)
            return plan_spawn(message.body, from_agent=message.from_agent,
                              to_agent=message.to_agent, job_id=message.job_id, now=now)
        except ValidationError as exc:
            return str(exc)
        except Exception:  # a bug must not make one message stop every spawn, restart after restart
            self.log.exception("spawn.plan_failed", message_id=message.id, now=to_sqlite(now))
            return "internal error while reading the spawn body; see the scheduler's log"

    async def _reject(self, message: Message, error: str) -> None:
        answer = await self.db.run(self.db.store.reject_spawn, message.id, error, sqlite_now())
        if answer is None:
            self.log.info("spawn.already_answered", message_id=message.id)
            return
        self.log.warning("spawn.rejected", message_id=message.id, from_agent=message.from_agent,
                         error=error, reply_id=None if answer.reply is None else answer.reply.id)
