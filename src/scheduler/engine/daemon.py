"""The daemon's lifecycle and its scheduling loop.

One asyncio loop. It sleeps until the earliest due instant (or until the CLI writes, noticed
through ``PRAGMA data_version``), claims due work in one transaction, and runs each claim as its
own task, up to ``SCHEDULER_MAX_CONCURRENCY`` at once, so a long job never delays another.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import time
from dataclasses import dataclass, field
from datetime import timedelta

from scheduler import __version__, cron
from scheduler.config import Settings
from scheduler.engine import lock as daemon_lock
from scheduler.engine.delivery import OutboundSender
from scheduler.engine.orphans import kill_processes_of_runs
from scheduler.errors import SchedulerError
from scheduler.gateway.client import GatewayClient, resolve_token
from scheduler.logs import get as get_logger
from scheduler.store import claims as claim_store
from scheduler.store import queue as queue_store
from scheduler.store import recovery
from scheduler.store import runs as run_store
from scheduler.store.asyncdb import AsyncDatabase
from scheduler.store.claims import Claim
from scheduler.store.db import Database, Row
from scheduler.store.finish import Finish, Finished, FinishPolicy, finish_runs
from scheduler.store.messages import Delivery
from scheduler.strategies.agent import AgentStrategy
from scheduler.strategies.base import DeferRun, Outcome, Strategy
from scheduler.strategies.shell_job import ShellJobStrategy
from scheduler.strategies.watchdog import WatchdogStrategy
from scheduler.timeutil import from_sqlite, sqlite_now, to_sqlite, utcnow

# Error backoff after consecutive failures of a cron job (reference §5.3), in seconds.
ERROR_BACKOFF_S = (30, 60, 300, 900, 3600)
# Never sleep less than this when due work exists but nothing could be claimed (no hot spin).
MIN_IDLE_SLEEP_S = 0.05
# After a database error in the loop, wait this long before the next attempt.
DB_RETRY_S = 1.0
# Recording a run's end is retried for this long (a full disk may be freed) before giving up;
# a run left `running` is then marked `crashed` at the next start, never lost.
FINISH_RETRY_S = (0.5, 1, 2, 5, 10, 30)
# Gateway health: checked every minute while up; while down, with backoff between these bounds.
GATEWAY_HEALTHY_CHECK_S = 60.0
GATEWAY_RETRY_MIN_S = 1.0
GATEWAY_RETRY_MAX_S = 30.0
AGENT_TARGETS = frozenset({"isolated", "main"})
# Strategies enforce run_timeout_ms themselves; the health check cancels a run this much later.
OVERDUE_GRACE_S = 30.0


def error_backoff_s(consecutive_errors: int) -> int:
    if consecutive_errors <= 0:
        return 0
    return ERROR_BACKOFF_S[min(consecutive_errors, len(ERROR_BACKOFF_S)) - 1]


@dataclass
class _Active:
    claim: Claim
    task: asyncio.Task[None]
    work: asyncio.Task[Outcome] | None = None
    started: float = field(default_factory=time.monotonic)
    overdue: bool = False  # cancelled by the health check for running past run_timeout_ms


class Daemon:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.log = get_logger("scheduler.daemon")
        self.db = AsyncDatabase(settings.db_path, synchronous=settings.sqlite_synchronous)
        self.strategies: dict[str, Strategy] = {
            "shell": ShellJobStrategy(
                shell=settings.shell,
                artifacts_dir=settings.artifacts_path,
                env_allow=settings.shell_env_allow,
                max_output_bytes=settings.max_output_bytes,
            )
        }
        token = settings.gateway_token.get_secret_value() if settings.gateway_token else None
        self.gateway = GatewayClient(
            settings.gateway_url, resolve_token(token, settings.gateway_token_path.expanduser())
        )
        agent = AgentStrategy(self.gateway, self.db, log=get_logger("scheduler.agent"),
                              on_gateway_down=self._gateway_went_down)
        self.strategies.update({target: agent for target in AGENT_TARGETS})
        self.strategies[claim_store.WATCHDOG] = WatchdogStrategy(
            shell=settings.shell, env_allow=settings.shell_env_allow
        )
        self.gateway_healthy = False
        self._check_gateway_now = asyncio.Event()
        self.active: dict[str, _Active] = {}
        self.wake = asyncio.Event()
        self.stopping = asyncio.Event()
        self._force_stop = asyncio.Event()
        self._data_version = 0
        self._to_record: list[tuple[Finish, asyncio.Future[None]]] = []
        self._record_ready = asyncio.Event()
        self.deliveries_ready = asyncio.Event()  # an outbound message was recorded

    @property
    def targets(self) -> frozenset[str]:
        """Targets claimed now: agent jobs wait, due, while the gateway is unreachable."""
        if self.gateway_healthy:
            return frozenset(self.strategies)
        return frozenset(self.strategies) - AGENT_TARGETS

    def _gateway_went_down(self) -> None:
        if self.gateway_healthy:
            self.log.warning("gateway.down", url=self.settings.gateway_url)
        self.gateway_healthy = False
        self._check_gateway_now.set()

    async def _watch_gateway(self) -> None:
        """Every minute while healthy; while down, again after 1 s, 2 s, 4 s, … 30 s."""
        delay = GATEWAY_RETRY_MIN_S
        while True:
            wait = GATEWAY_HEALTHY_CHECK_S if self.gateway_healthy else delay
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._check_gateway_now.wait(), timeout=wait)
            self._check_gateway_now.clear()
            healthy = await self.gateway.health()
            if healthy and not self.gateway_healthy:
                self.log.info("gateway.up", url=self.settings.gateway_url)
                self.wake.set()
            elif not healthy and self.gateway_healthy:
                self.log.warning("gateway.down", url=self.settings.gateway_url)
            self.gateway_healthy = healthy
            delay = GATEWAY_RETRY_MIN_S if healthy else min(GATEWAY_RETRY_MAX_S, delay * 2)

    # -- lifecycle ---------------------------------------------------------------------------

    async def run(self) -> int:
        _use_pidfd_child_watcher()
        database = self.settings.db_path
        held = daemon_lock.acquire(
            database,
            {"pid": os.getpid(), "since": sqlite_now(), "version": __version__, "db": str(database)},
        )
        try:
            await self.db.open()
            try:
                self._check_token_file()
                self.gateway_healthy = await self.gateway.health()
                self.log.info("gateway.up" if self.gateway_healthy else "gateway.down",
                              url=self.settings.gateway_url)
                await self._recover()
                self._install_signal_handlers()
                self.log.info(
                    "daemon.started",
                    version=__version__,
                    pid=os.getpid(),
                    db=str(database),
                    max_concurrency=self.settings.max_concurrency,
                    tick_ms=self.settings.tick_ms,
                )
                await self._serve()
            finally:
                await self.gateway.aclose()
                await self.db.close(checkpoint=True)
        finally:
            held.release()
        self.log.info("daemon.stopped")
        return 0

    def _check_token_file(self) -> None:
        """A token file others can read is a leaked token: say so (the content is never read here)."""
        path = self.settings.gateway_token_path.expanduser()
        try:
            mode = path.stat().st_mode & 0o777
        except OSError:
            return
        if mode & 0o077:
            self.log.warning("gateway.token_file_permissions", path=str(path), mode=oct(mode),
                             fix=f"chmod 600 {path}")

    def _install_signal_handlers(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.request_stop, sig.name)

    def request_stop(self, reason: str = "request") -> None:
        if self.stopping.is_set():
            self.log.warning("daemon.stop_forced", reason=reason)
            self._force_stop.set()
        else:
            self.log.info("daemon.stopping", reason=reason, running=len(self.active))
            self.stopping.set()
        self.wake.set()

    async def _recover(self) -> None:
        found = await self.db.run(recovery.recover_orphans, sqlite_now())
        replayed = {row["retry_of_run_id"] for row in found.replays}
        for run in found.crashed:
            self.log.warning("run.crashed", run_id=run["id"], job_id=run["job_id"],
                             replay=run["id"] in replayed)
        if found.crashed:
            killed = kill_processes_of_runs({run["id"] for run in found.crashed})
            for pid, run_id in killed.items():
                self.log.warning("run.orphan_killed", run_id=run_id, pid=pid)
        for job in await self.db.run(recovery.jobs_missing_next_run):
            await self.db.run(recovery.set_next_run, job["id"], self._next_fire_text(job))
        unsupported = await self.db.run(claim_store.jobs_without_strategy, self.targets)
        if unsupported:
            self.log.warning(
                "jobs.waiting_for_strategy",
                count=len(unsupported),
                job_ids=[j["id"] for j in unsupported[:20]],
                note="these jobs stay due until a strategy for their target is available",
            )
        self._data_version = await self.db.run(Database.data_version)

    async def _serve(self) -> None:
        sender = OutboundSender(
            self.db, self.gateway, self.deliveries_ready, get_logger("scheduler.delivery")
        )
        helpers = [
            asyncio.create_task(self._recorder(), name="recorder"),
            asyncio.create_task(sender.run(), name="outbound"),
            asyncio.create_task(self._watch_gateway(), name="gateway-health"),
            asyncio.create_task(self._watch_for_writes(), name="watch-writes"),
            asyncio.create_task(self._beat_running_runs(), name="run-heartbeat"),
            asyncio.create_task(self._check_run_health(), name="run-health"),
        ]
        try:
            await self._schedule_loop()
            await self._drain()
        finally:
            for task in helpers:
                task.cancel()
            await asyncio.gather(*helpers, return_exceptions=True)

    async def _drain(self) -> None:
        """Let running work finish within the grace period, then cancel what is left."""
        if not self.active:
            return
        grace = self.settings.shutdown_grace_ms / 1000
        self.log.info("daemon.draining", running=len(self.active), grace_s=grace)
        deadline = time.monotonic() + grace
        force = asyncio.create_task(self._force_stop.wait())
        while self.active and not force.done():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            running = [a.task for a in self.active.values()]
            await asyncio.wait([*running, force], timeout=remaining, return_when=asyncio.FIRST_COMPLETED)
        force.cancel()
        for active in list(self.active.values()):
            if active.work is not None and not active.work.done():
                active.work.cancel()
        if self.active:
            await asyncio.wait([a.task for a in self.active.values()])

    # -- the scheduling loop -----------------------------------------------------------------

    async def _schedule_loop(self) -> None:
        while not self.stopping.is_set():
            self.wake.clear()
            try:
                free = self.settings.max_concurrency - len(self.active)
                claimed = await self._claim(free) if free > 0 else 0
                delay = await self._sleep_budget(free - claimed, claimed)
            except SchedulerError as exc:
                # Locked, full or read-only database: nothing was claimed; try again shortly.
                self.log.error("scheduler.db_error", error=str(exc), retry_in_s=DB_RETRY_S)
                delay = DB_RETRY_S
            if self.stopping.is_set():
                break
            if delay > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.wake.wait(), timeout=delay)

    async def _claim(self, free: int) -> int:
        now_text = to_sqlite(utcnow())
        batch = await self.db.run(
            claim_store.claim_due, now_text, free, self.targets, self._next_fire_text
        )
        for skipped in batch.skipped:
            self.log.info("run.skipped", run_id=skipped["id"], job_id=skipped["job_id"],
                          reason=skipped["error_message"])
        for claim in batch.claims:
            self._start(claim)
        if batch.claims or batch.postponed:
            self.log.debug("scheduler.claimed", runs=len(batch.claims), skipped=len(batch.skipped),
                           postponed=batch.postponed, free_slots=free)
        return len(batch.claims)

    async def _sleep_budget(self, free: int, claimed: int) -> float:
        tick = self.settings.tick_ms / 1000
        if free <= 0:
            return tick  # a finishing run sets `wake`
        if claimed:
            return 0.0  # look again at once: more may be due
        next_due = await self.db.run(claim_store.next_due_at, self.targets)
        if next_due is None:
            delay = tick
        else:
            wait = (from_sqlite(next_due) - utcnow()).total_seconds()
            delay = MIN_IDLE_SLEEP_S if wait <= 0 else min(tick, wait)
        self.log.debug("scheduler.sleep", next_due=next_due, delay_s=round(delay, 3))
        return delay

    def _next_fire_text(self, job: Row) -> str | None:
        expr = job["schedule_cron"]
        if not expr:
            return None
        try:
            fire = cron.next_fire(str(expr), str(job["schedule_tz"] or "UTC"), utcnow())
        except SchedulerError as exc:
            self.log.error("job.bad_schedule", job_id=job["id"], error=str(exc))
            return None
        return None if fire is None else to_sqlite(fire)

    # -- running one claim -------------------------------------------------------------------

    def _start(self, claim: Claim) -> None:
        task = asyncio.create_task(self._execute(claim), name=f"run-{claim.run['id']}")
        self.active[claim.run["id"]] = _Active(claim=claim, task=task)

    async def _execute(self, claim: Claim) -> None:
        run_id = claim.run["id"]
        active = self.active[run_id]
        job = claim.job
        self.log.info("run.started", run_id=run_id, job_id=job["id"], job=job["name"], source=claim.source)
        kind = claim_store.WATCHDOG if job["job_type"] == "watchdog" else job["session_target"]
        strategy = self.strategies[kind]
        work = asyncio.create_task(strategy.execute(job, claim.run))
        active.work = work
        try:
            outcome = await work
        except DeferRun as deferred:
            await self._defer(claim, deferred.reason)
            return
        except asyncio.CancelledError:
            if active.overdue:
                limit = int(claim.run["run_timeout_ms"] or 0)
                outcome = Outcome("timeout", {"error_message": f"Exceeded {limit}ms timeout"})
            else:
                outcome = Outcome("cancelled", {"error_message": "Cancelled: daemon shutdown"})
        except Exception as exc:  # a strategy bug must still end the run, never leave it running
            self.log.exception("run.strategy_failed", run_id=run_id, job_id=job["id"])
            outcome = Outcome("error", {"error_message": f"internal error: {exc}"})
        duration_ms = int((time.monotonic() - active.started) * 1000)
        try:
            await self._record(claim, outcome, duration_ms)
        finally:
            self.active.pop(run_id, None)
            self.wake.set()

    async def _defer(self, claim: Claim, reason: str) -> None:
        try:
            await self.db.run(claim_store.defer_claim, claim, sqlite_now(), reason)
            self.log.warning("run.deferred", run_id=claim.run["id"], job_id=claim.job["id"], reason=reason)
        except SchedulerError as exc:  # left `running`: the health check or next start ends it
            self.log.error("run.defer_failed", run_id=claim.run["id"], error=str(exc))
        finally:
            self.active.pop(claim.run["id"], None)
            self.wake.set()

    def _submit(self, claim: Claim, outcome: Outcome, duration_ms: int) -> asyncio.Future[None]:
        """Hand a run's end to the recorder; the future resolves once it is committed (or given up)."""
        finish = Finish(claim, outcome.status, duration_ms, outcome.columns,
                        delivery=_delivery_of(claim.job, outcome), remove_job=outcome.remove_job)
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._to_record.append((finish, done))
        self._record_ready.set()
        return done

    async def _record(self, claim: Claim, outcome: Outcome, duration_ms: int) -> None:
        await self._submit(claim, outcome, duration_ms)

    async def _recorder(self) -> None:
        """Commit run endings in batches: whatever ended while the last batch was written goes
        into the next transaction. A batch that fails is retried on FINISH_RETRY_S; past that
        its runs stay `running` in the database and the next start marks them crashed."""
        attempt = 0
        while True:
            await self._record_ready.wait()
            self._record_ready.clear()
            batch, self._to_record = self._to_record, []
            if not batch:
                continue
            try:
                rows = await self.db.run(finish_runs, [finish for finish, _ in batch], self._policy())
            except SchedulerError as exc:
                attempt += 1
                give_up = attempt > len(FINISH_RETRY_S)
                self.log.error("run.record_failed", runs=len(batch), attempt=attempt, error=str(exc),
                               gave_up=give_up)
                if give_up:
                    attempt = 0
                    for _, done in batch:
                        done.set_result(None)
                else:
                    self._to_record[:0] = batch
                    await asyncio.sleep(FINISH_RETRY_S[attempt - 1])
                    self._record_ready.set()
                continue
            attempt = 0
            for (finish, done), finished in zip(batch, rows, strict=True):
                self._log_finish(finish, finished)
                done.set_result(None)

    def _log_finish(self, finish: Finish, finished: Finished) -> None:
        job = finished.job
        self.log.info(
            "run.finished",
            run_id=finish.claim.run["id"],
            job_id=finish.claim.job["id"],
            status=finish.status,
            duration_ms=finish.duration_ms,
            error=finish.columns.get("error_message"),
            next_run_at=None if job is None else job["next_run_at"],
            job_removed=job is None,
            retry_at=None if finished.retry is None else finished.retry["scheduled_for"],
            delivery=None if finished.message is None else finished.message["id"],
        )
        if finished.message is not None:
            self.deliveries_ready.set()

    def _policy(self) -> FinishPolicy:
        return FinishPolicy(now_text=sqlite_now(), backoff_until=self._backoff_until,
                            retry_at=self._retry_at)

    def _retry_at(self, attempt: int) -> str:
        """Retry n is due base × 2^(n−1) after now (30 s, 60 s, 120 s, … at the default base).
        Rounded up to the whole second the stored text can hold, so a retry never comes early."""
        delay_ms = self.settings.retry_base_ms * 2 ** (max(attempt, 1) - 1)
        due = utcnow() + timedelta(milliseconds=delay_ms)
        if due.microsecond:
            due = due.replace(microsecond=0) + timedelta(seconds=1)
        return to_sqlite(due)

    def _backoff_until(self, consecutive_errors: int) -> str:
        return to_sqlite(utcnow() + timedelta(seconds=error_backoff_s(consecutive_errors)))

    # -- background duties -------------------------------------------------------------------

    async def _watch_for_writes(self) -> None:
        interval = self.settings.wake_poll_ms / 1000
        while True:
            await asyncio.sleep(interval)
            try:
                version = await self.db.run(Database.data_version)
            except SchedulerError as exc:
                self.log.warning("db.poll_failed", error=str(exc))
                continue
            if version != self._data_version:
                self._data_version = version
                self.wake.set()

    async def _check_run_health(self) -> None:
        """Every SCHEDULER_HEARTBEAT_CHECK_MS: end runs nobody watches (heartbeat older than
        SCHEDULER_STALE_THRESHOLD_S) as ``timeout``; cancel our own runs that outlived their
        ``run_timeout_ms`` (a strategy should have stopped them); close finished queue rows.
        Timeouts go through the same recording path as any failure: retries, job state."""
        interval = self.settings.heartbeat_check_ms / 1000
        threshold = self.settings.stale_threshold_s
        while True:
            await asyncio.sleep(interval)
            for active in list(self.active.values()):
                limit_s = (active.claim.run["run_timeout_ms"] or 0) / 1000
                if (limit_s and not active.overdue and active.work is not None
                        and time.monotonic() - active.started > limit_s + OVERDUE_GRACE_S):
                    self.log.warning("run.overdue", run_id=active.claim.run["id"], limit_s=limit_s)
                    active.overdue = True
                    active.work.cancel()
            try:
                stale = await self.db.run(
                    recovery.unwatched_stale_runs, threshold, sqlite_now(), set(self.active)
                )
                await self.db.run(queue_store.reap, sqlite_now())
            except SchedulerError as exc:
                self.log.warning("run.health_check_failed", error=str(exc))
                continue
            for claim in stale:
                self.log.warning("run.stale", run_id=claim.run["id"], job_id=claim.job["id"],
                                 last_heartbeat=claim.run["last_heartbeat"])
                message = f"No heartbeat for {threshold}s and no process watching the run"
                outcome = Outcome("timeout", {"error_message": message})
                self._submit(claim, outcome, _age_ms(claim.run["started_at"]))

    async def _beat_running_runs(self) -> None:
        interval = self.settings.run_heartbeat_ms / 1000
        while True:
            await asyncio.sleep(interval)
            if not self.active:
                continue
            try:
                await self.db.run(run_store.beat, list(self.active), sqlite_now())
            except SchedulerError as exc:
                self.log.warning("run.heartbeat_failed", error=str(exc))


