"""Job specs: validation, normalisation, the row a new job is stored as, and its next run.

One table of field rules (``JOB_FIELD_RULES``) drives the per-field checks of
``validate_job_spec`` and the ``JOB_SCHEMA`` the CLI prints, so the two cannot disagree.
Cross-field rules (chains, at-jobs, delivery, origin, output budgets) follow the reference's
``validateJobSpec``; on update each of them runs only when the patch touches one of its fields,
so a stored row that predates a rule can still be disabled or renamed.

Deliberate differences from the reference:

* unknown keys are rejected (with a close-match suggestion); ``queued_count``, ``created_at`` and
  ``updated_at`` are maintained by the scheduler and cannot be given; ``id`` only on create;
* values are type-checked: integers must be ints (not bools, not 5.0), strings must be strings,
  booleans are true/false/1/0;
* ``null`` for a column that has a default means "use the default" on create and is rejected
  on update; ``""`` (or whitespace) in any nullable text field becomes ``None``;
* ``regex:`` trigger conditions must compile with Python's ``re``;
* a job in an announce mode needs ``delivery_to`` even when it is a main-session or watchdog
  job (the table's CHECK constraint demands it; reference defect #37);
* output budgets are cross-checked against the values that will actually be stored, defaults
  included.

Imports are the standard library plus the scheduler's own light modules: the CLI imports this.
"""

from __future__ import annotations

import difflib
import json
import math
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Final, Literal

from scheduler import cron
from scheduler.errors import ValidationError
from scheduler.timeutil import parse_user_datetime, to_sqlite, utcnow

# --------------------------------------------------------------------------------------------
# Allowed values
# --------------------------------------------------------------------------------------------

SCHEDULE_KINDS: Final = ("cron", "at")
SESSION_TARGETS: Final = ("main", "isolated", "shell")
PAYLOAD_KINDS: Final = ("systemEvent", "agentTurn", "shellCommand")
PAYLOAD_KINDS_BY_TARGET: Final[Mapping[str, tuple[str, ...]]] = {
    "main": ("systemEvent",),
    "isolated": ("systemEvent", "agentTurn"),
    "shell": ("shellCommand",),
}
DEFAULT_PAYLOAD_KIND_BY_TARGET: Final[Mapping[str, str]] = {
    "main": "systemEvent",
    "isolated": "agentTurn",
    "shell": "shellCommand",
}
EXECUTION_INTENTS: Final = ("execute", "plan")
OVERLAP_POLICIES: Final = ("skip", "allow", "queue")
DELIVERY_MODES: Final = ("announce", "announce-always", "none")
ANNOUNCE_MODES: Final = ("announce", "announce-always")
TRIGGER_ON_VALUES: Final = ("success", "failure", "complete")
PAYLOAD_SCOPES: Final = ("own", "global")
DELIVERY_GUARANTEES: Final = ("at-most-once", "at-least-once")
JOB_CLASSES: Final = ("standard", "pre_compaction_flush")
APPROVAL_AUTO_VALUES: Final = ("approve", "reject")
CONTEXT_RETRIEVAL_MODES: Final = ("none", "recent", "hybrid")
JOB_TYPES: Final = ("standard", "watchdog")
IDENTITY_SUBJECT_KINDS: Final = (
    "agent",
    "service",
    "workload",
    "user",
    "composite",
    "delegated-agent",
    "unknown",
)
TRUST_LEVELS: Final = ("untrusted", "restricted", "supervised", "autonomous")
DELEGATION_MODES: Final = ("none", "on-behalf-of", "impersonation")
TRUST_ENFORCEMENTS: Final = ("none", "warn", "block", "advisory", "strict")
CHILD_CREDENTIAL_POLICIES: Final = ("none", "inherit", "downscope", "independent")

RUN_STATUSES: Final = (
    "pending",
    "running",
    "ok",
    "error",
    "timeout",
    "skipped",
    "awaiting_approval",
    "approved",
    "cancelled",
    "crashed",
)
DISPATCH_KINDS: Final = ("manual", "chain", "retry")
DISPATCH_STATUSES: Final = ("pending", "claimed", "awaiting_approval", "done", "cancelled")

TRIGGER_CONTAINS_PREFIX: Final = "contains:"
TRIGGER_REGEX_PREFIX: Final = "regex:"
JSON_BLOB_MAX_BYTES: Final = 32768
SQLITE_INTEGER_MAX: Final = 2**63 - 1

# Fields whose change (or a re-enable) makes an update re-derive next_run_at from now.
SCHEDULE_CHANGE_FIELDS: Final = ("schedule_kind", "schedule_at", "schedule_cron", "schedule_tz", "parent_id")

