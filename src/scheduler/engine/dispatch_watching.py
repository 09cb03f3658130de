"""The daemon's dispatch-watch strategy, wired to its store thread, gateway and event sinks.

``strategies/dispatch_watch.py`` holds the watch; this module gives it the daemon's parts: store
calls on the store thread, a fresh control-plane connection per watch, and events announced by
``engine/dispatch_events.emit`` (log, post office, optional webhook).
"""

from __future__ import annotations

import asyncio
import functools
import os
from collections.abc import Mapping
from typing import Any

from scheduler.config import Settings
from scheduler.engine.dispatch_events import NOTIFY_DISABLED_ENV, DispatchEvent, EventSinks, emit
from scheduler.gateway.client import resolve_token
from scheduler.gateway.rpc import GatewayRpc
from scheduler.logs import get as get_logger
from scheduler.store.thread import StoreThread
from scheduler.strategies.dispatch_watch import DispatchWatchStrategy, LedgerDoor, WatchSettings


def event_sinks(settings: Settings, environ: Mapping[str, str] | None = None) -> EventSinks:
    env = os.environ if environ is None else environ
    sinks = EventSinks.from_env({k: v for k, v in env.items() if k != "DISPATCH_WEBHOOK_URL"})
    url = settings.dispatch_webhook_url
    return EventSinks(webhook_url=None if url is None else url.get_secret_value(),
                      notify_disabled=env.get(NOTIFY_DISABLED_ENV) == "1", host=sinks.host)


def dispatch_strategy(settings: Settings, db: StoreThread, stopping: asyncio.Event,
                      environ: Mapping[str, str] | None = None) -> DispatchWatchStrategy:
    sinks = event_sinks(settings, environ)
    log = get_logger("scheduler.dispatch")
    secret = settings.gateway_token.get_secret_value() if settings.gateway_token else None
    token = resolve_token(secret, settings.gateway_token_path.expanduser())

    def rpc() -> GatewayRpc:
        return GatewayRpc(settings.gateway_url, token)

    async def announce(event: str, label: str, **details: Any) -> None:
        # emit writes the post-office message, so it runs where the store lives.
        await db.run(functools.partial(emit, DispatchEvent(event), label, sinks=sinks,
                                       store=db.store, log=log, **details))

    door = LedgerDoor(store_of=lambda: db.store, call=db.run, notify_disabled=sinks.notify_disabled)
    return DispatchWatchStrategy(door=door, rpc_factory=rpc, emit=announce,
                                 settings=WatchSettings.from_settings(
                                     settings, notify_disabled=sinks.notify_disabled),
                                 stopping=stopping, log=log)
