"""The dispatch watch, wired to the scheduler's store, gateway and event sinks.

``strategies/dispatch_watch.py`` holds the watch; this module gives it its parts: store calls
(on the daemon's store thread, or inline for the CLI), a fresh control-plane connection per watch,
and events announced by ``engine/dispatch_events.emit`` (log, post office, optional webhook).
``dispatch_strategy`` is the daemon's strategy for ``job_type = 'dispatch'``;
``watch_in_foreground`` is what ``dispatch watch`` runs (the same watch, in the CLI's process).
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import os
from collections.abc import Callable, Mapping
from typing import Any, ParamSpec, TypeVar

from scheduler.config import Settings
from scheduler.engine.dispatch_events import (
    NOTIFY_DISABLED_ENV,
    WEBHOOK_ENV,
    DispatchEvent,
    EventSinks,
    emit,
)
from scheduler.gateway.client import resolve_token
from scheduler.gateway.rpc import GatewayRpc
from scheduler.logs import get as get_logger
from scheduler.store.api import Store
from scheduler.store.thread import StoreThread
from scheduler.strategies.dispatch_watch import (
    DispatchWatchStrategy,
    LedgerDoor,
    WatchResult,
    WatchSettings,
    watch_dispatch,
)

P = ParamSpec("P")
T = TypeVar("T")


def event_sinks(settings: Settings, environ: Mapping[str, str] | None = None) -> EventSinks:
    """The sinks, with the webhook URL from the settings: the daemon clears secret-looking
    variables from its environment once the settings are read."""
    env = os.environ if environ is None else environ
    sinks = EventSinks.from_env({k: v for k, v in env.items() if k != WEBHOOK_ENV})
    url = settings.dispatch_webhook_url
    return EventSinks(webhook_url=None if url is None else url.get_secret_value(),
                      notify_disabled=env.get(NOTIFY_DISABLED_ENV) == "1", host=sinks.host)


def rpc_factory(settings: Settings) -> Callable[[], GatewayRpc]:
    """A new control-plane client per call, with the token resolved once."""
    secret = settings.gateway_token.get_secret_value() if settings.gateway_token else None
    token = resolve_token(secret, settings.gateway_token_path.expanduser())

    def rpc() -> GatewayRpc:
        return GatewayRpc(settings.gateway_url, token)

    return rpc


async def call_inline(fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
    """A store call in the caller's own thread (the CLI's store is synchronous and local)."""
    return fn(*args, **kwargs)


async def watch_in_foreground(label: str, store: Store, settings: Settings, *,
                              environ: Mapping[str, str] | None = None) -> WatchResult:
    """``dispatch watch --label``: the daemon's watch, run by the CLI on its own store."""
    sinks = event_sinks(settings, environ)
    log = get_logger("scheduler.dispatch")

    async def announce(event: str, label: str, **details: Any) -> None:
        emit(DispatchEvent(event), label, sinks=sinks, store=store, log=log, **details)

    door = LedgerDoor(store_of=lambda: store, call=call_inline, notify_disabled=sinks.notify_disabled)
    return await watch_dispatch(label, door=door, rpc_factory=rpc_factory(settings), emit=announce,
                                settings=WatchSettings.from_settings(settings), log=log)


def dispatch_strategy(settings: Settings, db: StoreThread, stopping: asyncio.Event,
                      environ: Mapping[str, str] | None = None) -> DispatchWatchStrategy:
    sinks = event_sinks(settings, environ)
    log = get_logger("scheduler.dispatch")
    rpc = rpc_factory(settings)

    local = dataclasses.replace(sinks, webhook_url=None)

    async def announce(event: str, label: str, **details: Any) -> None:
        kind = DispatchEvent(event)
        # The log line and the post-office message on the store's thread (the message is a
        # store write); the webhook POST (up to 5 s) off it, so claims never wait for a network.
        await db.run(functools.partial(emit, kind, label, sinks=local, store=db.store, log=log,
                                       **details))
        if sinks.webhook_url:
            await asyncio.to_thread(functools.partial(emit, kind, label, sinks=sinks, store=None,
                                                      log=_WarningsOnly(log), **details))

    door = LedgerDoor(store_of=lambda: db.store, call=db.run, notify_disabled=sinks.notify_disabled)
    return DispatchWatchStrategy(door=door, rpc_factory=rpc, emit=announce,
                                 settings=WatchSettings.from_settings(settings),
                                 stopping=stopping, log=log)


class _WarningsOnly:
    """A log that keeps only warnings: the webhook's emit must not log the event a second time."""

    def __init__(self, log: Any) -> None:
        self._log = log

    def info(self, event: str, **fields: Any) -> None:
        return None

    def warning(self, event: str, **fields: Any) -> None:
        self._log.warning(event, **fields)
