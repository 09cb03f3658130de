"""The daemon's lifecycle and its scheduling loop.

One asyncio loop. It sleeps until the earliest due instant (or until the CLI writes, noticed
through ``PRAGMA data_version``), claims due work in one transaction, and runs each claim as its
own task, up to ``SCHEDULER_MAX_CONCURRENCY`` at once, so a long job never delays another.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from scheduler import __version__, cron
from scheduler.config import Settings
from scheduler.engine import lock as daemon_lock
from scheduler.engine import retention
from scheduler.engine.backups import PeriodicBackup
from scheduler.engine.clock import STEP_TOLERANCE_S, ClockWatch
from scheduler.engine.counters import Counters, NoCounters
from scheduler.engine.delivery import OutboundSender
from scheduler.engine.dispatch_watching import dispatch_strategy
from scheduler.engine.instance import InstanceHeartbeat
from scheduler.engine.leases import LeaseRecovery
from scheduler.engine.maintenance import MessageExpiry
from scheduler.engine.notify import Notifier
from scheduler.engine.orphans import kill_processes_of_runs
from scheduler.engine.providers import ProviderRegistry, load_providers
from scheduler.engine.recorder import Recorder
from scheduler.engine.spawn import SpawnHandler
from scheduler.engine.stuck_runs import StuckRunCheck, rpc_opener
from scheduler.engine.supervisor import OnFailure, Supervisor
from scheduler.engine.tracker import TaskTracker
from scheduler.engine.trust import Prepared, TrustGate, declares_trust
from scheduler.errors import SchedulerError, StoreCorruptError, StoreError, StoreGoneError
from scheduler.gateway.client import GatewayClient, resolve_token
from scheduler.logs import get as get_logger
from scheduler.media import MediaPolicy
from scheduler.models.enums import ANNOUNCE_MODES
from scheduler.models.records import Job, Run
from scheduler.store import open_store
from scheduler.store.api import (
    DISPATCH,
    WATCHDOG,
    Chained,
    Claim,
    ClaimBatch,
    Delivery,
    Finish,
    Finished,
    FinishPolicy,
    Owner,
    Store,
)
from scheduler.store.thread import StoreThread
from scheduler.strategies.agent import AgentStrategy
from scheduler.strategies.base import DeferRun, Outcome, Strategy
from scheduler.strategies.shell_job import ShellJobStrategy
from scheduler.strategies.watchdog import WatchdogStrategy
from scheduler.timeutil import from_sqlite, sqlite_now, to_sqlite, utcnow

if TYPE_CHECKING:
    from scheduler.engine.health import LiveState
    from scheduler.engine.http_endpoint import HttpEndpoint

# Error backoff after consecutive failures of a cron job (reference §5.3), in seconds.
ERROR_BACKOFF_S = (30, 60, 300, 900, 3600)
# Never sleep less than this when due work exists but nothing could be claimed (no hot spin).
MIN_IDLE_SLEEP_S = 0.05
# A cron fire time at most this old when its job's previous one is claimed is still run (late)
# rather than coalesced: what a busy claim costs is lateness, not a lost occurrence.
LAG_CATCH_UP_S = 3
# After a database error in the loop, wait this long before the next attempt.
DB_RETRY_S = 1.0
# After the grace period, cancelled work gets this long to be recorded before the daemon exits.
RECORD_AFTER_CANCEL_S = 5.0
# However stuck a task or the database thread is, the process ends this long after the grace.
STOP_DEADLINE_MARGIN_S = 10.0
# A second SIGTERM/SIGINT ends the process within this.
FORCED_STOP_S = 2.0
# Database calls of the loop failing this long mark the daemon "degraded" for `status`.
DEGRADED_AFTER_S = 10.0
# How often the database file, the lock file and the wall clock are looked at.
FILE_CHECK_S = 1.0
# A bug in the daemon (a helper or the loop failed): the service manager should restart it.
EXIT_INTERNAL = 70
# Gateway health: checked every minute while up; while down, with backoff between these bounds.
GATEWAY_HEALTHY_CHECK_S = 60.0
GATEWAY_RETRY_MIN_S = 1.0
GATEWAY_RETRY_MAX_S = 30.0
AGENT_TARGETS = frozenset({"isolated", "main"})
# Registered at start when missing (the reference's name and capabilities for it).
MAIN_AGENT = "main"
MAIN_AGENT_NAME = "Main Agent"
# Strategies enforce run_timeout_ms themselves; the health check cancels a run this much later.
OVERDUE_GRACE_S = 30.0
# Test-only: while the file this names exists, the scheduling loop hangs before its next round
# while every other task runs on (so tests can see that the watchdog pings come from the loop).
TEST_FREEZE_VARIABLE = "SCHEDULER_TEST_FREEZE_LOOP_FILE"


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
    aborted: str | None = None  # why the work was cancelled while the daemon runs on
    # Another instance took the run over (this daemon's lease on it expired): the work is
    # stopped and nothing is recorded or delivered for it here.
    lease_lost: bool = False
    trust: Prepared | None = None  # what the v0.2 trust gate found (jobs that declare trust)


class Daemon:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.log = get_logger("scheduler.daemon")
        self.db = StoreThread()  # the store, opened in run(), on its own thread
        # Who this daemon is in the fleet: what runs.owner records and what placements it serves.
        self.owner = Owner.new(settings.host_name, settings.instance_labels)
        self.instance = InstanceHeartbeat(self.db, self.owner, get_logger("scheduler.instance"),
                                          lease_s=settings.lease_s)
        self._registered = False
        self.strategies: dict[str, Strategy] = {
            "shell": ShellJobStrategy(
                shell=settings.shell,
                artifacts_dir=settings.artifacts_path,
                env_allow=settings.shell_env_allow,
                max_output_bytes=settings.max_output_bytes,
                db=self.db,
                network_isolation=settings.network_isolation,
            )
        }
        token = settings.gateway_token.get_secret_value() if settings.gateway_token else None
        self.gateway = GatewayClient(
            settings.gateway_url, resolve_token(token, settings.gateway_token_path.expanduser())
        )
        agent = AgentStrategy(self.gateway, self.db, log=get_logger("scheduler.agent"),
                              on_gateway_down=self._gateway_went_down)
        self.strategies.update({target: agent for target in AGENT_TARGETS})
        self.strategies[WATCHDOG] = WatchdogStrategy(
            shell=settings.shell, env_allow=settings.shell_env_allow
        )
        self.stopping = asyncio.Event()
        # In-process: the watch of a dispatched sub-agent (its shell payload is never run here).
        self.strategies[DISPATCH] = dispatch_strategy(settings, self.db, self.stopping)
        self.media_policy = MediaPolicy.for_scheduler(
            media_dirs=settings.media_dirs, artifacts_dir=settings.artifacts_path,
            db_path=settings.db_path, token_path=settings.gateway_token_path,
        )
        self.gateway_healthy = False
        self._gateway_known = False  # no health check has answered yet
        self._check_gateway_now = asyncio.Event()
        self._check_gateway_now.set()  # the first check runs at once, in the background
        self.active: dict[str, _Active] = {}
        self.wake = asyncio.Event()
        self._force_stop = asyncio.Event()
        self._data_version = 0
        self.deliveries_ready = asyncio.Event()  # an outbound message was recorded
        self.spawns_ready = asyncio.Event()  # another process wrote: a spawn message, maybe
        self.recorder = Recorder(self.db, self._policy, self.log, self._log_finish)
        # Provider plugins are loaded in run(), with the logs set up (none until then).
        self.trust = TrustGate(ProviderRegistry(), self.db, get_logger("scheduler.trust"))
        self._stale_submitted: set[str] = set()  # stale runs handed to the recorder, not yet written
        self.exit_code = 0
        self._deadline: threading.Timer | None = None
        self._deadline_at = float("inf")
        self._lock: daemon_lock.DaemonLock | None = None
        self._serving_since = "9999-12-31 23:59:59"  # until it serves: nothing to catch up
        self._lock_info: dict[str, Any] = {}
        self._db_identity: tuple[int, int] | None = None
        self._failing_since: float | None = None
        self._corruption_checked = False
        self._background: set[asyncio.Task[None]] = set()
        self.clock = ClockWatch()
        self._clock_behind = 0.0  # seconds of a backward step not yet applied
        self.notifier = Notifier.from_environment()
        self._freeze_file = os.environ.pop(TEST_FREEZE_VARIABLE, None)
        self.db.observe(self._store_error_seen)
        self.metrics: Counters = _counters_for(settings)
        self.ticked_at = time.monotonic()  # the scheduling loop's last round, for /healthz

    @property
    def store(self) -> Store:
        return self.db.store

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
        """At once at start (agent jobs wait for the answer; nothing else does), then every
        minute while healthy; while down, again after 1 s, 2 s, 4 s, … 30 s."""
        delay = GATEWAY_RETRY_MIN_S
        while True:
            wait = GATEWAY_HEALTHY_CHECK_S if self.gateway_healthy else delay
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._check_gateway_now.wait(), timeout=wait)
            self._check_gateway_now.clear()
            healthy = await self.gateway.health()
            changed = healthy != self.gateway_healthy or not self._gateway_known
            self.gateway_healthy, self._gateway_known = healthy, True
            if changed and healthy:
                self.log.info("gateway.up", url=self.settings.gateway_url)
                self.wake.set()
            elif changed:
                self.log.warning("gateway.down", url=self.settings.gateway_url)
            delay = GATEWAY_RETRY_MIN_S if healthy else min(GATEWAY_RETRY_MAX_S, delay * 2)

    # -- lifecycle ---------------------------------------------------------------------------

    async def run(self) -> int:
        _use_pidfd_child_watcher()
        database = self.settings.db_path
        self._lock_info = {"pid": os.getpid(), "since": sqlite_now(), "version": __version__,
                           "db": self.settings.db_label, "instance": self.owner.text,
                           "state": "starting"}
        self._lock = daemon_lock.acquire(database, self._lock_info)
        try:
            await self.db.open(functools.partial(open_store, self.settings.db_target,
                                                 synchronous=self.settings.sqlite_synchronous))
            try:
                await self._check_database()
                await self.instance.register()
                self._registered = True
                self._check_token_file()
                self._load_providers()
                self._check_lease_settings()
                await self._recover()
                self._install_signal_handlers()
                self._set_state("serving")
                self._serving_since = sqlite_now()
                self.log.info(
                    "daemon.started",
                    version=__version__,
                    pid=os.getpid(),
                    instance=self.owner.text,
                    labels=list(self.owner.labels),
                    db=self.settings.db_label,
                    max_concurrency=self.settings.max_concurrency,
                    tick_ms=self.settings.tick_ms,
                )
                await self._serve()
            finally:
                await self._close()
        finally:
            self._lock.release()
        self.log.info("daemon.stopped", exit_code=self.exit_code)
        return self.exit_code

    async def _check_database(self) -> None:
        """Refuse a damaged database before writing into it: its integrity is checked at start."""
        problems = await self.db.run(self.store.integrity_problems)
        if problems:
            path = self.settings.db_label
            raise StoreCorruptError(f"{path} fails its integrity check ({problems[0]}); "
                                    + self.store.repair_hint())
        self._db_identity = await self.db.run(self.store.identity)

    async def _close(self) -> None:
        """Close the gateway client and the store, each within a bound: a stuck close must not
        keep a stopping daemon alive (the exit deadline would end it anyway)."""
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.gateway.aclose(), timeout=5)
        try:
            if self.db.is_open and self._registered:
                await asyncio.wait_for(self.instance.stop(), timeout=STOP_DEADLINE_MARGIN_S / 4)
        except TimeoutError:
            self.log.warning("instance.stop_not_recorded", note="the database did not answer")
        try:
            if self.db.is_open:
                await asyncio.wait_for(self.db.run(self.store.close, checkpoint=True),
                                       timeout=STOP_DEADLINE_MARGIN_S / 2)
        except TimeoutError:
            self.log.error("daemon.db_close_stuck", note="exiting without a clean close; SQLite "
                           "replays the WAL at the next open")
        finally:
            self.db.shutdown()

    def _set_state(self, state: str, **details: Any) -> None:
        """What `status` shows about this daemon (kept in its lock file)."""
        self._lock_info = {k: v for k, v in self._lock_info.items() if k in
                           ("pid", "since", "version", "db", "instance")} | {"state": state, **details}
        if self._lock is not None:
            self._lock.update(self._lock_info)

    def _summary(self) -> str:
        """The one line ``systemctl status`` shows (sd_notify STATUS=)."""
        state = str(self._lock_info.get("state", "starting"))
        gateway = "up" if self.gateway_healthy else "down"
        return f"{state}: {len(self.active)} running, gateway {gateway}"

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

    def _load_providers(self) -> None:
        settings = self.settings
        self.trust.registry = load_providers(settings.provider_path, self.trust.log,
                                             timeout_s=settings.provider_timeout_ms / 1000)

    def _install_signal_handlers(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.request_stop, sig.name)

    def request_stop(self, reason: str = "request") -> None:
        """First call: stop claiming, let running work finish within the grace period. A second
        call (SIGINT twice): end now. Either way the process ends by a deadline, whatever any
        task or the database thread is doing."""
        if self.stopping.is_set():
            self.log.warning("daemon.stop_forced", reason=reason)
            self._force_stop.set()
            self._arm_exit_deadline(FORCED_STOP_S)
        else:
            self.log.info("daemon.stopping", reason=reason, running=len(self.active))
            self.stopping.set()
            self._set_state("stopping")
            self.notifier.stopping(self._summary())
            self._arm_exit_deadline(self.settings.shutdown_grace_ms / 1000 + STOP_DEADLINE_MARGIN_S)
        self.wake.set()

    def _fail(self, exit_code: int, reason: str) -> None:
        """Stop at once with ``exit_code``: the daemon cannot go on working (a helper died, the
        database is damaged or gone). Running work is cancelled, not waited for."""
        if not self.exit_code:
            self.exit_code = exit_code
        if not self.stopping.is_set():
            self.request_stop(reason)
        self._force_stop.set()
        self.wake.set()

    def _arm_exit_deadline(self, seconds: float) -> None:
        at = time.monotonic() + seconds
        if at >= self._deadline_at:
            return
        if self._deadline is not None:
            self._deadline.cancel()
        self._deadline_at = at
        self._deadline = threading.Timer(seconds, self._exit_now)
        self._deadline.daemon = True
        self._deadline.start()

    def _exit_now(self) -> None:
        """The stop deadline passed (runs in a timer thread): kill what is left, then exit."""
        try:
            running = list(self.active)
            self.log.error("daemon.exit_forced", running_runs=running,
                           note="runs left running are marked crashed at the next start")
            kill_processes_of_runs(set(running))
        finally:
            os._exit(self.exit_code or 1)

    def _helper_died(self, name: str, error: BaseException | None) -> None:
        self._fail(EXIT_INTERNAL, f"helper task {name} failed")

    def _check_lease_settings(self) -> None:
        """The configuration refuses a heartbeat as long as the lease; one that leaves room for
        fewer than three beats per lease risks the lease on a single late beat: say so."""
        heartbeat_s = self.settings.run_heartbeat_ms / 1000
        lease_s = self.settings.lease_s
        if heartbeat_s * 3 > lease_s:
            self.log.warning(
                "lease.heartbeat_close_to_lease", run_heartbeat_s=heartbeat_s, lease_s=lease_s,
                note="a run's lease outlives fewer than 3 heartbeats: one slow beat may let "
                "another instance take the run over; keep SCHEDULER_RUN_HEARTBEAT_MS at most a "
                "third of SCHEDULER_LEASE_S")

    async def _recover(self) -> None:
        found = await self.db.run(self.store.recover_orphans, sqlite_now(), self.owner,
                                  self.settings.lease_s)
        replayed = {row["retry_of_run_id"] for row in found.replays}
        for run in found.crashed:
            self.log.warning("run.crashed", run_id=run.id, job_id=run.job_id, owner=run.owner,
                             replay=run.id in replayed)
        for run_id, chained in found.children.items():
            self._log_children(run_id, chained)
        if found.crashed:
            killed = kill_processes_of_runs({run.id for run in found.crashed})
            for pid, run_id in killed.items():
                self.log.warning("run.orphan_killed", run_id=run_id, pid=pid)
        await self._recover_agents()
        for job in await self.db.run(self.store.jobs_missing_next_run):
            await self.db.run(self.store.set_next_run, job.id, self._next_fire_text(job))
        await self._catch_up_with_a_clock_stepped_back()
        unsupported = await self.db.run(self.store.jobs_without_strategy, self.targets,
                                        self.owner)
        if unsupported:
            self.log.warning(
                "jobs.waiting_for_strategy",
                count=len(unsupported),
                job_ids=[j.id for j in unsupported[:20]],
                note="these jobs stay due until a strategy for their target is available",
            )
        self._data_version = await self.db.run(self.store.change_token)

    def _kill_leftovers_of_recovered_runs(self, run_ids: set[str]) -> None:
        """Processes on this host of runs recovered from another instance (one that died here)
        must not work on beside the replay. A run this daemon runs itself is stopped by its
        heartbeat's ``run.lease_lost`` instead."""
        killed = kill_processes_of_runs(run_ids - set(self.active))
        for pid, run_id in killed.items():
            self.log.warning("run.orphan_killed", run_id=run_id, pid=pid)

    async def _recover_agents(self) -> None:
        """The default agent is always registered; agents a dead daemon left ``busy`` are not."""
        now = sqlite_now()
        if await self.db.run(self.store.ensure_agent, MAIN_AGENT, MAIN_AGENT_NAME, ["*"], now):
            self.log.info("agent.registered", agent_id=MAIN_AGENT)
        released = await self.db.run(self.store.release_agents_without_turns, now)
        if released:
            self.log.warning("agent.released", agent_ids=released,
                             reason="left busy by a daemon that stopped mid-turn")

    async def _catch_up_with_a_clock_stepped_back(self) -> None:
        """Runs recorded later than now: the clock went back while no daemon watched it."""
        latest = await self.db.run(self.store.latest_recorded_instant)
        if latest is None:
            return
        behind = (from_sqlite(latest) - utcnow()).total_seconds()
        if behind >= STEP_TOLERANCE_S:
            self.log.warning("clock.behind_database", seconds=round(behind, 3), latest_record=latest)
            await self._shift_back(behind)

    async def _shift_back(self, seconds: float) -> None:
        moved = await self.db.run(self.store.shift_back_after_clock_step, seconds, sqlite_now(),
                                self._next_fire_after)
        self.log.info("clock.due_times_moved", seconds=round(seconds, 3), rows=moved)
        self.wake.set()

    async def _serve(self) -> None:
        endpoint = await self._start_endpoint()  # first: a port in use stops the start cleanly
        try:
            await self._serve_with_helpers()
        finally:
            if endpoint is not None:
                await endpoint.close()

    async def _serve_with_helpers(self) -> None:
        sender = OutboundSender(
            self.db, self.gateway, self.deliveries_ready, get_logger("scheduler.delivery"),
            media_policy=self.media_policy, idle_check_s=self.settings.message_delivery_ms / 1000,
        )
        supervisor = Supervisor(self.log, self._helper_died, stopping=self.stopping.is_set)
        # The recorder holds run endings in memory: if it dies, stop (they are crash-recovered).
        # The others keep no state of their own: restart them.
        supervisor.start("recorder", self.recorder.run, OnFailure.FATAL)
        supervisor.start("outbound", sender.run, OnFailure.RESTART)
        supervisor.start("gateway-health", self._watch_gateway, OnFailure.RESTART)
        supervisor.start("watch-writes", self._watch_for_writes, OnFailure.RESTART)
        supervisor.start("run-heartbeat", self._beat_running_runs, OnFailure.RESTART)
        supervisor.start("instance-heartbeat", self.instance.run, OnFailure.RESTART)
        leases = LeaseRecovery(self.db, self.owner, self.settings.lease_s,
                               get_logger("scheduler.leases"), on_children=self._log_children,
                               on_new_work=self.wake.set,
                               on_recovered=self._kill_leftovers_of_recovered_runs)
        supervisor.start("lease-recovery", leases.run, OnFailure.RESTART)
        supervisor.start("run-health", self._check_run_health, OnFailure.RESTART)
        supervisor.start("prune", self._prune, OnFailure.RESTART)
        spawner = SpawnHandler(self.db, self.spawns_ready, self.wake.set,
                               get_logger("scheduler.spawn"),
                               idle_check_s=self.settings.message_delivery_ms / 1000)
        supervisor.start("spawn", spawner.run, OnFailure.RESTART)
        tracker = TaskTracker(self.db, self.gateway, lambda: self.gateway_healthy,
                              self.deliveries_ready.set, get_logger("scheduler.tracker"),
                              interval_s=self.settings.message_delivery_ms / 1000)
        supervisor.start("tracker", tracker.run, OnFailure.RESTART)
        expiry = MessageExpiry(self.db, get_logger("scheduler.messages"),
                               interval_s=self.settings.message_delivery_ms / 1000)
        supervisor.start("messages", expiry.run, OnFailure.RESTART)
        if self.settings.backup and self.store.shared:
            self.log.info("backup.not_here", note="backup files are for SQLite; back up the "
                          "PostgreSQL database with pg_dump or the server's own backups")
        elif self.settings.backup:
            supervisor.start("backup", self._periodic_backup().run, OnFailure.RESTART)
        if self.settings.stuck_run_check_s:
            supervisor.start("stuck-runs", self._stuck_run_check().run, OnFailure.RESTART)
        self.notifier.ready(self._summary())
        try:
            await self._run_loop()
            await self._drain()
        finally:
            await supervisor.stop()
            self.notifier.close()

    def _stuck_run_check(self) -> StuckRunCheck:
        settings = self.settings
        token = settings.gateway_token.get_secret_value() if settings.gateway_token else None
        opener = rpc_opener(settings.gateway_url,
                            resolve_token(token, settings.gateway_token_path.expanduser()))
        return StuckRunCheck(self.db, opener, self.deliveries_ready.set,
                             get_logger("scheduler.stuck_runs"),
                             interval_s=settings.stuck_run_check_s,
                             threshold_s=settings.stuck_run_threshold_s,
                             channel=settings.stuck_run_alert_channel,
                             target=settings.stuck_run_alert_to)

    def _periodic_backup(self) -> PeriodicBackup:
        settings = self.settings
        upload = None
        if settings.backup_s3:
            from scheduler.ops.s3 import S3Uploader

            upload = S3Uploader(settings.backup_bucket, settings.backup_prefix,
                                settings.backup_s3_endpoint, _aws_credentials(settings))
        return PeriodicBackup(settings.db_path, settings.backup_path, get_logger("scheduler.backup"),
                              interval_s=settings.backup_ms / 1000,
                              snapshot_hours=settings.backup_snapshot_hours,
                              rollup_days=settings.backup_rollup_days, upload=upload)

    async def _start_endpoint(self) -> HttpEndpoint | None:
        """The metrics and health endpoint, when SCHEDULER_HTTP_ADDR asks for one."""
        if self.settings.http_addr is None:
            return None
        from scheduler.engine.health import Probes
        from scheduler.engine.http_endpoint import HttpEndpoint
        from scheduler.engine.metrics import Metrics

        assert isinstance(self.metrics, Metrics)  # _counters_for made it, the endpoint being on
        probes = Probes(self.db, self.gateway, self.metrics, tick_s=self.settings.tick_ms / 1000,
                        live=self._live_state, on_gateway_down=self._gateway_went_down)
        endpoint = HttpEndpoint(probes.routes(), get_logger("scheduler.http"))
        address = await endpoint.start(self.settings.http_addr)
        self.log.info("http.serving", address=address, paths=sorted(probes.routes()))
        return endpoint

    def _live_state(self) -> LiveState:
        from scheduler.engine.health import LiveState

        running: dict[str, int] = dict.fromkeys(self.strategies, 0)
        for active in self.active.values():
            running[_target_of(active.claim.job)] += 1
        return LiveState(running=running, gateway_up=self.gateway_healthy,
                         ticked_at=self.ticked_at, stopping=self.stopping.is_set())

    async def _run_loop(self) -> None:
        try:
            await self._schedule_loop()
        except Exception as exc:
            self.log.error("daemon.loop_failed", error=repr(exc), exc_info=exc)
            self._fail(EXIT_INTERNAL, "the scheduling loop failed")

    async def _drain(self) -> None:
        """Let running work finish within the grace period, then cancel what is left, give it a
        few seconds to be recorded, and go (what is still unrecorded is crash-recovered)."""
        if not self.active:
            return
        grace = self.settings.shutdown_grace_ms / 1000
        if not self._force_stop.is_set():
            self.log.info("daemon.draining", running=len(self.active), grace_s=grace)
            await self._wait_for_active(grace, stop_early=True)
        for active in list(self.active.values()):
            if active.work is not None and not active.work.done():
                active.work.cancel()
        forced = self._force_stop.is_set()
        if forced and self.active:
            kill_processes_of_runs(set(self.active))
        await self._wait_for_active(1.0 if forced else RECORD_AFTER_CANCEL_S, stop_early=False)
        if self.active:
            self.log.error("daemon.unrecorded", run_ids=sorted(self.active),
                           note="exiting before these runs were recorded; the next start marks "
                           "them crashed")

    async def _wait_for_active(self, seconds: float, *, stop_early: bool) -> None:
        deadline = time.monotonic() + seconds
        force = asyncio.create_task(self._force_stop.wait())
        try:
            while self.active and not (stop_early and force.done()):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return
                waiting: list[asyncio.Future[Any]] = [a.task for a in self.active.values()]
                if stop_early:
                    waiting.append(force)
                await asyncio.wait(waiting, timeout=remaining, return_when=asyncio.FIRST_COMPLETED)
        finally:
            force.cancel()

    # -- the scheduling loop -----------------------------------------------------------------

    async def _schedule_loop(self) -> None:
        while not self.stopping.is_set():
            self.ticked_at = time.monotonic()
            self.wake.clear()
            if self._freeze_file is not None:
                await _hang_while_exists(self._freeze_file)
            delay = await self._one_round()
            self.notifier.loop_ticked(self._summary)  # the watchdog ping comes from here only
            if self.stopping.is_set():
                break
            delay = min(delay, self.notifier.until_next_ping())
            if delay > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.wake.wait(), timeout=delay)

    async def _one_round(self) -> float:
        """Claim what is due; return how long to sleep."""
        if self.recorder.waiting:
            # Ends of runs wait for the database: write them first, or claims would meet runs
            # that look still running (and the disk may be full for the claim as well).
            self.recorder.retry_now()
            return DB_RETRY_S
        try:
            free = self.settings.max_concurrency - len(self.active)
            claimed = await self._claim(free) if free > 0 else 0
            delay = await self._sleep_budget(free - claimed, claimed)
        except SchedulerError as exc:
            # Locked, full or read-only database: nothing was claimed; try again shortly.
            self._database_failing(exc)
            return DB_RETRY_S
        self._database_working()
        return delay

    def _database_failing(self, exc: SchedulerError) -> None:
        self.log.error("scheduler.db_error", error=str(exc), retry_in_s=DB_RETRY_S)
        now = time.monotonic()
        if self._failing_since is None:
            self._failing_since = now
        elif now - self._failing_since >= DEGRADED_AFTER_S and self._lock_info.get("state") == "serving":
            self._set_state("degraded", error=str(exc), since=sqlite_now())
            self.notifier.status(self._summary())

    def _database_working(self) -> None:
        self._failing_since = None
        if self._lock_info.get("state") == "degraded":
            self._set_state("serving")
            self.notifier.status(self._summary())

    async def _claim(self, free: int) -> int:
        now_text = to_sqlite(utcnow())
        floor = max(self._serving_since, to_sqlite(utcnow() - timedelta(seconds=LAG_CATCH_UP_S)))
        batch = await self.db.run(
            self.store.claim_due, now_text, free, self.targets,
            functools.partial(self._next_fire_for_claim, now_text=now_text, floor=floor), self.owner,
            self.settings.lease_s,
        )
        for skipped in batch.skipped:
            self.log.info("run.skipped", run_id=skipped.id, job_id=skipped.job_id,
                          reason=skipped.error_message)
        self.metrics.runs_skipped(skipped.error_message for skipped in batch.skipped)
        self._log_approvals(batch)
        for claim in batch.claims:
            self._start(claim)
        if batch.claims or batch.waiting:
            self.log.debug("scheduler.claimed", runs=len(batch.claims), skipped=len(batch.skipped),
                           waiting=batch.waiting, free_slots=free)
        return len(batch.claims)

    def _log_approvals(self, batch: ClaimBatch) -> None:
        for gate in batch.gated:
            self.log.info("run.awaiting_approval", run_id=gate.id, job_id=gate.job_id,
                          dispatch_id=gate.dispatch_queue_id)
        for gate in batch.resolved:
            self.log.info("approval.timed_out", run_id=gate.id, job_id=gate.job_id,
                          outcome=gate.status)
        if batch.notices:
            self.deliveries_ready.set()  # the approval requests go out now, not at the idle check

    async def _sleep_budget(self, free: int, claimed: int) -> float:
        tick = self.settings.tick_ms / 1000
        if free <= 0:
            return tick  # a finishing run sets `wake`
        if claimed:
            return 0.0  # look again at once: more may be due
        next_due = await self.db.run(self.store.next_due_at, self.targets, self.owner)
        if next_due is None:
            delay = tick
        else:
            wait = (from_sqlite(next_due) - utcnow()).total_seconds()
            delay = MIN_IDLE_SLEEP_S if wait <= 0 else min(tick, wait)
        self.log.debug("scheduler.sleep", next_due=next_due, delay_s=round(delay, 3))
        return delay

    def _next_fire_text(self, job: Job) -> str | None:
        return self._next_fire_after(job, to_sqlite(utcnow()))

    def _next_fire_for_claim(self, job: Job, *, now_text: str, floor: str) -> str | None:
        """Where a claimed cron occurrence moves its job: past the claim's instant, except that
        fire times which fell due in the last LAG_CATCH_UP_S seconds while this daemon was
        serving are not swallowed. A claim reached late (many due jobs, a slow or shared
        database, a loaded host) then makes those runs late, never lost; fire times missed in
        downtime, or in a longer stall, still coalesce (docs/scheduling.md)."""
        after = now_text
        if job.next_run_at is not None and job.next_run_at < now_text:
            after = max(job.next_run_at, min(floor, now_text))
        return self._next_fire_after(job, after)

    def _next_fire_after(self, job: Job, after_text: str) -> str | None:
        if not job.schedule_cron:
            return None
        try:
            fire = cron.next_fire(job.schedule_cron, job.schedule_tz, from_sqlite(after_text))
        except SchedulerError as exc:
            self.log.error("job.bad_schedule", job_id=job.id, error=str(exc))
            return None
        return None if fire is None else to_sqlite(fire)

    # -- running one claim -------------------------------------------------------------------

    def _start(self, claim: Claim) -> None:
        task = asyncio.create_task(self._execute(claim), name=f"run-{claim.run.id}")
        self.active[claim.run.id] = _Active(claim=claim, task=task)

    async def _execute(self, claim: Claim) -> None:
        run_id = claim.run.id
        active = self.active[run_id]
        job = claim.job
        self.log.info("run.started", run_id=run_id, job_id=job.id, job=job.name, source=claim.source)
        kind = _target_of(job)
        self.metrics.run_started(kind, claim.source, _lateness_s(claim))
        work = asyncio.create_task(self._work(active, kind))
        active.work = work
        try:
            outcome = await work
        except DeferRun as deferred:
            await self._defer(claim, deferred.reason)
            return
        except asyncio.CancelledError:
            outcome = self._cancelled_outcome(active)
        except Exception as exc:  # a strategy bug must still end the run, never leave it running
            self.log.exception("run.strategy_failed", run_id=run_id, job_id=job.id)
            outcome = Outcome("error", {"error_message": f"internal error: {exc}"})
        if active.lease_lost:  # another instance recovered the run: its outcome is not ours
            self.active.pop(run_id, None)
            self.wake.set()
            return
        if active.trust is not None:
            outcome = await self._with_trust_outcomes(active, active.trust, outcome)
        duration_ms = int((time.monotonic() - active.started) * 1000)
        try:
            await self.recorder.submit(self._finish_of(claim, outcome, duration_ms))
        finally:
            self.active.pop(run_id, None)
            self.wake.set()

    async def _work(self, active: _Active, kind: str) -> Outcome:
        """The trust gate (jobs that declare trust), then the strategy; a refusal ends the run
        before its work (fail closed). Credentials a provider materialised go to a shell job's
        environment only, and its cleanup runs however the work ends."""
        job, run = active.claim.job, active.claim.run
        strategy = self.strategies[kind]
        if not declares_trust(job):
            return await strategy.execute(job, run)
        prepared = active.trust = await self.trust.prepare(job, run)
        if prepared.refusal is not None:
            message = prepared.refusal
            return Outcome("error", {"summary": message, "error_message": message},
                           fail_closed=True)
        try:
            if isinstance(strategy, ShellJobStrategy) and prepared.env:
                return await strategy.execute(job, run, credentials=prepared.env)
            profile = prepared.outcomes.effective_auth_profile
            if profile and kind in AGENT_TARGETS:
                job = dataclasses.replace(job, auth_profile=profile)  # a child's inherited profile
            return await strategy.execute(job, run)
        finally:
            await self.trust.release(job, prepared)

    async def _with_trust_outcomes(self, active: _Active, prepared: Prepared,
                                   outcome: Outcome) -> Outcome:
        """The outcome with the trust outcomes as run columns (a failure to compute them is
        logged: the run's own end matters more)."""
        job, run = active.claim.job, active.claim.run
        try:
            columns = await self.trust.columns(job, run, prepared, outcome.status)
        except Exception:  # a bug here must not keep the run from being recorded
            self.log.exception("trust.outcomes_failed", run_id=run.id, job_id=job.id)
            columns = {}
        return dataclasses.replace(outcome, columns={**outcome.columns, **columns})

    def _cancelled_outcome(self, active: _Active) -> Outcome:
        if active.aborted is not None:
            return Outcome("cancelled", {"error_message": f"Cancelled: {active.aborted}"})
        if active.overdue:
            limit = active.claim.run.run_timeout_ms
            return Outcome("timeout", {"error_message": f"Exceeded {limit}ms timeout"})
        return Outcome("cancelled", {"error_message": "Cancelled: daemon shutdown"})

    async def _defer(self, claim: Claim, reason: str) -> None:
        try:
            if not await self.db.run(self.store.defer_claim, claim, sqlite_now(), reason):
                self.log.warning("run.fenced", run_id=claim.run.id, job_id=claim.job.id,
                                 owner=self.owner.text, action="defer",
                                 reason="the run is no longer running under this instance's lease")
                return
            self.log.warning("run.deferred", run_id=claim.run.id, job_id=claim.job.id, reason=reason)
            self.metrics.run_finished(_target_of(claim.job), "deferred")  # given back, not lost
        except SchedulerError as exc:  # left `running`: the health check or next start ends it
            self.log.error("run.defer_failed", run_id=claim.run.id, error=str(exc))
        finally:
            self.active.pop(claim.run.id, None)
            self.wake.set()

    def _finish_of(self, claim: Claim, outcome: Outcome, duration_ms: int) -> Finish:
        return Finish(claim, outcome.status, duration_ms, outcome.columns,
                      delivery=_delivery_of(claim.job, outcome, self.media_policy),
                      remove_job=outcome.remove_job,
                      content=outcome.content, fail_closed=outcome.fail_closed,
                      no_retry=outcome.no_retry)

    def _log_finish(self, finish: Finish, finished: Finished) -> None:
        run_id = finish.claim.run.id
        self._stale_submitted.discard(run_id)
        if finished.fenced:
            self.log.warning("run.fenced", run_id=run_id, job_id=finish.claim.job.id,
                             owner=self.owner.text, status=finish.status,
                             reason="another instance took the run over after this instance's "
                             "lease on it expired; this late result is dropped, nothing "
                             "recorded or delivered")
            return
        if not finished.recorded:
            self.log.info("run.not_recorded", run_id=run_id, job_id=finish.claim.job.id,
                          status=finish.status,
                          reason="no running run left to end: its job was deleted (its runs went "
                          "with it), or another process ended it; nothing delivered or retried")
            return
        job = finished.job
        self.metrics.run_finished(_target_of(finish.claim.job), finish.status)
        self.log.info(
            "run.finished",
            run_id=run_id,
            job_id=finish.claim.job.id,
            status=finish.status,
            duration_ms=finish.duration_ms,
            error=finish.columns.get("error_message"),
            next_run_at=None if job is None else job.next_run_at,
            job_removed=job is None,
            retry_at=None if finished.retry is None else finished.retry["scheduled_for"],
            delivery=None if finished.message is None else finished.message["id"],
        )
        if finished.message is not None:
            self.deliveries_ready.set()
        self._log_children(run_id, finished.children)
        self.wake.set()  # a pool place or the job itself may be free now (stale runs end here too)

    def _log_children(self, run_id: str, chained: Chained) -> None:
        for row in chained.queued:
            self.log.info("chain.triggered", parent_run_id=run_id, job_id=row["job_id"],
                          dispatch_id=row["id"], scheduled_for=row["scheduled_for"])
        for skipped in chained.skipped:
            self.log.info("run.skipped", run_id=skipped.id, job_id=skipped.job_id,
                          reason=skipped.error_message)
        self.metrics.runs_skipped(skipped.error_message for skipped in chained.skipped)
        if chained.unmatched:
            self.log.info("chain.condition_not_met", parent_run_id=run_id,
                          job_ids=list(chained.unmatched))

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
        """Every SCHEDULER_WAKE_POLL_MS: has another process written (wake the loop; abort work
        whose job was deleted)? About once a second: is the database file still the one we
        opened, and was the wall clock stepped?"""
        interval = self.settings.wake_poll_ms / 1000
        # The files are looked at about once a second (every poll would be 5 stats a second).
        every = max(1, round(FILE_CHECK_S / interval))
        polls = 0
        while not self.stopping.is_set():
            await asyncio.sleep(interval)
            polls += 1
            if polls % every == 0:
                if not self._files_still_ours():
                    return
                await self._follow_the_clock()
            try:
                version = await self.db.run(self.store.change_token)
                if version != self._data_version:
                    self._data_version = version
                    self.wake.set()
                    self.spawns_ready.set()
                    # The CLI records notices too (a task group its report finished): send them now.
                    self.deliveries_ready.set()
                    await self._abort_work_of_ended_runs()
            except SchedulerError as exc:
                self.log.warning("db.poll_failed", error=str(exc))

    def _files_still_ours(self) -> bool:
        """A database deleted or replaced under the daemon cannot be worked on: SQLite would go
        on with the deleted file, unseen by the CLI. Likewise a deleted lock file would let a
        second daemon start. Either: stop, non-zero."""
        path = self.settings.db_path
        problem = None
        current = _identity(path)
        if self.store.shared:
            pass  # a database server, not a file that can be deleted under us
        elif current != self._db_identity:
            problem = f"the database file {path} was {'deleted' if current is None else 'replaced'}"
        elif self._lock is not None and _identity(self._lock.path) != self._lock.identity():
            problem = f"the daemon's lock file {self._lock.path} was deleted or replaced"
        if problem is None:
            return True
        error = StoreGoneError(f"{problem} while the daemon was running; stopping. Restore the file "
                               "from a backup if it was not meant to go, then start the daemon again")
        self.log.error("db.gone", error=str(error))
        self._fail(error.exit_code, "database gone")
        return False

    async def _abort_work_of_ended_runs(self) -> None:
        """A run whose row is gone (its job was deleted) or was ended by another process has
        nothing left to record its work into: cancel the work (its process group is killed, its
        gateway request cancelled)."""
        working = [rid for rid, a in self.active.items() if a.work is not None and not a.work.done()]
        if not working:
            return
        statuses = await self.db.run(self.store.run_statuses, working)
        for run_id in working:
            status = statuses.get(run_id)
            active = self.active.get(run_id)
            if (status == "running" or active is None or active.work is None or active.work.done()
                    or active.lease_lost):
                continue
            run = None if status is None else await self._run_or_none(run_id)
            if run is not None and run.lease_generation != active.claim.run.lease_generation:
                self._lose_lease(active, status)  # another instance recovered it
                continue
            why = "its job was deleted" if status is None else self._why_ended_elsewhere(run, status)
            if active.work.done():
                continue  # it ended while the reason was read: nothing left to abort
            active.aborted = why
            self.log.warning("run.aborted", run_id=run_id, job_id=active.claim.job.id,
                             reason=active.aborted)
            active.work.cancel()

    async def _run_or_none(self, run_id: str) -> Run | None:
        try:
            run: Run | None = await self.db.run(self.store.get_run, run_id)
        except SchedulerError:
            return None  # the abort matters more than its explanation
        return run

    def _why_ended_elsewhere(self, run: Run | None, status: str) -> str:
        """What the process that ended the run wrote on it (``jobs cancel``: that the operator
        cancelled it), so the log says why the work stops."""
        note = None if run is None else run.error_message
        ended = f"the run was ended elsewhere ({status})"
        return f"{ended}: {note}" if note else ended

    async def _check_run_health(self) -> None:
        """Every SCHEDULER_HEARTBEAT_CHECK_MS: end runs nobody watches (heartbeat older than
        SCHEDULER_STALE_THRESHOLD_S) as ``timeout``; cancel our own runs that outlived their
        ``run_timeout_ms`` (a strategy should have stopped them); close finished queue rows.
        Timeouts go through the same recording path as any failure: retries, job state."""
        interval = self.settings.heartbeat_check_ms / 1000
        while True:
            await asyncio.sleep(interval)
            self._cancel_overdue_work()
            try:
                stale = await self.db.run(
                    self.store.unwatched_stale_runs, self.settings.stale_threshold_s, sqlite_now(),
                    set(self.active),
                )
                await self.db.run(self.store.reap_queue, sqlite_now())
            except SchedulerError as exc:
                self.log.warning("run.health_check_failed", error=str(exc))
                continue
            for claim in stale:
                self._end_stale_run(claim)

    def _cancel_overdue_work(self) -> None:
        for active in list(self.active.values()):
            limit_s = active.claim.run.run_timeout_ms / 1000
            work = active.work
            if (limit_s and not active.overdue and work is not None and not work.done()
                    and time.monotonic() - active.started > limit_s + OVERDUE_GRACE_S):
                self.log.warning("run.overdue", run_id=active.claim.run.id, limit_s=limit_s)
                active.overdue = True
                work.cancel()

    def _end_stale_run(self, claim: Claim) -> None:
        run_id = claim.run.id
        if run_id in self._stale_submitted:
            return  # already handed to the recorder, which waits for the database
        self._stale_submitted.add(run_id)
        threshold = self.settings.stale_threshold_s
        self.log.warning("run.stale", run_id=run_id, job_id=claim.job.id,
                         last_heartbeat=claim.run.last_heartbeat)
        message = f"No heartbeat for {threshold}s and no process watching the run"
        outcome = Outcome("timeout", {"error_message": message})
        self.recorder.submit(self._finish_of(claim, outcome, _age_ms(claim.run.started_at)))

    async def _beat_running_runs(self) -> None:
        """Every SCHEDULER_RUN_HEARTBEAT_MS: heartbeat our runs and extend their leases. A run
        the beat reports lost (another instance recovered it after our lease expired) is
        stopped here, and nothing is recorded for it."""
        interval = self.settings.run_heartbeat_ms / 1000
        while True:
            await asyncio.sleep(interval)
            if not self.active:
                continue
            generations = {rid: a.claim.run.lease_generation for rid, a in self.active.items()}
            try:
                lost = await self.db.run(self.store.beat, list(generations), sqlite_now(),
                                         self.owner, lease_s=self.settings.lease_s,
                                         generations=generations)
                if lost:
                    await self._stop_runs_lost(lost)
            except SchedulerError as exc:
                self.log.warning("run.heartbeat_failed", error=str(exc))

    async def _stop_runs_lost(self, run_ids: set[str]) -> None:
        """Stop the work of runs whose lease another instance took over. A run ended elsewhere
        (``jobs cancel``, a deleted job) is the write watcher's to abort, and says so itself."""
        statuses = await self.db.run(self.store.run_statuses, run_ids)
        for run_id in sorted(run_ids):
            active = self.active.get(run_id)
            if active is None or active.aborted is not None or active.lease_lost:
                continue
            if active.work is not None and active.work.done():
                continue  # ended meanwhile: its end goes to the recorder, which fences it
            self._lose_lease(active, statuses.get(run_id))

    def _lose_lease(self, active: _Active, status: str | None) -> None:
        run = active.claim.run
        active.lease_lost = True
        active.aborted = "this instance's lease on the run was taken over"
        self.log.warning("run.lease_lost", run_id=run.id, job_id=active.claim.job.id,
                         owner=self.owner.text, status=status, lease_generation=run.lease_generation,
                         reaction="work stopped; nothing recorded or delivered here")
        if active.work is not None:
            active.work.cancel()

    async def _follow_the_clock(self) -> None:
        """A wall clock stepped back leaves every computed due time too far ahead (an hour's step
        would stop minutely jobs for an hour): bring them back. Forward steps need nothing: what
        became due runs once, as after downtime. Called about once a second by the write watcher
        (one timer fewer for an idle daemon); a shift the database refuses is tried next time."""
        jump = self.clock.step()
        if jump is not None and jump > 0:
            self.log.info("clock.stepped_forward", seconds=round(jump, 3))
        elif jump is not None:
            self._clock_behind += -jump
            self.log.warning("clock.stepped_back", seconds=round(-jump, 3))
        if self._clock_behind <= 0:
            return
        try:
            await self._shift_back(self._clock_behind)
        except SchedulerError as exc:
            self.log.warning("clock.shift_failed", error=str(exc), retry_in_s=FILE_CHECK_S)
            return
        self._clock_behind = 0.0

    async def _prune(self) -> None:
        """At start and then every SCHEDULER_PRUNE_MS: apply the retention policy (runs and
        their artifact files, approvals, messages, ledger entries, expired jobs:
        engine/retention.py), then
        checkpoint the WAL (PASSIVE: never waits for readers), as the reference's prune phase
        does. The pass runs on the store's thread: its file removals are few per hour."""
        interval = self.settings.prune_ms / 1000
        first = True
        while True:
            if not first:
                await asyncio.sleep(interval)
            first = False
            try:
                report = await self.db.run(retention.prune, self.store, self.settings.retention,
                                           self.settings.artifacts_path, sqlite_now())
                await self.db.run(self.store.checkpoint)
            except SchedulerError as exc:
                self.log.warning("prune.failed", error=str(exc))
                continue
            self.log.info("messages.pruned", total=sum(report.messages.values()), **report.messages)
            self.log.info("prune.done", ledger_entries=report.ledger_entries,
                          approvals=report.approvals, run_dirs=report.files.run_dirs,
                          orphan_dirs=report.files.orphan_dirs, **report.runs)
            if any(report.jobs.values()):
                self.log.info("jobs.expired", **report.jobs)
            if report.instances:
                self.log.info("instances.pruned", count=report.instances)

    # -- database trouble --------------------------------------------------------------------

    def _store_error_seen(self, error: StoreError) -> None:
        """Every database error passes here: the first sign of damage triggers an integrity
        check, and damage confirmed stops the daemon (writing on would spread it)."""
        if isinstance(error, StoreCorruptError) and self.db.is_open and not self._corruption_checked:
            self._corruption_checked = True
            task = asyncio.get_running_loop().create_task(self._confirm_corruption(error))
            self._background.add(task)
            task.add_done_callback(self._background.discard)

    async def _confirm_corruption(self, error: StoreCorruptError) -> None:
        try:
            problems = await self.db.run(self.store.integrity_problems)
        except StoreError as exc:  # the check itself cannot read the file: damage enough
            problems = [str(exc)]
        if not problems:
            self.log.warning("db.corruption_not_confirmed", error=str(error),
                             note="the integrity check passed; going on")
            self._corruption_checked = False
            return
        self.log.error("db.corrupt", db=self.settings.db_label, problems=problems,
                       fix=self.store.repair_hint(), note="stopping: writing on would spread it")
        self._fail(error.exit_code, "database damaged")


