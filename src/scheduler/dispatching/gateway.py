"""How the dispatch commands reach the gateway: one control connection per command.

The CLI is synchronous; each operation that needs the gateway runs one coroutine on one
:class:`~scheduler.gateway.rpc.GatewayRpc` connection inside ``asyncio.run``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from scheduler.gateway.rpc import GatewayRpc

T = TypeVar("T")


@dataclass(frozen=True)
class GatewayAccess:
    """The gateway's base URL and token (never shown: see ``__repr__``)."""

    url: str
    token: str | None

    def __repr__(self) -> str:
        return f"GatewayAccess({self.url!r}, token={'set' if self.token else 'none'})"

    def run(self, work: Callable[[GatewayRpc], Awaitable[T]]) -> T:
        """``work`` on a fresh connection; gateway errors propagate (GatewayError tree)."""

        async def session() -> T:
            async with GatewayRpc(self.url, self.token) as rpc:
                return await work(rpc)

        return asyncio.run(session())


def from_environment() -> GatewayAccess:
    """OPENCLAW_GATEWAY_URL and the token (OPENCLAW_GATEWAY_TOKEN or its file), as the daemon
    reads them."""
    from scheduler.config import load_settings
    from scheduler.gateway.client import resolve_token

    settings = load_settings()
    secret = settings.gateway_token.get_secret_value() if settings.gateway_token else None
    return GatewayAccess(settings.gateway_url, resolve_token(secret, settings.gateway_token_path))
