"""Sending outbound results through the gateway's ``message`` tool, at least once.

Each outbound message was recorded with its run's end (``store/sqlite/messages.py``). This loop sends
the due ones in order, chunk by chunk for the channel's size limit, and marks a message
``delivered`` only after the gateway accepted its last chunk. A failed attempt is retried with
backoff (honouring ``Retry-After``), across restarts, resuming after the chunks already accepted;
after ``MAX_DELIVERY_ATTEMPTS`` it is marked ``failed`` with the last error, never dropped
silently.
"""

from __future__ import annotations

import asyncio
import contextlib
from datetime import timedelta
from typing import Any

from scheduler.errors import SchedulerError
from scheduler.gateway.channels import channel_limit, chunk_message
from scheduler.gateway.client import GatewayBusy, GatewayClient
from scheduler.models.records import OutboundMessage
from scheduler.store.thread import StoreThread
from scheduler.timeutil import from_sqlite, sqlite_now, to_sqlite, utcnow

# Seconds before retry n of a delivery: 5 s, 15 s, 45 s, … capped at an hour.
RETRY_BASE_S = 5
RETRY_FACTOR = 3
RETRY_CAP_S = 3600


def retry_delay_s(attempt: int, retry_after_s: float | None = None) -> float:
    backoff = float(min(RETRY_CAP_S, RETRY_BASE_S * RETRY_FACTOR ** max(0, attempt - 1)))
    return max(backoff, retry_after_s or 0.0)


class OutboundSender:
    def __init__(self, db: StoreThread, client: GatewayClient, ready: asyncio.Event, log: Any,
                 *, idle_check_s: float = 15.0) -> None:
        self.db = db
        # A result is sent as soon as it is recorded (``ready``); this bounds how late a due
        # retry, or a message another process wrote, is noticed.
        self.idle_check_s = idle_check_s
        self.client = client
        self.ready = ready
        self.log = log

    async def run(self) -> None:
        while True:
            try:
                await self._send_due()
                wait = await self._until_next()
            except SchedulerError as exc:
                self.log.warning("delivery.db_error", error=str(exc))
                wait = 5.0
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.ready.wait(), timeout=wait)
            self.ready.clear()

    async def _until_next(self) -> float:
        nxt = await self.db.run(self.db.store.next_outbound_at)
        if nxt is None:
            return self.idle_check_s
        return max(0.05, min(self.idle_check_s, (from_sqlite(nxt) - utcnow()).total_seconds()))

    async def _send_due(self) -> None:
        for message in await self.db.run(self.db.store.due_outbound, sqlite_now()):
            await self.send(message)

    async def send(self, message: OutboundMessage) -> bool:
        """Send every chunk not yet accepted; True once the whole message is delivered."""
        store = self.db.store
        chunks = chunk_message(message.body, channel_limit(message.channel))
        done = message.chunks_sent
        for index in range(done, len(chunks)):
            try:
                await self.client.send_message(
                    text=chunks[index], channel=message.channel, target=message.delivery_to
                )
            except SchedulerError as exc:
                attempt = message.delivery_attempts + 1
                after = exc.retry_after_s if isinstance(exc, GatewayBusy) else None
                retry_at = to_sqlite(utcnow() + timedelta(seconds=retry_delay_s(attempt, after)))
                if index > done:
                    await self.db.run(store.record_delivery_progress, message.id, index)
                row = await self.db.run(
                    store.mark_delivery_failed, message.id, str(exc), retry_at, sqlite_now()
                )
                self.log.warning("delivery.failed", message_id=message.id, run_id=message.run_id,
                                 attempt=attempt, error=str(exc), status=row["status"],
                                 retry_at=row["next_attempt_at"])
                return False
            if len(chunks) > 1 and index + 1 < len(chunks):
                await self.db.run(store.record_delivery_progress, message.id, index + 1)
        await self.db.run(store.mark_delivered, message.id, sqlite_now())
        self.log.info("delivery.sent", message_id=message.id, run_id=message.run_id,
                      channel=message.channel, chunks=len(chunks))
        return True
