"""Typed records of the rows that cross the store boundary: a job, a run, an outbound message,
a message between agents, a queued run, an approval.

The engine and the strategies decide on typed fields: policies and statuses are enums, flags are
``bool``, and a column the database leaves NULL (a reference database may) reads as the schema's
default, applied here and nowhere else. Each record also keeps its row exactly as stored
(``row``), for what mirrors the reference over whole rows: the JSON the CLI prints, the prompt the
agent gets, the output limits of a shell run.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from types import MappingProxyType
from typing import Any, Final, TypeVar

from scheduler.models.enums import (
    DeliveryGuarantee,
    DeliveryMode,
    JobType,
    OverlapPolicy,
    RunStatus,
    ScheduleKind,
    SessionTarget,
)

# The schema's defaults (store/sqlite/schema.sql), for rows that hold NULL where they apply.
DEFAULT_RUN_TIMEOUT_MS: Final = 300_000
DEFAULT_MAX_QUEUED_DISPATCHES: Final = 25
DEFAULT_PAYLOAD_TIMEOUT_S: Final = 120
DEFAULT_AGENT_ID: Final = "main"
DEFAULT_TIME_ZONE: Final = "UTC"

E = TypeVar("E", bound=StrEnum)


def _enum(kind: type[E], value: Any, default: E) -> E:
    """The member for ``value``; the default for NULL or a value this version does not know."""
    try:
        return kind(value)
    except ValueError:
        return default


def _int(value: Any, default: int) -> int:
    return default if value is None else int(value)


def _opt_int(value: Any) -> int | None:
    return None if value is None else int(value)


def _opt_str(value: Any) -> str | None:
    return None if value is None else str(value)


def _frozen(row: Mapping[str, Any]) -> Mapping[str, Any]:
    return MappingProxyType(dict(row))


@dataclass(frozen=True, slots=True)
class Job:
    id: str
    name: str
    enabled: bool
    schedule_kind: ScheduleKind
    schedule_at: str | None
    schedule_cron: str | None
    schedule_tz: str
    session_target: SessionTarget
    job_type: JobType
    agent_id: str
    payload_message: str
    payload_model: str | None
    payload_timeout_seconds: int
    preferred_session_key: str | None
    auth_profile: str | None
    overlap_policy: OverlapPolicy
    run_timeout_ms: int
    max_queued_dispatches: int
    queued_count: int
    max_retries: int
    consecutive_errors: int
    delivery_mode: DeliveryMode
    delivery_channel: str | None
    delivery_to: str | None
    delivery_guarantee: DeliveryGuarantee
    delete_after_run: bool
    parent_id: str | None
    resource_pool: str | None
    placement: str | None  # None: any instance; "host:<name>" | "label:<label>" (models/placement.py)
    misfire_grace_s: int | None
    next_run_at: str | None
    last_run_at: str | None
    last_status: str | None
    watchdog_target_label: str | None
    watchdog_check_cmd: str | None
    watchdog_timeout_min: int | None
    watchdog_alert_channel: str | None
    watchdog_alert_target: str | None
    watchdog_self_destruct: bool
    watchdog_started_at: str | None
    row: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> Job:
        get = row.get
        return cls(
            id=str(row["id"]),
            name=str(get("name") or ""),
            enabled=bool(get("enabled", 1)),
            schedule_kind=_enum(ScheduleKind, get("schedule_kind"), ScheduleKind.CRON),
            schedule_at=_opt_str(get("schedule_at")),
            schedule_cron=_opt_str(get("schedule_cron")),
            schedule_tz=str(get("schedule_tz") or DEFAULT_TIME_ZONE),
            session_target=_enum(SessionTarget, get("session_target"), SessionTarget.ISOLATED),
            job_type=_enum(JobType, get("job_type"), JobType.STANDARD),
            agent_id=str(get("agent_id") or DEFAULT_AGENT_ID),
            payload_message=str(get("payload_message") or ""),
            payload_model=_opt_str(get("payload_model")),
            payload_timeout_seconds=_int(get("payload_timeout_seconds"), DEFAULT_PAYLOAD_TIMEOUT_S),
            preferred_session_key=_opt_str(get("preferred_session_key")),
            auth_profile=_opt_str(get("auth_profile")),
            overlap_policy=_enum(OverlapPolicy, get("overlap_policy"), OverlapPolicy.SKIP),
            run_timeout_ms=_int(get("run_timeout_ms"), DEFAULT_RUN_TIMEOUT_MS) or DEFAULT_RUN_TIMEOUT_MS,
            max_queued_dispatches=_int(get("max_queued_dispatches"), DEFAULT_MAX_QUEUED_DISPATCHES)
            or DEFAULT_MAX_QUEUED_DISPATCHES,
            queued_count=_int(get("queued_count"), 0),
            max_retries=_int(get("max_retries"), 0),
            consecutive_errors=_int(get("consecutive_errors"), 0),
            delivery_mode=_enum(DeliveryMode, get("delivery_mode"), DeliveryMode.ANNOUNCE),
            delivery_channel=_opt_str(get("delivery_channel")),
            delivery_to=_opt_str(get("delivery_to")),
            delivery_guarantee=_enum(DeliveryGuarantee, get("delivery_guarantee"),
                                     DeliveryGuarantee.AT_MOST_ONCE),
            delete_after_run=bool(get("delete_after_run")),
            parent_id=_opt_str(get("parent_id")),
            resource_pool=_opt_str(get("resource_pool")) or None,
            placement=_opt_str(get("placement")) or None,
            misfire_grace_s=_opt_int(get("misfire_grace_s")),
            next_run_at=_opt_str(get("next_run_at")),
            last_run_at=_opt_str(get("last_run_at")),
            last_status=_opt_str(get("last_status")),
            watchdog_target_label=_opt_str(get("watchdog_target_label")),
            watchdog_check_cmd=_opt_str(get("watchdog_check_cmd")),
            watchdog_timeout_min=_opt_int(get("watchdog_timeout_min")),
            watchdog_alert_channel=_opt_str(get("watchdog_alert_channel")),
            watchdog_alert_target=_opt_str(get("watchdog_alert_target")),
            watchdog_self_destruct=bool(get("watchdog_self_destruct", 1)),
            watchdog_started_at=_opt_str(get("watchdog_started_at")),
            row=_frozen(row),
        )

    @property
    def is_watchdog(self) -> bool:
        return self.job_type is JobType.WATCHDOG

    @property
    def is_dispatch(self) -> bool:
        return self.job_type is JobType.DISPATCH

    def as_row(self) -> dict[str, Any]:
        """Every column as stored (what the CLI prints)."""
        return dict(self.row)


@dataclass(frozen=True, slots=True)
class Run:
    id: str
    job_id: str
    status: RunStatus
    started_at: str
    finished_at: str | None
    last_heartbeat: str | None
    run_timeout_ms: int
    retry_count: int
    retry_of: str | None
    replay_of: str | None
    triggered_by_run: str | None
    dispatch_queue_id: str | None
    idempotency_key: str | None
    summary: str | None
    error_message: str | None
    owner: str | None
    # The owner's lease: until when it holds the run, and which generation of it (fencing: an
    # owner records the run only while the generation it was given is still the run's).
    lease_expires_at: str | None = None
    lease_generation: int = 1
    row: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> Run:
        get = row.get
        return cls(
            id=str(row["id"]),
            job_id=str(get("job_id") or ""),
            status=_enum(RunStatus, get("status"), RunStatus.PENDING),
            started_at=str(get("started_at") or ""),
            finished_at=_opt_str(get("finished_at")),
            last_heartbeat=_opt_str(get("last_heartbeat")),
            run_timeout_ms=_int(get("run_timeout_ms"), DEFAULT_RUN_TIMEOUT_MS) or DEFAULT_RUN_TIMEOUT_MS,
            retry_count=_int(get("retry_count"), 0),
            retry_of=_opt_str(get("retry_of")),
            replay_of=_opt_str(get("replay_of")),
            triggered_by_run=_opt_str(get("triggered_by_run")),
            dispatch_queue_id=_opt_str(get("dispatch_queue_id")),
            idempotency_key=_opt_str(get("idempotency_key")),
            summary=_opt_str(get("summary")),
            error_message=_opt_str(get("error_message")),
            owner=_opt_str(get("owner")),
            lease_expires_at=_opt_str(get("lease_expires_at")),
            lease_generation=_int(get("lease_generation"), 1),
            row=_frozen(row),
        )

    def as_row(self) -> dict[str, Any]:
        return dict(self.row)


@dataclass(frozen=True, slots=True)
class OutboundMessage:
    """A result to send through the gateway (a ``messages`` row addressed to ``@outbound``)."""

    id: str
    run_id: str | None
    job_id: str | None
    body: str
    channel: str | None
    delivery_to: str | None
    status: str
    delivery_attempts: int
    next_attempt_at: str | None
    metadata: Mapping[str, Any]

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> OutboundMessage:
        return cls(
            id=str(row["id"]),
            run_id=_opt_str(row.get("run_id")),
            job_id=_opt_str(row.get("job_id")),
            body=str(row.get("body") or ""),
            channel=_opt_str(row.get("channel")),
            delivery_to=_opt_str(row.get("delivery_to")),
            status=str(row.get("status") or "pending"),
            delivery_attempts=_int(row.get("delivery_attempts"), 0),
            next_attempt_at=_opt_str(row.get("next_attempt_at")),
            metadata=MappingProxyType(parse_metadata(row.get("metadata"))),
        )

    @property
    def chunks_sent(self) -> int:
        """Chunks the gateway accepted so far: a retry resumes after them."""
        value = self.metadata.get("chunks_sent", 0)
        return value if isinstance(value, int) and not isinstance(value, bool) else 0

    @property
    def attachments(self) -> tuple[str, ...]:
        """Files to send after the text, in order (``metadata.attachments``)."""
        value = self.metadata.get("attachments")
        if not isinstance(value, list):
            return ()
        return tuple(item for item in value if isinstance(item, str))

    @property
    def media_sent(self) -> int:
        """Attachments done so far (sent or given up): a retry resumes after them."""
        value = self.metadata.get("media_sent", 0)
        return value if isinstance(value, int) and not isinstance(value, bool) else 0



@dataclass(frozen=True, slots=True)
class Message:
    """A row of ``messages``: what one agent (or the scheduler) sent to another."""

    id: str
    from_agent: str
    to_agent: str
    kind: str
    body: str
    subject: str | None
    status: str
    job_id: str | None
    run_id: str | None
    reply_to: str | None
    created_at: str
    delivered_at: str | None
    expires_at: str | None
    metadata: Mapping[str, Any]
    row: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> Message:
        get = row.get
        return cls(
            id=str(row["id"]),
            from_agent=str(get("from_agent") or ""),
            to_agent=str(get("to_agent") or ""),
            kind=str(get("kind") or "text"),
            body=str(get("body") or ""),
            subject=_opt_str(get("subject")),
            status=str(get("status") or "pending"),
            job_id=_opt_str(get("job_id")),
            run_id=_opt_str(get("run_id")),
            reply_to=_opt_str(get("reply_to")),
            created_at=str(get("created_at") or ""),
            delivered_at=_opt_str(get("delivered_at")),
            expires_at=_opt_str(get("expires_at")),
            metadata=MappingProxyType(parse_metadata(get("metadata"))),
            row=_frozen(row),
        )

    def as_row(self) -> dict[str, Any]:
        """Every column as stored, with ``metadata`` parsed when it is JSON (as the reference's
        ``getMessage``; text that does not parse is shown as stored)."""
        row = dict(self.row)
        raw = row.get("metadata")
        if isinstance(raw, str):
            with contextlib.suppress(ValueError, RecursionError):
                row["metadata"] = json.loads(raw)
        return row

def parse_metadata(raw: Any) -> dict[str, Any]:
    """A message's ``metadata`` JSON as a dict ({} when absent or not an object)."""
    try:
        loaded = json.loads(raw or "{}")
    except (TypeError, ValueError, RecursionError):
        return {}
    return loaded if isinstance(loaded, dict) else {}


