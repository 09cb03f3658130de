"""The Python API: what the CLI does, for tools that import the scheduler instead of running it.

    from scheduler.api import open_scheduler

    with open_scheduler() as sched:                      # the CLI's database (SCHEDULER_DB)
        job = sched.jobs.create({"name": "nightly", ...})
        sched.jobs.run_now(job.id)

A ``Scheduler`` opens the database the CLI opens (the same path resolution, migrations and file
modes) and calls the same operations (``scheduler.service``), so a spec the CLI refuses is refused
here with the same ``ValidationError`` and message, and nothing is written. A running daemon
sees every write at once (SQLite's ``data_version`` changes), as it sees the CLI's: a new job is
scheduled, a manual run or an approval starts without waiting for a tick.

Errors are the ``SchedulerError`` tree (``scheduler.errors``): ``ValidationError`` for bad input
(``UsageError`` for an argument out of shape), ``NotFoundError`` for an unknown id, and
``StoreError`` subclasses when the database cannot be read or written (``StoreBusyError`` is
transient: retry). docs/api.md has the whole surface with examples.

A ``Scheduler`` is one SQLite connection: use it from one thread (open one per thread).
"""

from __future__ import annotations

import builtins
import json
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import Any

from scheduler import paths, service
from scheduler.errors import (
    NotFoundError,
    SchedulerError,
    StoreBusyError,
    StoreError,
    UsageError,
    ValidationError,
)
from scheduler.models.enums import MessageKind
from scheduler.models.messages import NewMessage, expiry, new_message, parse_metadata_object
from scheduler.models.records import Approval, Dispatch, Job, Message, Run
from scheduler.service import CancelOutcome, approvals, messages, tasks
from scheduler.store import open_store
from scheduler.store.api import FinishedGroup, Store
from scheduler.timeutil import utcnow

__all__ = [
    "Approval",
    "Approvals",
    "CancelOutcome",
    "Dispatch",
    "FinishedGroup",
    "Job",
    "Jobs",
    "Message",
    "Messages",
    "NewMessage",
    "NotFoundError",
    "Run",
    "Runs",
    "Scheduler",
    "SchedulerError",
    "StoreBusyError",
    "StoreError",
    "TaskGroups",
    "UsageError",
    "ValidationError",
    "open_scheduler",
]

PathLike = str | os.PathLike[str]
TaskGroup = dict[str, Any]


class Jobs:
    """``sched.jobs``: job specs in the reference's JSON shape (features.md §2, docs/jobs.md)."""

    def __init__(self, store: Store, database: Path) -> None:
        self._store = store
        self._database = database

    def validate(self, spec: Mapping[str, Any]) -> dict[str, Any]:
        """The normalised spec a create would store (``jobs validate``); writes nothing."""
        return service.validate_job(_plain(spec), utcnow())

    def check(self, spec: Mapping[str, Any], *, at: datetime | None = None,
              watchdog: bool = False) -> dict[str, Any]:
        """Everything ``create`` checks, the parent and chain included (``jobs add --dry-run``);
        the normalised spec. Writes nothing."""
        return service.check_new_job(self._store, _prepared(spec, at, watchdog), utcnow())

    def create(self, spec: Mapping[str, Any], *, at: datetime | None = None,
               watchdog: bool = False) -> Job:
        """Add a job (``jobs add``). ``at`` (an aware datetime) makes it a one-shot job due then,
        deleted after its run unless the spec sets ``delete_after_run`` (``--at``);
        ``watchdog`` applies the watchdog defaults (``--watchdog``)."""
        return service.create_job(self._store, _prepared(spec, at, watchdog), utcnow())

    def get(self, job_id: str) -> Job:
        """The job; NotFoundError for an unknown id."""
        return self._store.require_job(job_id)

    def find(self, job_id: str) -> Job | None:
        return self._store.get_job(job_id)

    def list(self, job_type: str | None = None) -> builtins.list[Job]:
        """Every job (of ``job_type``: standard or watchdog), by name."""
        return [Job.from_row(row) for row in self._store.list_jobs(job_type)]

    def update(self, job_id: str, patch: Mapping[str, Any]) -> Job:
        """Apply the fields of ``patch`` (validated against the job as it is); the job after."""
        return service.update_job(self._store, job_id, _plain(patch), utcnow())

    def enable(self, job_id: str) -> Job:
        return service.set_enabled(self._store, job_id, True, utcnow())

    def disable(self, job_id: str) -> Job:
        return service.set_enabled(self._store, job_id, False, utcnow())

    def delete(self, job_id: str) -> Job:
        """Delete the job and its runs; the job as it was."""
        return service.delete_job(self._store, job_id)

    def run_now(self, job_id: str) -> Dispatch:
        """Queue a manual run (a disabled job too; the schedule is untouched); a serving daemon
        starts it at once. ValidationError when the job's dispatch backlog is full."""
        _, dispatch = service.run_now(self._store, job_id, utcnow())
        return Dispatch.from_row(dispatch)

    def cancel(self, job_id: str, *, cascade: bool = True) -> CancelOutcome:
        """Disable the job (and, with ``cascade``, its descendants); stop their runs in flight,
        close their queued runs, reject their pending approvals (``jobs cancel``)."""
        return service.cancel_job(self._store, job_id, cascade=cascade, now=utcnow(),
                                  database=self._database)


