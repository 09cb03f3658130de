"""The systemd notify protocol (sd_notify): tell the service manager we are ready, alive, stopping.

The protocol is one datagram of ``KEY=value`` lines to the AF_UNIX socket named by
``$NOTIFY_SOCKET`` (a leading ``@`` means an abstract name). That is a dozen lines, so no library:
the maintained Python bindings either need libsystemd at build time (``systemd-python``) or add a
dependency for what ``socket.sendto`` does. Outside systemd (no ``NOTIFY_SOCKET``) every call is a
no-op that costs a comparison.

The watchdog ping is sent by the scheduling loop itself (``Daemon._schedule_loop``), at half of
``$WATCHDOG_USEC`` as systemd recommends: a loop that hangs stops the pings, and systemd restarts
the daemon. A helper task pinging on its own timer would keep a hung loop alive.
"""

from __future__ import annotations

import contextlib
import math
import os
import socket
import time
from collections.abc import Callable, MutableMapping

from scheduler.logs import get as get_logger

# Variables systemd sets for the service's main process only: removed from the environment once
# read, so the jobs the daemon starts cannot speak for it.
NOTIFY_VARIABLES = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")


class Notifier:
    """Sends READY/WATCHDOG/STATUS/STOPPING when the daemon runs under a notify-aware manager."""

    def __init__(self, address: str | None, watchdog_s: float | None) -> None:
        self.address = _socket_address(address) if address else None
        self.watchdog_interval_s = watchdog_s / 2 if watchdog_s else None
        self._socket: socket.socket | None = None
        self._last_ping = time.monotonic()
        self._status: str | None = None
        self._failed = False

    @classmethod
    def from_environment(cls, environ: MutableMapping[str, str] | None = None) -> Notifier:
        env = os.environ if environ is None else environ
        address = env.get("NOTIFY_SOCKET") or None
        watchdog_s = _watchdog_seconds(env)
        for name in NOTIFY_VARIABLES:
            env.pop(name, None)
        return cls(address, watchdog_s)

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def ready(self, status: str) -> None:
        self._last_ping = time.monotonic()
        self._status = status
        self._send(f"READY=1\nSTATUS={status}")

    def stopping(self, status: str) -> None:
        self._status = status
        self._send(f"STOPPING=1\nSTATUS={status}")

    def status(self, status: str) -> None:
        if status != self._status:
            self._status = status
            self._send(f"STATUS={status}")

    def loop_ticked(self, summary: Callable[[], str]) -> None:
        """Called by the scheduling loop after each round: ping when half the watchdog passed
        (``summary`` is only computed then)."""
        if self.watchdog_interval_s is None or self.until_next_ping() > 0:
            return
        self._last_ping = time.monotonic()
        message = "WATCHDOG=1"
        status = summary()
        if status != self._status:
            self._status = status
            message += f"\nSTATUS={status}"
        self._send(message)

    def until_next_ping(self) -> float:
        """Seconds the loop may sleep before it owes a ping (infinite without a watchdog)."""
        if self.watchdog_interval_s is None:
            return math.inf
        return max(0.0, self._last_ping + self.watchdog_interval_s - time.monotonic())

    def close(self) -> None:
        if self._socket is not None:
            self._socket.close()
            self._socket = None

    def _send(self, message: str) -> None:
        if self.address is None:
            return
        try:
            if self._socket is None:
                self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            self._socket.sendto(message.encode(), self.address)
        except OSError as exc:
            # Never fatal: the manager may be gone or reloading. Said once, not at every ping.
            if not self._failed:
                self._failed = True
                get_logger("scheduler.notify").warning("notify.failed", error=str(exc))
            return
        self._failed = False


def _socket_address(value: str) -> str:
    """An abstract socket name (``@name``) is a name starting with a NUL byte."""
    return "\0" + value[1:] if value.startswith("@") else value


def _watchdog_seconds(env: MutableMapping[str, str]) -> float | None:
    """``WATCHDOG_USEC`` when it is meant for this process (``WATCHDOG_PID`` absent or ours)."""
    pid = env.get("WATCHDOG_PID")
    if pid and pid != str(os.getpid()):
        return None
    with contextlib.suppress(ValueError):
        usec = int(env.get("WATCHDOG_USEC", ""))
        if usec > 0:
            return usec / 1_000_000
    return None
