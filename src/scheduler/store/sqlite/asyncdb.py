"""Run store functions on one dedicated thread, so the event loop never blocks on SQLite.

This is what aiosqlite does, reduced to the one operation we need: call a store function with
the connection. Keeping store functions synchronous lets the CLI use them without asyncio.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Concatenate, ParamSpec, TypeVar

from scheduler.errors import StoreError
from scheduler.store.sqlite.db import Database
from scheduler.store.sqlite.migrations import migrate

P = ParamSpec("P")
T = TypeVar("T")


class AsyncDatabase:
    def __init__(self, path: Path, *, synchronous: str = "FULL") -> None:
        self.path = path
        self._synchronous = synchronous
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite")
        self._db: Database | None = None
        self._observers: list[Callable[[StoreError], None]] = []

    def observe(self, observer: Callable[[StoreError], None]) -> None:
        """Call ``observer`` with every ``StoreError`` a store call raises (before it propagates):
        the daemon's one place to notice a damaged database, whoever met the error."""
        self._observers.append(observer)

    async def open(self) -> None:
        def _open() -> Database:
            db = Database.open(self.path, synchronous=self._synchronous)
            try:
                migrate(db)
            except BaseException:
                db.close()
                raise
            return db

        loop = asyncio.get_running_loop()
        self._db = await loop.run_in_executor(self._executor, _open)

    async def run(
        self, fn: Callable[Concatenate[Database, P], T], *args: P.args, **kwargs: P.kwargs
    ) -> T:
        if self._db is None:
            raise RuntimeError("database is not open")
        loop = asyncio.get_running_loop()
        call = functools.partial(fn, self._db, *args, **kwargs)
        try:
            return await loop.run_in_executor(self._executor, call)
        except StoreError as exc:
            for observer in self._observers:
                observer(exc)
            raise

    async def close(self, *, checkpoint: bool = True) -> None:
        db, self._db = self._db, None
        if db is not None:
            loop = asyncio.get_running_loop()

            def _close() -> None:
                try:
                    if checkpoint:
                        db.checkpoint("TRUNCATE")
                except StoreError:
                    pass  # the WAL stays; SQLite replays it on the next open
                finally:
                    db.close()

            await loop.run_in_executor(self._executor, _close)
        self._executor.shutdown(wait=False)  # idle now; never block the event loop on it
