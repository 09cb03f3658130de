"""Job spec validation: ``validate_job_spec`` checks a spec (create) or a patch (update).

Per-field checks follow ``JOB_FIELD_RULES`` (models/fields.py). Cross-field rules (chains,
at-jobs, delivery, origin, output budgets) follow the reference's ``validateJobSpec``; on update
each of them runs only when the patch touches one of its fields, so a stored row that predates a
rule can still be disabled or renamed.

Deliberate differences from the reference:

* unknown keys are rejected (with a close-match suggestion); ``queued_count``, ``created_at`` and
  ``updated_at`` are maintained by the scheduler and cannot be given; ``id`` only on create;
* values are type-checked: integers must be ints (not bools, not 5.0), strings must be strings,
  booleans are true/false/1/0;
* every number has a maximum (fields.py says why each), so nothing stored can overflow later;
* single-line text (names, ids, targets, ...) holds no tab, line break or C1 control; no text
  holds a lone surrogate (it cannot be stored or printed);
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

import json
import math
import re
from collections.abc import Mapping
from datetime import datetime
from typing import Any, Final, Literal

from scheduler import cron
from scheduler.errors import ValidationError
from scheduler.models.chains import CONTAINS_PREFIX, REGEX_PREFIX
from scheduler.models.enums import (
    ANNOUNCE_MODES,
    DeliveryMode,
    JobType,
    PayloadKind,
    ScheduleKind,
    SessionTarget,
    values,
)
from scheduler.models.fields import (
    JOB_COLUMNS,
    JOB_FIELD_RULES,
    JSON_BLOB_MAX_BYTES,
    MANAGED_COLUMNS,
    PAYLOAD_KINDS_BY_TARGET,
    RUN_NOW_RULE,
    FieldRule,
    default_payload_kind,
    effective,
    is_blank,
)
from scheduler.models.placement import check_placement
from scheduler.text import LINE_BREAKING, UNSAFE_CONTROLS, first_lone_surrogate, quoted
from scheduler.timeutil import parse_user_datetime, to_sqlite, utcnow

TRIGGER_CONTAINS_PREFIX: Final = CONTAINS_PREFIX
TRIGGER_REGEX_PREFIX: Final = REGEX_PREFIX

_OUTPUT_LIMIT_FIELDS: Final = (
    "output_store_limit_bytes",
    "output_excerpt_limit_bytes",
    "output_summary_limit_bytes",
)
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


def _check_text(name: str, value: str, rule: FieldRule) -> None:
    surrogate = first_lone_surrogate(value)
    if surrogate is not None:
        raise ValidationError(f"{name} is not valid Unicode text (lone surrogate {surrogate})")
    if UNSAFE_CONTROLS.search(value):
        raise ValidationError(f"{name} contains unsupported control characters")
    if not rule.multiline and LINE_BREAKING.search(value):
        raise ValidationError(
            f"{name} must be a single line: no tab, line break or other control character"
        )
    if rule.max_length is not None and len(value) > rule.max_length:
        raise ValidationError(f"{name} exceeds max length of {rule.max_length}")


def _reject_json_constant(token: str) -> Any:
    raise ValueError(f"{token} is not allowed in JSON")


def _check_json_blob(name: str, value: str) -> None:
    try:
        size = len(value.encode("utf-8"))
    except UnicodeEncodeError:
        raise ValidationError(
            f"{name} is not valid Unicode text (lone surrogate {first_lone_surrogate(value)})"
        ) from None
    if size > JSON_BLOB_MAX_BYTES:
        raise ValidationError(f"{name} exceeds {JSON_BLOB_MAX_BYTES} byte limit")
    try:
        json.loads(value, parse_constant=_reject_json_constant)
    except ValueError as exc:
        # Python refuses to convert integers of 4300+ digits; its message names a sys setting.
        problem = "an integer with too many digits" if "digits" in str(exc) else str(exc)
        raise ValidationError(f"{name} is not valid JSON: {problem}") from None
    except RecursionError:
        raise ValidationError(f"{name} is not valid JSON: nested too deeply") from None


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
        except (OverflowError, RecursionError):  # a repeat count or a nesting beyond re's limits
            raise ValidationError("Invalid trigger_condition regex: pattern too large") from None
        return
    raise ValidationError('trigger_condition must start with "contains:" or "regex:"')


def _normalize_datetime(name: str, value: str) -> str:
    try:
        return to_sqlite(parse_user_datetime(value))
    except ValueError:
        raise ValidationError(
            f'{name} must be a valid datetime, e.g. "2026-12-01 09:00:00" (UTC) or '
            f'"2026-12-01T09:00:00+01:00"; got {quoted(value)}'
        ) from None


def _normalize_integer(name: str, rule: FieldRule, value: Any) -> int:
    minimum = rule.minimum if rule.minimum is not None else 0
    if type(value) is not int or value < minimum:
        raise ValidationError(f"{name} must be an integer >= {minimum}")
    if rule.maximum is not None and value > rule.maximum:
        raise ValidationError(f"{name} must be an integer <= {rule.maximum}")
    return value


def _normalize_number(name: str, rule: FieldRule, value: Any) -> int | float:
    # An int is compared as an int: math.isfinite raises on one beyond float's range.
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or (isinstance(value, float) and not math.isfinite(value))
        or value < (rule.minimum or 0)
    ):
        raise ValidationError(f"{name} must be a non-negative finite number")
    if rule.maximum is not None and value > rule.maximum:
        raise ValidationError(f"{name} must be a number <= {rule.maximum}")
    return value


def _normalize_enum(name: str, rule: FieldRule, value: Any) -> str | None:
    if isinstance(value, str) and rule.nullable and not value.strip():
        return None
    if name == "session_target":
        if not isinstance(value, str):
            raise ValidationError(f"{name} must be a string")
        return value  # checked with payload_kind in validate_target_and_payload
    choices = rule.choices or ()
    if value not in choices:
        raise ValidationError(f"{name} must be one of: {', '.join(choices)}")
    return str(value)


def _normalize_text(name: str, rule: FieldRule, value: Any) -> str | None:
    """A string, datetime or JSON blob field."""
    if not isinstance(value, str):
        if rule.kind == "json":
            raise ValidationError(f"{name} must be a JSON string")
        expected = "a string or null" if rule.nullable else "a string"
        raise ValidationError(f"{name} must be {expected}")
    if not value.strip():
        if rule.nullable:
            return None
        raise ValidationError(f"{name} cannot be empty")
    if rule.kind == "json":
        _check_json_blob(name, value)
        return value
    _check_text(name, value, rule)
    if rule.kind == "datetime":
        return _normalize_datetime(name, value)
    if name == "schedule_tz":
        cron.zone(value)
    elif name == "trigger_condition":
        _check_trigger_condition(value)
    elif name == "placement":
        return check_placement(value)
    return value


def _normalize_field(name: str, rule: FieldRule, value: Any, mode: str) -> Any:
    """Check one field's type and format; return its stored form, or ``_DROP``."""
    if value is None:
        if rule.nullable:
            return None
        if mode == "create":
            return _DROP  # the default (or the "is required" check) takes over
        raise ValidationError(f"{name} cannot be null")
    if rule.kind == "boolean":
        if value is True or value is False or (type(value) is int and value in (0, 1)):
            return 1 if value else 0
        raise ValidationError(f"{name} must be true, false, 1 or 0")
    if rule.kind == "integer":
        return _normalize_integer(name, rule, value)
    if rule.kind == "number":
        return _normalize_number(name, rule, value)
    if rule.kind == "enum":
        return _normalize_enum(name, rule, value)
    return _normalize_text(name, rule, value)