def _aws_credentials(settings: Settings) -> dict[str, str]:
    given = {"aws_access_key_id": settings.aws_access_key_id,
             "aws_secret_access_key": settings.aws_secret_access_key,
             "aws_session_token": settings.aws_session_token}
    return {name: value.get_secret_value() for name, value in given.items() if value is not None}


def _identity(path: Any) -> tuple[int, int] | None:
    try:
        info = os.stat(path)
    except OSError:
        return None
    return info.st_dev, info.st_ino


def _delivery_of(job: Job, outcome: Outcome, media: MediaPolicy) -> Delivery | None:
    text = outcome.delivery_text
    if text is None or not (text.strip() or outcome.attachments):
        return None
    if outcome.delivery_target is not None:
        channel, target = outcome.delivery_target
        return Delivery(text=text, channel=channel, target=target)
    if job.delivery_mode not in ANNOUNCE_MODES:
        return None
    # Files named by markers are checked now, so a refused one is reported in the text itself.
    accepted = media.accept(outcome.attachments)
    return Delivery(text=accepted.text_with_notes(text), channel=job.delivery_channel,
                    target=job.delivery_to, attachments=accepted.paths)


async def _hang_while_exists(path: str) -> None:
    """Test-only (SCHEDULER_TEST_FREEZE_LOOP_FILE): the scheduling loop stuck, the rest alive."""
    # A stat every 50 ms, in tests only: simpler than watching the file, and cheap enough.
    while os.path.exists(path):  # noqa: ASYNC110, ASYNC240
        await asyncio.sleep(0.05)


def _counters_for(settings: Settings) -> Counters:
    """Prometheus counters when the endpoint will serve them, else nothing kept."""
    if settings.http_addr is None:
        return NoCounters()
    from scheduler.engine.metrics import Metrics

    return Metrics()


def _target_of(job: Job) -> str:
    """The strategy a job runs on (its label on the run metrics)."""
    if job.is_dispatch:
        return DISPATCH
    return WATCHDOG if job.is_watchdog else job.session_target


def _lateness_s(claim: Claim) -> float | None:
    """How late a scheduled occurrence starts: the claim carries the job as it was read, with
    the occurrence's instant still in ``next_run_at``. Queue rows (retries, chains, manual
    runs) have no fire time of their own to be late for."""
    if claim.source not in ("cron", "at") or not claim.job.next_run_at:
        return None
    return (utcnow() - from_sqlite(claim.job.next_run_at)).total_seconds()


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
