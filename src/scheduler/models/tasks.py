"""Task groups (the dead-man switch for a team of sub-agents) and team gates: the specs the CLI
takes, checked before anything is written, and the texts a finished group produces.

``tasks create`` takes the keys the reference documents (snake_case: ``expected_agents``,
``timeout_s``, ...) and the camelCase ones its code reads (``expectedAgents``, ``timeoutS``, ...):
the reference's own README example fails on the reference (features.md §9.3), and agents written
for either form must work here. A key that is neither is refused, so a typo is not silently a
default.

Imports are the standard library and the scheduler's light modules: the CLI imports this.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Final

from scheduler.errors import ValidationError
from scheduler.text import LINE_BREAKING, UNSAFE_CONTROLS, first_lone_surrogate, quoted

DEFAULT_TIMEOUT_S: Final = 600
# A group is meant to watch one fan-out of sub-agents: a week is far beyond any of those, and
# keeps the dead-man arithmetic far from SQLite's limits.
MAX_TIMEOUT_S: Final = 7 * 24 * 3600
MAX_AGENTS: Final = 100
MAX_LABEL_LENGTH: Final = 128  # as an agent id
MAX_NAME_LENGTH: Final = 200
MAX_CHANNEL_LENGTH: Final = 64  # as a job's delivery_channel
MAX_TARGET_LENGTH: Final = 256  # as a job's delivery_to
DEFAULT_CREATED_BY: Final = "main"
# An agent that heartbeats is spared by the dead-man switch for at most this long without one.
HEARTBEAT_GRACE_MAX_S: Final = 300
DEAD_ERROR: Final = "Timed out (dead-man switch)"


class GroupStatus(StrEnum):
    ACTIVE = "active"
    COMPLETED = "completed"
    FAILED = "failed"
    TIMED_OUT = "timed_out"  # ours: an agent died (the reference says "failed", §17 #14)


class AgentState(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    DEAD = "dead"


# What a sub-agent may report with ``tasks heartbeat`` (``dead`` is the switch's alone).
REPORTED_STATES: Final = (AgentState.RUNNING, AgentState.COMPLETED, AgentState.FAILED)
TERMINAL_STATES: Final = frozenset({AgentState.COMPLETED, AgentState.FAILED, AgentState.DEAD})

# Each field: (snake_case key, camelCase key).
_KEYS: Final = {
    "name": ("name", "name"),
    "expected_agents": ("expected_agents", "expectedAgents"),
    "timeout_s": ("timeout_s", "timeoutS"),
    "created_by": ("created_by", "createdBy"),
    "delivery_channel": ("delivery_channel", "deliveryChannel"),
    "delivery_to": ("delivery_to", "deliveryTo"),
}
_KNOWN_KEYS: Final = frozenset(key for pair in _KEYS.values() for key in pair)


@dataclass(frozen=True)
class NewTaskGroup:
    name: str
    expected_agents: tuple[str, ...]
    timeout_s: int = DEFAULT_TIMEOUT_S
    created_by: str = DEFAULT_CREATED_BY
    delivery_channel: str | None = None
    delivery_to: str | None = None


def _text(value: Any, name: str, limit: int) -> str:
    """1-``limit`` printable characters on one line."""
    if not isinstance(value, str):
        raise ValidationError(f"{name} must be a string, got {type(value).__name__}")
    if (not value.strip() or len(value) > limit or UNSAFE_CONTROLS.search(value)
            or LINE_BREAKING.search(value) or first_lone_surrogate(value)):
        raise ValidationError(f"{name} must be 1-{limit} printable characters on one line, "
                              f"got {quoted(value, limit=40)}")
    return value


def _optional_text(value: Any, name: str, limit: int) -> str | None:
    # The reference stores an empty target as NULL (``deliveryTo || null``).
    return None if value is None or value == "" else _text(value, name, limit)


def check_labels(value: Any, name: str = "expected_agents") -> tuple[str, ...]:
    """A non-empty list of distinct labels (each a one-line string)."""
    if not isinstance(value, list) or not value:
        raise ValidationError(f"{name} must be a non-empty array of agent labels")
    if len(value) > MAX_AGENTS:
        raise ValidationError(f"{name} may hold at most {MAX_AGENTS} labels, got {len(value)}")
    labels = tuple(_text(item, f"{name}[{i}]", MAX_LABEL_LENGTH) for i, item in enumerate(value))
    seen: set[str] = set()
    for label in labels:
        if label in seen:
            raise ValidationError(f"{name}: duplicate label {quoted(label)}")
        seen.add(label)
    return labels


def check_timeout(value: Any, name: str = "timeout_s") -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValidationError(f"{name} must be a whole number of seconds, got {value!r:.40}")
    if not 1 <= value <= MAX_TIMEOUT_S:
        raise ValidationError(f"{name} must be between 1 and {MAX_TIMEOUT_S} seconds, got {value}")
    return value


def _field(spec: Mapping[str, Any], field: str) -> Any:
    snake, camel = _KEYS[field]
    if snake != camel and snake in spec and camel in spec and spec[snake] != spec[camel]:
        raise ValidationError(f"both {snake} and {camel} are given, with different values; use one")
    return spec[snake] if snake in spec else spec.get(camel)


def parse_task_group(spec: Any) -> NewTaskGroup:
    """The group a ``tasks create`` JSON object describes; ValidationError naming what is wrong."""
    if not isinstance(spec, dict):
        raise ValidationError("the task group must be a JSON object")
    unknown = sorted(set(spec) - _KNOWN_KEYS)
    if unknown:
        raise ValidationError(f"unknown task group key {quoted(unknown[0], limit=40)}; "
                              f"known: {', '.join(sorted(_KNOWN_KEYS))}")
    if _field(spec, "name") is None:
        raise ValidationError("name is required")
    timeout = _field(spec, "timeout_s")
    created_by = _field(spec, "created_by")
    return NewTaskGroup(
        name=_text(_field(spec, "name"), "name", MAX_NAME_LENGTH),
        expected_agents=check_labels(_field(spec, "expected_agents")),
        timeout_s=DEFAULT_TIMEOUT_S if timeout is None else check_timeout(timeout),
        created_by=DEFAULT_CREATED_BY if created_by is None
        else _text(created_by, "created_by", MAX_LABEL_LENGTH),
        delivery_channel=_optional_text(_field(spec, "delivery_channel"), "delivery_channel",
                                        MAX_CHANNEL_LENGTH),
        delivery_to=_optional_text(_field(spec, "delivery_to"), "delivery_to", MAX_TARGET_LENGTH),
    )


def check_reported_state(value: str) -> AgentState:
    for state in REPORTED_STATES:
        if value == state.value:
            return state
    raise ValidationError(f'Unknown status: "{value}". Valid values: running | completed | failed')


def group_status_of(states: Sequence[str]) -> GroupStatus | None:
    """The status a group ends with once every agent is terminal, else None.

    An agent the switch declared dead makes the group ``timed_out`` (the reference says
    ``failed``, and never uses ``timed_out``); else any failure makes it ``failed``."""
    if not states or any(state not in TERMINAL_STATES for state in states):
        return None
    if AgentState.DEAD in states:
        return GroupStatus.TIMED_OUT
    if AgentState.FAILED in states:
        return GroupStatus.FAILED
    return GroupStatus.COMPLETED


def summary_line(label: str, state: str, exit_message: str | None, error: str | None) -> str:
    """One agent's line in the group summary, as the reference writes it."""
    if state == AgentState.COMPLETED:
        return f"[ok] {label}: {exit_message or 'done'}"
    if state == AgentState.FAILED:
        return f"[FAILED] {label}: {error or 'failed'}"
    if state == AgentState.DEAD:
        return f"[DEAD] {label}: timed out"
    return f"[{state}] {label}"


def notice_text(name: str, status: str, summary: str | None) -> str:
    """The completion notice: ``[ok]|[FAILED] Task group "<name>" <status>``, a blank line, the
    summary."""
    tag = "[ok]" if status == GroupStatus.COMPLETED else "[FAILED]"
    return f'{tag} Task group "{name}" {status}\n\n{summary or ""}'


def gate_name(team_id: str, task_id: str) -> str:
    """The name of the task group behind a team task's gate."""
    return f"team:{team_id}:task:{task_id}"