def _unknown_field_message(key: object, known: list[str]) -> str:
    import difflib  # only for this message: not on the path of a valid spec

    matches = difflib.get_close_matches(str(key), known, n=1, cutoff=0.6)
    suggestion = f'; did you mean "{matches[0]}"?' if matches else ""
    return f'unknown field {quoted(key)}{suggestion}'


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


def validate_target_and_payload(session_target: str, payload_kind: str) -> None:
    """Raise unless ``payload_kind`` may run on ``session_target`` (features.md §2.2)."""
    allowed = PAYLOAD_KINDS_BY_TARGET.get(session_target)
    if allowed is None:
        raise ValidationError(
            f"Unknown session_target {quoted(session_target)}. "
            f"Valid targets: {', '.join(values(SessionTarget))}"
        )
    if payload_kind not in allowed:
        raise ValidationError(
            f"Invalid payload_kind {quoted(payload_kind)} for session_target {quoted(session_target)}. "
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

    is_child = not is_blank(merged.get("parent_id"))
    is_at = effective(merged, "schedule_kind") == ScheduleKind.AT

    if is_child and is_at and hit("parent_id", "schedule_kind"):
        raise ValidationError(
            'child jobs cannot use schedule_kind "at" -- use trigger_delay_s for delayed chain execution'
        )
    if is_child and is_blank(merged.get("trigger_on")) and hit("parent_id", "trigger_on"):
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
            cron.validate(str(expr), str(effective(merged, "schedule_tz")), now)

    if is_at and is_blank(merged.get("schedule_at")) and hit("schedule_kind", "schedule_at", "parent_id"):
        raise ValidationError("schedule_at is required for at-jobs (use --at or --in)")


def _check_delivery(merged: Mapping[str, Any], creating: bool, hit_delivery: bool, hit_opt_out: bool) -> None:
    target = effective(merged, "session_target")
    delivery_mode = effective(merged, "delivery_mode")
    if hit_delivery and delivery_mode in ANNOUNCE_MODES and is_blank(merged.get("delivery_to")):
        reference_exempt = (
            effective(merged, "job_type") == JobType.WATCHDOG
            or str(merged.get("name") or "").startswith("watchdog:")
            or target == SessionTarget.MAIN
        )
        if reference_exempt:
            raise ValidationError(_DELIVERY_TO_FOR_ANNOUNCE_EXEMPT)
        raise ValidationError(_DELIVERY_TO_ON_INSERT if creating else _DELIVERY_TO_FOR_ANNOUNCE)

    if hit_opt_out and delivery_mode == DeliveryMode.NONE and is_blank(merged.get("delivery_opt_out_reason")):
        payload_kind = merged.get("payload_kind")
        is_agent_turn = is_blank(merged.get("parent_id")) and (
            payload_kind == PayloadKind.AGENT_TURN
            or (is_blank(payload_kind) and target == SessionTarget.ISOLATED)
        )
        if is_agent_turn:
            raise ValidationError(_OPT_OUT_REASON_REQUIRED)


def _check_identity_presentation(merged: Mapping[str, Any]) -> None:
    blob = merged.get("identity")
    if not isinstance(blob, str) or not blob.strip():
        return
    try:
        declaration = json.loads(blob)
    except (ValueError, RecursionError):
        return  # a stored blob that no longer parses is not this rule's business
    if not isinstance(declaration, dict):
        return
    carries_handoff = any(
        isinstance(declaration.get(key), dict) for key in ("presentation", "credential_handoff")
    )
    if carries_handoff and effective(merged, "session_target") != SessionTarget.SHELL:
        raise ValidationError(
            'identity presentation / credential_handoff is only supported for session_target "shell"'
        )


def _check_dispatch_watcher(merged: Mapping[str, Any]) -> None:
    """A dispatch watcher (ours) watches one ledger label; its payload is the reference's
    fallback shell command, never run by this daemon, so the job must stay a shell job."""
    if is_blank(merged.get("watchdog_target_label")):
        raise ValidationError(
            "watchdog_target_label (the dispatch label to watch) is required for dispatch jobs")
    target = effective(merged, "session_target")
    payload_kind = merged.get("payload_kind")
    kind = default_payload_kind(str(target)) if is_blank(payload_kind) else str(payload_kind)
    if target != SessionTarget.SHELL or kind != PayloadKind.SHELL_COMMAND:
        raise ValidationError(
            'dispatch jobs need session_target "shell" and payload_kind "shellCommand" (the '
            "payload is the reference-compatible `dispatch watch` command)")


# contract_network "none" is enforced for shell jobs only (a network namespace); an agent turn
# runs inside the gateway, whose network the scheduler cannot restrict, so accepting it there
# would claim an isolation that does not happen.
CONTRACT_NETWORK_NOT_ENFORCEABLE = (
    'contract_network "none" is only enforced for session_target "shell": an agent turn runs in '
    "the gateway, whose network the scheduler cannot restrict"
)


def _check_contract_network(merged: Mapping[str, Any]) -> None:
    value = merged.get("contract_network")
    if not isinstance(value, str) or value.strip().lower() != "none":
        return
    if effective(merged, "session_target") != SessionTarget.SHELL:
        raise ValidationError(CONTRACT_NETWORK_NOT_ENFORCEABLE)


def _check_output_limits(merged: Mapping[str, Any]) -> None:
    store = effective(merged, "output_store_limit_bytes")
    excerpt = effective(merged, "output_excerpt_limit_bytes")
    summary = effective(merged, "output_summary_limit_bytes")
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


def _normalized_fields(spec: Mapping[str, Any], mode: str) -> dict[str, Any]:
    normalized: dict[str, Any] = {}
    for key, value in spec.items():
        rule = RUN_NOW_RULE if key == "run_now" else JOB_FIELD_RULES[key]
        result = _normalize_field(key, rule, value, mode)
        if result is not _DROP:
            normalized[key] = bool(result) if key == "run_now" else result
    return normalized


def _check_target_and_payload(merged: Mapping[str, Any]) -> None:
    target = merged.get("session_target")
    target = str(JOB_FIELD_RULES["session_target"].default if target is None else target)
    payload_kind = merged.get("payload_kind")
    validate_target_and_payload(
        target, default_payload_kind(target) if is_blank(payload_kind) else str(payload_kind)
    )


def _check_origin(merged: Mapping[str, Any], normalized: Mapping[str, Any],
                  current: Mapping[str, Any] | None, creating: bool) -> None:
    """Root jobs need an origin on create, and when an update promotes a child to a root."""
    is_child = not is_blank(merged.get("parent_id"))
    promoted_to_root = (
        not creating
        and current is not None
        and not is_blank(current.get("parent_id"))
        and "parent_id" in normalized
        and not is_child
    )
    if (creating or promoted_to_root) and not is_child and is_blank(merged.get("origin")):
        raise ValidationError(_ORIGIN_REQUIRED)


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
    creating = mode == "create"
    normalized = _normalized_fields(spec, mode)
    merged: dict[str, Any] = {**normalized} if creating else {**(current or {}), **normalized}
    touched: set[str] | None = None if creating else set(normalized)

    def hit(*keys: str) -> bool:
        return touched is None or any(key in touched for key in keys)

    if creating:
        for required in ("name", "payload_message"):
            if required not in normalized:
                raise ValidationError(f"{required} is required")
    if hit("session_target", "payload_kind"):
        _check_target_and_payload(merged)
    _check_schedule(merged, normalized, touched, now or utcnow())
    _check_delivery(
        merged,
        creating,
        hit_delivery=hit("delivery_mode", "delivery_to"),
        hit_opt_out=hit(
            "delivery_mode", "delivery_opt_out_reason", "payload_kind", "session_target", "parent_id"
        ),
    )
    _check_origin(merged, normalized, current, creating)
    if hit("identity", "session_target"):
        _check_identity_presentation(merged)
    if hit("contract_network", "session_target"):
        _check_contract_network(merged)
    if (
        effective(merged, "job_type") == JobType.WATCHDOG
        and hit("job_type", "watchdog_check_cmd")
        and is_blank(merged.get("watchdog_check_cmd"))
    ):
        raise ValidationError("watchdog_check_cmd is required for watchdog jobs")
    if effective(merged, "job_type") == JobType.DISPATCH and hit(
        "job_type", "watchdog_target_label", "session_target", "payload_kind"
    ):
        _check_dispatch_watcher(merged)
    if hit(*_OUTPUT_LIMIT_FIELDS):
        _check_output_limits(merged)
    if creating and not merged.get("run_timeout_ms"):
        raise ValidationError(_RUN_TIMEOUT_REQUIRED)
    return normalized