# Columns of the jobs table, in the order of the schema (features.md §14.1, store/schema.sql).
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

# --------------------------------------------------------------------------------------------
# Field rules
# --------------------------------------------------------------------------------------------

FieldKind = Literal["string", "enum", "integer", "number", "boolean", "datetime", "json"]


@dataclass(frozen=True, slots=True)
class FieldRule:
    """How one job field is checked, and how ``JOB_SCHEMA`` describes it.

    ``default`` is the value a new job gets when the spec leaves the field out (the reference's
    ``createJob`` code default, which for two output budgets differs from the column default).
    ``nullable`` fields may hold NULL; for the others ``null`` means "default" on create and is
    rejected on update.
    """

    kind: FieldKind
    nullable: bool = False
    default: Any = None
    max_length: int | None = None
    minimum: int | None = None
    choices: tuple[str, ...] | None = None
    required: bool = False
    required_for: str | None = None
    description: str | None = None


def _text(
    max_length: int | None, *, nullable: bool = True, default: str | None = None, **extra: Any
) -> FieldRule:
    return FieldRule("string", nullable=nullable, default=default, max_length=max_length, **extra)


def _enum(
    choices: tuple[str, ...], default: str | None = None, *, nullable: bool | None = None, **extra: Any
) -> FieldRule:
    nullable = default is None if nullable is None else nullable
    return FieldRule("enum", nullable=nullable, default=default, choices=choices, **extra)


def _int(minimum: int, default: int | None = None, *, nullable: bool = False, **extra: Any) -> FieldRule:
    return FieldRule("integer", nullable=nullable, default=default, minimum=minimum, **extra)


def _flag(default: int, **extra: Any) -> FieldRule:
    return FieldRule("boolean", default=default, **extra)


def _when(**extra: Any) -> FieldRule:
    return FieldRule("datetime", nullable=True, max_length=64, **extra)


def _blob(description: str) -> FieldRule:
    return FieldRule("json", nullable=True, description=description)


