"""The stuck-run detector (features.md §15.2, the reference's ``stuck-run-detector.mjs``).

One pass looks at the running runs older than a threshold (45 minutes by default):

* a run of an ordinary job is reported at once, in the reference's line format;
* a run of a dispatch delivery watcher (job type ``dispatch``, or a job named
  ``<brand>-deliver:<label>``, whose label is in the dispatch ledger) first goes through a
  liveness gate: a label the ledger says is finished is skipped, and so is one whose gateway
  session shows activity within :data:`LIVENESS_WINDOW_S`. Otherwise the session is steered
  once (``sessions.send``, the reference's "[Auto-steer] ..." text) and the steer is remembered
  in the ledger (``steered_at``, ``activity_tokens`` = the session's tokens then). A later pass
  that finds the label still silent, with no more tokens than at the steer and no activity the
  watcher recorded since (``last_activity_at``), reports it, once (``alerted_at``). A steer sent
  by hand (``dispatch send``, which sets ``steered_at``) counts as the steer. When the label is
  no longer stale, that memory is cleared.

Our runs carry a heartbeat while the daemon watches their work, so a heartbeat older than
minutes never exists under a live daemon (its health check ends such runs after
``SCHEDULER_STALE_THRESHOLD_S``). What the reference measured in practice, since it never wrote
heartbeats, is the time since the run started; so do we (``stale_s``), and a fresh
``last_heartbeat`` in a report says the daemon still watches that work.

Both the CLI (``runs stuck``, synchronous store) and the daemon's maintenance task (store on its
own thread) run :func:`detect_stuck_runs`: the store is reached through ``call`` and the gateway
through ``open_gateway``, opened only when a watcher run needs it.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import Any, Final, Protocol

from scheduler.errors import SchedulerError
from scheduler.models.dispatch import DispatchLabel
from scheduler.models.enums import SubagentStatus
from scheduler.store.api import Delivery, Row, Store
from scheduler.store.thread import StoreThread
from scheduler.timeutil import from_sqlite, to_sqlite, utcnow

DEFAULT_THRESHOLD_MIN: Final = 45
ALERT_SUBJECT: Final = "stuck runs"
DEFAULT_LIMIT: Final = 20
#: A session whose tokens moved within this is alive, whatever its run's age (the reference's).
LIVENESS_WINDOW_S: Final = 180
DISPATCH_JOB_TYPE: Final = "dispatch"
#: How many running labels a pass looks at to clear the memory of a spell that ended.
LEDGER_SCAN_LIMIT: Final = 1000
_DELIVER_NAME: Final = re.compile(r"^.+-deliver:(.+)$", re.DOTALL)

StoreCall = Callable[..., Awaitable[Any]]


class SessionInfo(Protocol):
    """What the detector reads of one ``sessions.list`` entry."""

    @property
    def key(self) -> str: ...
    @property
    def updated_at(self) -> int | None: ...  # ms since the epoch
    @property
    def total_tokens(self) -> int | None: ...


class SessionControl(Protocol):
    """The gateway calls the detector makes (``scheduler.gateway.rpc.GatewayRpc`` has them)."""

    async def list_sessions(self, active_minutes: int | None = None) -> Sequence[SessionInfo]: ...
    async def send_to_session(self, key: str, message: str) -> str | None: ...
    async def aclose(self) -> None: ...


GatewayOpener = Callable[[], Awaitable[SessionControl]]


def steer_text(stale_min: int) -> str:
    """The nudge sent into a silent sub-agent session (the reference's wording)."""
    return (f"[Auto-steer] You have been silent for {stale_min} minutes. Please reply with a brief "
            "progress update, then continue your task. If you are done, call the done signal as "
            "instructed in your prompt.")


def dispatch_label(row: Row) -> str | None:
    """The dispatch label a run's job watches, if it is a delivery watcher."""
    if row.get("job_type") == DISPATCH_JOB_TYPE and row.get("watchdog_target_label"):
        return str(row["watchdog_target_label"])
    match = _DELIVER_NAME.match(str(row.get("job_name") or ""))
    return match.group(1) if match else None


@dataclass(frozen=True)
class StaleRun:
    run_id: str
    job_id: str
    job_name: str
    started_at: str
    last_heartbeat: str | None
    run_timeout_ms: int | None
    stale_s: int
    label: str | None = None
    steer_note: str | None = None  # "steer=failed" | "steer=ignored"

    def line(self) -> str:
        """The reference's alert line."""
        suffix = f" {self.steer_note}" if self.steer_note else ""
        return (f'- run={self.run_id} job="{self.job_name}" job_id={self.job_id} '
                f"started={self.started_at} last_heartbeat={_js(self.last_heartbeat)} "
                f"stale_s={self.stale_s} timeout_ms={_js(self.run_timeout_ms)}{suffix}")


@dataclass(frozen=True)
class Activity:
    """A session's liveness as the gateway reports it (None: not known)."""

    tokens: int | None
    age_ms: int | None


@dataclass(frozen=True)
class Skipped:
    job_name: str
    label: str
    reason: str


@dataclass(frozen=True)
class Steered:
    label: str
    run_id: str
    age_ms: int | None
    tokens: int | None


@dataclass
class StuckReport:
    threshold_s: int
    alerts: list[StaleRun] = field(default_factory=list)
    steered: list[Steered] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)

    @property
    def threshold_text(self) -> str:
        return f"{self.threshold_s / 60:g}"

    @property
    def exit_code(self) -> int:
        """1 when something is stuck (the reference's exit status), else 0."""
        return 1 if self.alerts else 0

    def alert_text(self, runs: Sequence[StaleRun] | None = None) -> str:
        runs = self.alerts if runs is None else runs
        head = f"Detected {len(runs)} stale run(s) older than {self.threshold_text} minute(s):"
        return "\n".join([head, *(run.line() for run in runs)])

    def lines(self) -> list[str]:
        """The reference's output: skipped, steered, then the verdict."""
        out = [f'Skipped: job="{s.job_name}" label="{s.label}" -- {s.reason}' for s in self.skipped]
        out += [f"Steered: label={s.label} ageMs={_known(s.age_ms)} tokens={_known(s.tokens)} "
                "(awaiting response)" for s in self.steered]
        if self.alerts:
            out.append(self.alert_text())
        elif self.steered:
            out.append(f"No stuck runs -- {len(self.steered)} steered, awaiting response.")
        else:
            out.append(f"No stale runs older than {self.threshold_text} minute(s).")
        return out

    def as_dict(self) -> dict[str, Any]:
        return {"threshold_min": self.threshold_s / 60, "stuck": len(self.alerts),
                "alerts": [asdict(a) for a in self.alerts],
                "steered": [asdict(s) for s in self.steered],
                "skipped": [asdict(s) for s in self.skipped]}


