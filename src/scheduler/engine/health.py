"""What the daemon's endpoint answers: /healthz, /readyz and /metrics (engine/http_endpoint.py).

* ``/healthz``: the process answers and its scheduling loop went round recently (within
  ``LOOP_STALE_TICKS`` × ``SCHEDULER_TICK_MS`` plus ``LOOP_STALE_MARGIN_S``: the loop goes round
  at least once a tick even when idle, and a database call may wait out SQLite's busy timeout).
  A loop stuck in an await fails it; an event loop blocked outright does not answer at all,
  which a probe's timeout also reads as a failure.
* ``/readyz``: the database takes a write lock now, and the gateway's ``/health`` answers; each
  failing check is named, with the answer 503. The answer is kept ``READY_CACHE_S`` so that
  frequent probes do not each take the database's write lock or call the gateway.
* ``/metrics``: engine/metrics.py, the database gauges read at most every ``GAUGES_CACHE_S``.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from scheduler.engine.http_endpoint import Answer, Handler
from scheduler.engine.metrics import CONTENT_TYPE, Metrics, Readings
from scheduler.errors import SchedulerError
from scheduler.gateway.client import GatewayClient
from scheduler.store.api import StoreGauges
from scheduler.store.thread import StoreThread
from scheduler.timeutil import from_sqlite, sqlite_now, utcnow

LOOP_STALE_TICKS = 3
LOOP_STALE_MARGIN_S = 10.0
CHECK_TIMEOUT_S = 3.0
READY_CACHE_S = 1.0
GAUGES_CACHE_S = 2.0


@dataclass(frozen=True)
class LiveState:
    """The daemon's state that the answers read (taken on the loop, so always consistent)."""

    running: Mapping[str, int]
    gateway_up: bool
    ticked_at: float  # time.monotonic() of the scheduling loop's last round
    stopping: bool


class Probes:
    def __init__(self, db: StoreThread, gateway: GatewayClient, metrics: Metrics, *,
                 tick_s: float, live: Callable[[], LiveState],
                 on_gateway_down: Callable[[], None]) -> None:
        self.db = db
        self.gateway = gateway
        self.metrics = metrics
        self.loop_bound_s = LOOP_STALE_TICKS * tick_s + LOOP_STALE_MARGIN_S
        self.live = live
        self.on_gateway_down = on_gateway_down
        self._ready: tuple[float, Answer] | None = None
        self._ready_lock = asyncio.Lock()
        self._gauges: tuple[float, StoreGauges | None] | None = None
        self._gauges_lock = asyncio.Lock()

    def routes(self) -> dict[str, Handler]:
        return {"/healthz": self.healthz, "/readyz": self.readyz, "/metrics": self.scrape}

    async def healthz(self) -> Answer:
        since = time.monotonic() - self.live().ticked_at
        body = {"loop_last_tick_s_ago": round(since, 3), "bound_s": self.loop_bound_s}
        if since > self.loop_bound_s:
            return _json(503, {"status": "unhealthy", "failing": {
                "loop": f"the scheduling loop last went round {since:.0f}s ago"}, **body})
        return _json(200, {"status": "ok", **body})

    async def readyz(self) -> Answer:
        async with self._ready_lock:  # concurrent probes share one check
            if self._ready is not None and time.monotonic() - self._ready[0] < READY_CACHE_S:
                return self._ready[1]
            failing = await self._failing_checks()
            answer = (_json(503, {"status": "not ready", "failing": failing}) if failing
                      else _json(200, {"status": "ready", "checks": ["database", "gateway", "daemon"]}))
            self._ready = (time.monotonic(), answer)
            return answer

    async def _failing_checks(self) -> dict[str, str]:
        failing: dict[str, str] = {}
        if self.live().stopping:
            failing["daemon"] = "the daemon is stopping"
        database, gateway_up = await asyncio.gather(self._database_problem(), self._gateway_up())
        if database is not None:
            failing["database"] = database
        if not gateway_up:
            failing["gateway"] = f"{self.gateway.base_url}/health did not answer 2xx"
            self.on_gateway_down()  # agent jobs wait from now, not from the next minute's check
        return failing

    async def _database_problem(self) -> str | None:
        try:
            await asyncio.wait_for(self.db.run(self.db.store.check_writable), timeout=CHECK_TIMEOUT_S)
        except TimeoutError:
            return f"no write lock within {CHECK_TIMEOUT_S:.0f}s"
        except SchedulerError as exc:
            return str(exc)
        return None

    async def _gateway_up(self) -> bool:
        return await self.gateway.health(timeout_s=CHECK_TIMEOUT_S)

    async def scrape(self) -> Answer:
        live = self.live()
        store = await self._store_gauges()
        oldest_s = 0.0
        if store is not None and store.oldest_outbound_at is not None:
            oldest_s = max(0.0, (utcnow() - from_sqlite(store.oldest_outbound_at)).total_seconds())
        readings = Readings(running=live.running, gateway_up=live.gateway_up,
                            last_tick_at=time.time() - (time.monotonic() - live.ticked_at),
                            store=store, oldest_outbound_age_s=oldest_s)
        return Answer(200, self.metrics.exposition(readings), CONTENT_TYPE)

    async def _store_gauges(self) -> StoreGauges | None:
        async with self._gauges_lock:
            if self._gauges is not None and time.monotonic() - self._gauges[0] < GAUGES_CACHE_S:
                return self._gauges[1]
            try:
                gauges: StoreGauges | None = await asyncio.wait_for(
                    self.db.run(self.db.store.gauges, sqlite_now()), timeout=CHECK_TIMEOUT_S)
            except (TimeoutError, SchedulerError):
                gauges = None  # scheduler_store_read_ok 0 says so
            self._gauges = (time.monotonic(), gauges)
            return gauges


def _json(status: int, body: object) -> Answer:
    return Answer(status, json.dumps(body).encode() + b"\n")