JOB_FIELD_RULES: Final[Mapping[str, FieldRule]] = {
    "id": _text(128, nullable=False, description="Job id; a UUID4 is generated when omitted"),
    "name": _text(200, nullable=False, required=True),
    "enabled": _flag(1),
    "schedule_kind": _enum(SCHEDULE_KINDS, "cron"),
    "schedule_at": _when(
        required_for="at-jobs",
        description="One-shot run time; ISO 8601 or 'YYYY-MM-DD HH:MM:SS', no offset means UTC",
    ),
    "schedule_cron": _text(128, required_for="root cron jobs"),
    "schedule_tz": _text(128, nullable=False, default="UTC", description="IANA time zone of the cron"),
    "session_target": _enum(SESSION_TARGETS, "isolated"),
    "agent_id": _text(128, nullable=False, default="main"),
    "payload_kind": _enum(
        PAYLOAD_KINDS,
        nullable=False,
        description="Derived from session_target when omitted (main: systemEvent, "
        "isolated: agentTurn, shell: shellCommand)",
    ),
    "payload_message": _text(
        100000, nullable=False, required=True, description="Agent prompt, system event text or shell command"
    ),
    "payload_model": _text(256),
    "payload_thinking": _text(64),
    "payload_timeout_seconds": _int(1, 120),
    "execution_intent": _enum(EXECUTION_INTENTS, "execute"),
    "execution_read_only": _flag(0),
    "overlap_policy": _enum(OVERLAP_POLICIES, "skip"),
    "run_timeout_ms": _int(
        1, required=True, description="Maximum milliseconds a run may take; no default, be explicit"
    ),
    "max_queued_dispatches": _int(1, 25),
    "max_pending_approvals": _int(1, 10),
    "max_trigger_fanout": _int(1, 25),
    "delivery_mode": _enum(DELIVERY_MODES, "announce"),
    "delivery_channel": _text(64),
    "delivery_to": _text(
        256,
        required_for='delivery_mode "announce" or "announce-always"',
        description="Target chat/user id or @alias the result is announced to",
    ),
    "created_at": FieldRule("datetime", max_length=64),
    "updated_at": FieldRule("datetime", max_length=64),
    "delete_after_run": _flag(0),
    "ttl_hours": _int(1, nullable=True),
    "parent_id": _text(128, description="Parent job id; makes this a triggered child job"),
    "trigger_on": _enum(TRIGGER_ON_VALUES, required_for="child jobs"),
    "trigger_delay_s": _int(0, 0),
    "trigger_condition": _text(1024, description='"contains:<text>" or "regex:<pattern>" (child jobs)'),
    "max_retries": _int(0, 0),
    "queued_count": _int(0, 0),
    "payload_scope": _enum(PAYLOAD_SCOPES, "own"),
    "resource_pool": _text(128),
    "delivery_guarantee": _enum(DELIVERY_GUARANTEES, "at-most-once"),
    "job_class": _enum(JOB_CLASSES, "standard"),
    "approval_required": _flag(0),
    "approval_timeout_s": _int(1, 3600),
    "approval_auto": _enum(APPROVAL_AUTO_VALUES, "reject"),
    "context_retrieval": _enum(CONTEXT_RETRIEVAL_MODES, "none"),
    "context_retrieval_limit": _int(1, 5),
    "output_store_limit_bytes": _int(128, 65536),
    "output_excerpt_limit_bytes": _int(64, 2000),
    "output_summary_limit_bytes": _int(64, 5000),
    "output_offload_threshold_bytes": _int(128, 65536),
    "preferred_session_key": _text(512),
    "auth_profile": _text(
        256, description='null = default, "inherit" = main session profile, or "provider:label"'
    ),
    "delivery_opt_out_reason": _text(256, required_for='agentTurn jobs with delivery_mode "none"'),
    "origin": _text(
        256,
        required_for="root jobs on create",
        description='Where the job was requested from, e.g. "telegram:<chat id>" or "system"',
    ),
    "identity_principal": _text(512),
    "identity_run_as": _text(256),
    "identity_attestation": _text(256),
    "identity_ref": _text(256),
    "identity_subject_kind": _enum(IDENTITY_SUBJECT_KINDS),
    "identity_subject_principal": _text(512),
    "identity_trust_level": _enum(TRUST_LEVELS),
    "identity_delegation_mode": _enum(DELEGATION_MODES),
    "identity": _blob("JSON: full identity declaration"),
    "authorization_proof_ref": _text(256),
    "authorization_proof": _blob("JSON: authorization proof"),
    "authorization_ref": _text(256),
    "authorization": _blob("JSON: authorization policy declaration"),
    "evidence_ref": _text(256),
    "evidence": _blob("JSON: evidence collection declaration"),
    "contract_required_trust_level": _enum(TRUST_LEVELS),
    "contract_trust_enforcement": _enum(TRUST_ENFORCEMENTS),
    "contract_sandbox": _text(128),
    "contract_allowed_paths": _blob("JSON: allowed filesystem paths"),
    "contract_network": _text(128),
    "contract_max_cost_usd": FieldRule("number", nullable=True, minimum=0),
    "contract_audit": _text(128),
    "child_credential_policy": _enum(CHILD_CREDENTIAL_POLICIES),
    "job_type": _enum(JOB_TYPES, "standard"),
    "watchdog_target_label": _text(256),
    "watchdog_check_cmd": _text(4096, required_for="watchdog jobs"),
    "watchdog_timeout_min": _int(1, nullable=True),
    "watchdog_alert_channel": _text(64),
    "watchdog_alert_target": _text(256),
    "watchdog_self_destruct": _flag(1),
    "watchdog_started_at": _when(),
    "next_run_at": _when(description="Computed from the schedule when omitted"),
    "last_run_at": _when(),
    "last_status": _text(64),
    "consecutive_errors": _int(0, 0),
    "misfire_grace_s": _int(
        0,
        nullable=True,
        description="Seconds a scheduled run may start late; a fire time missed by more is "
        "recorded as a skipped run instead of run (null: no limit, missed runs coalesce into one)",
    ),
}

# A create-time convenience flag, not a column.
RUN_NOW_RULE: Final = FieldRule(
    "boolean", default=0, description="Create-time flag: make the first run due immediately"
)

_OUTPUT_LIMIT_FIELDS: Final = (
    "output_store_limit_bytes",
    "output_excerpt_limit_bytes",
    "output_summary_limit_bytes",
)
_CONTROL_CHARS: Final = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_DROP: Final = object()  # marker: leave the key out of the normalised spec

_DELIVERY_TO_ON_INSERT: Final = (
    "delivery_to is required on job insert. Set it to the origin chat_id "
    "(e.g. -1001234567890 for a group chat, or 987654321 for a personal DM)."
)
_DELIVERY_TO_FOR_ANNOUNCE: Final = (
    'delivery_to is required when delivery_mode is "announce" or "announce-always"'
)
_DELIVERY_TO_FOR_ANNOUNCE_EXEMPT: Final = (
    _DELIVERY_TO_FOR_ANNOUNCE
    + ' (announce is the default) -- set delivery_to, or set delivery_mode to "none" '
    "if this job should not announce its result"
)
_OPT_OUT_REASON_REQUIRED: Final = (
    'agentTurn jobs with delivery_mode "none" require delivery_opt_out_reason. '
    "Set delivery_to + delivery_channel, or pass delivery_opt_out_reason to explicitly skip delivery."
)
_ORIGIN_REQUIRED: Final = (
    "origin is required on job creation -- pass the chat_id or channel identifier where the job "
    'was requested from (e.g. "telegram:<your-user-id>", "telegram:<your-group-id>", '
    '"system" for automated/cron jobs).'
)
_RUN_TIMEOUT_REQUIRED: Final = (
    "run_timeout_ms is required and must be > 0 -- this prevents jobs from running indefinitely."
)


