"""Spawn messages: how the body of a ``spawn`` message becomes a job (features.md §6.6).

The body is a job spec, the JSON ``jobs add`` takes, completed with the reference's spawn
defaults (``SPAWN_DEFAULTS``; the name "Spawned by <sender>"; the recipient as the agent) and then
validated in full, as ``jobs add`` validates. What the job is depends on the body:

* no schedule and no parent: a **one-off**, an at-job due now. It runs once and, with the default
  ``delete_after_run``, is deleted after its run (the reference's documented form, which its
  validator refused: §17 #20);
* a schedule (``schedule_cron``, or ``schedule_kind: "at"`` with ``schedule_at``): that schedule,
  as ``jobs add`` would store it (``run_now: true`` also makes it due now);
* a parent and no ``trigger_on``: a **linked one-off**. The parent is the body's ``parent_id``,
  else the message's ``job_id`` (the job whose run sent it). It runs once, now, through a manual
  queue row, and is the parent's child in the job tree (cancelling the parent cancels it), but
  the parent's runs never trigger it. It takes no schedule: it is validated as a one-off root
  job, then linked;
* a parent and ``trigger_on``: a **triggered child**, validated as a child job: it runs when the
  parent's runs end, as any chained job.

Imports are the standard library and the scheduler's light modules: the CLI checks a spawn body
with this before it writes the message.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any, Final

from scheduler.errors import ValidationError
from scheduler.models.enums import DeliveryMode, ScheduleKind, SessionTarget
from scheduler.models.fields import effective, is_blank
from scheduler.models.job import new_job_row
from scheduler.models.validation import validate_job_spec
from scheduler.text import LINE_BREAKING, UNSAFE_CONTROLS, escaped, first_lone_surrogate, quoted
from scheduler.timeutil import to_sqlite

# The reference's defaults for a spawned job (dispatcher.js, tick phase 3).
SPAWN_DEFAULTS: Final[Mapping[str, Any]] = {
    "delivery_mode": DeliveryMode.NONE.value,
    "delete_after_run": 1,
    "run_timeout_ms": 300_000,
    "origin": "system",
}
OPT_OUT_REASON: Final = "spawned-child"
# The reference runs spawned jobs as isolated agent turns or shell commands, never in the main
# session.
SPAWN_TARGETS: Final = (SessionTarget.ISOLATED.value, SessionTarget.SHELL.value)
# Recipients that name no agent: a spawn addressed to one runs on the default agent.
NOT_AGENTS: Final = frozenset({"scheduler", "user", "broadcast"})
SCHEDULE_KEYS: Final = ("schedule_cron", "schedule_kind", "schedule_at", "next_run_at")
TRIGGER_KEYS: Final = ("trigger_delay_s", "trigger_condition")
MAX_NAME_LENGTH: Final = 200  # as a job's name
MAX_PARENT_ID_LENGTH: Final = 128  # as a job's parent_id


class SpawnForm(StrEnum):
    ONE_OFF = "one-off"
    SCHEDULED = "scheduled"
    LINKED = "linked"
    CHILD = "child"


@dataclass(frozen=True)
class SpawnPlan:
    """The job a spawn message asks for, validated: its row, and for a linked one-off when its
    one run is due (it is queued as a manual run, in the transaction that creates the job)."""

    form: SpawnForm
    row: dict[str, Any]
    queue_at: str | None = None


def _reject_constant(token: str) -> Any:
    raise ValueError(f"{token} is not JSON")


def parse_body(body: str) -> dict[str, Any]:
    """The body as a JSON object, or a ValidationError saying what is wrong with it."""
    try:
        spec = json.loads(body, parse_constant=_reject_constant)
    except json.JSONDecodeError as exc:
        raise ValidationError(f"the spawn body is not valid JSON ({exc.msg} at line {exc.lineno} "
                              f"column {exc.colno})") from None
    except ValueError as exc:  # a constant we refuse, or an integer of 4300+ digits
        problem = "an integer with too many digits" if "digits" in str(exc) else str(exc)
        raise ValidationError(f"the spawn body is not valid JSON ({problem})") from None
    except RecursionError:
        raise ValidationError("the spawn body is not valid JSON (nested too deeply)") from None
    if not isinstance(spec, dict):
        raise ValidationError('the spawn body must be a JSON object (a job spec), e.g. '
                              '{"name": "...", "session_target": "shell", "payload_message": "..."}')
    return spec


def _check_spawn_rules(spec: Mapping[str, Any]) -> None:
    target = spec.get("session_target")
    if target is not None and target not in SPAWN_TARGETS:
        raise ValidationError(f"spawned jobs run on session_target {' or '.join(SPAWN_TARGETS)}, "
                              f"not {quoted(target)}")
    enabled = spec.get("enabled", True)
    if enabled is False or enabled == 0:
        raise ValidationError("a spawned job cannot be created disabled: it would never run")


def agent_for(recipient: str) -> str | None:
    """The agent a spawn addressed to ``recipient`` runs on (None: the default agent)."""
    if not recipient.strip() or recipient in NOT_AGENTS or recipient.startswith("@"):
        return None
    return recipient


def with_defaults(spec: Mapping[str, Any], *, from_agent: str, to_agent: str,
                  job_id: str | None) -> dict[str, Any]:
    """The body completed with what the reference fills in; the body's own values win."""
    completed = {**SPAWN_DEFAULTS, **spec}
    if is_blank(completed.get("name")):
        completed["name"] = f"Spawned by {escaped(from_agent)}"[:MAX_NAME_LENGTH]
    agent = agent_for(to_agent)
    if agent is not None:
        completed.setdefault("agent_id", agent)
    if job_id is not None:
        completed.setdefault("parent_id", job_id)
    mode = effective(completed, "delivery_mode")
    if mode == DeliveryMode.NONE and is_blank(completed.get("delivery_opt_out_reason")):
        completed["delivery_opt_out_reason"] = OPT_OUT_REASON
    return completed