@dataclass(frozen=True, slots=True)
class Dispatch:
    """A row of ``job_dispatch_queue``: a run asked for (manual, retry, chained) and not yet
    started, or its record once it was."""

    id: str
    job_id: str
    dispatch_kind: str
    status: str
    scheduled_for: str
    row: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> Dispatch:
        get = row.get
        return cls(id=str(row["id"]), job_id=str(get("job_id") or ""),
                   dispatch_kind=str(get("dispatch_kind") or ""),
                   status=str(get("status") or "pending"),
                   scheduled_for=str(get("scheduled_for") or ""), row=_frozen(row))

    def as_row(self) -> dict[str, Any]:
        return dict(self.row)


@dataclass(frozen=True, slots=True)
class Approval:
    """A row of ``approvals`` (a gated run waiting for, or given, an operator's decision), with
    the job's name when the store joined it."""

    id: str
    job_id: str
    job_name: str | None
    run_id: str | None
    dispatch_queue_id: str | None
    status: str
    requested_at: str
    resolved_at: str | None
    notes: str | None
    row: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> Approval:
        get = row.get
        return cls(id=str(row["id"]), job_id=str(get("job_id") or ""),
                   job_name=_opt_str(get("job_name")), run_id=_opt_str(get("run_id")),
                   dispatch_queue_id=_opt_str(get("dispatch_queue_id")),
                   status=str(get("status") or "pending"),
                   requested_at=str(get("requested_at") or ""),
                   resolved_at=_opt_str(get("resolved_at")), notes=_opt_str(get("notes")),
                   row=_frozen(row))

    def as_row(self) -> dict[str, Any]:
        return dict(self.row)
