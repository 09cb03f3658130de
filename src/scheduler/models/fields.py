"""The job spec's fields: one rule per column, with its type, limits and default.

``JOB_FIELD_RULES`` drives both the per-field checks of ``validate_job_spec`` and the schema that
``openclaw-scheduler schema`` prints, so the two cannot disagree. Every number has a maximum as
well as the reference's minimum: a bound keeps each value far from where the engine's arithmetic
(retry delays that double, timestamps a duration away, counters it increments) or SQLite's
64-bit integers would overflow. The bounds and their reasons are listed in docs/jobs.md.

Imports are the standard library and the enums: the CLI loads this to validate.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final, Literal, NamedTuple

from scheduler.models.enums import (
    ApprovalAuto,
    ChildCredentialPolicy,
    ContextRetrieval,
    DelegationMode,
    DeliveryGuarantee,
    DeliveryMode,
    ExecutionIntent,
    IdentitySubjectKind,
    JobClass,
    JobType,
    OverlapPolicy,
    PayloadKind,
    PayloadScope,
    ScheduleKind,
    SessionTarget,
    TriggerOn,
    TrustEnforcement,
    TrustLevel,
    values,
)
from scheduler.models.placement import MAX_PLACEMENT_LENGTH

FieldKind = Literal["string", "enum", "integer", "number", "boolean", "datetime", "json"]

JSON_BLOB_MAX_BYTES: Final = 32768

# -- bounds -------------------------------------------------------------------------------------
# Durations a run may last: a week. The engine turns them into seconds and deadlines.
MAX_RUN_MS: Final = 7 * 24 * 3600 * 1000
MAX_RUN_S: Final = 7 * 24 * 3600
# Waits before or around a run (chain delays, approvals, misfire grace, watchdog thresholds): a
# year. Each becomes "now + value", which must stay a datetime.
MAX_WAIT_S: Final = 365 * 24 * 3600
MAX_WAIT_MIN: Final = 365 * 24 * 60
# How long a finished job lingers before TTL pruning: ten years.
MAX_TTL_HOURS: Final = 10 * 365 * 24
# Retry n waits base x 2^(n-1): the 20th retry, at the default 30 s base, is half a year away;
# far more doublings leave the datetime range.
MAX_RETRIES: Final = 20
# Per-job caps on queued dispatches, pending approvals, triggered children, retrieved items.
MAX_CAP: Final = 10000
MAX_RETRIEVAL_LIMIT: Final = 1000
# Output budgets: 64 MiB. A run row stores stdout and stderr, and SQLite refuses any string or
# row over 1e9 bytes (SQLITE_MAX_LENGTH).
MAX_OUTPUT_BYTES: Final = 64 * 1024 * 1024
# Counters the scheduler increments: a signed 32-bit range, so increments stay far from 2^63.
MAX_COUNTER: Final = 2**31 - 1
MAX_COST_USD: Final = 1_000_000_000


class FieldRule(NamedTuple):
    """How one job field is checked, and how the job schema describes it.

    ``default`` is the value a new job gets when the spec leaves the field out (the reference's
    ``createJob`` code default, which for two output budgets differs from the column default).
    ``nullable`` fields may hold NULL; for the others ``null`` means "default" on create and is
    rejected on update. Text is single-line unless ``multiline`` (commands, prompts, conditions).

    A NamedTuple, not a dataclass: ``jobs add`` would import ``dataclasses`` (and ``inspect``)
    for this class alone.
    """

    kind: FieldKind
    nullable: bool = False
    default: Any = None
    max_length: int | None = None
    minimum: int | None = None
    maximum: int | None = None
    choices: tuple[str, ...] | None = None
    multiline: bool = False
    required: bool = False
    required_for: str | None = None
    description: str | None = None


def text_rule(
    max_length: int | None, *, nullable: bool = True, default: str | None = None, **extra: Any
) -> FieldRule:
    return FieldRule("string", nullable=nullable, default=default, max_length=max_length, **extra)


def enum_rule(
    choices: tuple[str, ...], default: str | None = None, *, nullable: bool | None = None, **extra: Any
) -> FieldRule:
    nullable = default is None if nullable is None else nullable
    return FieldRule("enum", nullable=nullable, default=default, choices=choices, **extra)


def int_rule(
    minimum: int, maximum: int, default: int | None = None, *, nullable: bool = False, **extra: Any
) -> FieldRule:
    return FieldRule(
        "integer", nullable=nullable, default=default, minimum=minimum, maximum=maximum, **extra
    )


def flag_rule(default: int, **extra: Any) -> FieldRule:
    return FieldRule("boolean", default=default, **extra)


def datetime_rule(**extra: Any) -> FieldRule:
    return FieldRule("datetime", nullable=True, max_length=64, **extra)


def blob_rule(description: str) -> FieldRule:
    return FieldRule("json", nullable=True, description=description)


# Columns of the jobs table, in the order of the schema (features.md §14.1, store/sqlite/schema.sql).
JOB_COLUMNS: Final[tuple[str, ...]] = (
    "id",
    "name",
    "enabled",
    "schedule_kind",
    "schedule_at",
    "schedule_cron",
    "schedule_tz",
    "session_target",
    "agent_id",
    "payload_kind",
    "payload_message",
    "payload_model",
    "payload_thinking",
    "payload_timeout_seconds",
    "execution_intent",
    "execution_read_only",
    "overlap_policy",
    "run_timeout_ms",
    "max_queued_dispatches",
    "max_pending_approvals",
    "max_trigger_fanout",
    "delivery_mode",
    "delivery_channel",
    "delivery_to",
    "created_at",
    "updated_at",
    "delete_after_run",
    "ttl_hours",
    "parent_id",
    "trigger_on",
    "trigger_delay_s",
    "trigger_condition",
    "max_retries",
    "queued_count",
    "payload_scope",
    "resource_pool",
    "delivery_guarantee",
    "job_class",
    "approval_required",
    "approval_timeout_s",
    "approval_auto",
    "context_retrieval",
    "context_retrieval_limit",
    "output_store_limit_bytes",
    "output_excerpt_limit_bytes",
    "output_summary_limit_bytes",
    "output_offload_threshold_bytes",
    "preferred_session_key",
    "auth_profile",
    "delivery_opt_out_reason",
    "origin",
    "identity_principal",
    "identity_run_as",
    "identity_attestation",
    "identity_ref",
    "identity_subject_kind",
    "identity_subject_principal",
    "identity_trust_level",
    "identity_delegation_mode",
    "identity",
    "authorization_proof_ref",
    "authorization_proof",
    "authorization_ref",
    "authorization",
    "evidence_ref",
    "evidence",
    "contract_required_trust_level",
    "contract_trust_enforcement",
    "contract_sandbox",
    "contract_allowed_paths",
    "contract_network",
    "contract_max_cost_usd",
    "contract_audit",
    "child_credential_policy",
    "job_type",
    "placement",
    "watchdog_target_label",
    "watchdog_check_cmd",
    "watchdog_timeout_min",
    "watchdog_alert_channel",
    "watchdog_alert_target",
    "watchdog_self_destruct",
    "watchdog_started_at",
    "next_run_at",
    "last_run_at",
    "last_status",
    "consecutive_errors",
    "misfire_grace_s",
)

# Columns the scheduler maintains itself; a spec may not set them.
MANAGED_COLUMNS: Final = ("queued_count", "created_at", "updated_at")
# Keys a spec may carry on create only.
CREATE_ONLY_KEYS: Final = ("id", "run_now")

JOB_FIELD_RULES: Final[Mapping[str, FieldRule]] = {
    "id": text_rule(128, nullable=False, description="Job id; a UUID4 is generated when omitted"),
    "name": text_rule(200, nullable=False, required=True),
    "enabled": flag_rule(1),
    "schedule_kind": enum_rule(values(ScheduleKind), "cron"),
    "schedule_at": datetime_rule(
        required_for="at-jobs",
        description="One-shot run time; ISO 8601 or 'YYYY-MM-DD HH:MM:SS', no offset means UTC",
    ),
    "schedule_cron": text_rule(128, required_for="root cron jobs"),
    "schedule_tz": text_rule(128, nullable=False, default="UTC", description="IANA time zone of the cron"),
    "session_target": enum_rule(values(SessionTarget), "isolated"),
    "agent_id": text_rule(128, nullable=False, default="main"),
    "payload_kind": enum_rule(
        values(PayloadKind),
        nullable=False,
        description="Derived from session_target when omitted (main: systemEvent, "
        "isolated: agentTurn, shell: shellCommand)",
    ),
    "payload_message": text_rule(
        100000,
        nullable=False,
        multiline=True,
        required=True,
        description="Agent prompt, system event text or shell command",
    ),
    "payload_model": text_rule(256),
    "payload_thinking": text_rule(64),
    "payload_timeout_seconds": int_rule(1, MAX_RUN_S, 120),
    "execution_intent": enum_rule(values(ExecutionIntent), "execute"),
    "execution_read_only": flag_rule(0),
    "overlap_policy": enum_rule(values(OverlapPolicy), "skip"),
    "run_timeout_ms": int_rule(
        1,
        MAX_RUN_MS,
        required=True,
        description="Maximum milliseconds a run may take; no default, be explicit",
    ),
    "max_queued_dispatches": int_rule(1, MAX_CAP, 25),
    "max_pending_approvals": int_rule(1, MAX_CAP, 10),
    "max_trigger_fanout": int_rule(1, MAX_CAP, 25),
    "delivery_mode": enum_rule(values(DeliveryMode), "announce"),
    "delivery_channel": text_rule(64),
    "delivery_to": text_rule(
        256,
        required_for='delivery_mode "announce" or "announce-always"',
        description="Target chat/user id or @alias the result is announced to",
    ),
    "created_at": FieldRule("datetime", max_length=64),
    "updated_at": FieldRule("datetime", max_length=64),
    "delete_after_run": flag_rule(0),
    "ttl_hours": int_rule(1, MAX_TTL_HOURS, nullable=True),
    "parent_id": text_rule(128, description="Parent job id; makes this a triggered child job"),
    "trigger_on": enum_rule(values(TriggerOn), required_for="child jobs"),
    "trigger_delay_s": int_rule(0, MAX_WAIT_S, 0),
    "trigger_condition": text_rule(
        1024, multiline=True, description='"contains:<text>" or "regex:<pattern>" (child jobs)'
    ),
    "max_retries": int_rule(0, MAX_RETRIES, 0),
    "queued_count": int_rule(0, MAX_COUNTER, 0),
    "payload_scope": enum_rule(values(PayloadScope), "own"),
    "resource_pool": text_rule(128),
    "delivery_guarantee": enum_rule(values(DeliveryGuarantee), "at-most-once"),
    "job_class": enum_rule(values(JobClass), "standard"),
    "approval_required": flag_rule(0),
    "approval_timeout_s": int_rule(1, MAX_WAIT_S, 3600),
    "approval_auto": enum_rule(values(ApprovalAuto), "reject"),
    "context_retrieval": enum_rule(values(ContextRetrieval), "none"),
    "context_retrieval_limit": int_rule(1, MAX_RETRIEVAL_LIMIT, 5),
    "output_store_limit_bytes": int_rule(128, MAX_OUTPUT_BYTES, 65536),
    "output_excerpt_limit_bytes": int_rule(64, MAX_OUTPUT_BYTES, 2000),
    "output_summary_limit_bytes": int_rule(64, MAX_OUTPUT_BYTES, 5000),
    "output_offload_threshold_bytes": int_rule(128, MAX_OUTPUT_BYTES, 65536),
    "preferred_session_key": text_rule(512),
    "auth_profile": text_rule(
        256, description='null = default, "inherit" = main session profile, or "provider:label"'
    ),
    "delivery_opt_out_reason": text_rule(256, required_for='agentTurn jobs with delivery_mode "none"'),
    "origin": text_rule(
        256,
        required_for="root jobs on create",
        description='Where the job was requested from, e.g. "telegram:<chat id>" or "system"',
    ),
    "identity_principal": text_rule(512),
    "identity_run_as": text_rule(256),
    "identity_attestation": text_rule(256),
    "identity_ref": text_rule(256),
    "identity_subject_kind": enum_rule(values(IdentitySubjectKind)),
    "identity_subject_principal": text_rule(512),
    "identity_trust_level": enum_rule(values(TrustLevel)),
    "identity_delegation_mode": enum_rule(values(DelegationMode)),
    "identity": blob_rule("JSON: full identity declaration"),
    "authorization_proof_ref": text_rule(256),
    "authorization_proof": blob_rule("JSON: authorization proof"),
    "authorization_ref": text_rule(256),
    "authorization": blob_rule("JSON: authorization policy declaration"),
    "evidence_ref": text_rule(256),
    "evidence": blob_rule("JSON: evidence collection declaration"),
    "contract_required_trust_level": enum_rule(values(TrustLevel)),
    "contract_trust_enforcement": enum_rule(values(TrustEnforcement)),
    "contract_sandbox": text_rule(128),
    "contract_allowed_paths": blob_rule("JSON: allowed filesystem paths"),
    "contract_network": text_rule(128),
    "contract_max_cost_usd": FieldRule("number", nullable=True, minimum=0, maximum=MAX_COST_USD),
    "contract_audit": text_rule(128),
    "child_credential_policy": enum_rule(values(ChildCredentialPolicy)),
    "job_type": enum_rule(values(JobType), "standard"),
    "placement": text_rule(
        MAX_PLACEMENT_LENGTH,
        description='Where it may run across a fleet: "host:<name>", "label:<label>", or null '
        "(any instance); see docs/multi-host.md",
    ),
    "watchdog_target_label": text_rule(256),
    "watchdog_check_cmd": text_rule(4096, multiline=True, required_for="watchdog jobs"),
    "watchdog_timeout_min": int_rule(1, MAX_WAIT_MIN, nullable=True),
    "watchdog_alert_channel": text_rule(64),
    "watchdog_alert_target": text_rule(256),
    "watchdog_self_destruct": flag_rule(1),
    "watchdog_started_at": datetime_rule(),
    "next_run_at": datetime_rule(description="Computed from the schedule when omitted"),
    "last_run_at": datetime_rule(),
    "last_status": text_rule(64),
    "consecutive_errors": int_rule(0, MAX_COUNTER, 0),
    "misfire_grace_s": int_rule(
        0,
        MAX_WAIT_S,
        nullable=True,
        description="Seconds a scheduled run may start late; a fire time missed by more is "
        "recorded as a skipped run instead of run (null: no limit, missed runs coalesce into one)",
    ),
}

# A create-time convenience flag, not a column.
RUN_NOW_RULE: Final = FieldRule(
    "boolean", default=0, description="Create-time flag: make the first run due immediately"
)

# Which payload kinds may run on which session target (features.md §2.2), and the one a spec
# that names only the target gets.
PAYLOAD_KINDS_BY_TARGET: Final[Mapping[str, tuple[str, ...]]] = {
    SessionTarget.MAIN: (PayloadKind.SYSTEM_EVENT,),
    SessionTarget.ISOLATED: (PayloadKind.SYSTEM_EVENT, PayloadKind.AGENT_TURN),
    SessionTarget.SHELL: (PayloadKind.SHELL_COMMAND,),
}
DEFAULT_PAYLOAD_KIND_BY_TARGET: Final[Mapping[str, str]] = {
    SessionTarget.MAIN: PayloadKind.SYSTEM_EVENT,
    SessionTarget.ISOLATED: PayloadKind.AGENT_TURN,
    SessionTarget.SHELL: PayloadKind.SHELL_COMMAND,
}


def default_payload_kind(session_target: str) -> str:
    """The payload_kind a job gets when its spec names only the session_target."""
    return str(DEFAULT_PAYLOAD_KIND_BY_TARGET.get(session_target, PayloadKind.AGENT_TURN))


def is_blank(value: Any) -> bool:
    """None, or text that is only whitespace: what the rules treat as "not given"."""
    return value is None or (isinstance(value, str) and not value.strip())


def effective(merged: Mapping[str, Any], name: str) -> Any:
    """The merged value, or the default a new job would get when it is missing or blank."""
    value = merged.get(name)
    return JOB_FIELD_RULES[name].default if is_blank(value) else value