# --------------------------------------------------------------------------------------------
# Per-field checks
# --------------------------------------------------------------------------------------------


def _shown(value: object, limit: int = 80) -> str:
    """A user-supplied value made safe to quote in a one-line message."""
    text = _CONTROL_CHARS.sub(lambda m: f"\\x{ord(m.group()):02x}", str(value))
    text = text.replace("\n", "\\n").replace("\r", "\\r").replace("\t", "\\t")
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _check_text(name: str, value: str, max_length: int | None) -> None:
    if _CONTROL_CHARS.search(value):
        raise ValidationError(f"{name} contains unsupported control characters")
    if max_length is not None and len(value) > max_length:
        raise ValidationError(f"{name} exceeds max length of {max_length}")


def _reject_json_constant(token: str) -> Any:
    raise ValueError(f"{token} is not allowed in JSON")


def _check_json_blob(name: str, value: str) -> None:
    if len(value.encode("utf-8")) > JSON_BLOB_MAX_BYTES:
        raise ValidationError(f"{name} exceeds {JSON_BLOB_MAX_BYTES} byte limit")
    try:
        json.loads(value, parse_constant=_reject_json_constant)
    except ValueError as exc:
        raise ValidationError(f"{name} is not valid JSON: {exc}") from None


def _check_trigger_condition(condition: str) -> None:
    if condition.startswith(TRIGGER_CONTAINS_PREFIX):
        if not condition[len(TRIGGER_CONTAINS_PREFIX) :]:
            raise ValidationError("trigger_condition contains: pattern cannot be empty")
        return
    if condition.startswith(TRIGGER_REGEX_PREFIX):
        pattern = condition[len(TRIGGER_REGEX_PREFIX) :]
        if not pattern:
            raise ValidationError("trigger_condition regex pattern cannot be empty")
        try:
            re.compile(pattern)
        except re.error as exc:
            raise ValidationError(f"Invalid trigger_condition regex: {exc}") from None
        return
    raise ValidationError('trigger_condition must start with "contains:" or "regex:"')


def _normalize_datetime(name: str, value: str) -> str:
    try:
        return to_sqlite(parse_user_datetime(value))
    except ValueError:
        raise ValidationError(
            f'{name} must be a valid datetime, e.g. "2026-12-01 09:00:00" (UTC) or '
            f'"2026-12-01T09:00:00+01:00"; got "{value}"'
        ) from None


def _normalize_field(name: str, rule: FieldRule, value: Any, mode: str) -> Any:
    """Check one field's type and format; return its stored form, or ``_DROP``."""
    if value is None:
        if rule.nullable:
            return None
        if mode == "create":
            return _DROP  # the default (or the "is required" check) takes over
        raise ValidationError(f"{name} cannot be null")

    kind = rule.kind
    if kind == "boolean":
        if value is True or value is False or (type(value) is int and value in (0, 1)):
            return 1 if value else 0
        raise ValidationError(f"{name} must be true, false, 1 or 0")

    if kind == "integer":
        minimum = rule.minimum if rule.minimum is not None else 0
        if type(value) is not int or value < minimum:
            raise ValidationError(f"{name} must be an integer >= {minimum}")
        if value > SQLITE_INTEGER_MAX:
            raise ValidationError(f"{name} must be an integer <= {SQLITE_INTEGER_MAX}")
        return value

    if kind == "number":
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not math.isfinite(value)
            or value < (rule.minimum or 0)
        ):
            raise ValidationError(f"{name} must be a non-negative finite number")
        return value

    if kind == "enum":
        if isinstance(value, str) and rule.nullable and not value.strip():
            return None
        if name == "session_target":
            if not isinstance(value, str):
                raise ValidationError(f"{name} must be a string")
            return value  # checked with payload_kind in validate_target_and_payload
        choices = rule.choices or ()
        if value not in choices:
            raise ValidationError(f"{name} must be one of: {', '.join(choices)}")
        return value

    # string, datetime, json
    if not isinstance(value, str):
        if kind == "json":
            raise ValidationError(f"{name} must be a JSON string")
        expected = "a string or null" if rule.nullable else "a string"
        raise ValidationError(f"{name} must be {expected}")
    if not value.strip():
        if rule.nullable:
            return None
        raise ValidationError(f"{name} cannot be empty")
    if kind == "json":
        _check_json_blob(name, value)
        return value
    _check_text(name, value, rule.max_length)
    if kind == "datetime":
        return _normalize_datetime(name, value)
    if name == "schedule_tz":
        cron.zone(value)
    elif name == "trigger_condition":
        _check_trigger_condition(value)
    return value


