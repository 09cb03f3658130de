"""The field references ``openclaw-scheduler schema`` prints: jobs, runs, dispatches and messages.

The job schema is generated from ``JOB_FIELD_RULES``, the table the validator checks against,
so what it says (types, enums, defaults, minimums, maximums, lengths) is what is enforced. The
run and dispatch schemas describe what the scheduler writes; nobody submits those.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from scheduler.models.enums import (
    DispatchKind,
    DispatchStatus,
    MessageKind,
    MessageStatus,
    RunStatus,
    values,
)
from scheduler.models.fields import (
    CREATE_ONLY_KEYS,
    JOB_FIELD_RULES,
    JSON_BLOB_MAX_BYTES,
    MANAGED_COLUMNS,
    RUN_NOW_RULE,
    FieldKind,
    FieldRule,
    blob_rule,
    datetime_rule,
    enum_rule,
    flag_rule,
    text_rule,
)


def _count(default: int | None = None, *, minimum: int = 0, nullable: bool = False) -> FieldRule:
    """An integer the scheduler writes (no maximum to describe: nobody submits it)."""
    return FieldRule("integer", nullable=nullable, default=default, minimum=minimum)


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
    if rule.maximum is not None:
        out["max"] = rule.maximum
    if rule.max_length is not None:
        out["maxLength"] = rule.max_length
    if rule.kind in ("string", "datetime") and not rule.multiline:
        out["singleLine"] = True
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
    "id": text_rule(None, nullable=False),
    "job_id": text_rule(None, nullable=False),
    "status": enum_rule(values(RunStatus), "pending"),
    "started_at": FieldRule("datetime"),
    "finished_at": datetime_rule(),
    "duration_ms": _count(nullable=True),
    "last_heartbeat": FieldRule("datetime"),
    "session_key": text_rule(None),
    "session_id": text_rule(None),
    "summary": text_rule(None),
    "error_message": text_rule(None),
    "shell_exit_code": FieldRule("integer", nullable=True),
    "shell_signal": text_rule(None),
    "shell_timed_out": flag_rule(0),
    "shell_stdout": text_rule(None),
    "shell_stderr": text_rule(None),
    "shell_stdout_path": text_rule(None),
    "shell_stderr_path": text_rule(None),
    "shell_stdout_bytes": _count(0),
    "shell_stderr_bytes": _count(0),
    "dispatched_at": datetime_rule(),
    "run_timeout_ms": _count(300000, minimum=1),
    "retry_count": _count(0),
    "retry_of": text_rule(None, description="Run id this run retries or replays"),
    "triggered_by_run": text_rule(None, description="Parent run id that triggered this chain run"),
    "dispatch_queue_id": text_rule(None),
    "context_summary": blob_rule("JSON: retrieval context used for the prompt"),
    "replay_of": text_rule(None),
    "idempotency_key": text_rule(None),
    "identity_resolved": blob_rule("JSON: resolved identity"),
    "trust_evaluation": blob_rule("JSON: trust evaluation"),
    "authorization_decision": blob_rule("JSON: authorization decision"),
    "authorization_proof_verification": blob_rule("JSON: authorization proof verification"),
    "evidence_record": blob_rule("JSON: evidence record"),
    "credential_handoff_summary": blob_rule("JSON: credential handoff summary"),
}

RUN_SCHEMA: Final[dict[str, Any]] = {
    "statuses": list(values(RunStatus)),
    "key_fields": [name for name in _RUN_FIELDS if name not in ("id", "session_id", "replay_of")],
    "fields": {name: _describe(rule) for name, rule in _RUN_FIELDS.items()},
}

_DISPATCH_FIELDS: Final[Mapping[str, FieldRule]] = {
    "id": text_rule(None, nullable=False),
    "job_id": text_rule(None, nullable=False),
    "dispatch_kind": FieldRule("enum", choices=values(DispatchKind), required=True),
    "status": enum_rule(values(DispatchStatus), "pending"),
    "scheduled_for": FieldRule("datetime", required=True),
    "source_run_id": text_rule(None),
    "retry_of_run_id": text_rule(None),
    "created_at": FieldRule("datetime"),
    "claimed_at": datetime_rule(),
    "processed_at": datetime_rule(),
}

DISPATCH_SCHEMA: Final[dict[str, Any]] = {
    "kinds": list(values(DispatchKind)),
    "statuses": list(values(DispatchStatus)),
    "key_fields": ["job_id", "dispatch_kind", "status", "scheduled_for", "source_run_id", "retry_of_run_id"],
    "fields": {name: _describe(rule) for name, rule in _DISPATCH_FIELDS.items()},
}

# As the reference's: the kinds and statuses; the priorities are ours (`messages send --priority`).
MESSAGE_SCHEMA: Final[dict[str, Any]] = {
    "kinds": list(values(MessageKind)),
    "statuses": list(values(MessageStatus)),
    "priorities": {"0": "normal", "1": "high", "2": "urgent"},
}
