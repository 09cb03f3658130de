"""Supervision of the daemon's long-lived helper tasks, so the daemon is never half-alive.

Every helper (the recorder, the outbound sender, the health checks, the heartbeats, the write
watcher, …) runs under a :class:`Supervisor`. A helper is meant to run until the daemon stops; if
one returns or raises, the supervisor logs one ``daemon.task_failed`` error event naming it and
the exception, then applies the helper's rule:

* ``RESTART``: start it again after a back-off (1 s, 2 s, 4 s … 30 s). A helper that keeps
  failing (``MAX_QUICK_FAILURES`` times in a row, each within ``HEALTHY_AFTER_S`` of its start)
  is escalated as if it were ``FATAL``: a restart loop would only hide the fault.
* ``FATAL``: call ``on_fatal``, which stops the daemon with a non-zero exit status, so that the
  service manager restarts it and crash recovery runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

RESTART_BACKOFF_S = (1.0, 2.0, 4.0, 8.0, 16.0, 30.0)
# A helper that ran this long before failing counts as having been healthy.
HEALTHY_AFTER_S = 60.0
MAX_QUICK_FAILURES = 5


class OnFailure(enum.Enum):
    RESTART = "restart"
    FATAL = "fatal"


@dataclass
class _Helper:
    name: str
    factory: Callable[[], Coroutine[Any, Any, None]]
    rule: OnFailure
    task: asyncio.Task[None] | None = None
    quick_failures: int = 0


FatalHandler = Callable[[str, BaseException | None], None]


class Supervisor:
    def __init__(self, log: Any, on_fatal: FatalHandler,
                 stopping: Callable[[], bool] = lambda: False) -> None:
        self.log = log
        self.on_fatal = on_fatal
        self.daemon_stopping = stopping  # a helper may end on its own once the daemon stops
        self._helpers: list[_Helper] = []
        self._runners: list[asyncio.Task[None]] = []
        self._stopping = False

    def start(self, name: str, factory: Callable[[], Coroutine[Any, Any, None]],
              rule: OnFailure) -> None:
        helper = _Helper(name, factory, rule)
        self._helpers.append(helper)
        self._runners.append(asyncio.create_task(self._keep(helper), name=f"supervise-{name}"))

    async def _keep(self, helper: _Helper) -> None:
        while True:
            started = time.monotonic()
            helper.task = asyncio.create_task(helper.factory(), name=helper.name)
            error: BaseException | None = None
            try:
                await helper.task
            except asyncio.CancelledError as exc:
                if self._stopping:
                    return
                error = exc  # cancelled by something other than our stop: a failure too
            except Exception as exc:
                error = exc
            if error is None and self.daemon_stopping():
                return
            escalate = self._note_failure(helper, error, time.monotonic() - started)
            if escalate:
                self.on_fatal(helper.name, error)
                return
            await asyncio.sleep(RESTART_BACKOFF_S[min(helper.quick_failures, len(RESTART_BACKOFF_S)) - 1])

    def _note_failure(self, helper: _Helper, error: BaseException | None, ran_s: float) -> bool:
        """Log the failure; True when the daemon must stop."""
        helper.quick_failures = helper.quick_failures + 1 if ran_s < HEALTHY_AFTER_S else 1
        fatal = helper.rule is OnFailure.FATAL or helper.quick_failures >= MAX_QUICK_FAILURES
        self.log.error(
            "daemon.task_failed",
            task=helper.name,
            error=repr(error) if error is not None else "returned unexpectedly",
            reaction="stop the daemon" if fatal else "restart",
            failures_in_a_row=helper.quick_failures,
            exc_info=error,
        )
        return fatal

    def names(self) -> list[str]:
        return [helper.name for helper in self._helpers]

    async def stop(self, timeout_s: float = 5.0) -> None:
        """Cancel every helper and wait for them, at most ``timeout_s``; a helper that ignores
        its cancellation is named in the log and left behind (the process is exiting)."""
        self._stopping = True
        for runner in self._runners:
            runner.cancel()
        for helper in self._helpers:
            if helper.task is not None:
                helper.task.cancel()
        pending = [t for t in (*self._runners, *(h.task for h in self._helpers if h.task)) if not t.done()]
        if not pending:
            return
        _, stuck = await asyncio.wait(pending, timeout=timeout_s)
        if stuck:
            self.log.error("daemon.task_stuck", tasks=sorted(t.get_name() for t in stuck),
                           note="did not end when cancelled; exiting without it")
        for task in pending:
            if task.done():
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    task.result()
