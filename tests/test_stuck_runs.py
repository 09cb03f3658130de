"""The stuck-run detector (features.md §15.2): ``runs stuck`` and the daemon's built-in task.

Real parts: a SQLite file written through the store, the CLI and the daemon as subprocesses, the
loopback fake gateway with its WebSocket control plane (tests/fakerpc.py), whose ``sessions.list``
answer each test scripts to say how active the sub-agent's session is.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from conftest import query, wait_until
from fakegateway import FakeGateway, fake_gateway  # noqa: F401  (the fixture)
from fakerpc import RpcReply, RpcRequest
from scheduler.models.dispatch import DispatchLabel
from scheduler.models.enums import SubagentStatus
from scheduler.models.job import new_job_row
from scheduler.models.validation import validate_job_spec
from scheduler.store import open_store
from scheduler.store.api import Owner, Store
from scheduler.timeutil import to_sqlite, utcnow

TOKEN = "stuck-test-token"
LABEL = "fix-bug"
SESSION = f"agent:main:subagent:{LABEL}"
ME = Owner(instance="stuck-test", host="here")


@pytest.fixture
def store(db_path: Path) -> Iterator[Store]:
    opened = open_store(db_path)
    yield opened
    opened.close()


@pytest.fixture
def gateway(fake_gateway: FakeGateway) -> FakeGateway:  # noqa: F811
    fake_gateway.token = TOKEN
    return fake_gateway


def env(gateway: FakeGateway, **extra: str) -> dict[str, str]:
    return {"OPENCLAW_GATEWAY_URL": gateway.url, "OPENCLAW_GATEWAY_TOKEN": TOKEN, **extra}


def running_run(store: Store, name: str, minutes_ago: float, **spec: Any) -> str:
    """A job and a run of it that started ``minutes_ago`` and is still running."""
    started = utcnow() - timedelta(minutes=minutes_ago)
    job_spec = {"name": name, "schedule_cron": "0 0 1 1 *", "session_target": "shell",
                "payload_message": "sleep 1", "run_timeout_ms": 7_200_000, "delivery_mode": "none",
                "origin": "system", **spec}
    job = store.insert_job(new_job_row(validate_job_spec(job_spec, now=started), started))
    store.update_job(job.id, {"next_run_at": to_sqlite(started)}, to_sqlite(started))
    (claim,) = [c for c in store.claim_due(to_sqlite(started), 50, {"shell"},
                                           lambda j: to_sqlite(started + timedelta(days=365)),
                                           ME).claims if c.job.id == job.id]
    return claim.run.id


def ledger_label(store: Store, **overrides: Any) -> DispatchLabel:
    return store.save_dispatch(DispatchLabel(**{
        "label": LABEL, "session_key": SESSION, "status": SubagentStatus.RUNNING,
        "spawned_at": to_sqlite(utcnow() - timedelta(hours=1)), **overrides}), to_sqlite(utcnow()))


def sessions_report(gateway: FakeGateway, *, idle_s: float, tokens: list[int]) -> None:
    """``sessions.list`` says the sub-agent's session was last updated ``idle_s`` ago, with
    ``tokens[0]`` tokens, then ``tokens[1]`` ... on each later call (the last one repeats)."""
    calls = iter(range(1_000_000))

    def answer(request: RpcRequest) -> RpcReply:
        count = tokens[min(next(calls), len(tokens) - 1)]
        updated = int((time.time() - idle_s) * 1000)
        return RpcReply({"sessions": [{"key": SESSION, "kind": "direct", "status": "running",
                                       "updatedAt": updated, "totalTokens": count,
                                       "classification": "subagent", "label": LABEL}]})

    gateway.rpc.touch_session(SESSION, tokens=0)  # the session exists: sessions.send reaches it
    gateway.rpc.on("sessions.list", answer)


def stuck(cli: Any, gateway: FakeGateway, *args: str, json_mode: bool = False) -> tuple[int, Any, str]:
    code, parsed, stdout, stderr = cli("runs", "stuck", *args, json_mode=json_mode, env=env(gateway))
    assert "Traceback" not in stderr, stderr
    return code, parsed, stdout


# -- runs stuck ---------------------------------------------------------------------------------


def test_a_long_running_ordinary_run_is_reported_in_the_reference_format(
        cli: Any, store: Store, gateway: FakeGateway) -> None:
    run_id = running_run(store, "nightly backup", minutes_ago=50)
    running_run(store, "young", minutes_ago=5)
    code, _, stdout = stuck(cli, gateway)
    assert code == 1, stdout
    lines = stdout.strip().splitlines()
    assert lines[0] == "Detected 1 stale run(s) older than 45 minute(s):"
    assert re.fullmatch(
        rf'- run={run_id} job="nightly backup" job_id=\S+ started=\S+ \S+ last_heartbeat=\S+ \S+ '
        r"stale_s=(29\d\d|30\d\d) timeout_ms=7200000", lines[1]), lines[1]
    assert len(lines) == 2
    assert gateway.rpc.requests == []  # no watcher run: the gateway is not asked


def test_nothing_stuck_exits_0_and_says_so(cli: Any, store: Store, gateway: FakeGateway) -> None:
    running_run(store, "young", minutes_ago=5)
    code, _, stdout = stuck(cli, gateway, "--threshold-min", "10")
    assert (code, stdout) == (0, "No stale runs older than 10 minute(s).\n")
    code, _, stdout = stuck(cli, gateway, "--threshold-min", "4")
    assert code == 1 and "older than 4 minute(s)" in stdout


def test_a_silent_dispatch_run_is_steered_once_then_reported_once(
        cli: Any, store: Store, gateway: FakeGateway) -> None:
    run_id = running_run(store, f"dispatch-deliver:{LABEL}", minutes_ago=50)
    ledger_label(store)
    sessions_report(gateway, idle_s=600, tokens=[40])

    code, _, stdout = stuck(cli, gateway)
    assert code == 0, stdout
    assert stdout.splitlines() == [f"Steered: label={LABEL} ageMs={stdout.split('ageMs=')[1].split()[0]} "
                                   "tokens=40 (awaiting response)",
                                   "No stuck runs -- 1 steered, awaiting response."]
    (steer,) = gateway.rpc.requests_for("sessions.send")
    assert steer.params["key"] == SESSION
    assert steer.params["message"].startswith("[Auto-steer] You have been silent for 50 minutes.")
    entry = store.get_dispatch(LABEL)
    assert entry is not None and entry.steered_at is not None and entry.activity_tokens == 40
    assert entry.alerted_at is None

    code, report, _ = stuck(cli, gateway, json_mode=True)
    assert code == 1
    (alert,) = report["alerts"]
    assert (alert["run_id"], alert["label"], alert["steer_note"]) == (run_id, LABEL, "steer=ignored")
    assert len(gateway.rpc.requests_for("sessions.send")) == 1  # never steered twice
    entry = store.get_dispatch(LABEL)
    assert entry is not None and entry.alerted_at is not None

    code, report, _ = stuck(cli, gateway, json_mode=True)
    assert code == 0 and report["alerts"] == []  # reported once per silent spell
    assert "already reported" in report["skipped"][0]["reason"]
    assert len(gateway.rpc.requests_for("sessions.send")) == 1


def test_a_steer_that_woke_the_sub_agent_clears_the_spell(
        cli: Any, store: Store, gateway: FakeGateway) -> None:
    running_run(store, f"dispatch-deliver:{LABEL}", minutes_ago=50)
    ledger_label(store)
    sessions_report(gateway, idle_s=600, tokens=[40, 95])
    assert stuck(cli, gateway)[0] == 0
    code, report, _ = stuck(cli, gateway, json_mode=True)
    assert code == 0 and report["alerts"] == []
    assert report["skipped"][0]["reason"] == "steer worked (tokens 40->95)"
    entry = store.get_dispatch(LABEL)
    assert entry is not None and entry.steered_at is None and entry.alerted_at is None


def test_activity_the_watcher_recorded_after_the_steer_counts_as_the_steer_working(
        cli: Any, store: Store, gateway: FakeGateway) -> None:
    # The watcher moved activity_tokens on when it saw the reply to the steer: the count alone
    # no longer shows growth, its last_activity_at does.
    now = utcnow()
    running_run(store, f"dispatch-deliver:{LABEL}", minutes_ago=50)
    ledger_label(store, steered_at=to_sqlite(now - timedelta(minutes=10)), activity_tokens=95,
                 last_activity_at=to_sqlite(now - timedelta(minutes=8)))
    sessions_report(gateway, idle_s=480, tokens=[95])
    code, report, _ = stuck(cli, gateway, json_mode=True)
    assert code == 0 and report["alerts"] == [], report
    assert report["skipped"][0]["reason"].startswith("steer worked")
    store.update_dispatch(LABEL, {"steered_at": to_sqlite(now - timedelta(minutes=5))},
                          to_sqlite(now))  # a steer (by hand) after the last activity
    code, report, _ = stuck(cli, gateway, json_mode=True)
    assert code == 1 and report["alerts"][0]["steer_note"] == "steer=ignored"
    assert gateway.rpc.requests_for("sessions.send") == []  # the detector never steered itself


def test_an_active_or_finished_dispatch_is_skipped_without_a_steer(
        cli: Any, store: Store, gateway: FakeGateway) -> None:
    running_run(store, f"dispatch-deliver:{LABEL}", minutes_ago=50)
    ledger_label(store)
    sessions_report(gateway, idle_s=30, tokens=[40])
    code, report, _ = stuck(cli, gateway, json_mode=True)
    assert code == 0 and report["alerts"] == [] and report["steered"] == []
    assert report["skipped"][0]["reason"].startswith("active (ageMs=")
    store.update_dispatch(LABEL, {"status": "done"}, to_sqlite(utcnow()))
    sessions_report(gateway, idle_s=3600, tokens=[40])
    code, report, _ = stuck(cli, gateway, json_mode=True)
    assert code == 0 and report["skipped"][0]["reason"] == "ledger status=done"
    assert gateway.rpc.requests_for("sessions.send") == []


def test_a_watcher_whose_label_is_not_in_the_ledger_is_an_ordinary_run(
        cli: Any, store: Store, gateway: FakeGateway) -> None:
    running_run(store, "dispatch-deliver:unknown", minutes_ago=50)
    code, report, _ = stuck(cli, gateway, json_mode=True)
    assert code == 1 and report["alerts"][0]["steer_note"] is None
    assert gateway.rpc.requests_for("sessions.send") == []


def test_an_unreachable_gateway_means_the_steer_failed_and_the_run_is_reported(
        cli: Any, store: Store, gateway: FakeGateway) -> None:
    running_run(store, f"dispatch-deliver:{LABEL}", minutes_ago=50)
    ledger_label(store)
    gateway.down()
    code, report, _ = stuck(cli, gateway, json_mode=True)
    assert code == 1 and report["alerts"][0]["steer_note"] == "steer=failed"


@pytest.mark.parametrize(("args", "said"), [
    (("--threshold-min", "0"), "--threshold-min must be >= 1"),
    (("--threshold-min", "x"), "--threshold-min must be a whole number"),
    (("--limit", "-1"), "--limit must be a whole number"),
    (("--bogus",), "unknown option --bogus; usage: openclaw-scheduler runs stuck"),
    (("extra",), "unexpected argument 'extra'; usage: openclaw-scheduler runs stuck")])
def test_bad_arguments_are_one_line_and_exit_2(cli: Any, gateway: FakeGateway, args: tuple[str, ...],
                                               said: str) -> None:
    code, parsed, stdout, stderr = cli("runs", "stuck", *args, env=env(gateway))
    assert code == 2 and parsed is not None and parsed["ok"] is False, stdout + stderr
    assert parsed["error"].startswith(said), parsed
    assert "Traceback" not in stderr


# -- the daemon's built-in task -----------------------------------------------------------------


def test_the_daemon_task_reports_steers_once_then_reports_as_outbound_messages(
        daemon: Any, db_path: Path, store: Store, gateway: FakeGateway) -> None:
    ledger_label(store)
    sessions_report(gateway, idle_s=600, tokens=[40])
    # Both run in the daemon, which heartbeats them: their age is what makes them stuck.
    for name in ("nightly backup", f"dispatch-deliver:{LABEL}"):
        spec = {"name": name, "schedule_kind": "at", "schedule_at": to_sqlite(utcnow()),
                "session_target": "shell", "payload_message": "sleep 120",
                "run_timeout_ms": 600_000, "delivery_mode": "none", "origin": "system"}
        store.insert_job(new_job_row(validate_job_spec(spec, now=utcnow()), utcnow()))
    d = daemon(env=env(gateway, SCHEDULER_STUCK_RUN_CHECK_S="1", SCHEDULER_STUCK_RUN_THRESHOLD_S="2",
                       SCHEDULER_STUCK_RUN_ALERT_TO="4242", SCHEDULER_MESSAGE_DELIVERY_MS="5000"))

    def sent(containing: str) -> list[dict[str, Any]]:
        return [m for m in gateway.deliveries if containing in json.dumps(m)]

    (ordinary,) = wait_until(lambda: sent("nightly backup"), timeout=60,
                             message="the ordinary run reported")
    assert ordinary["target"] == "4242" and ordinary["channel"] == "telegram"
    wait_until(lambda: gateway.rpc.requests_for("sessions.send"), timeout=60, message="the steer")
    wait_until(lambda: sent("steer=ignored"), timeout=60, message="the silent sub-agent reported")
    time.sleep(3)  # three more passes: nothing new may be sent
    assert len(gateway.rpc.requests_for("sessions.send")) == 1
    assert len(sent("steer=ignored")) == 1 and len(sent("nightly backup")) == 1
    notices = query(db_path, "SELECT * FROM messages WHERE subject = 'stuck runs'")
    assert len(notices) == 2 and {n["status"] for n in notices} == {"delivered"}
    assert notices[0]["job_id"] is None
    assert d.stop() == 0


def test_the_daemon_task_is_off_by_default(daemon: Any, store: Store, gateway: FakeGateway) -> None:
    ledger_label(store)
    sessions_report(gateway, idle_s=600, tokens=[40])
    spec = {"name": f"dispatch-deliver:{LABEL}", "schedule_kind": "at",
            "schedule_at": to_sqlite(utcnow()), "session_target": "shell",
            "payload_message": "sleep 60", "run_timeout_ms": 600_000, "delivery_mode": "none",
            "origin": "system"}
    store.insert_job(new_job_row(validate_job_spec(spec, now=utcnow()), utcnow()))
    d = daemon(env=env(gateway))
    d.wait_for_event("run.started", timeout=30)
    time.sleep(3)
    assert gateway.rpc.requests_for("sessions.send") == [] and gateway.deliveries == []
    assert d.stop() == 0
