"""The dispatch watcher (issue 11, features.md §15.1): job_type ``dispatch`` run in-process by
strategies/dispatch_watch.py, against a real daemon, a real SQLite file and the fake gateway's
WebSocket control plane."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from conftest import add_job
from scheduler.errors import ValidationError
from scheduler.models.validation import validate_job_spec

LABEL = "nightly-report"


def watcher_spec(label: str = LABEL, **overrides: Any) -> dict[str, Any]:
    """The delivery-watcher job `dispatch enqueue` registers (docs/dispatch.md)."""
    return {
        "name": f"dispatch-deliver:{label}", "schedule_kind": "at",
        "schedule_at": "2026-01-01 00:00:00", "session_target": "shell",
        "payload_kind": "shellCommand",
        "payload_message": f"openclaw-scheduler dispatch watch --label '{label}'",
        "job_type": "dispatch", "watchdog_target_label": label,
        "delivery_mode": "announce-always", "delivery_channel": "telegram", "delivery_to": "12345",
        "delivery_guarantee": "at-least-once", "ttl_hours": 48, "overlap_policy": "skip",
        "run_timeout_ms": (14400 + 420) * 1000, "delete_after_run": 1, "origin": "dispatch",
        **overrides,
    }


# -- validation -----------------------------------------------------------------------------------


def test_a_dispatch_job_is_accepted_with_its_label_and_a_shell_payload() -> None:
    normalized = validate_job_spec(watcher_spec())
    assert normalized["job_type"] == "dispatch"
    assert normalized["watchdog_target_label"] == LABEL


@pytest.mark.parametrize(("overrides", "message"), [
    ({"watchdog_target_label": None}, "watchdog_target_label (the dispatch label to watch) is required"),
    ({"watchdog_target_label": "  "}, "watchdog_target_label (the dispatch label to watch) is required"),
    ({"session_target": "isolated", "payload_kind": "agentTurn"}, 'need session_target "shell"'),
    ({"payload_kind": "systemEvent", "session_target": "main", "delivery_to": "1"},
     'need session_target "shell"'),
])
def test_a_dispatch_job_without_its_rules_is_refused(overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=re.escape(message)):
        validate_job_spec(watcher_spec(**overrides))


def test_an_update_cannot_take_the_label_off_a_dispatch_job() -> None:
    stored = {**validate_job_spec(watcher_spec()), "id": "j1"}
    with pytest.raises(ValidationError, match="watchdog_target_label"):
        validate_job_spec({"watchdog_target_label": None}, stored, "update")
    assert validate_job_spec({"name": "renamed"}, stored, "update") == {"name": "renamed"}


def test_jobs_add_stores_a_dispatch_job_and_lists_it_by_type(cli) -> None:
    job = add_job(cli, json.dumps(watcher_spec()))
    assert job["job_type"] == "dispatch" and job["watchdog_target_label"] == LABEL
    code, listed, _, _ = cli("jobs", "list", "--type", "dispatch")
    assert code == 0 and [j["id"] for j in listed] == [job["id"]]
    code, _, stdout, _ = cli("jobs", "add", json.dumps(watcher_spec(watchdog_target_label=None)))
    assert code != 0 and "watchdog_target_label" in stdout