def _js(value: object) -> str:
    return "null" if value is None else str(value)


def _known(value: object) -> str:
    return "?" if value is None else str(value)


async def detect_stuck_runs(call: StoreCall, store: Store, open_gateway: GatewayOpener, *,
                            threshold_s: int, limit: int, now: datetime, log: Any) -> StuckReport:
    """One pass of the detector at ``now``; see the module docstring."""
    rows = await call(store.long_running_runs, to_sqlite(now - timedelta(seconds=threshold_s)), limit)
    report = StuckReport(threshold_s)
    pass_ = _Pass(call, store, open_gateway, now, log, report)
    try:
        for row in rows:
            await pass_.look_at(_stale_run(row, now))
        if len(rows) < limit:  # a full page may have left stale labels out: keep their memory
            await pass_.forget_ended_spells()
    finally:
        await pass_.close()
    return report


def _stale_run(row: Row, now: datetime) -> StaleRun:
    started = str(row["started_at"])
    stale_s = max(0, int((now - from_sqlite(started)).total_seconds()))
    return StaleRun(run_id=str(row["id"]), job_id=str(row["job_id"]),
                    job_name=str(row.get("job_name") or ""), started_at=started,
                    last_heartbeat=row.get("last_heartbeat"), run_timeout_ms=row.get("run_timeout_ms"),
                    stale_s=stale_s, label=dispatch_label(row))


