"""Reading the reference's ``labels.json`` entries into dispatch ledger records."""

from __future__ import annotations

import json

import pytest

from scheduler.models.dispatch import (
    TASK_PROMPT_KEPT_CHARS,
    DispatchLabel,
    LedgerImportError,
    from_labels_json,
)
from scheduler.models.enums import SubagentMode, SubagentStatus

NOW = "2026-12-02 03:00:00"

REFERENCE_ENTRY = {
    "sessionKey": "agent:main:subagent:5b1c", "runId": "run-9", "agent": "ops",
    "mode": "reuse", "model": "anthropic/claude", "thinking": "low",
    "origin": "telegram:42", "deliverTo": "42", "deliverChannel": "telegram",
    "deliveryMode": "announce-always", "verifyCmd": "pytest -q",
    "spawnedAt": "2026-11-30T10:00:00.000Z", "timeoutSeconds": 900, "timeout": 900,
    "idleThresholdSeconds": 120, "status": "error", "summary": None,
    "error": "529 overloaded", "taskPrompt": "fix it", "watchdogJobId": "wd-1",
    "retryCount": 2, "gwRestartRetryCount": 1, "lastPing": 1764496800000,
    "updatedAt": "2026-11-30T10:05:00Z", "completion": {"text": "done"}, "brand": "chilisaus",
}


def test_a_reference_entry_maps_onto_the_columns() -> None:
    record = from_labels_json("fix-bug", REFERENCE_ENTRY, NOW)
    assert (record.label, record.session_key, record.gateway_run_id, record.agent_id) == (
        "fix-bug", "agent:main:subagent:5b1c", "run-9", "ops")
    assert record.mode is SubagentMode.REUSE and record.status is SubagentStatus.ERROR
    assert (record.timeout_s, record.idle_threshold_s, record.retry_count,
            record.restart_retry_count) == (900, 120, 2, 1)
    assert (record.spawned_at, record.updated_at) == ("2026-11-30 10:00:00", "2026-11-30 10:05:00")
    assert record.last_ping == "2025-11-30 10:00:00"  # epoch milliseconds, read as UTC
    assert (record.deliver_to, record.delivery_mode, record.watchdog_job_id) == (
        "42", "announce-always", "wd-1")
    assert json.loads(record.completion or "") == {"text": "done"}
    assert json.loads(record.extra or "") == {"brand": "chilisaus"}  # kept, not lost
    assert record.created_at == NOW


def test_an_entry_without_a_session_key_is_refused() -> None:
    with pytest.raises(LedgerImportError, match="no sessionKey"):
        from_labels_json("x", {"status": "running"}, NOW)


@pytest.mark.parametrize("label", ["", "x" * 201])
def test_a_label_must_be_short_and_non_empty(label: str) -> None:
    with pytest.raises(LedgerImportError, match="label must be"):
        from_labels_json(label, {"sessionKey": "k"}, NOW)


def test_garbage_values_fall_back_to_defaults_instead_of_failing() -> None:
    record = from_labels_json("g", {
        "sessionKey": "k", "timeoutSeconds": "soon", "retryCount": True,
        "idleThresholdSeconds": -5, "spawnedAt": "yesterday", "lastPing": "2026-01-01T00:00:00",
        "status": "exploded", "mode": 7,
    }, NOW)
    assert (record.timeout_s, record.retry_count, record.idle_threshold_s) == (300, 0, 300)
    assert record.spawned_at == NOW and record.last_ping is None  # a zoneless time is not UTC
    assert record.status is SubagentStatus.RUNNING and record.mode is SubagentMode.FRESH


def test_the_task_prompt_is_kept_to_the_references_length() -> None:
    record = from_labels_json("p", {"sessionKey": "k", "taskPrompt": "y" * 10_000}, NOW)
    assert record.task_prompt == "y" * TASK_PROMPT_KEPT_CHARS


def test_a_record_round_trips_through_its_columns() -> None:
    record = from_labels_json("r", REFERENCE_ENTRY, NOW)
    again = DispatchLabel.from_row(record.columns())
    assert again == record and again.columns()["status"] == "error"
