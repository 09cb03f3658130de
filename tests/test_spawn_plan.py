"""How a spawn message's body becomes a job (models/spawn.py), and how a message is checked
before it is written (models/messages.py). Pure functions: no database, no daemon."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest

from scheduler.errors import ValidationError
from scheduler.models.messages import new_message
from scheduler.models.spawn import SpawnForm, SpawnPlan, check_not_expired, plan_spawn
from scheduler.timeutil import to_sqlite

NOW = datetime(2026, 11, 26, 12, 0, 0, tzinfo=UTC)
NOW_TEXT = to_sqlite(NOW)
SHELL_BODY = {"name": "one-off", "session_target": "shell", "payload_message": "make report"}


def plan(body: Any, *, from_agent: str = "planner", to_agent: str = "main",
         job_id: str | None = None) -> SpawnPlan:
    text = body if isinstance(body, str) else json.dumps(body)
    return plan_spawn(text, from_agent=from_agent, to_agent=to_agent, job_id=job_id, now=NOW)


def test_the_documented_body_is_a_one_off_due_now_with_the_reference_defaults() -> None:
    spawned = plan(SHELL_BODY)
    row = spawned.row
    assert spawned.form is SpawnForm.ONE_OFF and spawned.queue_at is None
    assert (row["schedule_kind"], row["schedule_at"], row["next_run_at"]) == ("at", NOW_TEXT, NOW_TEXT)
    assert row["parent_id"] is None
    assert row["delivery_mode"] == "none" and row["delivery_opt_out_reason"] == "spawned-child"
    assert row["delete_after_run"] == 1 and row["enabled"] == 1
    assert row["run_timeout_ms"] == 300_000 and row["origin"] == "system"
    assert row["payload_kind"] == "shellCommand"


def test_an_agent_turn_without_a_delivery_target_is_a_valid_spawn() -> None:
    # Root agentTurn jobs with delivery_mode "none" need an opt-out reason; spawn supplies one.
    row = plan({"payload_message": "summarise the inbox"}).row
    assert (row["session_target"], row["payload_kind"]) == ("isolated", "agentTurn")
    assert row["name"] == "Spawned by planner"


def test_the_recipient_is_the_agent_unless_the_body_names_one() -> None:
    assert plan(SHELL_BODY, to_agent="researcher").row["agent_id"] == "researcher"
    assert plan({**SHELL_BODY, "agent_id": "writer"}, to_agent="researcher").row["agent_id"] == "writer"


@pytest.mark.parametrize("recipient", ["scheduler", "broadcast", "user"])
def test_a_recipient_that_is_no_agent_leaves_the_default_agent(recipient: str) -> None:
    assert plan(SHELL_BODY, to_agent=recipient).row["agent_id"] == "main"


def test_the_body_wins_over_every_default() -> None:
    body = {**SHELL_BODY, "delete_after_run": False, "run_timeout_ms": 5000, "origin": "telegram:1",
            "delivery_mode": "announce", "delivery_to": "@ops"}
    row = plan(body).row
    assert (row["delete_after_run"], row["run_timeout_ms"], row["origin"]) == (0, 5000, "telegram:1")
    assert (row["delivery_mode"], row["delivery_to"], row["delivery_opt_out_reason"]) == (
        "announce", "@ops", None)


def test_a_schedule_in_the_body_is_kept() -> None:
    spawned = plan({**SHELL_BODY, "schedule_cron": "0 9 * * *", "delete_after_run": False})
    assert spawned.form is SpawnForm.SCHEDULED
    assert spawned.row["schedule_kind"] == "cron" and spawned.row["next_run_at"] == "2026-11-27 09:00:00"
    at = plan({**SHELL_BODY, "schedule_kind": "at", "schedule_at": "2026-12-01 08:00:00"})
    assert at.row["next_run_at"] == "2026-12-01 08:00:00"


def test_a_message_with_a_job_id_spawns_a_linked_one_off_run_now_through_the_queue() -> None:
    spawned = plan(SHELL_BODY, job_id="parent-1")
    row = spawned.row
    assert spawned.form is SpawnForm.LINKED and spawned.queue_at == NOW_TEXT
    assert (row["parent_id"], row["trigger_on"], row["next_run_at"]) == ("parent-1", None, None)
    assert row["schedule_kind"] == "at" and row["delete_after_run"] == 1


def test_the_body_may_name_the_parent_itself() -> None:
    assert plan({**SHELL_BODY, "parent_id": "p2"}, job_id="p1").row["parent_id"] == "p2"
    assert plan({**SHELL_BODY, "parent_id": None}, job_id="p1").form is SpawnForm.ONE_OFF


def test_a_parent_and_trigger_on_make_a_triggered_child() -> None:
    spawned = plan({**SHELL_BODY, "trigger_on": "success"}, job_id="parent-1")
    assert spawned.form is SpawnForm.CHILD and spawned.queue_at is None
    assert (spawned.row["parent_id"], spawned.row["trigger_on"], spawned.row["next_run_at"]) == (
        "parent-1", "success", None)


@pytest.mark.parametrize("extra", [{"schedule_cron": "0 9 * * *"}, {"trigger_delay_s": 5},
                                   {"schedule_kind": "at", "schedule_at": "2026-12-01 08:00:00"}])
def test_a_linked_one_off_takes_no_schedule(extra: dict[str, Any]) -> None:
    with pytest.raises(ValidationError, match="runs once, now; it takes no schedule"):
        plan({**SHELL_BODY, **extra}, job_id="parent-1")


@pytest.mark.parametrize(("body", "error"), [
    ("not json", "the spawn body is not valid JSON"),
    ('{"payload_message": NaN}', "not valid JSON"),
    ("[" * 100000, "not valid JSON"),
    ('["a list"]', "must be a JSON object"),
    ({"name": "x"}, "payload_message is required"),
    ({**SHELL_BODY, "payload_message": "  "}, "payload_message cannot be empty"),
    ({**SHELL_BODY, "session_target": "main"}, 'not "main"'),
    ({**SHELL_BODY, "enabled": False}, "cannot be created disabled"),
    ({**SHELL_BODY, "schedule_corn": "* * * * *"}, 'did you mean "schedule_cron"'),
    ({**SHELL_BODY, "trigger_on": "success"}, "trigger_on is a child-only field"),
    ({**SHELL_BODY, "delivery_mode": "announce"}, "delivery_to is required"),
    ({**SHELL_BODY, "run_timeout_ms": "300000"}, "run_timeout_ms must be an integer"),
    ({**SHELL_BODY, "schedule_kind": "cron"}, "schedule_cron is required for root cron jobs"),
    ({**SHELL_BODY, "parent_id": 5}, "parent_id must be a job id"),
])
def test_a_bad_body_is_refused_with_the_reason(body: Any, error: str) -> None:
    with pytest.raises(ValidationError, match=error.replace("(", r"\(")):
        plan(body)


def test_a_control_character_in_the_sender_does_not_break_the_default_name() -> None:
    row = plan(SHELL_BODY | {"name": None}, from_agent="evil\x1b[2J").row
    assert row["name"] == "Spawned by evil\\x1b[2J"


def test_an_expired_message_is_refused() -> None:
    check_not_expired(None, NOW)
    check_not_expired("2026-11-26 12:00:01", NOW)
    with pytest.raises(ValidationError, match="expired at 2026-11-26 12:00:00 UTC"):
        check_not_expired(NOW_TEXT, NOW)


# -- messages -----------------------------------------------------------------------------------


def test_a_message_is_checked_field_by_field() -> None:
    message = new_message(from_agent="planner", to_agent="main", body="line 1\nline 2\tx",
                          kind="spawn", job_id="j", run_id="r")
    assert (message.kind, message.job_id, message.run_id) == ("spawn", "j", "r")


@pytest.mark.parametrize(("fields", "error"), [
    ({"kind": "bogus"}, 'Invalid message kind "bogus". Valid: text, task, result, status, system, spawn'),
    ({"from_agent": ""}, "from must be 1-128 printable characters"),
    ({"to_agent": "a\nb"}, "to must be 1-128 printable characters"),
    ({"to_agent": "@outbound"}, "reserved for the scheduler"),
    ({"from_agent": "@outbound"}, "reserved for the scheduler"),
    ({"body": ""}, "body cannot be empty"),
    ({"body": "a\x1bb"}, "control characters"),
    ({"body": "x" * 1_000_001}, "exceeds 1000000 characters"),
    ({"channel": "x" * 65}, "channel must be 1-64"),
    ({"job_id": "\u2028"}, "job-id must be"),
])
def test_a_bad_message_is_refused(fields: dict[str, Any], error: str) -> None:
    given: dict[str, Any] = {"from_agent": "planner", "to_agent": "main", "body": "hi", **fields}
    with pytest.raises(ValidationError, match=error.replace("(", r"\(")):
        new_message(**given)