def _aware(value: datetime, name: str) -> datetime:
    """An instant: a naive datetime would mean whatever zone the caller's machine is in."""
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValidationError(f"{name} must be an aware datetime, e.g. datetime.now(UTC) + "
                              "timedelta(hours=1)")
    return value


def _plain(spec: object) -> object:
    """A copy of a mapping, as a dict (the service refuses anything else, in the CLI's words)."""
    return dict(spec) if isinstance(spec, Mapping) else spec


def _prepared(spec: Mapping[str, Any], at: datetime | None, watchdog: bool) -> dict[str, Any]:
    """The spec ``jobs add`` would validate, given ``--at`` and ``--watchdog``."""
    prepared = service.job_spec_object(_plain(spec))
    if at is not None:
        service.one_shot_spec(prepared, _aware(at, "at"))
    if watchdog:
        service.watchdog_spec(prepared)
    return prepared


class Runs:
    """``sched.runs``: the record of each run."""

    def __init__(self, store: Store) -> None:
        self._store = store

    def get(self, run_id: str) -> Run:
        """The run (``Run.row`` has every column, shell output included); NotFoundError."""
        return service.get_run(self._store, run_id)

    def list(self, job_id: str, limit: int = 20) -> builtins.list[Run]:
        """The job's newest ``limit`` runs (1-10000), newest first; NotFoundError for an unknown
        job."""
        return [Run.from_row(row) for row in service.list_runs(self._store, job_id, limit)]


class Messages:
    """``sched.messages``: the post office between agents (docs/messaging.md)."""

    def __init__(self, store: Store) -> None:
        self._store = store

    def send(self, from_agent: str, to_agent: str, body: str, *,
             kind: MessageKind | str = MessageKind.TEXT, subject: str | None = None,
             priority: int = 0, expires_at: datetime | None = None, reply_to: str | None = None,
             ack_required: bool = False, metadata: Mapping[str, Any] | None = None,
             owner: str | None = None, channel: str | None = None,
             delivery_to: str | None = None, job_id: str | None = None,
             run_id: str | None = None) -> Message:
        """Send a message (``messages send``); ``to_agent="broadcast"`` reaches every agent.
        A ``spawn`` message's body is a job spec, checked now as the daemon will check it."""
        now = utcnow()
        message = new_message(
            from_agent=from_agent, to_agent=to_agent, body=body, kind=str(kind), subject=subject,
            priority=_priority(priority), reply_to=reply_to, ack_required=ack_required,
            expires_at=_expiry(expires_at, now),
            metadata=None if metadata is None else parse_metadata_object(json.dumps(dict(metadata))),
            owner=owner, channel=channel, delivery_to=delivery_to, job_id=job_id, run_id=run_id,
        )
        return messages.send(self._store, message, now)

    def send_message(self, message: NewMessage) -> Message:
        """Send a message built with ``scheduler.models.messages.new_message`` (team routing
        fields included)."""
        return messages.send(self._store, message, utcnow())

    def get(self, message_id: str) -> Message:
        found = self._store.get_message(message_id)
        if found is None:
            raise NotFoundError(f"Message not found: {message_id}")
        return found

    def inbox(self, agent: str, limit: int = 20) -> list[Message]:
        """The agent's unread messages (``msg inbox``): kind, then priority, then age. Reading
        changes nothing; ``ack`` does."""
        return [Message.from_row(row)
                for row in messages.inbox(self._store, agent, utcnow(), limit)]

    def ack(self, message_id: str, actor: str = messages.OPERATOR,
            note: str | None = None) -> Message:
        """Acknowledge the message (``msg ack``); for a broadcast, ``actor`` is the agent whose
        copy it is. The message afterwards, as ``actor`` sees it."""
        return Message.from_row(messages.ack(self._store, message_id, actor, note, utcnow()))


