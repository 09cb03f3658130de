"""Sending outbound results through the gateway's ``message`` tool, at least once.

Each outbound message was recorded with its run's end (``store/sqlite/messages.py``). This loop
sends the due ones in order, chunk by chunk for the channel's size limit, then its attachments
(files named by ``[IMAGE:/path]`` markers, :mod:`scheduler.media`) one call each, and marks a
message ``delivered`` only after the gateway accepted its last part. A failed attempt is retried
with backoff (honouring ``Retry-After``), across restarts, resuming after the chunks and
attachments already accepted; after ``MAX_DELIVERY_ATTEMPTS`` it is marked ``failed`` with the
last error, never dropped silently.
"""

from __future__ import annotations

import asyncio
import contextlib
from datetime import timedelta
from typing import Any

from scheduler.errors import SchedulerError
from scheduler.gateway.channels import channel_limit, channel_takes_media, chunk_message
from scheduler.gateway.client import GatewayBusy, GatewayClient
from scheduler.media import MediaPolicy, MediaRefused
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
                 *, media_policy: MediaPolicy, idle_check_s: float = 15.0) -> None:
        self.db = db
        self.media_policy = media_policy  # checked again on each file just before it is sent
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
        """Send every text chunk, then every attachment, not yet done; True once all are."""
        with_media = bool(message.attachments) and channel_takes_media(message.channel)
        body = message.body if with_media else text_only_body(message)
        chunks = chunk_message(body, channel_limit(message.channel))
        if with_media and not body.strip():
            chunks = []  # the reply was only markers: the files alone are sent
        if not await self._send_chunks(message, chunks):
            return False
        if with_media and not await self._send_media(message):
            return False
        await self.db.run(self.db.store.mark_delivered, message.id, sqlite_now())
        self.log.info("delivery.sent", message_id=message.id, run_id=message.run_id,
                      channel=message.channel, chunks=len(chunks),
                      attachments=len(message.attachments) if with_media else 0)
        return True

    async def _send_chunks(self, message: OutboundMessage, chunks: list[str]) -> bool:
        store = self.db.store
        done = message.chunks_sent
        # Progress is recorded after each part but the last, unless attachments follow it.
        more_after = bool(message.attachments) and message.media_sent < len(message.attachments)
        for index in range(done, len(chunks)):
            try:
                await self.client.send_message(
                    text=chunks[index], channel=message.channel, target=message.delivery_to
                )
            except SchedulerError as exc:
                if index > done:
                    await self.db.run(store.record_delivery_progress, message.id, index)
                await self._failed(message, exc)
                return False
            last = index + 1 == len(chunks)
            if (len(chunks) > 1 and not last) or (last and more_after):
                await self.db.run(store.record_delivery_progress, message.id, index + 1)
        return True

    async def _send_media(self, message: OutboundMessage) -> bool:
        """Each attachment once, in order, after the text. A file that can no longer be sent
        (gone, changed, now refused) is given up with the reason; a gateway failure is retried."""
        store = self.db.store
        paths = message.attachments
        for index in range(message.media_sent, len(paths)):
            try:
                attachment = await asyncio.to_thread(self.media_policy.read, paths[index])
            except MediaRefused as exc:
                reason = f"attachment not sent: {exc}"
                self.log.warning("delivery.media_skipped", message_id=message.id,
                                 run_id=message.run_id, reason=reason)
                await self.db.run(store.record_media_progress, message.id, index + 1, reason,
                                  sqlite_now())
                continue
            try:
                await self.client.send_media(
                    data=attachment.data, filename=attachment.filename,
                    mime_type=attachment.mime_type, channel=message.channel,
                    target=message.delivery_to,
                )
            except SchedulerError as exc:
                await self._failed(message, exc)
                return False
            if index + 1 < len(paths):
                await self.db.run(store.record_media_progress, message.id, index + 1, None,
                                  sqlite_now())
        return True

    async def _failed(self, message: OutboundMessage, exc: SchedulerError) -> None:
        attempt = message.delivery_attempts + 1
        after = exc.retry_after_s if isinstance(exc, GatewayBusy) else None
        retry_at = to_sqlite(utcnow() + timedelta(seconds=retry_delay_s(attempt, after)))
        row = await self.db.run(
            self.db.store.mark_delivery_failed, message.id, str(exc), retry_at, sqlite_now()
        )
        self.log.warning("delivery.failed", message_id=message.id, run_id=message.run_id,
                         attempt=attempt, error=str(exc), status=row["status"],
                         retry_at=row["next_attempt_at"])


def text_only_body(message: OutboundMessage) -> str:
    """The text for a channel that takes no media: the body, and a note for its attachments."""
    count = len(message.attachments)
    if not count:
        return message.body
    where = f"channel {message.channel!r}" if message.channel else "a message with no channel"
    note = f"[{count} image(s) not sent: {where} takes no media from the scheduler]"
    return f"{message.body.rstrip()}\n\n{note}" if message.body.strip() else note