def _parent_of(spec: Mapping[str, Any]) -> str | None:
    parent = spec.get("parent_id")
    if parent is None or (isinstance(parent, str) and not parent.strip()):
        return None
    if (not isinstance(parent, str) or len(parent) > MAX_PARENT_ID_LENGTH
            or UNSAFE_CONTROLS.search(parent) or LINE_BREAKING.search(parent)
            or first_lone_surrogate(parent)):
        raise ValidationError(f"parent_id must be a job id (1-{MAX_PARENT_ID_LENGTH} characters "
                              f"on one line), got {quoted(parent)}")
    return parent


def _due_now(spec: Mapping[str, Any], now: datetime) -> dict[str, Any]:
    return {**spec, "schedule_kind": ScheduleKind.AT.value, "schedule_at": to_sqlite(now)}


def _validated_row(spec: Mapping[str, Any], now: datetime) -> dict[str, Any]:
    return new_job_row(validate_job_spec(spec, None, "create", now=now), now)


def _linked_one_off(spec: Mapping[str, Any], parent: str, now: datetime) -> SpawnPlan:
    given = [key for key in (*SCHEDULE_KEYS, *TRIGGER_KEYS) if spec.get(key) is not None]
    if given:
        raise ValidationError(
            f"{given[0]}: a spawn linked to a parent job ({parent}) without trigger_on runs once, "
            "now; it takes no schedule. Add trigger_on to make it a triggered child, or drop "
            "the parent to give it a schedule"
        )
    root = {key: value for key, value in spec.items() if key not in ("parent_id", "trigger_on")}
    row = _validated_row(_due_now(root, now), now)
    row["parent_id"] = parent
    row["next_run_at"] = None  # its one run is the queue row: a child is never due by itself
    return SpawnPlan(SpawnForm.LINKED, row, queue_at=to_sqlite(now))


def check_not_expired(expires_at: str | None, now: datetime) -> None:
    if expires_at is not None and expires_at <= to_sqlite(now):
        raise ValidationError(f"the spawn message expired at {expires_at} UTC, before the "
                              "scheduler handled it")


def plan_spawn(body: str, *, from_agent: str, to_agent: str, job_id: str | None,
               now: datetime) -> SpawnPlan:
    """The job the spawn message asks for (module docstring), validated in full; raises
    ``ValidationError`` naming the first problem. Whether the parent exists is the store's
    check (it is looked at in the transaction that creates the job)."""
    spec = parse_body(body)
    _check_spawn_rules(spec)
    spec = with_defaults(spec, from_agent=from_agent, to_agent=to_agent, job_id=job_id)
    parent = _parent_of(spec)
    if parent is not None and is_blank(spec.get("trigger_on")):
        return _linked_one_off(spec, parent, now)
    if parent is not None:
        return SpawnPlan(SpawnForm.CHILD, _validated_row(spec, now))
    if all(spec.get(key) is None for key in SCHEDULE_KEYS):
        return SpawnPlan(SpawnForm.ONE_OFF, _validated_row(_due_now(spec, now), now))
    return SpawnPlan(SpawnForm.SCHEDULED, _validated_row(spec, now))
