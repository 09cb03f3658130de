"""``SqliteStore``: the ``Store`` interface (store/api.py) on one SQLite connection.

Each method is one operation of the engine or the CLI, done by the module that holds its SQL.
Those modules are imported where a method needs them: a CLI call then loads only what its
command uses (``jobs list`` needs none of the claim, finish or recovery code).
"""

from __future__ import annotations

from collections.abc import Collection, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from scheduler.errors import StoreError
from scheduler.store import DEFAULT_LEASE_S
from scheduler.store.sqlite.db import CORRUPT_FIX, Database
from scheduler.store.sqlite.migrations import migrate

if TYPE_CHECKING:
    from scheduler.models.dispatch import DispatchLabel
    from scheduler.models.messages import NewMessage
    from scheduler.models.records import Job, Message, OutboundMessage, Run
    from scheduler.models.tasks import NewTaskGroup
    from scheduler.store.api import (
        BulkWriter,
        Cancellation,
        Claim,
        ClaimBatch,
        CopyTable,
        Delivery,
        Finish,
        Finished,
        FinishedGroup,
        FinishPolicy,
        GateCheck,
        NextFire,
        NextFireAfter,
        Owner,
        PriorOutput,
        Recovery,
        Row,
        RunPrune,
        SpawnRejection,
        StoreGauges,
        TrackerSweep,
    )


class SqliteStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    @classmethod
    def open(cls, path: Path, *, synchronous: str = "FULL") -> SqliteStore:
        """Open (creating it if needed) and bring the schema up to date."""
        db = Database.open(path, synchronous=synchronous)
        try:
            migrate(db)
        except BaseException:
            db.close()
            raise
        return cls(db)

    @classmethod
    def open_read_only(cls, path: Path) -> SqliteStore:
        """An existing database as it is: never created, migrated or written (a copy's source)."""
        return cls(Database.open_read_only(path))

    @property
    def path(self) -> Path:
        return self.db.path

    # -- the database itself -------------------------------------------------------------------
    def close(self, *, checkpoint: bool = False) -> None:
        """Close; with ``checkpoint``, fold the WAL into the main file first (a stopping daemon)."""
        try:
            if checkpoint:
                self.db.checkpoint("TRUNCATE")
        except StoreError:
            pass  # the WAL stays; SQLite replays it on the next open
        finally:
            self.db.close()

    def change_token(self) -> int:
        return self.db.data_version()

    def integrity_problems(self) -> list[str]:
        return self.db.integrity_problems()

    def repair_hint(self) -> str:
        return CORRUPT_FIX.format(path=self.db.path)

    def identity(self) -> tuple[int, int] | None:
        return self.db.file_identity()

    def checkpoint(self) -> None:
        self.db.checkpoint("PASSIVE")

    def schema_version(self) -> int | None:
        from scheduler.store.sqlite import status
        return status.schema_version(self.db)

    @property
    def shared(self) -> bool:
        """One daemon per file (engine/lock.py): no other instance works on it meanwhile."""
        return False

    # -- claiming due work ---------------------------------------------------------------------
    def claim_due(self, now: str, limit: int, targets: Collection[str], next_fire: NextFire,
                  owner: Owner, lease_s: int = DEFAULT_LEASE_S) -> ClaimBatch:
        from scheduler.store.sqlite import claims
        return claims.claim_due(self.db, now, limit, targets, next_fire, owner, lease_s)

    def next_due_at(self, targets: Collection[str], owner: Owner) -> str | None:
        from scheduler.store.sqlite import claims
        return claims.next_due_at(self.db, targets, owner)

    def defer_claim(self, claim: Claim, now: str, reason: str) -> bool:
        from scheduler.store.sqlite import claims
        return claims.defer_claim(self.db, claim, now, reason)

    def jobs_without_strategy(self, targets: Collection[str], owner: Owner) -> list[Job]:
        from scheduler.store.sqlite import claims
        return claims.jobs_without_strategy(self.db, targets, owner)

    # -- recording run endings -----------------------------------------------------------------
    def finish_runs(self, finishes: Sequence[Finish], policy: FinishPolicy) -> list[Finished]:
        from scheduler.store.sqlite import finish
        return finish.finish_runs(self.db, finishes, policy)

    def record_unrecordable(self, claim: Claim, message: str, now: str) -> bool:
        from scheduler.store.sqlite import finish
        return finish.record_unrecordable(self.db, claim, message, now)

    # -- liveness and recovery -----------------------------------------------------------------
    def beat(self, run_ids: Collection[str], now: str, owner: Owner | None = None, *,
             lease_s: int = DEFAULT_LEASE_S,
             generations: Mapping[str, int] | None = None) -> set[str]:
        from scheduler.store.sqlite import runs
        return runs.beat(self.db, run_ids, now, None if owner is None else owner.text, lease_s,
                         generations)

    def run_statuses(self, run_ids: Collection[str]) -> dict[str, str]:
        from scheduler.store.sqlite import runs
        return runs.statuses(self.db, run_ids)

    def recover_orphans(self, now: str, owner: Owner, lease_s: int = DEFAULT_LEASE_S) -> Recovery:
        from scheduler.store.sqlite import recovery
        return recovery.recover_orphans(self.db, now, owner, shared=self.shared, lease_s=lease_s)

    def recover_expired_leases(self, now: str, owner: Owner, lease_s: int = DEFAULT_LEASE_S) -> Recovery:
        from scheduler.store.sqlite import recovery
        return recovery.recover_expired_leases(self.db, now, owner, lease_s)

    def unwatched_stale_runs(self, threshold_s: int, now: str, watched: Collection[str]) -> list[Claim]:
        from scheduler.store.sqlite import recovery
        return recovery.unwatched_stale_runs(self.db, threshold_s, now, watched)

    def reap_queue(self, now: str) -> int:
        from scheduler.store.sqlite import queue
        return queue.reap(self.db, now)

    def jobs_missing_next_run(self) -> list[Job]:
        from scheduler.store.sqlite import recovery
        return recovery.jobs_missing_next_run(self.db)

    def set_next_run(self, job_id: str, next_run_at: str | None) -> None:
        from scheduler.store.sqlite import recovery
        recovery.set_next_run(self.db, job_id, next_run_at)

    def shift_back_after_clock_step(self, seconds: float, now: str,
                                    next_fire_after: NextFireAfter) -> int:
        from scheduler.store.sqlite import recovery
        return recovery.shift_back_after_clock_step(self.db, seconds, now, next_fire_after)

    def latest_recorded_instant(self) -> str | None:
        from scheduler.store.sqlite import recovery
        return recovery.latest_recorded_instant(self.db)

    # -- outbound results and inboxes ----------------------------------------------------------
    def due_outbound(self, now: str, limit: int = 50) -> list[OutboundMessage]:
        from scheduler.store.sqlite import messages
        return messages.due_outbound(self.db, now, limit)

    def next_outbound_at(self) -> str | None:
        from scheduler.store.sqlite import messages
        return messages.next_outbound_at(self.db)

    def record_delivery_progress(self, message_id: str, chunks_sent: int) -> None:
        from scheduler.store.sqlite import messages
        messages.record_progress(self.db, message_id, chunks_sent)

    def record_media_progress(self, message_id: str, media_sent: int, skipped: str | None,
                              now: str) -> None:
        from scheduler.store.sqlite import messages
        messages.record_media_progress(self.db, message_id, media_sent, skipped, now)

    def mark_delivered(self, message_id: str, now: str) -> None:
        from scheduler.store.sqlite import messages
        messages.mark_delivered(self.db, message_id, now)

    def mark_delivery_failed(self, message_id: str, error: str, retry_at: str | None, now: str) -> Row:
        from scheduler.store.sqlite import messages
        return messages.mark_attempt_failed(self.db, message_id, error, retry_at, now)

    # -- what agents see of their messages --------------------------------------------------
    def take_inbox(self, agent_id: str, now: str, limit: int = 5) -> list[Row]:
        from scheduler.store.sqlite import inbox
        return inbox.take_inbox(self.db, agent_id, now, limit)

    def return_to_inbox(self, agent_id: str, message_ids: list[str], now: str) -> None:
        from scheduler.store.sqlite import inbox
        inbox.return_to_inbox(self.db, agent_id, message_ids, now)

    def inbox(self, agent_id: str, now: str, limit: int,
              statuses: tuple[str, ...] = ("pending", "delivered")) -> list[Row]:
        from scheduler.store.sqlite import inbox
        return inbox.inbox(self.db, agent_id, now, limit, statuses)

    def unread_count(self, agent_id: str, now: str) -> int:
        from scheduler.store.sqlite import inbox
        return inbox.unread_count(self.db, agent_id, now)

    def outbox(self, agent_id: str, limit: int) -> list[Row]:
        from scheduler.store.sqlite import inbox
        return inbox.outbox(self.db, agent_id, limit)

    def thread(self, message_id: str) -> list[Row]:
        from scheduler.store.sqlite import inbox
        return inbox.thread(self.db, message_id)

    def message_receipts(self, message_id: str, limit: int) -> list[Row]:
        from scheduler.store.sqlite import inbox
        return inbox.receipts(self.db, message_id, limit)

    def mark_read(self, message_id: str, agent_id: str | None, now: str) -> Row:
        from scheduler.store.sqlite import inbox
        return inbox.mark_read(self.db, message_id, agent_id, now)

    def ack_message(self, message_id: str, agent_id: str | None, actor: str, detail: str | None,
                    now: str) -> Row:
        from scheduler.store.sqlite import inbox
        return inbox.ack_message(self.db, message_id, agent_id, actor, detail, now)

    def read_all(self, agent_id: str, now: str) -> int:
        from scheduler.store.sqlite import inbox
        return inbox.read_all(self.db, agent_id, now)

    def expire_messages(self, now: str) -> int:
        from scheduler.store.sqlite import inbox
        return inbox.expire(self.db, now)

    def prune_expired_jobs(self, now: str, *, dry_run: bool = False) -> dict[str, int]:
        from scheduler.store.sqlite import retention
        return retention.prune_expired_jobs(self.db, now, dry_run=dry_run)

    def prune_messages(self, now: str, *, dry_run: bool = False) -> dict[str, int]:
        from scheduler.store.sqlite import inbox
        return inbox.prune(self.db, now, dry_run=dry_run)

    # -- messages between agents, and spawn messages ---------------------------------------------
    def send_message(self, message: NewMessage, now: str) -> Message:
        from scheduler.store.sqlite import messages
        return messages.send_message(self.db, message, now)

    def get_message(self, message_id: str) -> Message | None:
        from scheduler.store.sqlite import messages
        return messages.get_message(self.db, message_id)

    def pending_spawns(self, limit: int = 50) -> list[Message]:
        from scheduler.store.sqlite import spawn
        return spawn.pending_spawns(self.db, limit)

    def accept_spawn(self, message_id: str, job_row: Mapping[str, Any], queue_at: str | None,
                     now: str) -> Job | None:
        from scheduler.store.sqlite import spawn
        return spawn.accept_spawn(self.db, message_id, job_row, queue_at, now)

    def reject_spawn(self, message_id: str, error: str, now: str) -> SpawnRejection | None:
        from scheduler.store.sqlite import spawn
        return spawn.reject_spawn(self.db, message_id, error, now)

    # -- jobs and runs -------------------------------------------------------------------------
    def insert_job(self, row: Mapping[str, Any]) -> Job:
        from scheduler.store.sqlite import jobs
        return jobs.insert_job(self.db, row)

    def get_job(self, job_id: str) -> Job | None:
        from scheduler.store.sqlite import jobs
        return jobs.get_job(self.db, job_id)

    def require_job(self, job_id: str) -> Job:
        from scheduler.store.sqlite import jobs
        return jobs.require_job(self.db, job_id)

    def list_jobs(self, job_type: str | None = None) -> list[Row]:
        from scheduler.store.sqlite import jobs
        return jobs.list_jobs(self.db, job_type)

    def update_job(self, job_id: str, columns: Mapping[str, Any], now: str) -> Job:
        from scheduler.store.sqlite import jobs
        return jobs.update_job(self.db, job_id, columns, now)

    def delete_job(self, job_id: str) -> None:
        from scheduler.store.sqlite import jobs
        jobs.delete_job(self.db, job_id)

    def check_chain_placement(self, job_id: str, parent_id: str) -> None:
        from scheduler.store.sqlite import chains
        with self.db.transaction() as conn:
            chains.check_placement(conn, job_id, parent_id)

    def get_run(self, run_id: str) -> Run | None:
        from scheduler.store.sqlite import runs
        return runs.get_run(self.db, run_id)

    def require_run(self, run_id: str) -> Run:
        from scheduler.store.sqlite import runs
        return runs.require_run(self.db, run_id)

    def list_runs(self, job_id: str, limit: int) -> list[Row]:
        from scheduler.store.sqlite import runs
        return runs.list_runs(self.db, job_id, limit)

    def latest_ok_identity(self, job_id: str) -> str | None:
        from scheduler.store.sqlite import runs
        return runs.latest_ok_identity(self.db, job_id)

    def live_dispatches(self, job_id: str) -> list[Row]:
        from scheduler.store.sqlite import queue
        return queue.live_rows(self.db, job_id)

    def running_runs(self) -> list[Row]:
        from scheduler.store.sqlite import runs
        return runs.running_runs(self.db)

    def stale_runs(self, threshold_s: int, now: str) -> list[Row]:
        from scheduler.store.sqlite import runs
        return runs.stale_runs(self.db, threshold_s, now)

    def enqueue_dispatch(self, job_id: str, kind: str, scheduled_for: str, *,
                         backlog_cap: int | None = None) -> Row | None:
        from scheduler.store.sqlite import queue
        return queue.enqueue_dispatch(self.db, job_id, kind, scheduled_for, backlog_cap=backlog_cap)

    def cancel_jobs(self, job_id: str, *, cascade: bool, now: str, reason: str) -> Cancellation:
        from scheduler.store.sqlite import cancellation
        return cancellation.cancel_jobs(self.db, job_id, cascade=cascade, now_text=now, reason=reason)

    # -- the idempotency ledger ----------------------------------------------------------------
    def ledger_for_job(self, job_id: str, limit: int = 20) -> list[Row]:
        from scheduler.store.sqlite import idempotency
        return idempotency.for_job(self.db, job_id, limit)

    def ledger_entry(self, key: str) -> Row | None:
        from scheduler.store.sqlite import idempotency
        return idempotency.get(self.db, key)

    def release_key(self, key: str, now: str) -> Row:
        from scheduler.store.sqlite import idempotency
        return idempotency.release(self.db, key, now)

    def prune_ledger(self, now: str, *, dry_run: bool = False) -> int:
        from scheduler.store.sqlite import idempotency
        return idempotency.prune(self.db, now, dry_run=dry_run)

    # -- retention of runs and approvals; the file's upkeep ------------------------------------
    def prune_runs(self, now: str, keep_per_job: int, keep_days: int, *,
                   dry_run: bool = False) -> RunPrune:
        from scheduler.store.sqlite import retention
        return retention.prune_runs(self.db, now, keep_per_job, keep_days, dry_run=dry_run)

    def prune_approvals(self, now: str, keep_days: int, *, dry_run: bool = False) -> int:
        from scheduler.store.sqlite import retention
        return retention.prune_approvals(self.db, now, keep_days, dry_run=dry_run)

    def run_ids_present(self, run_ids: Sequence[str]) -> set[str]:
        from scheduler.store.sqlite import retention
        return retention.run_ids_present(self.db, list(run_ids))

    def schema_current(self) -> bool:
        from scheduler.store.sqlite import migrations
        return migrations.is_current(self.db)

    def vacuum(self) -> None:
        from scheduler.store.sqlite import retention
        retention.vacuum(self.db)

    def file_bytes(self) -> int:
        from scheduler.store.sqlite import retention
        return retention.file_bytes(self.db)

    # -- approval gates ---------------------------------------------------------------------------
    def approve_job(self, job_id: str, now: str) -> Row:
        from scheduler.store.sqlite import approvals
        return approvals.approve(self.db, job_id, now)

    def reject_job(self, job_id: str, reason: str | None, now: str) -> Row:
        from scheduler.store.sqlite import approvals
        return approvals.reject(self.db, job_id, reason, now)

    def pending_approvals(self, now: str) -> list[Row]:
        from scheduler.store.sqlite import approvals
        return approvals.pending(self.db, now)

    # -- delivery aliases, resource pools, status ------------------------------------------------
    def list_aliases(self) -> list[Row]:
        from scheduler.store.sqlite import messages
        return messages.list_aliases(self.db)

    def add_alias(self, alias: str, channel: str, target: str, description: str | None) -> Row:
        from scheduler.store.sqlite import messages
        return messages.add_alias(self.db, alias, channel, target, description)

    def remove_alias(self, alias: str) -> bool:
        from scheduler.store.sqlite import messages
        return messages.remove_alias(self.db, alias)

    def pool_capacity(self, name: str) -> int | None:
        from scheduler.store.sqlite import pools
        return pools.get_capacity(self.db, name)

    def set_pool_capacity(self, name: str, capacity: int, now: str) -> None:
        from scheduler.store.sqlite import pools
        pools.set_capacity(self.db, name, capacity, now)

    def remove_pool(self, name: str) -> bool:
        from scheduler.store.sqlite import pools
        return pools.remove(self.db, name)

    def pool_overview(self, now: str) -> list[Row]:
        from scheduler.store.sqlite import status
        return status.pool_overview(self.db, now)

    def overview(self, stale_threshold_s: int, now: str) -> dict[str, Any]:
        from scheduler.store.sqlite import status
        return status.overview(self.db, stale_threshold_s, now)

    def gauges(self, now: str) -> StoreGauges:
        from scheduler.store.sqlite import gauges
        return gauges.gauges(self.db, now)

    def check_writable(self) -> None:
        from scheduler.store.sqlite import gauges
        gauges.check_writable(self.db)

    # -- the fleet: daemon instances -------------------------------------------------------------
    def register_instance(self, owner: Owner, version: str, pid: int, now: str) -> None:
        from scheduler.store.sqlite import instances
        instances.register(self.db, owner, version, pid, now)

    def beat_instance(self, owner: Owner, now: str) -> bool:
        from scheduler.store.sqlite import instances
        return instances.beat(self.db, owner, now)

    def stop_instance(self, owner: Owner, now: str) -> None:
        from scheduler.store.sqlite import instances
        instances.mark_stopped(self.db, owner, now)

    def list_instances(self, live_since: str) -> list[Row]:
        from scheduler.store.sqlite import instances
        return instances.list_instances(self.db, live_since)

    def prune_instances(self, before: str, *, dry_run: bool = False) -> int:
        from scheduler.store.sqlite import instances
        return instances.prune(self.db, before, dry_run=dry_run)

    def placed_jobs(self) -> list[Row]:
        from scheduler.store.sqlite import instances
        return instances.placed_jobs(self.db)

    # -- the agent registry ------------------------------------------------------------------------
    def list_agents(self) -> list[Row]:
        from scheduler.store.sqlite import agents
        return agents.list_agents(self.db)

    def get_agent(self, agent_id: str) -> Row | None:
        from scheduler.store.sqlite import agents
        return agents.get_agent(self.db, agent_id)

    def register_agent(self, agent_id: str, name: str | None, now: str, *,
                       capabilities: Sequence[str] | None = None) -> Row:
        from scheduler.store.sqlite import agents
        return agents.register_agent(self.db, agent_id, name, now, capabilities=capabilities)

    def ensure_agent(self, agent_id: str, name: str, capabilities: Sequence[str], now: str) -> bool:
        from scheduler.store.sqlite import agents
        return agents.ensure_agent(self.db, agent_id, name, capabilities, now)

    def set_agent_status(self, agent_id: str, status: str, session_key: str | None,
                         now: str) -> None:
        from scheduler.store.sqlite import agents
        agents.set_status(self.db, agent_id, status, session_key, now)

    def release_agents_without_turns(self, now: str) -> list[str]:
        from scheduler.store.sqlite import agents
        return agents.release_without_turns(self.db, now)

    # -- retrieval context -----------------------------------------------------------------------
    def prior_outputs(self, job_id: str, exclude_run_id: str, limit: int,
                      max_chars: int) -> list[PriorOutput]:
        from scheduler.store.sqlite import retrieval
        return retrieval.prior_outputs(self.db, job_id, exclude_run_id, limit, max_chars)
    # -- task groups (the dead-man switch) ----------------------------------------------------
    def create_task_group(self, group: NewTaskGroup, now: str) -> Row:
        from scheduler.store.sqlite import tracker
        return tracker.create_group(self.db, group, now)

    def task_group(self, tracker_id: str) -> Row | None:
        from scheduler.store.sqlite import tracker
        return tracker.get_group(self.db, tracker_id)

    def active_task_groups(self) -> list[Row]:
        from scheduler.store.sqlite import tracker
        return tracker.active_groups(self.db)

    def task_group_history(self, limit: int) -> list[Row]:
        from scheduler.store.sqlite import tracker
        return tracker.history(self.db, limit)

    def report_task_agent(self, tracker_id: str, label: str, state: str, message: str | None,
                          now: str) -> FinishedGroup | None:
        from scheduler.store.sqlite import tracker
        return tracker.report(self.db, tracker_id, label, state, message, now)

    def register_task_session(self, tracker_id: str, label: str, session_key: str,
                              now: str) -> Row:
        from scheduler.store.sqlite import tracker
        return tracker.register_session(self.db, tracker_id, label, session_key, now)

    def touch_task_sessions(self, session_keys: Collection[str], now: str) -> int:
        from scheduler.store.sqlite import tracker
        return tracker.touch_sessions(self.db, session_keys, now)

    def sweep_task_groups(self, now: str) -> TrackerSweep:
        from scheduler.store.sqlite import tracker
        return tracker.sweep(self.db, now)

    # -- the team adapter -------------------------------------------------------------------------
    def map_team_messages(self, limit: int, now: str) -> int:
        from scheduler.store.sqlite import teams
        return teams.map_messages(self.db, limit, now)

    def team_tasks(self, team_id: str, limit: int) -> list[Row]:
        from scheduler.store.sqlite import teams
        return teams.tasks(self.db, team_id, limit)

    def team_events(self, team_id: str, limit: int, task_id: str | None) -> list[Row]:
        from scheduler.store.sqlite import teams
        return teams.events(self.db, team_id, limit, task_id)

    def team_inbox(self, team_id: str, limit: int, member_id: str | None,
                   task_id: str | None) -> list[Row]:
        from scheduler.store.sqlite import teams
        return teams.inbox(self.db, team_id, limit, member_id, task_id)

    def open_team_gate(self, team_id: str, task_id: str, group: NewTaskGroup, now: str) -> Row:
        from scheduler.store.sqlite import teams
        return teams.open_gate(self.db, team_id, task_id, group, now)

    def check_team_gates(self, limit: int, now: str) -> GateCheck:
        from scheduler.store.sqlite import teams
        return teams.check_gates(self.db, limit, now)

    def ack_team_message(self, message_id: str, actor: str, detail: str | None,
                         now: str) -> Row | None:
        from scheduler.store.sqlite import teams
        return teams.ack(self.db, message_id, actor, detail, now)

    # -- the sub-agent dispatch ledger ----------------------------------------------------------
    def get_dispatch(self, label: str) -> DispatchLabel | None:
        from scheduler.store.sqlite import dispatch
        return dispatch.get_dispatch(self.db, label)

    def dispatch_by_session(self, session_key: str) -> DispatchLabel | None:
        from scheduler.store.sqlite import dispatch
        return dispatch.dispatch_by_session(self.db, session_key)

    def list_dispatches(self, statuses: Collection[str] | None, limit: int) -> list[DispatchLabel]:
        from scheduler.store.sqlite import dispatch
        return dispatch.list_dispatches(self.db, statuses, limit)

    def save_dispatch(self, record: DispatchLabel, now: str) -> DispatchLabel:
        from scheduler.store.sqlite import dispatch
        return dispatch.save_dispatch(self.db, record, now)

    def update_dispatch(self, label: str, changes: Mapping[str, Any], now: str, *,
                        only_if_status: Collection[str] | None = None) -> DispatchLabel | None:
        from scheduler.store.sqlite import dispatch
        return dispatch.update_dispatch(self.db, label, changes, now,
                                        only_if_status=only_if_status)

    def delete_dispatch(self, label: str) -> bool:
        from scheduler.store.sqlite import dispatch
        return dispatch.delete_dispatch(self.db, label)

    def import_dispatches(self, records: Sequence[DispatchLabel], now: str) -> list[str]:
        from scheduler.store.sqlite import dispatch
        return dispatch.import_dispatches(self.db, records, now)

    # -- companion tools (stuck runs, webhook-check) ---------------------------------------------
    def long_running_runs(self, started_before: str, limit: int) -> list[Row]:
        from scheduler.store.sqlite import companions
        return companions.long_running_runs(self.db, started_before, limit)

    def record_notice(self, delivery: Delivery, subject: str, now: str, kind: str = "system") -> Row:
        from scheduler.store.sqlite import companions
        return companions.record_notice(self.db, delivery, subject, now, kind)

    def delivery_failures_since(self, since: str) -> int:
        from scheduler.store.sqlite import companions
        return companions.delivery_failures_since(self.db, since)

    # -- bulk copy (db copy) ----------------------------------------------------------------------
    def copy_tables(self) -> list[CopyTable]:
        from scheduler.store.sqlite import copy
        return list(copy.COPY_TABLES)

    def read_rows(self, table: str, batch_size: int = 500,
                  columns: Sequence[str] | None = None) -> Iterator[list[Row]]:
        from scheduler.store.sqlite import copy
        return copy.read_rows(self.db, table, batch_size, columns)

    def row_counts(self) -> dict[str, int]:
        from scheduler.store.sqlite import copy
        return copy.row_counts(self.db)

    def holds_user_data(self) -> bool:
        from scheduler.store.sqlite import copy
        return copy.holds_user_data(self.db)

    def read_snapshot(self) -> AbstractContextManager[None]:
        from scheduler.store.sqlite import copy
        return copy.read_snapshot(self.db)

    def bulk_load(self) -> AbstractContextManager[BulkWriter]:
        from scheduler.store.sqlite import copy
        return copy.bulk_load(self.db)
