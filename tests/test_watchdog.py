"""Watchdog jobs: the check command's verdicts, and alerts delivered to the alert target."""

from __future__ import annotations

import json
from typing import Any

import pytest

from conftest import query, wait_until
from scheduler.strategies.watchdog import terminal_outcome


@pytest.mark.parametrize(
    ("stdout", "expected"),
    [
        ('{"status": "done", "summary": "all good"}', ("completed", "all good")),
        ('{"terminal": true}', ("completed", "Task reported terminal status done.")),
        ('{"status": "error", "error": "crashed"}', ("failed", "crashed")),
        ('{"status": "interrupted"}', ("failed", "Task ended with status interrupted.")),
        ('noise before {"status": "done", "deliveryText": "report"} noise after', ("completed", "report")),
        ('{"status": "done", "completion": {"summary": "nested"}}', ("completed", "nested")),
        ('{"status": "running"}', None),
        ("plain text", None),
        ("", None),
        ("[1, 2]", None),
    ],
)
def test_terminal_payloads(stdout: str, expected: tuple[str, str] | None) -> None:
    assert terminal_outcome(stdout) == expected


def watchdog_spec(check: str, **overrides: Any) -> str:
    return json.dumps({
        "name": "watchdog:build", "schedule_cron": "*/2 * * * * *", "run_timeout_ms": 10000,
        "origin": "system", "watchdog_check_cmd": check, "watchdog_target_label": "build",
        "watchdog_alert_channel": "telegram", "watchdog_alert_target": "555", **overrides,
    })


def add_watchdog(cli, spec: str) -> dict[str, Any]:
    code, out, stdout, stderr = cli("jobs", "add", spec, "--watchdog")
    assert code == 0, stdout + stderr
    assert out["job"]["job_type"] == "watchdog" and out["job"]["delivery_mode"] == "none"
    return out["job"]


def gateway_env(gateway: Any) -> dict[str, str]:
    return {"OPENCLAW_GATEWAY_URL": gateway.url}


def test_finished_task_is_announced_and_the_watchdog_removes_itself(
    cli, daemon, db_path, fake_gateway
) -> None:
    d = daemon(env=gateway_env(fake_gateway))
    job = add_watchdog(cli, watchdog_spec("""echo '{"status": "done", "summary": "all green"}'"""))
    delivery = fake_gateway.wait_for(lambda gw: gw.deliveries, timeout=15)[0]
    assert delivery["message"] == '\u2705 [watchdog] Task "build" completed -- watchdog disarmed\n\nall green'
    assert (delivery["channel"], delivery["target"]) == ("telegram", "555")
    wait_until(lambda: not query(db_path, "SELECT id FROM jobs WHERE id = ?", (job["id"],)), timeout=10,
               message="the self-destructing watchdog was removed")
    assert d.stop() == 0


def test_stuck_task_raises_an_alert_and_the_watchdog_stays(cli, daemon, db_path, fake_gateway) -> None:
    d = daemon(env=gateway_env(fake_gateway))
    job = add_watchdog(cli, watchdog_spec("echo still stuck >&2; exit 1"))
    delivery = fake_gateway.wait_for(lambda gw: gw.deliveries, timeout=15)[0]
    text = delivery["message"]
    assert text.startswith('\U0001f6a8 [watchdog] Task "build" appears stuck\n')
    assert "- Reason: check command reported stuck" in text and "- Error: still stuck" in text
    (row,) = query(db_path, "SELECT enabled FROM jobs WHERE id = ?", (job["id"],))
    assert row["enabled"] == 1
    runs = wait_until(lambda: [r for r in query(db_path, "SELECT * FROM runs WHERE job_id = ?", (job["id"],))
                               if r["status"] == "ok"], timeout=10)
    assert runs[0]["summary"] == "Watchdog alert fired: check command reported stuck"
    assert d.stop() == 0


def test_running_task_and_transient_check_failures_send_nothing(cli, daemon, db_path, fake_gateway) -> None:
    d = daemon(env=gateway_env(fake_gateway))
    running = add_watchdog(cli, watchdog_spec("echo '{\"status\": \"running\"}'", name="watchdog:a"))
    flaky = add_watchdog(cli, watchdog_spec("echo busy >&2; exit 2", name="watchdog:b"))
    odd = add_watchdog(cli, watchdog_spec("exit 7", name="watchdog:c"))

    def summaries(job: dict[str, Any]) -> list[dict[str, Any]]:
        return [r for r in query(db_path, "SELECT * FROM runs WHERE job_id = ?", (job["id"],))
                if r["status"] != "running"]

    first = wait_until(lambda: summaries(running), timeout=15)[0]
    assert first["status"] == "ok" and first["summary"].startswith(
        "Watchdog check returned non-terminal output; target still running")
    assert wait_until(lambda: summaries(flaky), timeout=15)[0]["summary"] == \
        "Watchdog check failed (transient): busy"
    bad = wait_until(lambda: summaries(odd), timeout=15)[0]
    assert bad["status"] == "error"
    assert bad["error_message"] == "Watchdog check command returned unexpected exit code 7"
    assert fake_gateway.deliveries == []
    assert d.stop() == 0