def _unknown_field_message(key: object, known: list[str]) -> str:
    matches = difflib.get_close_matches(str(key), known, n=1, cutoff=0.6)
    suggestion = f'; did you mean "{matches[0]}"?' if matches else ""
    return f'unknown field "{_shown(key)}"{suggestion}'


def _check_keys(spec: Mapping[Any, Any], mode: str) -> None:
    accepted = [key for key in JOB_COLUMNS if key not in MANAGED_COLUMNS]
    accepted.append("run_now")
    for key in spec:
        if key in MANAGED_COLUMNS:
            raise ValidationError(f"{key} is maintained by the scheduler and cannot be set")
        if mode == "update" and key == "id":
            raise ValidationError("id cannot be changed; create a new job instead")
        if mode == "update" and key == "run_now":
            raise ValidationError('run_now is only accepted on create; use "jobs run <id>" to run a job now')
        if key not in accepted:
            raise ValidationError(_unknown_field_message(key, accepted))


# --------------------------------------------------------------------------------------------
# Cross-field rules
# --------------------------------------------------------------------------------------------


def _effective(merged: Mapping[str, Any], name: str) -> Any:
    """The merged value, or the default a new job would get when it is missing or blank."""
    value = merged.get(name)
    if value is None or (isinstance(value, str) and not value.strip()):
        return JOB_FIELD_RULES[name].default
    return value