class _Pass:
    """The state of one detector pass: the gateway connection and session list, opened once."""

    def __init__(self, call: StoreCall, store: Store, open_gateway: GatewayOpener, now: datetime,
                 log: Any, report: StuckReport) -> None:
        self.call, self.store, self.open_gateway = call, store, open_gateway
        self.now, self.now_text, self.log, self.report = now, to_sqlite(now), log, report
        self.stale_labels: set[str] = set()
        self._gateway: SessionControl | None = None
        self._gateway_failed = False
        self._sessions: dict[str, SessionInfo] | None = None

    async def look_at(self, run: StaleRun) -> None:
        entry = await self.call(self.store.get_dispatch, run.label) if run.label else None
        if entry is None:
            self.report.alerts.append(run)  # an ordinary job: reported at once
            return
        self.stale_labels.add(entry.label)
        await self._gate_and_steer(run, entry)

    async def _gate_and_steer(self, run: StaleRun, entry: DispatchLabel) -> None:
        if entry.is_terminal:
            self._skip(run, entry, f"ledger status={entry.status}")
            return
        activity = await self._activity(entry.session_key)
        window_ms = LIVENESS_WINDOW_S * 1000
        if activity is not None and activity.age_ms is not None and activity.age_ms < window_ms:
            self._skip(run, entry, f"active (ageMs={activity.age_ms}ms < {window_ms}ms)")
            return
        if entry.alerted_at:
            self._skip(run, entry, f"already reported at {entry.alerted_at}")
        elif not entry.steered_at:
            await self._steer(run, entry, activity)
        else:
            await self._judge_steer(run, entry, activity)

    def _skip(self, run: StaleRun, entry: DispatchLabel, reason: str) -> None:
        self.report.skipped.append(Skipped(run.job_name, entry.label, reason))

    async def _steer(self, run: StaleRun, entry: DispatchLabel, activity: Activity | None) -> None:
        tokens = activity.tokens if activity is not None else None
        if not await self._send_steer(entry, round(run.stale_s / 60)):
            await self._alert(run, entry, "steer=failed")
            return
        await self.call(self.store.update_dispatch, entry.label,
                        {"steered_at": self.now_text, "activity_tokens": tokens or 0}, self.now_text)
        self.log.info("stuck_runs.steered", label=entry.label, run_id=run.run_id,
                      stale_s=run.stale_s, tokens=tokens)
        self.report.steered.append(Steered(entry.label, run.run_id,
                                           activity.age_ms if activity else None, tokens))

    async def _judge_steer(self, run: StaleRun, entry: DispatchLabel, activity: Activity | None) -> None:
        before = entry.activity_tokens or 0
        now_tokens = (activity.tokens if activity is not None else None) or 0
        # The watcher strategy records growth it sees (last_activity_at, activity_tokens), which
        # may have moved the count on since the steer: growth after the steer counts too.
        grew_since = bool(entry.last_activity_at and entry.steered_at
                          and entry.last_activity_at > entry.steered_at)
        if now_tokens > before or grew_since:
            await self.call(self.store.update_dispatch, entry.label,
                            {"steered_at": None, "activity_tokens": now_tokens}, self.now_text)
            self._skip(run, entry, f"steer worked (tokens {before}->{now_tokens})")
            return
        await self._alert(run, entry, "steer=ignored")

    async def _alert(self, run: StaleRun, entry: DispatchLabel, note: str) -> None:
        await self.call(self.store.update_dispatch, entry.label, {"alerted_at": self.now_text},
                        self.now_text)
        self.report.alerts.append(StaleRun(**{**asdict(run), "steer_note": note}))

    async def forget_ended_spells(self) -> None:
        """Labels steered or reported earlier that are not stale any more start afresh."""
        running = await self.call(self.store.list_dispatches, {SubagentStatus.RUNNING.value},
                                  LEDGER_SCAN_LIMIT)
        for entry in running:
            if entry.label not in self.stale_labels and (entry.steered_at or entry.alerted_at):
                await self.call(self.store.update_dispatch, entry.label,
                                {"steered_at": None, "alerted_at": None}, self.now_text)

    # -- the gateway ----------------------------------------------------------------------------

    async def _connection(self) -> SessionControl | None:
        if self._gateway is None and not self._gateway_failed:
            try:
                self._gateway = await self.open_gateway()
            except (SchedulerError, OSError) as exc:
                self._gateway_failed = True
                self.log.warning("stuck_runs.gateway_unavailable", error=str(exc))
        return self._gateway

    async def _activity(self, session_key: str) -> Activity | None:
        """The session's tokens and the age of its last update; None when the gateway cannot
        say (then the steer decides, as in the reference)."""
        if self._sessions is None:
            self._sessions = {}
            gateway = await self._connection()
            if gateway is not None:
                try:
                    self._sessions = {s.key: s for s in await gateway.list_sessions()}
                except SchedulerError as exc:
                    self.log.warning("stuck_runs.sessions_failed", error=str(exc))
        session = self._sessions.get(session_key)
        if session is None:
            return None
        age = None
        if session.updated_at is not None:
            age = max(0, int(self.now.timestamp() * 1000) - session.updated_at)
        return Activity(session.total_tokens, age)

    async def _send_steer(self, entry: DispatchLabel, stale_min: int) -> bool:
        gateway = await self._connection()
        if gateway is None or not entry.session_key:
            return False
        try:
            await gateway.send_to_session(entry.session_key, steer_text(stale_min))
        except SchedulerError as exc:
            self.log.warning("stuck_runs.steer_failed", label=entry.label, error=str(exc))
            return False
        return True

    async def close(self) -> None:
        if self._gateway is not None:
            with contextlib.suppress(Exception):  # closing must not hide the pass's outcome
                await self._gateway.aclose()