def _expiry(expires_at: datetime | None, now: datetime) -> str | None:
    """As stored; refused when naive or not in the future (as ``--expires-at``)."""
    if expires_at is None:
        return None
    return expiry(None, _aware(expires_at, "expires_at").isoformat(), now)


def _priority(value: int) -> int:
    if isinstance(value, bool) or value not in (0, 1, 2):
        raise ValidationError(f"priority must be 0 (normal), 1 (high) or 2 (urgent), got {value!r}")
    return value


class TaskGroups:
    """``sched.tasks``: task groups, the dead-man switch for sub-agents (docs/messaging.md).
    Groups are the reference's JSON shapes (plain dicts), as ``tasks ... --json`` prints them."""

    def __init__(self, store: Store) -> None:
        self._store = store

    def create(self, spec: Mapping[str, Any]) -> TaskGroup:
        """``{"name", "expected_agents": [...], "timeout_s", "delivery_channel", "delivery_to",
        "created_by"}``; the new group with its agents."""
        return tasks.create(self._store, _plain(spec), utcnow())

    def status(self, tracker_id: str) -> TaskGroup:
        """Agents, elapsed time, remaining timeout, summary and notice (``tasks status``)."""
        return tasks.status(self._store, tracker_id, utcnow())

    def active(self) -> list[TaskGroup]:
        return self._store.active_task_groups()

    def history(self, limit: int = 10) -> list[TaskGroup]:
        return tasks.history(self._store, limit)

    def heartbeat(self, tracker_id: str, label: str, state: str = "running",
                  message: str | None = None) -> FinishedGroup | None:
        """A sub-agent's report: ``running``, ``completed`` or ``failed``; the finished group
        (with its notice) when it was the last agent to finish."""
        return tasks.report(self._store, tracker_id, label, state, message, utcnow())

    def register_session(self, tracker_id: str, label: str, session_key: str) -> dict[str, Any]:
        """Link the agent's gateway session (a heartbeat too); the agent's row afterwards."""
        return tasks.register_session(self._store, tracker_id, label, session_key, utcnow())


class Approvals:
    """``sched.approvals``: runs of ``approval_required`` jobs wait here for a decision."""

    def __init__(self, store: Store) -> None:
        self._store = store

    def pending(self) -> list[Approval]:
        """Oldest first; ``row`` also has ``age_s``, ``timeout_at`` and ``on_timeout``."""
        return [Approval.from_row(row) for row in approvals.pending(self._store, utcnow())]

    def approve(self, job_id: str) -> Approval:
        """Approve the job's oldest pending approval; a serving daemon starts the run at once."""
        return Approval.from_row(approvals.approve(self._store, job_id, utcnow()))

    def reject(self, job_id: str, reason: str | None = None) -> Approval:
        """Reject it: the gated run is cancelled with ``reason``."""
        return Approval.from_row(approvals.reject(self._store, job_id, reason, utcnow()))


class Scheduler:
    """One open scheduler database: ``jobs``, ``runs``, ``messages``, ``tasks``, ``approvals``.

    ``db_path`` defaults to the CLI's (``SCHEDULER_DB``, else ``<SCHEDULER_HOME>/scheduler.db``);
    the file is created and migrated when needed. Close it (or use it as a context manager).
    """

    def __init__(self, db_path: PathLike | None = None) -> None:
        url = paths.db_url() if db_path is None else paths.db_url({"SCHEDULER_DB": str(db_path)})
        self.db_path = paths.db_path() if db_path is None else Path(db_path).expanduser()
        self._store = open_store(url or self.db_path)
        self.jobs = Jobs(self._store, self.db_path)
        self.runs = Runs(self._store)
        self.messages = Messages(self._store)
        self.tasks = TaskGroups(self._store)
        self.approvals = Approvals(self._store)

    @property
    def store(self) -> Store:
        """The store interface itself, for what this API does not cover (``store/api.py``)."""
        return self._store

    def close(self) -> None:
        self._store.close()

    def __enter__(self) -> Scheduler:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.close()


@contextmanager
def open_scheduler(db_path: PathLike | None = None) -> Iterator[Scheduler]:
    """A ``Scheduler`` on ``db_path`` (default: the CLI's database), closed on leaving."""
    sched = Scheduler(db_path)
    try:
        yield sched
    finally:
        sched.close()
