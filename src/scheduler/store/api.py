"""The store's interface: every operation of the engine and the CLI on persistent state.

The engine and the CLI see only this module (``Store`` and the value types below). The SQLite
implementation lives in ``store/sqlite/`` and is the only code that speaks SQL; a second backend
implements the same protocol, and ``tests/test_store_contract.py`` holds every backend to it.

The methods are synchronous: the CLI calls them directly (a command must start in a few tens of
milliseconds), and the daemon runs them on one dedicated thread (``store.thread.StoreThread``).
Instants cross the interface as stored UTC text, ``YYYY-MM-DD HH:MM:SS``; rows as typed records.
Every error a method raises is a ``StoreError`` subclass (``scheduler.errors``).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from scheduler.models.dispatch import DispatchLabel
from scheduler.models.messages import NewMessage
from scheduler.models.records import Job, Message, OutboundMessage, Run
from scheduler.models.tasks import NewTaskGroup
from scheduler.store import DEFAULT_LEASE_S

Source = Literal["cron", "at", "manual", "retry", "chain"]
# The next fire time of a cron job after now, as stored text (None: it never fires again).
NextFire = Callable[[Job], str | None]
# The next fire time of a cron job strictly after an instant (stored text), or None.
NextFireAfter = Callable[[Job, str], str | None]
Row = dict[str, Any]

# The pseudo-target that stands for watchdog jobs, whatever their session_target.
WATCHDOG = "watchdog"
# The pseudo-target of dispatch watcher jobs (job_type 'dispatch'), likewise.
DISPATCH = "dispatch"


@dataclass(frozen=True)
class Owner:
    """The daemon instance that claims and runs work: recorded on every run it starts, so that
    recovery touches only the runs of instances that are gone."""

    instance: str
    host: str
    # What placements it serves besides its host (SCHEDULER_INSTANCE_LABELS; models/placement.py).
    labels: tuple[str, ...] = ()

    @classmethod
    def new(cls, host: str | None = None, labels: tuple[str, ...] = ()) -> Owner:
        """A fresh instance id, on ``host`` (default: the machine's host name)."""
        import socket
        import uuid

        return cls(instance=str(uuid.uuid4()), host=host or socket.gethostname(), labels=labels)

    @property
    def text(self) -> str:
        """As stored in ``runs.owner``: ``<instance id>@<host>``."""
        return f"{self.instance}@{self.host}"


@dataclass(frozen=True)
class Claim:
    """A run created for due work, ready for a strategy."""

    run: Run
    job: Job
    source: Source
    dispatch_id: str | None


@dataclass
class ClaimBatch:
    claims: list[Claim] = field(default_factory=list)
    skipped: list[Run] = field(default_factory=list)
    waiting: int = 0  # due work left untouched: its pool is full, or its own job's run is active
    gated: list[Run] = field(default_factory=list)  # gate runs: work now awaiting approval
    notices: int = 0  # approval requests recorded as outbound messages
    resolved: list[Run] = field(default_factory=list)  # gate runs whose approval timed out


@dataclass(frozen=True)
class Delivery:
    """A result to announce: the text and the job's (unresolved) target."""

    text: str
    channel: str | None
    target: str | None
    # Files to send after the text (real paths, already checked by scheduler.media.MediaPolicy).
    attachments: tuple[str, ...] = ()


# Run columns a strategy may set when it finishes a run.
FINISH_COLUMNS = frozenset({
    "summary", "error_message", "shell_exit_code", "shell_signal", "shell_timed_out",
    "shell_stdout", "shell_stderr", "shell_stdout_path", "shell_stderr_path", "shell_stdout_bytes",
    "shell_stderr_bytes", "context_summary", "session_key", "session_id",
    # the v0.2 trust outcomes (JSON text, credentials already removed)
    "identity_resolved", "trust_evaluation", "authorization_decision",
    "authorization_proof_verification", "evidence_record", "credential_handoff_summary",
    "cost_usd",  # an agent turn's cost as the gateway reported it (contract_max_cost_usd)
})


@dataclass(frozen=True)
class Finish:
    """The end of one run, as the engine hands it over to be recorded."""

    claim: Claim
    status: str
    duration_ms: int
    columns: dict[str, Any]
    delivery: Delivery | None = None  # a result to announce, recorded with the run's end
    remove_job: bool = False  # the job deletes itself with this run (a self-destructing watchdog)
    # The run's output as its children's trigger_condition sees it (an agent's whole reply, a
    # shell run's stdout); None: the summary, else the error message, as recorded.
    content: str | None = None
    # The run was stopped by a trust gate before its work began (identity, trust, proof,
    # authorization, credentials): no retry, no delivery, no children; its key is released.
    fail_closed: bool = False
    # The failure is final: no retry is scheduled whatever max_retries says (a turn over its
    # cost cap, which a retry would pay for again).
    no_retry: bool = False

    def __post_init__(self) -> None:
        unknown = set(self.columns) - FINISH_COLUMNS
        if unknown:
            raise ValueError(f"not run result columns: {sorted(unknown)}")


@dataclass(frozen=True)
class FinishPolicy:
    """Times the engine computes (the store does no calendar arithmetic of its own)."""

    now_text: str
    backoff_until: Callable[[int], str]  # earliest next cron run after n consecutive errors
    retry_at: Callable[[int], str]  # when retry number n (1-based) is due


@dataclass(frozen=True)
class Chained:
    """The children the end of a parent's work fired, recorded in the same transaction."""

    queued: tuple[Row, ...] = ()  # one ``chain`` queue row per child queued
    skipped: tuple[Run, ...] = ()  # children that matched but were not queued (each says why)
    unmatched: tuple[str, ...] = ()  # ids of children whose trigger_condition did not match


@dataclass(frozen=True)
class Finished:
    job: Job | None  # the job afterwards; None if deleted (by the user or delete_after_run)
    retry: Row | None  # the retry queue row, when one was scheduled
    message: Row | None = None  # the outbound delivery recorded with it
    # False when there was no running run left to end: its job was deleted meanwhile (the run
    # went with it) or another process already ended it. Nothing else was then written.
    recorded: bool = True
    children: Chained = field(default_factory=Chained)  # what the end fired
    # Not recorded because the run's lease was taken over: another instance recovered the run
    # after this owner's lease expired (fencing). Nothing was written, nothing is delivered.
    fenced: bool = False


@dataclass(frozen=True)
class StoreGauges:
    """What the metrics endpoint reads from the database on a scrape."""

    backlog_due: int  # due work not started: occurrences and queue rows whose time has come
    backlog_later: int  # queue rows (retries, chained or manual runs) due later
    backlog_awaiting_approval: int  # queue rows held for an approval
    approvals_pending: int
    outbound_pending: int  # results and notices not yet delivered to a chat
    oldest_outbound_at: str | None  # created_at of the oldest of them


@dataclass
class Recovery:
    crashed: list[Run] = field(default_factory=list)
    replays: list[Row] = field(default_factory=list)  # queue rows scheduled to replay crashed runs
    # By crashed run id: the children of crashes that end the job's work (those not replayed).
    children: dict[str, Chained] = field(default_factory=dict)


@dataclass
class Cancellation:
    """What ``jobs cancel`` stopped: the jobs disabled (the job first, then its descendants,
    parents before children), the runs in flight it cancelled, the queue rows it closed and the
    pending approvals it rejected."""

    job_ids: list[str]
    run_ids: list[str] = field(default_factory=list)
    dispatch_ids: list[str] = field(default_factory=list)
    approval_ids: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class SpawnRejection:
    """A spawn message answered with an error."""

    reply: Message | None  # the error message to its sender (None: the sender has no inbox)


@dataclass(frozen=True)
class PriorOutput:
    """What an earlier run of a job produced, for retrieval context (strategies/retrieval.py)."""

    run_id: str
    started_at: str
    status: str
    output: str  # a shell run's stdout, else the run's summary (an agent's reply); never blank
    stdout_path: str | None  # the offloaded stdout file, when the output was too big to store


@dataclass(frozen=True)
class FinishedGroup:
    """A task group that has just finished, and the completion notice recorded with it (None
    when the group has no delivery target)."""

    group: Row  # the ``task_tracker`` row afterwards
    notice: Row | None


@dataclass
class TrackerSweep:
    """One pass of the dead-man switch: the agents it declared dead (``task_tracker_agents`` rows
    with ``tracker_id``, ``agent_label``) and the groups that finished (by them, or by reports
    that no pass had looked at yet)."""

    dead: list[Row] = field(default_factory=list)
    finished: list[FinishedGroup] = field(default_factory=list)


@dataclass
class GateCheck:
    """What ``check_team_gates`` did, with the groups that finished on the way."""

    passed: int = 0
    failed: int = 0
    pending: int = 0
    finished: list[FinishedGroup] = field(default_factory=list)


@dataclass
class RunPrune:
    """What a run prune deleted (or would): counts by rule, and the runs' ids (their files)."""

    by_rule: dict[str, int]
    run_ids: list[str]


@dataclass(frozen=True)
class CopyTable:
    """A table of user data, as ``db copy`` moves it (store/copying.py)."""

    name: str
    key: tuple[str, ...]  # the primary key's columns
    # Columns written in a second pass, once every table is in: they close a foreign-key cycle
    # (a run names the queue row it came from; a queue row names the run that queued it).
    deferred: tuple[str, ...] = ()
    # Rows an operator names (agents, delivery aliases, pools), which every host's database may
    # hold under the same key: copying into a database that has the key keeps its row.
    registry: bool = False


class BulkWriter(Protocol):
    """Writes inside the one transaction of ``Store.bulk_load``."""

    def insert(self, table: CopyTable, rows: Sequence[Row], *, keep_existing: bool = False) -> int:
        """Insert the rows (their keys name the columns; a column this store lacks is a
        StoreValueError naming it); with ``keep_existing``, a row whose key is taken is skipped,
        else it fails the whole load. How many were inserted."""
    def update(self, table: CopyTable, rows: Sequence[Row]) -> int:
        """Set each row's non-key columns on the stored row with its key; how many changed."""
    def counts(self) -> dict[str, int]:
        """Rows per copied table, as the transaction sees them now."""


class Store(Protocol):
    """Everything the engine and the CLI do with persistent state."""

    # -- the database itself -------------------------------------------------------------------
    def close(self, *, checkpoint: bool = False) -> None:
        """Close; with ``checkpoint``, leave the database compact (a stopping daemon)."""
    def change_token(self) -> int:
        """Changes whenever another process commits: the daemon's cue that the CLI wrote."""
    def integrity_problems(self) -> list[str]: ...
    def repair_hint(self) -> str:
        """What an operator does about a damaged database (one sentence naming the commands)."""
    def identity(self) -> tuple[int, int] | None:
        """What names the database the daemon opened (a file's device and inode)."""
    def checkpoint(self) -> None: ...
    def schema_version(self) -> int | None: ...
    @property
    def shared(self) -> bool:
        """Whether other daemons may work on this store at the same time (PostgreSQL); False
        when one daemon holds it alone (a SQLite file, under the single-instance lock)."""

    # -- claiming due work ---------------------------------------------------------------------
    def claim_due(self, now: str, limit: int, targets: Collection[str], next_fire: NextFire,
                  owner: Owner, lease_s: int = DEFAULT_LEASE_S) -> ClaimBatch:
        """Claim due work for ``owner``; each run started holds a lease of ``lease_s`` seconds."""
    # ``owner`` also says which placements are served: work of jobs placed on another host or
    # label is neither claimed, nor due for this instance, nor "without strategy" here.
    def next_due_at(self, targets: Collection[str], owner: Owner) -> str | None: ...
    def defer_claim(self, claim: Claim, now: str, reason: str) -> bool:
        """Give the claim back (its work is due again); False, writing nothing, when the run is
        no longer running under the claim's lease."""
    def jobs_without_strategy(self, targets: Collection[str], owner: Owner) -> list[Job]:
        """Enabled root jobs placed where ``owner`` serves whose target it has no strategy for."""

    # -- recording run endings -----------------------------------------------------------------
    def finish_runs(self, finishes: Sequence[Finish], policy: FinishPolicy) -> list[Finished]:
        """Record the ends, in one transaction. An end applies only while its run is running
        under the lease of its claim (owner and generation); else it writes nothing
        (``recorded`` False, and ``fenced`` when another instance took the run over)."""
    def record_unrecordable(self, claim: Claim, message: str, now: str) -> bool: ...

    # -- liveness and recovery -----------------------------------------------------------------
    def beat(self, run_ids: Collection[str], now: str, owner: Owner | None = None, *,
             lease_s: int = DEFAULT_LEASE_S,
             generations: Mapping[str, int] | None = None) -> set[str]:
        """Heartbeat the runs and extend their leases to now + ``lease_s``: those still running
        under ``owner`` (and the generation ``generations`` names). Returns the others: runs
        this owner has lost (without ``owner``: the runs no longer running)."""
    def run_statuses(self, run_ids: Collection[str]) -> dict[str, str]: ...
    def recover_orphans(self, now: str, owner: Owner, lease_s: int = DEFAULT_LEASE_S) -> Recovery:
        """At start: end as ``crashed`` the running runs of instances that are gone. On a store
        that is not ``shared``: every instance but ``owner`` (whose single-instance lock is
        held). On a shared store: only runs whose lease expired (a run with no lease: whose
        heartbeat is older than ``lease_s``)."""
    def recover_expired_leases(self, now: str, owner: Owner, lease_s: int = DEFAULT_LEASE_S) -> Recovery:
        """While serving: recover, as ``recover_orphans`` does at start, the running runs of
        other instances whose lease expired; each run's lease generation moves on, so its old
        owner can no longer record it (fencing)."""
    def unwatched_stale_runs(self, threshold_s: int, now: str,
                             watched: Collection[str]) -> list[Claim]: ...
    def reap_queue(self, now: str) -> int: ...
    def jobs_missing_next_run(self) -> list[Job]: ...
    def set_next_run(self, job_id: str, next_run_at: str | None) -> None: ...
    def shift_back_after_clock_step(self, seconds: float, now: str,
                                    next_fire_after: NextFireAfter) -> int: ...
    def latest_recorded_instant(self) -> str | None: ...

    # -- outbound results and inboxes ----------------------------------------------------------
    def due_outbound(self, now: str, limit: int = 50) -> list[OutboundMessage]: ...
    def next_outbound_at(self) -> str | None: ...
    def record_delivery_progress(self, message_id: str, chunks_sent: int) -> None: ...
    # Attachments accepted (or given up) so far; ``skipped`` says why the last one was not sent.
    def record_media_progress(self, message_id: str, media_sent: int, skipped: str | None,
                              now: str) -> None: ...
    def mark_delivered(self, message_id: str, now: str) -> None: ...
    def mark_delivery_failed(self, message_id: str, error: str, retry_at: str | None,
                             now: str) -> Row: ...

    # -- what agents see of their messages (store/sqlite/inbox.py) --------------------------------
    # A broadcast reaches every agent, each with its own state of it: ``agent`` names whose.
    def take_inbox(self, agent_id: str, now: str, limit: int = 5) -> list[Row]:
        """Up to ``limit`` pending messages for the agent's prompt, marked delivered (for it)."""
    def return_to_inbox(self, agent_id: str, message_ids: list[str], now: str) -> None:
        """Taken messages whose prompt the gateway never accepted: pending again (for it)."""
    def inbox(self, agent_id: str, now: str, limit: int,
              statuses: tuple[str, ...] = ("pending", "delivered")) -> list[Row]:
        """The agent's messages in ``statuses``, unexpired, kind rank, priority DESC, age."""
    def unread_count(self, agent_id: str, now: str) -> int: ...
    def outbox(self, agent_id: str, limit: int) -> list[Row]: ...
    def thread(self, message_id: str) -> list[Row]:
        """The message and its direct replies, oldest first; NotFoundError for an unknown id."""
    def message_receipts(self, message_id: str, limit: int) -> list[Row]: ...
    def mark_read(self, message_id: str, agent_id: str | None, now: str) -> Row:
        """Unread -> read, as ``agent_id`` sees it; a broadcast needs ``agent_id``
        (ValidationError), an outbound delivery is refused."""
    def ack_message(self, message_id: str, agent_id: str | None, actor: str, detail: str | None,
                    now: str) -> Row: ...
    def read_all(self, agent_id: str, now: str) -> int: ...
    def expire_messages(self, now: str) -> int: ...
    def prune_messages(self, now: str, *, dry_run: bool = False) -> dict[str, int]:
        """Delete old messages by the retention rules; never an unsent outbound delivery.
        Counts by rule; with ``dry_run`` nothing is deleted."""
    def prune_expired_jobs(self, now: str, *, dry_run: bool = False) -> dict[str, int]:
        """Job housekeeping (features.md §3.12): delete finished one-shots a day after their
        last run, children whose parent is gone, and disabled jobs past ``ttl_hours``; never a
        job with a run not ended, an open queue row or an unsent outbound message. Counts by
        rule (``finished_one_shots``, ``orphaned_children``, ``ttl_expired``)."""

    # -- messages between agents, and spawn messages ---------------------------------------------
    def send_message(self, message: NewMessage, now: str) -> Message:
        """Write a ``pending`` message; NotFoundError when the job, run or message it names
        does not exist."""
    def get_message(self, message_id: str) -> Message | None: ...
    def pending_spawns(self, limit: int = 50) -> list[Message]:
        """``spawn`` messages not yet answered, oldest first, whoever they are addressed to."""
    def accept_spawn(self, message_id: str, job_row: Mapping[str, Any], queue_at: str | None,
                     now: str) -> Job | None:
        """Create the spawned job (with ``queue_at``, also a manual run of it due then) and mark
        the message ``delivered``, in one transaction; None (nothing written) when the message
        was answered already. A missing parent or a taken id: ValidationError, nothing written."""
    def reject_spawn(self, message_id: str, error: str, now: str) -> SpawnRejection | None:
        """Reply ``error`` to the sender (a ``system`` message from ``scheduler``) and mark the
        message ``delivered``, in one transaction; None when it was answered already."""

    # -- jobs and runs -------------------------------------------------------------------------
    def insert_job(self, row: Mapping[str, Any]) -> Job: ...
    def get_job(self, job_id: str) -> Job | None: ...
    def require_job(self, job_id: str) -> Job: ...
    def list_jobs(self, job_type: str | None = None) -> list[Row]: ...
    def update_job(self, job_id: str, columns: Mapping[str, Any], now: str) -> Job: ...
    def delete_job(self, job_id: str) -> None: ...
    def check_chain_placement(self, job_id: str, parent_id: str) -> None:
        """Raise ValidationError unless ``job_id`` may be a child of ``parent_id`` (the parent
        exists, no cycle, the chain no deeper than 10): what insert and update check."""
    def get_run(self, run_id: str) -> Run | None: ...
    def require_run(self, run_id: str) -> Run: ...
    def list_runs(self, job_id: str, limit: int) -> list[Row]: ...
    def latest_ok_identity(self, job_id: str) -> str | None:
        """The ``identity_resolved`` text of the job's latest ``ok`` run (None: no such run, or
        it resolved none): a child's credential policy starts from it."""
    def live_dispatches(self, job_id: str) -> list[Row]:
        """The job's ``job_dispatch_queue`` rows still to run (pending, claimed, awaiting
        approval), the soonest due first."""
    def running_runs(self) -> list[Row]: ...
    def stale_runs(self, threshold_s: int, now: str) -> list[Row]: ...
    def enqueue_dispatch(self, job_id: str, kind: str, scheduled_for: str, *,
                         backlog_cap: int | None = None) -> Row | None: ...
    def cancel_jobs(self, job_id: str, *, cascade: bool, now: str, reason: str) -> Cancellation:
        """Disable the job (and with ``cascade`` its descendants, by ``parent_id``); end their runs
        in flight as ``cancelled`` with ``reason``; close their queued runs and reject their
        pending approvals; one transaction. NotFoundError, writing nothing, for an unknown id."""

    # -- the idempotency ledger ----------------------------------------------------------------
    def ledger_for_job(self, job_id: str, limit: int = 20) -> list[Row]: ...
    def ledger_entry(self, key: str) -> Row | None: ...
    def release_key(self, key: str, now: str) -> Row: ...
    def prune_ledger(self, now: str, *, dry_run: bool = False) -> int: ...

    # -- retention of runs and approvals; the file's upkeep ------------------------------------
    def prune_runs(self, now: str, keep_per_job: int, keep_days: int, *,
                   dry_run: bool = False) -> RunPrune:
        """Delete the runs beyond the newest ``keep_per_job`` of their job and, if ``keep_days``
        > 0, those started longer ago; never one unfinished, read by an open dispatch, or with
        its outbound message unsent. With ``dry_run`` nothing is deleted."""
    def prune_approvals(self, now: str, keep_days: int, *, dry_run: bool = False) -> int:
        """Delete approvals resolved more than ``keep_days`` ago; how many."""
    def run_ids_present(self, run_ids: Sequence[str]) -> set[str]:
        """The ids among ``run_ids`` that name a stored run."""
    def schema_current(self) -> bool:
        """Whether the database is at this version's schema revision."""
    def vacuum(self) -> None:
        """Rebuild the file compactly; takes the database's exclusive lock while it works."""
    def file_bytes(self) -> int:
        """The database's size on disk, its write-ahead log included."""

    # -- approval gates ---------------------------------------------------------------------------
    def approve_job(self, job_id: str, now: str) -> Row:
        """Approve the job's oldest pending approval: its work is due at once and is never gated
        again. Returns the approval (with ``job_name``); NotFoundError for an unknown job or one
        with nothing pending."""
    def reject_job(self, job_id: str, reason: str | None, now: str) -> Row:
        """Reject the job's oldest pending approval: the gate run ``cancelled`` with ``reason``
        (or "Rejected by operator"), its queue row closed. Errors as ``approve_job``."""
    def pending_approvals(self, now: str) -> list[Row]:
        """Pending approvals, oldest first: the ``approvals`` columns plus ``job_name``,
        ``age_s``, ``timeout_at`` and ``on_timeout`` (the job's approval_auto)."""

    # -- delivery aliases, resource pools, status ------------------------------------------------
    def list_aliases(self) -> list[Row]: ...
    def add_alias(self, alias: str, channel: str, target: str, description: str | None) -> Row: ...
    def remove_alias(self, alias: str) -> bool: ...
    def pool_capacity(self, name: str) -> int | None: ...
    def set_pool_capacity(self, name: str, capacity: int, now: str) -> None: ...
    def remove_pool(self, name: str) -> bool: ...
    def pool_overview(self, now: str) -> list[Row]: ...
    def overview(self, stale_threshold_s: int, now: str) -> dict[str, Any]: ...
    def gauges(self, now: str) -> StoreGauges:
        """Counts for the metrics endpoint (backlog, approvals, outbound); read on a scrape."""
    def check_writable(self) -> None:
        """Raise the store's error when a write could not be made now (read-only, locked)."""

    # -- the fleet: daemon instances (store/sqlite/instances.py) ----------------------------------
    # An instance writes only its own row. It is live while not stopped and ``last_seen`` is at
    # or after ``live_since`` (the caller's now minus the lease).
    def register_instance(self, owner: Owner, version: str, pid: int, now: str) -> None:
        """Insert the instance (a daemon start), live from ``now``."""
    def beat_instance(self, owner: Owner, now: str) -> bool:
        """``last_seen`` is now; False when its row is gone or stopped (register again)."""
    def stop_instance(self, owner: Owner, now: str) -> None:
        """A clean stop: ``stopped_at`` is now."""
    def list_instances(self, live_since: str) -> list[Row]:
        """Every instance, live first: ``id, host, labels`` (a list), ``version, pid,
        started_at, last_seen, stopped_at``, ``live`` and ``running_runs``."""
    def prune_instances(self, before: str, *, dry_run: bool = False) -> int:
        """Delete the instances stopped, or silent, since before ``before``; how many."""
    def placed_jobs(self) -> list[Row]:
        """Enabled jobs with a placement: ``id, name, placement, next_run_at, due_rows``."""

    # -- the agent registry ------------------------------------------------------------------------
    def list_agents(self) -> list[Row]:
        """Every agent by id; ``capabilities`` parsed from its JSON text."""
    def get_agent(self, agent_id: str) -> Row | None: ...
    def register_agent(self, agent_id: str, name: str | None, now: str, *,
                       capabilities: Sequence[str] | None = None) -> Row:
        """Insert the agent ``idle``, or update its name (and capabilities) when given; either
        way ``last_seen_at`` is now. An existing agent's status and session are kept."""
    def ensure_agent(self, agent_id: str, name: str, capabilities: Sequence[str], now: str) -> bool:
        """Register the agent unless it exists (then nothing changes); True when it was added."""
    def set_agent_status(self, agent_id: str, status: str, session_key: str | None,
                         now: str) -> None:
        """The agent's status and session now (registering it when unknown); ``last_seen_at``
        is now."""
    def release_agents_without_turns(self, now: str) -> list[str]:
        """Agents left ``busy`` with no running agent run of theirs (their daemon died mid-turn)
        become ``idle`` with no session; their ids."""

    # -- retrieval context -----------------------------------------------------------------------
    def prior_outputs(self, job_id: str, exclude_run_id: str, limit: int,
                      max_chars: int) -> list[PriorOutput]:
        """The newest ``limit`` runs of the job, other than ``exclude_run_id``, that produced
        output, newest first; each output cut to ``max_chars`` characters."""
    # -- task groups (the dead-man switch) ----------------------------------------------------
    def create_task_group(self, group: NewTaskGroup, now: str) -> Row:
        """Write an ``active`` group and one ``pending`` agent per label; returns the reference's
        shape ``{id, name, status, created_at, created_by, agents: [{agent_label, status}]}``."""
    def task_group(self, tracker_id: str) -> Row | None:
        """The ``task_tracker`` row, with ``agents`` (rows by label) and ``notice`` (the
        completion notice's ``{id, status, delivered_at, last_error}``, or None)."""
    def active_task_groups(self) -> list[Row]:
        """Active ``task_tracker`` rows, newest first."""
    def task_group_history(self, limit: int) -> list[Row]:
        """Finished ``task_tracker`` rows, by ``completed_at``, newest first."""
    def report_task_agent(self, tracker_id: str, label: str, state: str, message: str | None,
                          now: str) -> FinishedGroup | None:
        """A sub-agent's report (``running``, ``completed`` or ``failed``); when it was the last
        agent to finish, the group finishes and its notice is recorded, in the same transaction.
        NotFoundError for an unknown group or label; ValidationError for a finished group."""
    def register_task_session(self, tracker_id: str, label: str, session_key: str,
                              now: str) -> Row:
        """Link a gateway session key to an agent (a heartbeat; pending becomes running).
        Errors as ``report_task_agent``. Returns the agent row."""
    def touch_task_sessions(self, session_keys: Collection[str], now: str) -> int:
        """Heartbeat every pending or running agent of an active group whose session key is
        one of ``session_keys``; returns how many."""
    def sweep_task_groups(self, now: str) -> TrackerSweep:
        """The dead-man switch: agents of active groups past their timeout with no recent
        heartbeat become ``dead``; then every active group whose agents are all finished
        finishes, each with its notice in the same transaction."""

    # -- the team adapter -------------------------------------------------------------------------
    def map_team_messages(self, limit: int, now: str) -> int:
        """Project unmapped team messages (oldest first) into team tasks and mailbox events."""
    def team_tasks(self, team_id: str, limit: int) -> list[Row]: ...
    def team_events(self, team_id: str, limit: int, task_id: str | None) -> list[Row]: ...
    def team_inbox(self, team_id: str, limit: int, member_id: str | None,
                   task_id: str | None) -> list[Row]:
        """The team's messages, oldest first, read or not (``metadata`` parsed)."""
    def open_team_gate(self, team_id: str, task_id: str, group: NewTaskGroup, now: str) -> Row:
        """Create the gate's task group (named ``team:<team>:task:<task>``, whatever
        ``group.name`` says), block the team task on it and log ``gate_open``, in one
        transaction; returns ``{team_id, task_id, gate_status, tracker_id, expected_members}``."""
    def check_team_gates(self, limit: int, now: str) -> GateCheck:
        """Advance waiting gates whose group finished (passed, or failed with its summary)."""
    def ack_team_message(self, message_id: str, actor: str, detail: str | None,
                         now: str) -> Row | None:
        """Acknowledge a team message (read, ``ack_at``, an ``ack`` receipt and mailbox event);
        None, writing nothing, when no team message has that id."""

    # -- the sub-agent dispatch ledger ----------------------------------------------------------
    def get_dispatch(self, label: str) -> DispatchLabel | None: ...
    def dispatch_by_session(self, session_key: str) -> DispatchLabel | None:
        """The newest label whose entry names ``session_key``."""
    def list_dispatches(self, statuses: Collection[str] | None, limit: int) -> list[DispatchLabel]:
        """Labels, newest ``spawned_at`` first; only those in ``statuses`` when given."""
    def save_dispatch(self, record: DispatchLabel, now: str) -> DispatchLabel:
        """Insert the label or replace its whole entry (``created_at`` kept)."""
    def update_dispatch(self, label: str, changes: Mapping[str, Any], now: str, *,
                        only_if_status: Collection[str] | None = None) -> DispatchLabel | None:
        """Set the named columns (``StoreValueError`` for a column that is not writable);
        None, writing nothing, when there is no such label or its status is not one of
        ``only_if_status``."""
    def delete_dispatch(self, label: str) -> bool: ...
    def import_dispatches(self, records: Sequence[DispatchLabel], now: str) -> list[str]:
        """Insert, in one transaction, the labels not present yet; returns those inserted."""

    # -- companion tools (stuck runs, webhook-check) ---------------------------------------------
    def long_running_runs(self, started_before: str, limit: int) -> list[Row]:
        """Running runs started before ``started_before``, oldest first, at most ``limit``; each
        with ``id, job_id, started_at, last_heartbeat, run_timeout_ms`` and its job's
        ``job_name, job_type, watchdog_target_label``."""
    def record_notice(self, delivery: Delivery, subject: str, now: str, kind: str = "system") -> Row:
        """Record an outbound notice (no job or run behind it); the daemon sends it as a result.
        An unknown ``@alias`` target is recorded ``failed`` with the reason."""
    def delivery_failures_since(self, since: str) -> int:
        """How many messages created at or after ``since`` carry a ``last_error``."""

    # -- bulk copy (``db copy``, store/copying.py) ------------------------------------------------
    def copy_tables(self) -> list[CopyTable]:
        """The tables of user data, parents before children (schema bookkeeping excluded)."""
    def read_rows(self, table: str, batch_size: int = 500,
                  columns: Sequence[str] | None = None) -> Iterator[list[Row]]:
        """The table's rows (every column, or ``columns``) in batches of at most ``batch_size``,
        in insertion order (SQLite's rowid): memory stays bounded whatever the table's size."""
    def row_counts(self) -> dict[str, int]:
        """Rows per table of ``copy_tables``."""
    def holds_user_data(self) -> bool:
        """Whether any table of ``copy_tables`` has a row."""
    def read_snapshot(self) -> AbstractContextManager[None]:
        """Within it, every read sees the data as of one instant (writers are not blocked)."""
    def bulk_load(self) -> AbstractContextManager[BulkWriter]:
        """One write transaction for a whole copy: committed when the block ends normally,
        rolled back, leaving the store as it was, when anything raises inside it."""