class StuckRunCheck:
    """The detector as a daemon maintenance task (``SCHEDULER_STUCK_RUN_CHECK_S``).

    Alerts become one outbound message per pass to the configured target, recorded in the
    database and sent by the outbound sender like any result. A watcher's label is reported once
    per silent spell (the ledger's ``alerted_at``); an ordinary run once per daemon life (kept in
    memory: a restart reports a run still stuck once more, which is better than never)."""

    def __init__(self, db: StoreThread, open_gateway: GatewayOpener, on_notice: Callable[[], None],
                 log: Any, *, interval_s: float, threshold_s: int, channel: str,
                 target: str | None, limit: int = DEFAULT_LIMIT) -> None:
        self.db, self.open_gateway, self.on_notice, self.log = db, open_gateway, on_notice, log
        self.interval_s, self.threshold_s, self.limit = interval_s, threshold_s, limit
        self.channel, self.target = channel, target
        self._reported: set[str] = set()

    async def run(self) -> None:
        if self.target is None:
            self.log.warning("stuck_runs.no_alert_target",
                             hint="set SCHEDULER_STUCK_RUN_ALERT_TO; alerts are only logged")
        while True:
            await asyncio.sleep(self.interval_s)
            await self.check_once()

    async def check_once(self) -> StuckReport | None:
        """One pass; a database error is logged and the next pass tries again."""
        try:
            report = await detect_stuck_runs(self.db.run, self.db.store, self.open_gateway,
                                             threshold_s=self.threshold_s, limit=self.limit,
                                             now=utcnow(), log=self.log)
            fresh = self._not_reported_yet(report.alerts)
            if fresh:
                await self._alert(report, fresh)
        except SchedulerError as exc:
            self.log.warning("stuck_runs.check_failed", error=str(exc))
            return None
        return report

    def _not_reported_yet(self, alerts: Sequence[StaleRun]) -> list[StaleRun]:
        # A watcher's alert is new by construction (the ledger); an ordinary run's, once.
        fresh = [a for a in alerts if a.steer_note is not None or a.run_id not in self._reported]
        self._reported = {a.run_id for a in alerts if a.steer_note is None}
        return fresh

    async def _alert(self, report: StuckReport, fresh: Sequence[StaleRun]) -> None:
        self.log.warning("runs.stuck", count=len(fresh), run_ids=[a.run_id for a in fresh],
                         labels=[a.label for a in fresh if a.label])
        if self.target is None:
            return
        delivery = Delivery(report.alert_text(fresh), self.channel, self.target)
        await self.db.run(self.db.store.record_notice, delivery, ALERT_SUBJECT, to_sqlite(utcnow()))
        self.on_notice()


def rpc_opener(base_url: str, token: str | None) -> GatewayOpener:
    """Opens the gateway's WebSocket control plane (one connection per detector pass)."""

    async def open_rpc() -> SessionControl:
        from scheduler.gateway.rpc import GatewayRpc

        rpc = GatewayRpc(base_url, token)
        await rpc.connect()
        return rpc

    return open_rpc