def _blank(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def default_payload_kind(session_target: str) -> str:
    """The payload_kind a job gets when its spec names only the session_target."""
    return DEFAULT_PAYLOAD_KIND_BY_TARGET.get(session_target, "agentTurn")


def validate_target_and_payload(session_target: str, payload_kind: str) -> None:
    """Raise unless ``payload_kind`` may run on ``session_target`` (features.md §2.2)."""
    allowed = PAYLOAD_KINDS_BY_TARGET.get(session_target)
    if allowed is None:
        raise ValidationError(
            f'Unknown session_target "{_shown(session_target)}". Valid targets: {", ".join(SESSION_TARGETS)}'
        )
    if payload_kind not in allowed:
        raise ValidationError(
            f'Invalid payload_kind "{_shown(payload_kind)}" for session_target "{session_target}". '
            f"Allowed: {', '.join(allowed)}"
        )


def _check_schedule(
    merged: Mapping[str, Any],
    normalized: dict[str, Any],
    touched: set[str] | None,
    now: datetime,
) -> None:
    def hit(*keys: str) -> bool:
        return touched is None or any(key in touched for key in keys)

    is_child = not _blank(merged.get("parent_id"))
    is_at = _effective(merged, "schedule_kind") == "at"

    if is_child and is_at and hit("parent_id", "schedule_kind"):
        raise ValidationError(
            'child jobs cannot use schedule_kind "at" -- use trigger_delay_s for delayed chain execution'
        )
    if is_child and _blank(merged.get("trigger_on")) and hit("parent_id", "trigger_on"):
        raise ValidationError('child jobs require trigger_on ("success", "failure", or "complete")')
    if not is_child and hit("parent_id", "trigger_on", "trigger_delay_s", "trigger_condition"):
        if merged.get("trigger_on") is not None:
            raise ValidationError(
                "trigger_on is a child-only field; set parent_id to make this a child job, "
                "or leave trigger_on unset"
            )
        if (merged.get("trigger_delay_s") or 0) > 0:
            raise ValidationError(
                "trigger_delay_s is a child-only field; set parent_id to make this a child job, "
                "or leave trigger_delay_s at 0"
            )
        if merged.get("trigger_condition") is not None:
            raise ValidationError(
                "trigger_condition is a child-only field; set parent_id to make this a child job, "
                "or leave trigger_condition unset"
            )

    expr = merged.get("schedule_cron")
    if expr is None or not str(expr).strip():
        if not is_child and not is_at and hit("schedule_cron", "schedule_kind", "parent_id"):
            raise ValidationError("schedule_cron is required for root cron jobs")
        if "schedule_cron" in normalized and touched is not None:
            # Legacy databases keep schedule_cron NOT NULL: store the never-fires sentinel.
            normalized["schedule_cron"] = cron.NEVER_SENTINEL
    elif hit("schedule_cron", "schedule_tz", "schedule_kind", "parent_id"):
        if str(expr).strip() == cron.NEVER_SENTINEL:
            if not is_child and not is_at:
                raise ValidationError(
                    "schedule_cron cannot use the reserved at-job sentinel for root cron jobs "
                    f"({cron.NEVER_SENTINEL} never fires)"
                )
        else:
            cron.validate(str(expr), str(_effective(merged, "schedule_tz")), now)

    if is_at and _blank(merged.get("schedule_at")) and hit("schedule_kind", "schedule_at", "parent_id"):
        raise ValidationError("schedule_at is required for at-jobs (use --at or --in)")


def _check_delivery(merged: Mapping[str, Any], creating: bool, hit_delivery: bool, hit_opt_out: bool) -> None:
    target = _effective(merged, "session_target")
    delivery_mode = _effective(merged, "delivery_mode")
    if hit_delivery and delivery_mode in ANNOUNCE_MODES and _blank(merged.get("delivery_to")):
        reference_exempt = (
            _effective(merged, "job_type") == "watchdog"
            or str(merged.get("name") or "").startswith("watchdog:")
            or target == "main"
        )
        if reference_exempt:
            raise ValidationError(_DELIVERY_TO_FOR_ANNOUNCE_EXEMPT)
        raise ValidationError(_DELIVERY_TO_ON_INSERT if creating else _DELIVERY_TO_FOR_ANNOUNCE)

    if hit_opt_out and delivery_mode == "none" and _blank(merged.get("delivery_opt_out_reason")):
        payload_kind = merged.get("payload_kind")
        is_agent_turn = _blank(merged.get("parent_id")) and (
            payload_kind == "agentTurn" or (_blank(payload_kind) and target == "isolated")
        )
        if is_agent_turn:
            raise ValidationError(_OPT_OUT_REASON_REQUIRED)


def _check_identity_presentation(merged: Mapping[str, Any]) -> None:
    blob = merged.get("identity")
    if not isinstance(blob, str) or not blob.strip():
        return
    try:
        declaration = json.loads(blob)
    except ValueError:
        return  # a stored blob that no longer parses is not this rule's business
    if not isinstance(declaration, dict):
        return
    carries_handoff = any(
        isinstance(declaration.get(key), dict) for key in ("presentation", "credential_handoff")
    )
    if carries_handoff and _effective(merged, "session_target") != "shell":
        raise ValidationError(
            'identity presentation / credential_handoff is only supported for session_target "shell"'
        )


def _check_output_limits(merged: Mapping[str, Any]) -> None:
    store = _effective(merged, "output_store_limit_bytes")
    excerpt = _effective(merged, "output_excerpt_limit_bytes")
    summary = _effective(merged, "output_summary_limit_bytes")
    if excerpt > store:
        raise ValidationError(
            f"output_excerpt_limit_bytes cannot exceed output_store_limit_bytes ({excerpt} > {store})"
        )
    if summary < excerpt:
        raise ValidationError(
            "output_summary_limit_bytes cannot be smaller than output_excerpt_limit_bytes "
            f"({summary} < {excerpt})"
        )


# --------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------


def validate_job_spec(
    spec: object,
    current: Mapping[str, Any] | None = None,
    mode: Literal["create", "update"] = "create",
    *,
    now: datetime | None = None,
) -> dict[str, Any]:
    """Check a job spec (create) or patch (update) and return it normalised.

    On update, ``current`` is the stored row the patch applies to; cross-field rules run on the
    merged result but only when the patch touches one of the fields they involve. The returned
    dict holds only keys of ``spec`` (on update ``schedule_cron`` may become the never-fires
    sentinel when cleared on an at-job or child), with booleans as 0/1, blank nullable text as
    ``None`` and datetimes as stored UTC text. Parent existence, cycles and chain depth need the
    database and are checked by the store.
    """
    if mode not in ("create", "update"):
        raise ValueError(f"mode must be 'create' or 'update', not {mode!r}")
    if not isinstance(spec, Mapping):
        raise ValidationError("Job spec must be an object")
    _check_keys(spec, mode)
    now = now or utcnow()
    creating = mode == "create"

    normalized: dict[str, Any] = {}
    for key, value in spec.items():
        rule = RUN_NOW_RULE if key == "run_now" else JOB_FIELD_RULES[key]
        result = _normalize_field(key, rule, value, mode)
        if result is _DROP:
            continue
        normalized[key] = bool(result) if key == "run_now" else result

    merged: dict[str, Any] = {**normalized} if creating else {**(current or {}), **normalized}
    touched: set[str] | None = None if creating else set(normalized)

    def hit(*keys: str) -> bool:
        return touched is None or any(key in touched for key in keys)

    if creating:
        for required in ("name", "payload_message"):
            if required not in normalized:
                raise ValidationError(f"{required} is required")

    if hit("session_target", "payload_kind"):
        target = merged.get("session_target")
        if target is None:
            target = JOB_FIELD_RULES["session_target"].default
        payload_kind = merged.get("payload_kind")
        validate_target_and_payload(
            str(target), default_payload_kind(str(target)) if _blank(payload_kind) else str(payload_kind)
        )

    _check_schedule(merged, normalized, touched, now)

    _check_delivery(
        merged,
        creating,
        hit_delivery=hit("delivery_mode", "delivery_to"),
        hit_opt_out=hit(
            "delivery_mode", "delivery_opt_out_reason", "payload_kind", "session_target", "parent_id"
        ),
    )

    is_child = not _blank(merged.get("parent_id"))
    promoted_to_root = (
        not creating
        and current is not None
        and not _blank(current.get("parent_id"))
        and "parent_id" in normalized
        and not is_child
    )
    if (creating or promoted_to_root) and not is_child and _blank(merged.get("origin")):
        raise ValidationError(_ORIGIN_REQUIRED)

    if hit("identity", "session_target"):
        _check_identity_presentation(merged)

    if (
        _effective(merged, "job_type") == "watchdog"
        and hit("job_type", "watchdog_check_cmd")
        and _blank(merged.get("watchdog_check_cmd"))
    ):
        raise ValidationError("watchdog_check_cmd is required for watchdog jobs")

    if hit(*_OUTPUT_LIMIT_FIELDS):
        _check_output_limits(merged)

    if creating and not merged.get("run_timeout_ms"):
        raise ValidationError(_RUN_TIMEOUT_REQUIRED)

    return normalized


def derive_next_run_at(job: Mapping[str, Any], now: datetime, *, run_now: bool = False) -> str | None:
    """When a job should next run, as stored UTC text, or None when nothing schedules it.

    Children run only when triggered; ``run_now`` makes a job due a second ago; an at-job runs at
    ``schedule_at``; a cron job at its next fire strictly after ``now`` (None for the sentinel).
    """
    if not _blank(job.get("parent_id")):
        return None
    if run_now:
        return to_sqlite(now - timedelta(seconds=1))
    if job.get("schedule_kind") == "at":
        schedule_at = job.get("schedule_at")
        return None if _blank(schedule_at) else str(schedule_at)
    expr = job.get("schedule_cron")
    if _blank(expr):
        return None
    fire = cron.next_fire(str(expr), str(job.get("schedule_tz") or "UTC"), now)
    return None if fire is None else to_sqlite(fire)


def new_job_row(normalized: Mapping[str, Any], now: datetime) -> dict[str, Any]:
    """Every column of a new job, in ``JOB_COLUMNS`` order, from a spec ``validate_job_spec``
    accepted in create mode; omitted fields get the reference's code defaults."""
    row: dict[str, Any] = {}
    for column in JOB_COLUMNS:
        value = normalized.get(column)
        row[column] = JOB_FIELD_RULES[column].default if value is None else value
    row["id"] = normalized.get("id") or str(uuid.uuid4())
    if _blank(row["payload_kind"]):
        row["payload_kind"] = default_payload_kind(row["session_target"])
    if _blank(row["schedule_cron"]) and (row["schedule_kind"] == "at" or not _blank(row["parent_id"])):
        row["schedule_cron"] = cron.NEVER_SENTINEL
    row["queued_count"] = 0
    row["created_at"] = row["updated_at"] = to_sqlite(now)
    if row["next_run_at"] is None:
        row["next_run_at"] = derive_next_run_at(row, now, run_now=bool(normalized.get("run_now")))
    return row


def update_needs_new_next_run(current: Mapping[str, Any], normalized: Mapping[str, Any]) -> bool:
    """Whether an update must re-derive ``next_run_at`` from now.

    True when the patch changes a schedule field (``SCHEDULE_CHANGE_FIELDS``) or re-enables a
    disabled job, unless the patch sets ``next_run_at`` itself. A schedule field repeated with
    its stored value is not a change, so an overdue run is not lost to a no-op update.
    """
    if "next_run_at" in normalized:
        return False
    if any(key in normalized and normalized[key] != current.get(key) for key in SCHEDULE_CHANGE_FIELDS):
        return True
    return "enabled" in normalized and bool(normalized["enabled"]) and not current.get("enabled")


# --------------------------------------------------------------------------------------------
# Schemas for `openclaw-scheduler schema`
# --------------------------------------------------------------------------------------------

_SCHEMA_TYPES: Final[Mapping[FieldKind, str]] = {
    "string": "string",
    "enum": "string",
    "integer": "integer",
    "number": "number",
    "boolean": "boolean",
    "datetime": "string",
    "json": "string",
}


def _describe(rule: FieldRule, **extra: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"type": _SCHEMA_TYPES[rule.kind]}
    if rule.kind == "datetime":
        out["format"] = "datetime"
    if rule.kind == "json":
        out["format"] = "json"
        out["maxBytes"] = JSON_BLOB_MAX_BYTES
    if rule.choices is not None:
        out["enum"] = list(rule.choices)
    if rule.default is not None:
        out["default"] = bool(rule.default) if rule.kind == "boolean" else rule.default
    if rule.minimum is not None:
        out["min"] = rule.minimum
    if rule.max_length is not None:
        out["maxLength"] = rule.max_length
    if rule.nullable:
        out["nullable"] = True
    if rule.required:
        out["required"] = True
    if rule.required_for is not None:
        out["requiredFor"] = rule.required_for
    if rule.description is not None:
        out["description"] = rule.description
    out.update(extra)
    return out


def _job_schema() -> dict[str, Any]:
    fields: dict[str, Any] = {}
    for name, rule in JOB_FIELD_RULES.items():
        if name in MANAGED_COLUMNS:
            fields[name] = _describe(rule, readOnly=True)
        elif name in CREATE_ONLY_KEYS:
            fields[name] = _describe(rule, createOnly=True)
        else:
            fields[name] = _describe(rule)
    fields["run_now"] = _describe(RUN_NOW_RULE, createOnly=True)
    return {
        "type": "object",
        "required": [name for name, rule in JOB_FIELD_RULES.items() if rule.required],
        "fields": fields,
    }


JOB_SCHEMA: Final[dict[str, Any]] = _job_schema()

_RUN_FIELDS: Final[Mapping[str, FieldRule]] = {
    "id": _text(None, nullable=False),
    "job_id": _text(None, nullable=False),
    "status": _enum(RUN_STATUSES, "pending"),
    "started_at": FieldRule("datetime"),
    "finished_at": _when(),
    "duration_ms": _int(0, nullable=True),
    "last_heartbeat": FieldRule("datetime"),
    "session_key": _text(None),
    "session_id": _text(None),
    "summary": _text(None),
    "error_message": _text(None),
    "shell_exit_code": FieldRule("integer", nullable=True),
    "shell_signal": _text(None),
    "shell_timed_out": _flag(0),
    "shell_stdout": _text(None),
    "shell_stderr": _text(None),
    "shell_stdout_path": _text(None),
    "shell_stderr_path": _text(None),
    "shell_stdout_bytes": _int(0, 0),
    "shell_stderr_bytes": _int(0, 0),
    "dispatched_at": _when(),
    "run_timeout_ms": _int(1, 300000),
    "retry_count": _int(0, 0),
    "retry_of": _text(None, description="Run id this run retries or replays"),
    "triggered_by_run": _text(None, description="Parent run id that triggered this chain run"),
    "dispatch_queue_id": _text(None),
    "context_summary": _blob("JSON: retrieval context used for the prompt"),
    "replay_of": _text(None),
    "idempotency_key": _text(None),
    "identity_resolved": _blob("JSON: resolved identity"),
    "trust_evaluation": _blob("JSON: trust evaluation"),
    "authorization_decision": _blob("JSON: authorization decision"),
    "authorization_proof_verification": _blob("JSON: authorization proof verification"),
    "evidence_record": _blob("JSON: evidence record"),
    "credential_handoff_summary": _blob("JSON: credential handoff summary"),
}

RUN_SCHEMA: Final[dict[str, Any]] = {
    "statuses": list(RUN_STATUSES),
    "key_fields": [name for name in _RUN_FIELDS if name not in ("id", "session_id", "replay_of")],
    "fields": {name: _describe(rule) for name, rule in _RUN_FIELDS.items()},
}

_DISPATCH_FIELDS: Final[Mapping[str, FieldRule]] = {
    "id": _text(None, nullable=False),
    "job_id": _text(None, nullable=False),
    "dispatch_kind": FieldRule("enum", choices=DISPATCH_KINDS, required=True),
    "status": _enum(DISPATCH_STATUSES, "pending"),
    "scheduled_for": FieldRule("datetime", required=True),
    "source_run_id": _text(None),
    "retry_of_run_id": _text(None),
    "created_at": FieldRule("datetime"),
    "claimed_at": _when(),
    "processed_at": _when(),
}

DISPATCH_SCHEMA: Final[dict[str, Any]] = {
    "kinds": list(DISPATCH_KINDS),
    "statuses": list(DISPATCH_STATUSES),
    "key_fields": ["job_id", "dispatch_kind", "status", "scheduled_for", "source_run_id", "retry_of_run_id"],
    "fields": {name: _describe(rule) for name, rule in _DISPATCH_FIELDS.items()},
}
