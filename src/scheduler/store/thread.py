"""Run store calls on one dedicated thread, so the event loop never blocks on the database.

What aiosqlite does, reduced to the one operation we need: call a method of the (synchronous)
store on the store's own thread. Keeping the store synchronous lets the CLI use it without asyncio.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, ParamSpec, TypeVar

from scheduler.errors import StoreError

if TYPE_CHECKING:
    from scheduler.store.api import Store

P = ParamSpec("P")
T = TypeVar("T")


class StoreThread:
    """The daemon's door to its store: ``await db.run(db.store.claim_due, ...)``."""

    def __init__(self) -> None:
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="store")
        self._observers: list[Callable[[StoreError], None]] = []
        self._store: Store | None = None

    async def open(self, opener: Callable[[], Store]) -> Store:
        """Open the store on its thread (its connection is made, and used, there)."""
        self._store = await self.run(opener)
        return self._store

    @property
    def store(self) -> Store:
        if self._store is None:
            raise RuntimeError("the store is not open")
        return self._store

    @property
    def is_open(self) -> bool:
        return self._store is not None

    def observe(self, observer: Callable[[StoreError], None]) -> None:
        """Call ``observer`` with every ``StoreError`` a store call raises (before it propagates):
        the daemon's one place to notice a damaged database, whoever met the error."""
        self._observers.append(observer)

    async def run(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """``fn(*args, **kwargs)`` on the store's thread (``fn`` is normally a store method)."""
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._executor, functools.partial(fn, *args, **kwargs))
        except StoreError as exc:
            for observer in self._observers:
                observer(exc)
            raise

    def shutdown(self) -> None:
        """Let the thread go once idle; never blocks the event loop."""
        self._executor.shutdown(wait=False)
