"""The sub-agent dispatch ledger's record: one label and the gateway session working on it.

The reference kept this ledger in a ``labels.json`` beside its dispatch script (features.md
§15.1); ours is the ``dispatch_labels`` table, so the daemon, the CLI and a second host read one
truth. ``DispatchLabel`` is the typed row; ``from_labels_json`` reads one entry of a reference
ledger for ``dispatch import``. Pure: no I/O.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from typing import Any, Final

from scheduler.models.enums import SubagentMode, SubagentStatus
from scheduler.models.records import _enum, _frozen, _int, _opt_int, _opt_str
from scheduler.timeutil import to_sqlite

# The reference stores the first 2000 characters of the task, for `done`'s --sha gate.
TASK_PROMPT_KEPT_CHARS: Final = 2000
DEFAULT_TIMEOUT_S: Final = 300
DEFAULT_IDLE_THRESHOLD_S: Final = 300
# What of an imported entry that has no column is kept, as JSON text, at most.
MAX_EXTRA_CHARS: Final = 16_384
MAX_LABEL_CHARS: Final = 200

# The columns a caller may change through ``Store.update_dispatch`` (label is the key; the
# created/updated instants are the store's).
MUTABLE_COLUMNS: Final = frozenset({
    "session_key", "gateway_run_id", "agent_id", "mode", "model", "thinking", "origin",
    "deliver_to", "deliver_channel", "delivery_mode", "verify_cmd", "status", "summary",
    "error", "completion", "task_prompt", "timeout_s", "idle_threshold_s", "watcher_job_id",
    "watchdog_job_id", "sha", "retry_count", "restart_retry_count", "steered_at",
    "alerted_at", "last_ping", "last_activity_at", "activity_tokens", "spawned_at",
    "finished_at", "extra",
})


@dataclass(frozen=True, slots=True)
class DispatchLabel:
    label: str
    session_key: str
    status: SubagentStatus
    agent_id: str = "main"
    mode: SubagentMode = SubagentMode.FRESH
    gateway_run_id: str | None = None
    model: str | None = None
    thinking: str | None = None
    origin: str | None = None
    deliver_to: str | None = None
    deliver_channel: str | None = None
    delivery_mode: str | None = None
    verify_cmd: str | None = None
    summary: str | None = None
    error: str | None = None
    completion: str | None = None
    task_prompt: str | None = None
    timeout_s: int = DEFAULT_TIMEOUT_S
    idle_threshold_s: int = DEFAULT_IDLE_THRESHOLD_S
    watcher_job_id: str | None = None
    watchdog_job_id: str | None = None
    sha: str | None = None
    retry_count: int = 0
    restart_retry_count: int = 0
    steered_at: str | None = None
    alerted_at: str | None = None
    last_ping: str | None = None
    last_activity_at: str | None = None
    activity_tokens: int | None = None
    spawned_at: str = ""
    finished_at: str | None = None
    extra: str | None = None
    created_at: str = ""
    updated_at: str = ""
    row: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> DispatchLabel:
        get = row.get
        return cls(
            label=str(row["label"]), session_key=str(get("session_key") or ""),
            status=_enum(SubagentStatus, get("status"), SubagentStatus.RUNNING),
            agent_id=str(get("agent_id") or "main"),
            mode=_enum(SubagentMode, get("mode"), SubagentMode.FRESH),
            gateway_run_id=_opt_str(get("gateway_run_id")), model=_opt_str(get("model")),
            thinking=_opt_str(get("thinking")), origin=_opt_str(get("origin")),
            deliver_to=_opt_str(get("deliver_to")),
            deliver_channel=_opt_str(get("deliver_channel")),
            delivery_mode=_opt_str(get("delivery_mode")), verify_cmd=_opt_str(get("verify_cmd")),
            summary=_opt_str(get("summary")), error=_opt_str(get("error")),
            completion=_opt_str(get("completion")), task_prompt=_opt_str(get("task_prompt")),
            timeout_s=_int(get("timeout_s"), DEFAULT_TIMEOUT_S),
            idle_threshold_s=_int(get("idle_threshold_s"), DEFAULT_IDLE_THRESHOLD_S),
            watcher_job_id=_opt_str(get("watcher_job_id")),
            watchdog_job_id=_opt_str(get("watchdog_job_id")), sha=_opt_str(get("sha")),
            retry_count=_int(get("retry_count"), 0),
            restart_retry_count=_int(get("restart_retry_count"), 0),
            steered_at=_opt_str(get("steered_at")), alerted_at=_opt_str(get("alerted_at")),
            last_ping=_opt_str(get("last_ping")),
            last_activity_at=_opt_str(get("last_activity_at")),
            activity_tokens=_opt_int(get("activity_tokens")),
            spawned_at=str(get("spawned_at") or ""), finished_at=_opt_str(get("finished_at")),
            extra=_opt_str(get("extra")), created_at=str(get("created_at") or ""),
            updated_at=str(get("updated_at") or ""), row=_frozen(row),
        )

    def columns(self) -> dict[str, Any]:
        """The record as column values (enums as their text), without ``row``."""
        out: dict[str, Any] = {}
        for spec in fields(self):
            if spec.name == "row":
                continue
            value = getattr(self, spec.name)
            out[spec.name] = str(value) if isinstance(value, SubagentStatus | SubagentMode) else value
        return out

    def as_row(self) -> dict[str, Any]:
        return dict(self.row) if self.row else self.columns()

    @property
    def is_terminal(self) -> bool:
        return self.status in TERMINAL_STATUSES


TERMINAL_STATUSES: Final = frozenset({SubagentStatus.DONE, SubagentStatus.CANCELLED})


class LedgerImportError(ValueError):
    """A ``labels.json`` that cannot be read as the reference's ledger."""