def _delivery_of(job: Row, outcome: Outcome) -> Delivery | None:
    text = outcome.delivery_text
    if not text or not text.strip():
        return None
    if outcome.delivery_target is not None:
        channel, target = outcome.delivery_target
        return Delivery(text=text, channel=channel, target=target)
    if job["delivery_mode"] not in ("announce", "announce-always"):
        return None
    return Delivery(text=text, channel=job["delivery_channel"], target=job["delivery_to"])


def _age_ms(started_at: str) -> int:
    return max(0, int((utcnow() - from_sqlite(started_at)).total_seconds() * 1000))


def _use_pidfd_child_watcher() -> None:
    """On Python 3.11 asyncio reaps each child with a thread of its own, and the loop waits for
    that thread to start: measured at 0.37 ms of the loop's time per run. A pidfd watcher (what
    3.12 uses by default) reaps through the event loop instead. Linux 5.3+ only; else unchanged."""
    if sys.version_info >= (3, 12) or not hasattr(os, "pidfd_open"):
        return
    try:
        os.close(os.pidfd_open(os.getpid()))
    except OSError:
        return
    watcher = asyncio.PidfdChildWatcher()
    asyncio.set_child_watcher(watcher)
    watcher.attach_loop(asyncio.get_running_loop())


def run_daemon(settings: Settings) -> int:
    return asyncio.run(Daemon(settings).run())
