"""Recording the ends of runs: batched, never lost while the daemon lives, never twice.

Runs that end while a batch is being written go into the next transaction. A batch the database
refuses for a reason that can pass (locked, disk full, I/O error, read-only) is kept in memory and
tried again, for as long as it takes, with a log line at each attempt; it is bounded because each
pending end still holds its run's slot, so the daemon claims nothing new meanwhile. A batch
refused for a reason tied to one record (a constraint, a value SQLite cannot hold, a bug) is
split, and a run whose end cannot be written even alone is recorded ``error`` with the reason, so
no run is left ``running`` with nothing behind it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any

from scheduler.errors import StoreCorruptError, StoreError, StoreGoneError
from scheduler.store.api import Finish, Finished, FinishPolicy
from scheduler.store.thread import StoreThread

# Waits between attempts at a batch the database refused for a passing reason.
RETRY_DELAYS_S = (0.5, 1.0, 2.0, 5.0, 10.0, 30.0)

Pending = tuple[Finish, "asyncio.Future[Finished | None]"]


def _retry_delay(attempt: int) -> float:
    return RETRY_DELAYS_S[min(attempt, len(RETRY_DELAYS_S)) - 1]


class Recorder:
    def __init__(self, db: StoreThread, policy: Callable[[], FinishPolicy], log: Any,
                 on_recorded: Callable[[Finish, Finished], None]) -> None:
        self.db = db
        self.policy = policy
        self.log = log
        self.on_recorded = on_recorded
        self._queue: list[Pending] = []
        self._ready = asyncio.Event()
        self._retry_now = asyncio.Event()
        self.waiting = 0  # ends held back by a database that refuses them for now

    def submit(self, finish: Finish) -> asyncio.Future[Finished | None]:
        """Queue a run's end; the future resolves once it is committed (None: it could not be,
        and was recorded as an error instead)."""
        done: asyncio.Future[Finished | None] = asyncio.get_running_loop().create_future()
        self._queue.append((finish, done))
        self._ready.set()
        return done

    def retry_now(self) -> None:
        """Cut a wait between attempts short (the database may be back)."""
        self._retry_now.set()

    async def run(self) -> None:
        while True:
            await self._ready.wait()
            self._ready.clear()
            batch, self._queue = self._queue, []
            if batch:
                await self._write(batch)

    async def _write(self, batch: list[Pending]) -> None:
        attempt = 0
        while True:
            try:
                rows = await self.db.run(self.db.store.finish_runs, [f for f, _ in batch], self.policy())
            except (StoreCorruptError, StoreGoneError):
                raise  # the daemon stops; these runs are found `running` and crash-recovered
            except StoreError as exc:
                if not exc.transient:
                    await self._write_alone(batch, exc)
                    return
                attempt += 1
                self._hold(len(batch), exc, attempt)
                await self._pause(_retry_delay(attempt))
                batch.extend(self._take_new())
                continue
            except Exception as exc:  # a bug on one record must not stop the recording of all
                await self._write_alone(batch, exc)
                return
            self.waiting = 0
            for (finish, done), finished in zip(batch, rows, strict=True):
                self.on_recorded(finish, finished)
                if not done.done():
                    done.set_result(finished)
            return

    def _hold(self, runs: int, exc: StoreError, attempt: int) -> None:
        self.waiting = runs
        self.log.error(
            "run.record_pending", runs=runs, attempt=attempt, error=str(exc),
            retry_in_s=_retry_delay(attempt),
            note="these run endings stay in memory until the database takes them or the daemon stops",
        )

    async def _pause(self, seconds: float) -> None:
        self._retry_now.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._retry_now.wait(), timeout=seconds)

    def _take_new(self) -> list[Pending]:
        more, self._queue = self._queue, []
        self._ready.clear()
        return more

    async def _write_alone(self, batch: list[Pending], cause: BaseException) -> None:
        if len(batch) > 1:
            for pending in batch:
                await self._write([pending])
            return
        finish, done = batch[0]
        run_id = finish.claim.run.id
        self.log.error("run.record_failed", run_id=run_id, job_id=finish.claim.job.id,
                       error=repr(cause), exc_info=cause,
                       reaction="recorded as error without delivery, retries or job update")
        await self._write_fallback(finish, f"the run's result could not be recorded: {cause}")
        if not done.done():
            done.set_result(None)

    async def _write_fallback(self, finish: Finish, message: str) -> None:
        attempt = 0
        while True:
            try:
                await self.db.run(self.db.store.record_unrecordable, finish.claim, message[:2000],
                                  self.policy().now_text)
                return
            except StoreError as exc:
                if not exc.transient:
                    raise
                attempt += 1
                self._hold(1, exc, attempt)
                await self._pause(_retry_delay(attempt))