# The reference's camelCase keys → our columns.
_IMPORT_KEYS: Final = {
    "sessionKey": "session_key", "runId": "gateway_run_id", "agent": "agent_id",
    "mode": "mode", "model": "model", "thinking": "thinking", "origin": "origin",
    "deliverTo": "deliver_to", "deliverChannel": "deliver_channel",
    "deliveryMode": "delivery_mode", "verifyCmd": "verify_cmd", "status": "status",
    "summary": "summary", "error": "error", "completion": "completion",
    "taskPrompt": "task_prompt", "timeoutSeconds": "timeout_s",
    "idleThresholdSeconds": "idle_threshold_s", "watchdogJobId": "watchdog_job_id",
    "sha": "sha", "retryCount": "retry_count", "gwRestartRetryCount": "restart_retry_count",
    "lastPing": "last_ping", "spawnedAt": "spawned_at", "updatedAt": "updated_at",
}
_INT_COLUMNS: Final = frozenset({"timeout_s", "idle_threshold_s", "retry_count",
                                 "restart_retry_count"})
_TIME_COLUMNS: Final = frozenset({"last_ping", "spawned_at", "updated_at"})


def _utc_text(value: Any) -> str | None:
    """An ISO instant or epoch milliseconds from the reference as our UTC text; None if not one."""
    try:
        if isinstance(value, int | float) and not isinstance(value, bool):
            instant = datetime.fromtimestamp(value / 1000, tz=UTC)
        elif isinstance(value, str) and value.strip():
            instant = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        else:
            return None
    except (ValueError, OverflowError, OSError):
        return None
    if instant.tzinfo is None:
        return None
    return to_sqlite(instant)


def _import_value(column: str, value: Any) -> Any:
    if value is None:
        return None
    if column in _INT_COLUMNS:
        if isinstance(value, bool) or not isinstance(value, int | float | str):
            return None
        try:
            number = int(float(value))
        except (ValueError, OverflowError):
            return None
        return number if 0 <= number <= 10_000_000 else None
    if column in _TIME_COLUMNS:
        return _utc_text(value)
    if isinstance(value, dict | list):
        return json.dumps(value, ensure_ascii=False)[:MAX_EXTRA_CHARS]
    return str(value)


def from_labels_json(label: str, entry: Mapping[str, Any], now: str) -> DispatchLabel:
    """One entry of a reference ``labels.json`` as a record; raises ``LedgerImportError``."""
    if not label or len(label) > MAX_LABEL_CHARS:
        raise LedgerImportError(f"label must be 1 to {MAX_LABEL_CHARS} characters, got {label!r}")
    columns: dict[str, Any] = {}
    extra: dict[str, Any] = {}
    for key, value in entry.items():
        column = _IMPORT_KEYS.get(key)
        if column is None:
            if key != "timeout":  # the reference's duplicate of timeoutSeconds
                extra[key] = value
            continue
        columns[column] = _import_value(column, value)
    if not columns.get("session_key"):
        raise LedgerImportError(f"label {label!r} has no sessionKey")
    if columns.get("task_prompt"):
        columns["task_prompt"] = str(columns["task_prompt"])[:TASK_PROMPT_KEPT_CHARS]
    row = {**{k: v for k, v in columns.items() if v is not None}, "label": label}
    row.setdefault("spawned_at", now)
    row.setdefault("updated_at", now)
    row["created_at"] = now
    if extra:
        row["extra"] = json.dumps(extra, ensure_ascii=False, default=str)[:MAX_EXTRA_CHARS]
    return DispatchLabel.from_row(row)
