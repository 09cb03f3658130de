"""Watching a dispatched sub-agent until it ends: the delivery watcher, in-process.

The reference ran ``dispatch/watcher.mjs`` as a shell job for every dispatch, and a separate
``529-recovery.mjs`` cron script as a safety net. Here one coroutine, :func:`watch_dispatch`, does
both, for the daemon's strategy of ``job_type = 'dispatch'`` jobs and for the ``dispatch watch``
command. It follows the label's ledger row (``dispatch_labels``) and the gateway run it names:

* a label already ``done`` (or ``cancelled``) returns at once: an at-least-once replay after a
  crash delivers the recorded completion and never starts the work again;
* the gateway run is waited for with ``agent.wait`` in slices of ``poll_s``; between slices the
  ledger is read (a ``dispatch done`` or ``dispatch cancel`` by another process ends the watch),
  ``last_ping`` is written every ``ping_s``, and the session's activity is sampled
  (``sessions.list``: ``totalTokens`` / ``updatedAt`` growth);
* the deadline starts at the label's timeout + ``deadline_margin_s`` after it was spawned, moves
  ``extend_s`` past any activity seen, never beyond ``ceiling_s`` after the spawn; past it the
  ledger says ``error`` "timed out ..." and the watch ends ``timeout``;
* ``stuck_s`` without activity growth: one notice and one ``dispatch.stuck`` event per spell;
* a run that fails with an overload (529) text, or that a gateway restart killed, is sent again on
  the same session after ``retry_base_s`` x n, with its own counter and maximum each
  (``retry_count`` / ``restart_retry_count``); past the maximum the ledger says ``error``;
* success: the last assistant reply, normalised (models/completion.py), is recorded as the
  label's completion (only while it is still ``running``), ``dispatch.finished`` is emitted, and
  the text is what the run delivers;
* when the label ended, its watchdog job is disarmed (removed; features.md §17 #27).

The gateway unreachable: tried again each slice until the deadline. Its refusal of our token: the
watch fails at once with a message saying so. Everything outside is injected (store door, RPC
factory, clock, sleep, emitter, settings), so tests can drive it.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, Final, ParamSpec, Protocol, TypeVar

from scheduler.config import Settings
from scheduler.errors import NotFoundError, SchedulerError
from scheduler.gateway.client import GatewayError
from scheduler.gateway.rpc import GatewayAuthRefused, GatewayRpc, GatewayRpcError, RunStatus
from scheduler.models.completion import normalize_completion
from scheduler.models.dispatch import DispatchLabel
from scheduler.models.dispatch_retry import (
    MAX_OVERLOAD_RETRIES,
    MAX_RESTART_RETRIES,
    RETRY_BASE_DELAY_S,
    is_gateway_restart_kill,
    is_overload_error,
    retry_delay_s,
)
from scheduler.models.enums import (
    ANNOUNCE_MODES,
    DeliveryMode,
    MessageKind,
    SubagentMode,
    SubagentStatus,
)
from scheduler.models.messages import new_message
from scheduler.models.records import Job, Run
from scheduler.store.api import Store
from scheduler.strategies.base import DeferRun, Outcome
from scheduler.timeutil import from_sqlite, to_sqlite

P = ParamSpec("P")
T = TypeVar("T")

FINISHED: Final = "dispatch.finished"
STUCK: Final = "dispatch.stuck"
NOTICE_SENDER: Final = "dispatch"
NOTICE_RECIPIENT: Final = "main"
# The reference's rolling deadline: 5 more minutes after activity, never past 4 hours.
EXTEND_S: Final = 300.0
CEILING_S: Final = 4 * 3600.0
PING_S: Final = 60.0
# sessions.list window: the reference looked at the last day.
ACTIVE_MINUTES: Final = 1440
SUMMARY_CHARS: Final = 500
OVERLOAD_RESUME: Final = ("[Auto-retry after 529 overload] Please continue your previous task. "
                          "Pick up where you left off.")
RESTART_RESUME: Final = ("[Auto-retry after gateway restart] The previous run was killed by a "
                         "gateway restart. Resume from the beginning.")
# Failed states another writer (or an earlier watch) may have set: the error text decides
# whether the label is retried or ends there.
_RETRYABLE_STATES: Final = (SubagentStatus.ERROR, SubagentStatus.INTERRUPTED,
                            SubagentStatus.SPAWN_WARNING)


@dataclass(frozen=True)
class WatchSettings:
    poll_s: float = 20.0
    stuck_s: float = 180.0
    retry_base_s: float = float(RETRY_BASE_DELAY_S)
    deadline_margin_s: float = 120.0
    extend_s: float = EXTEND_S
    ceiling_s: float = CEILING_S
    ping_s: float = PING_S
    max_overload_retries: int = MAX_OVERLOAD_RETRIES
    max_restart_retries: int = MAX_RESTART_RETRIES

    @classmethod
    def from_settings(cls, settings: Settings) -> WatchSettings:
        return cls(poll_s=settings.dispatch_poll_ms / 1000,
                   stuck_s=settings.dispatch_stuck_ms / 1000,
                   retry_base_s=settings.dispatch_retry_base_ms / 1000,
                   deadline_margin_s=settings.dispatch_deadline_margin_ms / 1000)

    def retry_wait_s(self, retry_number: int) -> float:
        """The models' backoff (base x n), on this watch's base."""
        return retry_delay_s(retry_number) * self.retry_base_s / RETRY_BASE_DELAY_S


class StoreCaller(Protocol):
    """Runs a store method where the store lives (the daemon's store thread, or inline)."""

    def __call__(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> Awaitable[T]: ...


class Emitter(Protocol):
    """Announces a dispatch event (engine/dispatch_events.emit behind it); never raises."""

    def __call__(self, event: str, label: str, *, session_key: str | None = None,
                 completion: str | None = None, deliver_to: str | None = None,
                 channel: str | None = None, notice: str | None = None,
                 fields: Mapping[str, str | int | float | bool | None] | None = None,
                 ) -> Awaitable[None]: ...


@dataclass(frozen=True)
class LedgerDoor:
    """The watch's way to the ledger, the post office and the jobs table: ``store_of()`` is the
    store (read when used: the daemon opens its store after building its strategies)."""

    store_of: Callable[[], Store]
    call: StoreCaller
    notify_disabled: bool = False

    @property
    def store(self) -> Store:
        return self.store_of()

    async def get(self, label: str) -> DispatchLabel | None:
        return await self.call(self.store.get_dispatch, label)

    async def update(self, label: str, changes: Mapping[str, Any], now: str, *,
                     only_if: Iterable[str] | None = None) -> DispatchLabel | None:
        guard = None if only_if is None else [str(s) for s in only_if]
        return await self.call(self.store.update_dispatch, label, dict(changes), now,
                               only_if_status=guard)

    async def notice(self, label: str, text: str, now: str) -> None:
        """A progress notice for the main agent (kind text), unless notices are disabled."""
        if self.notify_disabled:
            return
        message = new_message(from_agent=NOTICE_SENDER, to_agent=NOTICE_RECIPIENT, body=text,
                              kind=MessageKind.TEXT.value, subject=label[:100])
        await self.call(self.store.send_message, message, now)

    async def disarm(self, job_id: str) -> bool:
        with contextlib.suppress(NotFoundError):
            await self.call(self.store.delete_job, job_id)
            return True
        return False


@dataclass(frozen=True)
class WatchResult:
    """How the watch ended: ``ok`` | ``error`` | ``timeout`` | ``cancelled``."""

    status: str
    label: str
    completion: str | None = None  # the normalised text to deliver (ok)
    reply: str | None = None  # the sub-agent's last reply as written
    error: str | None = None
    session_key: str | None = None
    retries: int = 0

    @property
    def summary(self) -> str:
        if self.status == "ok":
            return (self.reply or self.completion or "completed")[:SUMMARY_CHARS]
        return (self.error or self.status)[:SUMMARY_CHARS]


class WatchFailed(Exception):
    """The watch cannot go on (the gateway refused our token, the label has no session)."""


async def watch_dispatch(label: str, *, door: LedgerDoor, rpc_factory: Callable[[], GatewayRpc],
                         emit: Emitter, settings: WatchSettings, log: Any,
                         clock: Callable[[], float] = time.time,
                         sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> WatchResult:
    """Watch ``label`` until it ends; see the module docstring. Cancellation stops it at once
    (the gateway run goes on; a later watch resumes on it)."""
    watch = _Watch(label, door, rpc_factory, emit, settings, log, clock, sleep)
    try:
        return await watch.run()
    finally:
        await watch.close()


@dataclass
class _Activity:
    tokens: int | None = None
    updated_at: int | None = None
    last_growth: float = 0.0
    stuck_reported: bool = False


class _Watch:
    def __init__(self, label: str, door: LedgerDoor, rpc_factory: Callable[[], GatewayRpc],
                 emit: Emitter, settings: WatchSettings, log: Any, clock: Callable[[], float],
                 sleep: Callable[[float], Awaitable[None]]) -> None:
        self.label = label
        self.door = door
        self.rpc_factory = rpc_factory
        self.emit = emit
        self.settings = settings
        self.log = log
        self.clock = clock
        self.sleep = sleep
        self.rpc: GatewayRpc | None = None
        self.unreachable = False
        self.activity = _Activity(last_growth=clock())
        self.deadline = self.ceiling = self.spawned = 0.0
        self.pinged = 0.0

    # -- the loop ------------------------------------------------------------------------------

    async def run(self) -> WatchResult:
        entry = await self.door.get(self.label)
        if entry is None:
            return WatchResult("error", self.label, error=f"no dispatch label {self.label!r} in the ledger")
        if entry.is_terminal:
            return await self._already_ended(entry)
        if not entry.session_key:
            return await self._fail(entry, f"dispatch label {self.label!r} has no session key")
        self._start_deadline(entry)
        try:
            return await self._follow(entry)
        except WatchFailed as failed:
            return WatchResult("error", self.label, error=str(failed), session_key=entry.session_key)

    async def _follow(self, entry: DispatchLabel) -> WatchResult:
        while True:
            fresh = await self.door.get(self.label)
            if fresh is None:
                return WatchResult("cancelled", self.label, error="the dispatch label was deleted")
            entry = fresh
            if entry.is_terminal:
                return await self._ended_elsewhere(entry)
            if entry.status in _RETRYABLE_STATES:
                if self.clock() >= self.deadline:
                    return await self._timed_out(entry)
                text = entry.error or entry.summary or f"status {entry.status}"
                verdict = await self._failed_run(entry, text)
                if isinstance(verdict, WatchResult):
                    return verdict
                continue
            await self._ping()
            status = await self._wait_slice(entry)
            if status is not None and status.finished:
                verdict = await self._run_ended(entry, status)
                if isinstance(verdict, WatchResult):
                    return verdict
                continue
            if status is not None:
                await self._sample_activity(entry)
            if self.clock() >= self.deadline:
                return await self._timed_out(entry)
            if status is None:
                await self.sleep(self.settings.poll_s)

    async def _wait_slice(self, entry: DispatchLabel) -> RunStatus | None:
        """One ``agent.wait`` of at most ``poll_s``; None when the gateway could not be asked."""
        run_id = entry.gateway_run_id
        if not run_id:
            raise WatchFailed(f"dispatch label {self.label!r} has no gateway run to watch")
        rpc = await self._connected()
        if rpc is None:
            return None
        try:
            status = await rpc.wait_run(run_id, int(self.settings.poll_s * 1000))
        except GatewayRpcError as exc:
            return self._rpc_refused(exc, run_id)
        except GatewayError as exc:
            await self._lost(exc)
            return None
        self._reachable()
        return status

    def _rpc_refused(self, exc: GatewayRpcError, run_id: str) -> RunStatus | None:
        if isinstance(exc, GatewayAuthRefused):
            raise WatchFailed(f"{exc}; the watch cannot follow the dispatch") from None
        if is_gateway_restart_kill(exc.gateway_message):
            # The gateway forgot the run: read it as a run that ended with that error.
            return RunStatus("error", None, None, None, exc.gateway_message, {"runId": run_id})
        self.log.warning("dispatch.wait_refused", label=self.label, run_id=run_id, error=str(exc))
        return None

    # -- gateway connection ----------------------------------------------------------------------

    async def _connected(self) -> GatewayRpc | None:
        if self.rpc is not None:
            return self.rpc
        rpc = self.rpc_factory()
        try:
            await rpc.connect()
        except GatewayAuthRefused as exc:
            raise WatchFailed(f"{exc}; the watch cannot follow the dispatch") from None
        except GatewayError as exc:
            await self._lost(exc)
            return None
        self.rpc = rpc
        return rpc

    async def _lost(self, exc: GatewayError) -> None:
        """The gateway cannot be reached (or stopped answering): tried again next slice."""
        if not self.unreachable:
            self.log.warning("dispatch.gateway_unreachable", label=self.label, error=str(exc),
                             note="retrying every poll interval until the deadline")
        self.unreachable = True
        await self.close()

    def _reachable(self) -> None:
        if self.unreachable:
            self.log.info("dispatch.gateway_reachable", label=self.label)
        self.unreachable = False

    async def close(self) -> None:
        rpc, self.rpc = self.rpc, None
        if rpc is not None:
            with contextlib.suppress(Exception):
                await rpc.aclose()

    # -- deadline, pings, activity ---------------------------------------------------------------

    def _start_deadline(self, entry: DispatchLabel) -> None:
        spawned = self.clock()
        with contextlib.suppress(ValueError):
            if entry.spawned_at:
                spawned = min(spawned, from_sqlite(entry.spawned_at).timestamp())
        self.spawned = spawned
        self.ceiling = spawned + max(self.settings.ceiling_s,
                                     entry.timeout_s + self.settings.deadline_margin_s)
        self.deadline = spawned + entry.timeout_s + self.settings.deadline_margin_s

    def _now_text(self) -> str:
        return to_sqlite(datetime.fromtimestamp(self.clock(), tz=UTC))

    async def _ping(self) -> None:
        now = self.clock()
        if now - self.pinged < self.settings.ping_s:
            return
        self.pinged = now
        await self.door.update(self.label, {"last_ping": self._now_text()}, self._now_text(),
                               only_if=[SubagentStatus.RUNNING])

    async def _sample_activity(self, entry: DispatchLabel) -> None:
        record = await self._session(entry.session_key)
        seen = self.activity
        now = self.clock()
        if record is not None:
            tokens, updated = record.total_tokens, record.updated_at
            grew = (seen.tokens is not None and tokens is not None and tokens > seen.tokens) or (
                seen.updated_at is not None and updated is not None and updated > seen.updated_at)
            seen.tokens, seen.updated_at = tokens, updated
            if grew:
                await self._active(now, tokens)
                return
        if now - seen.last_growth >= self.settings.stuck_s and not seen.stuck_reported:
            seen.stuck_reported = True
            await self._stuck(entry, now - seen.last_growth)

    async def _session(self, key: str) -> Any:
        rpc = await self._connected()
        if rpc is None:
            return None
        try:
            sessions = await rpc.list_sessions(active_minutes=ACTIVE_MINUTES)
        except GatewayError as exc:
            self.log.warning("dispatch.activity_unreadable", label=self.label, error=str(exc))
            return None
        return next((s for s in sessions if s.key == key), None)

    async def _active(self, now: float, tokens: int | None) -> None:
        self.activity.last_growth = now
        self.activity.stuck_reported = False  # a new spell may be reported again
        extended = min(self.ceiling, now + self.settings.extend_s)
        if extended > self.deadline:
            self.deadline = extended
        await self.door.update(self.label, {"last_activity_at": self._now_text(),
                                            "activity_tokens": tokens}, self._now_text(),
                               only_if=[SubagentStatus.RUNNING])

    async def _stuck(self, entry: DispatchLabel, idle_s: float) -> None:
        minutes = max(1, round(idle_s / 60))
        notice = (f"\u26a0\ufe0f Dispatch: [{self.label}] shows no activity for {minutes} min "
                  "-- it may be stuck")
        self.log.warning("dispatch.no_activity", label=self.label, idle_s=round(idle_s, 1))
        await self.emit(STUCK, self.label, session_key=entry.session_key, notice=notice,
                        fields={"idle_s": round(idle_s, 1)})

    # -- endings ---------------------------------------------------------------------------------

    async def _run_ended(self, entry: DispatchLabel, status: RunStatus) -> WatchResult | None:
        if status.status == "ok":
            return await self._succeeded(entry)
        text = status.error or status.stop_reason or f"run ended with status {status.status}"
        return await self._failed_run(entry, text)

    async def _failed_run(self, entry: DispatchLabel, text: str) -> WatchResult | None:
        """A failed run (the gateway's word, or the ledger's from another writer): retried when
        its error is transient and retries remain, else the label's and the watch's end."""
        again = await self.door.get(self.label)
        if again is None:
            return WatchResult("cancelled", self.label, error="the dispatch label was deleted")
        if again.is_terminal:
            return await self._ended_elsewhere(again)  # cancelled (aborted) or done meanwhile
        entry = again  # its retry counters as they are now
        if is_overload_error(text):
            return await self._retry(entry, text, "overload")
        if is_gateway_restart_kill(text):
            return await self._retry(entry, text, "restart")
        return await self._fail(entry, text)

    async def _retry(self, entry: DispatchLabel, text: str, kind: str) -> WatchResult | None:
        overload = kind == "overload"
        done = entry.retry_count if overload else entry.restart_retry_count
        most = self.settings.max_overload_retries if overload else self.settings.max_restart_retries
        what = "529 overload" if overload else "gateway restart"
        if done >= most:
            await self.door.notice(self.label, f"\U0001f336\ufe0f Dispatch: [{self.label}] hit max "
                                   f"retries ({most}x {what}) -- giving up", self._now_text())
            reason = (f"max_retries_exceeded ({done}x 529): {text}" if overload
                      else f"gateway-restart-kill: max retries exceeded ({done}x -- {text})")
            return await self._fail(entry, reason)
        number = done + 1
        wait = self.settings.retry_wait_s(number)
        self.log.warning("dispatch.retrying", label=self.label, kind=kind, attempt=number,
                         max=most, wait_s=wait, error=text[:300])
        await self.door.notice(self.label, f"\U0001f336\ufe0f Dispatch: [{self.label}] hit {what} -- "
                               f"retry {number}/{most} in {wait:g}s", self._now_text())
        await self.sleep(wait)
        run_id = await self._resend(entry, kind, number)
        if run_id is None:
            return None  # the gateway is away: the failed run is met again next slice
        counter = "retry_count" if overload else "restart_retry_count"
        changes = {counter: number, "gateway_run_id": run_id, "status": SubagentStatus.RUNNING.value,
                   "error": None, "mode": SubagentMode.REUSE.value}
        updated = await self.door.update(self.label, changes, self._now_text(),
                                         only_if=[SubagentStatus.RUNNING, *_RETRYABLE_STATES])
        self.activity = _Activity(last_growth=self.clock())
        if updated is None:
            return await self._ended_elsewhere_or_gone()
        return None

    async def _resend(self, entry: DispatchLabel, kind: str, number: int) -> str | None:
        """The task again, on the same session; the idempotency key makes a replayed watch that
        repeats this retry reach the same run, not a second one."""
        rpc = await self._connected()
        if rpc is None:
            return None
        lead = OVERLOAD_RESUME if kind == "overload" else RESTART_RESUME
        message = f"{lead}\n\nThe task, as dispatched:\n{entry.task_prompt}" if entry.task_prompt else lead
        try:
            run_id, _ = await rpc.start_agent_turn(
                message, entry.session_key, label=self.label, timeout_s=float(entry.timeout_s),
                idempotency_key=f"{entry.session_key}:{kind}-retry:{number}")
        except GatewayAuthRefused as exc:
            raise WatchFailed(f"{exc}; the watch cannot follow the dispatch") from None
        except GatewayError as exc:
            await self._lost(exc)
            return None
        self.log.info("dispatch.retried", label=self.label, kind=kind, attempt=number, run_id=run_id)
        return run_id

    async def _succeeded(self, entry: DispatchLabel) -> WatchResult:
        reply = await self._last_reply(entry.session_key)
        completion = normalize_completion(reply or "") or None
        now = self._now_text()
        changes = {"status": SubagentStatus.DONE.value, "completion": completion, "error": None,
                   "summary": (reply or "completed")[:SUMMARY_CHARS], "finished_at": now}
        updated = await self.door.update(self.label, changes, now, only_if=[SubagentStatus.RUNNING])
        if updated is None:
            return await self._ended_elsewhere_or_gone()
        await self.emit(FINISHED, self.label, session_key=entry.session_key, completion=reply,
                        deliver_to=entry.deliver_to, channel=entry.deliver_channel,
                        fields={"status": "done", "retries": entry.retry_count})
        await self._disarm(updated)
        return WatchResult("ok", self.label, completion=completion, reply=reply,
                           session_key=entry.session_key, retries=entry.retry_count)

    async def _last_reply(self, session_key: str) -> str | None:
        for _ in range(3):  # a dropped connection right after the run ended: try again
            rpc = await self._connected()
            if rpc is None:
                await self.sleep(self.settings.poll_s)
                continue
            try:
                return await rpc.last_assistant_text(session_key)
            except GatewayAuthRefused as exc:
                raise WatchFailed(f"{exc}; the watch cannot follow the dispatch") from None
            except GatewayError as exc:
                await self._lost(exc)
        return None

    async def _timed_out(self, entry: DispatchLabel) -> WatchResult:
        waited = round(self.deadline - self.spawned)
        reason = f"timed out after {waited}s without a result"
        if self.unreachable:
            reason += " (the gateway could not be reached)"
        result = await self._fail(entry, reason)
        return replace(result, status="timeout") if result.status == "error" else result

    async def _fail(self, entry: DispatchLabel, reason: str) -> WatchResult:
        now = self._now_text()
        updated = await self.door.update(
            self.label, {"status": SubagentStatus.ERROR.value, "error": reason[:4000],
                         "finished_at": now}, now,
            only_if=[SubagentStatus.RUNNING, *_RETRYABLE_STATES])
        if updated is None:
            return await self._ended_elsewhere_or_gone()
        await self._disarm(updated)
        return WatchResult("error", self.label, error=reason, session_key=entry.session_key,
                           retries=entry.retry_count)

    async def _ended_elsewhere_or_gone(self) -> WatchResult:
        entry = await self.door.get(self.label)
        if entry is None:
            return WatchResult("cancelled", self.label, error="the dispatch label was deleted")
        if entry.is_terminal:
            return await self._ended_elsewhere(entry)
        return WatchResult("error", self.label, error=entry.error or f"label ended {entry.status}",
                           session_key=entry.session_key, retries=entry.retry_count)

    async def _ended_elsewhere(self, entry: DispatchLabel) -> WatchResult:
        """Another writer ended the label (``dispatch done`` / ``cancel``): its word stands."""
        self.log.info("dispatch.ended_elsewhere", label=self.label, status=str(entry.status))
        await self._disarm(entry)
        return self._result_of(entry)

    async def _already_ended(self, entry: DispatchLabel) -> WatchResult:
        """A replayed watch of a label that ended: its recorded completion, nothing restarted."""
        self.log.info("dispatch.already_ended", label=self.label, status=str(entry.status))
        await self._disarm(entry)
        return self._result_of(entry)

    def _result_of(self, entry: DispatchLabel) -> WatchResult:
        if entry.status is SubagentStatus.DONE:
            completion = entry.completion or normalize_completion(entry.summary or "") or None
            return WatchResult("ok", self.label, completion=completion,
                               reply=entry.summary or entry.completion,
                               session_key=entry.session_key, retries=entry.retry_count)
        return WatchResult("cancelled", self.label, error=entry.error or "the dispatch was cancelled",
                           session_key=entry.session_key, retries=entry.retry_count)

    async def _disarm(self, entry: DispatchLabel) -> None:
        if not entry.watchdog_job_id:
            return
        try:
            removed = await self.door.disarm(entry.watchdog_job_id)
        except SchedulerError as exc:  # the watchdog self-destructs on the terminal result anyway
            self.log.warning("dispatch.disarm_failed", label=self.label, error=str(exc))
            return
        if removed:
            self.log.info("dispatch.watchdog_disarmed", label=self.label,
                          job_id=entry.watchdog_job_id)



# -- the daemon's strategy for job_type 'dispatch' -----------------------------------------------

DELIVERY_CHARS: Final = 3500


def dispatch_announcement(job: Job, result: WatchResult) -> str | None:
    """What the run delivers, by the shell rule the reference's watcher job followed (§4.4):
    announce-always sends the completion (failures prefixed), announce sends failures only."""
    if result.status == "cancelled" or job.delivery_mode not in ANNOUNCE_MODES:
        return None
    if result.status == "ok":
        if job.delivery_mode != DeliveryMode.ANNOUNCE_ALWAYS or not result.completion:
            return None  # nothing meaningful to say (the normaliser emptied it): nothing sent
        text = result.completion
        if len(text) > DELIVERY_CHARS:
            text = text[:DELIVERY_CHARS] + "\n\n..[truncated]"
        return f"\u2705 [{result.label}] done\n\n{text}"
    return f"\u26a0\ufe0f Dispatch [{result.label}] failed\n\n{result.error or result.status}"


def watch_outcome(job: Job, result: WatchResult) -> Outcome:
    columns: dict[str, Any] = {"summary": result.summary}
    if result.session_key:
        columns["session_key"] = result.session_key
    if result.status != "ok":
        columns["error_message"] = result.error or result.status
    return Outcome(result.status, columns, delivery_text=dispatch_announcement(job, result),
                   content=result.reply if result.status == "ok" else result.error)


class DispatchWatchStrategy:
    """Runs :func:`watch_dispatch` for the job's label (``watchdog_target_label``) in-process.
    When the daemon stops, the watch stops at once and the claim is given back (the work stays
    due): the gateway run goes on, and the next start resumes watching it."""

    def __init__(self, *, door: LedgerDoor, rpc_factory: Callable[[], GatewayRpc], emit: Emitter,
                 settings: WatchSettings, stopping: asyncio.Event, log: Any) -> None:
        self.door = door
        self.rpc_factory = rpc_factory
        self.emit = emit
        self.settings = settings
        self.stopping = stopping
        self.log = log

    async def execute(self, job: Job, run: Run) -> Outcome:
        label = job.watchdog_target_label
        if not label:
            return Outcome("error", {"error_message": "dispatch job missing watchdog_target_label"})
        watch = asyncio.create_task(watch_dispatch(
            label, door=self.door, rpc_factory=self.rpc_factory, emit=self.emit,
            settings=self.settings, log=self.log), name=f"dispatch-watch-{run.id}")
        stop = asyncio.create_task(self.stopping.wait())
        try:
            await asyncio.wait({watch, stop}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop.cancel()
            if not watch.done():
                watch.cancel()
                with contextlib.suppress(BaseException):
                    await watch
        if watch.cancelled():
            self.log.info("dispatch.watch_handed_back", label=label, run_id=run.id)
            raise DeferRun("daemon stopping: the dispatch watch resumes at the next start")
        result = watch.result()
        self.log.info("dispatch.watch_ended", label=label, run_id=run.id, status=result.status,
                      retries=result.retries)
        return watch_outcome(job, result)

