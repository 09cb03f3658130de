"""A job deleted, edited or disabled while its run is in flight: an ordinary event.

Each test then runs another job, which must be run and recorded (the daemon is not wedged), and
stops the daemon with SIGTERM, which must exit 0.
"""

from __future__ import annotations

import json
import random

import pytest

from conftest import add_job, pids_with_marker, runs_of, shell_job, wait_until
from fakegateway import INVOKE, FakeGateway, Reply

NEVER_SOON = "0 0 1 1 *"


def assert_daemon_still_works(cli, db, d) -> None:
    """Another job runs and is recorded; SIGTERM then ends the daemon with 0; no helper died."""
    other = add_job(cli, shell_job(name="after", payload_message="echo after-ok", delete_after_run=0),
                "--in", "1s")
    wait_until(lambda: [r for r in runs_of(db, other["id"]) if r["status"] == "ok"], timeout=15,
               message="the next job's run recorded ok")
    assert d.events("daemon.task_failed") == []
    assert d.stop() == 0
    assert db("SELECT id FROM runs WHERE status = 'running'") == []


@pytest.mark.parametrize("mode", ["announce", "announce-always"])
def test_deleting_a_job_mid_run_aborts_its_work(cli, daemon, db, fake_gateway, mode: str) -> None:
    mark = f"{random.randint(100000, 999999)}"
    d = daemon(env={"OPENCLAW_GATEWAY_URL": fake_gateway.url})
    job = add_job(cli, shell_job(name="doomed", payload_message=f"sleep 30.{mark}; exit 3",
                             delivery_mode=mode, delivery_channel="telegram", delivery_to="12345"),
              "--in", "1s")
    started = d.wait_for_event("run.started", lambda e: e["job_id"] == job["id"], timeout=15)
    wait_until(lambda: pids_with_marker(mark), message="the job's process")
    code, _, stdout, stderr = cli("jobs", "delete", job["id"])
    assert code == 0, stdout + stderr
    aborted = d.wait_for_event("run.aborted", lambda e: e["run_id"] == started["run_id"], timeout=10)
    assert "deleted" in aborted["reason"]
    wait_until(lambda: not pids_with_marker(mark), timeout=10, message="the aborted process gone")
    d.wait_for_event("run.not_recorded", lambda e: e["run_id"] == started["run_id"], timeout=10)
    assert db("SELECT * FROM messages WHERE to_agent = '@outbound'") == []
    assert fake_gateway.requests_to(INVOKE, tool="message") == []
    assert_daemon_still_works(cli, db, d)


def test_deleting_an_agent_job_mid_turn_cancels_its_request(cli, daemon, db, fake_gateway) -> None:
    fake_gateway.script("/v1/chat/completions", Reply(body={"choices": [
        {"message": {"role": "assistant", "content": "late"}}]}, delay_s=30))
    d = daemon(env={"OPENCLAW_GATEWAY_URL": fake_gateway.url})
    d.wait_for_event("gateway.up", timeout=10)
    job = add_job(cli, json.dumps({
        "name": "slow turn", "session_target": "isolated", "payload_message": "think",
        "run_timeout_ms": 60000, "origin": "system", "delivery_mode": "announce-always",
        "delivery_channel": "telegram", "delivery_to": "12345"}), "--in", "1s")
    started = d.wait_for_event("run.started", lambda e: e["job_id"] == job["id"], timeout=15)
    fake_gateway.wait_for_requests("/v1/chat/completions", 1, timeout=10)
    assert cli("jobs", "delete", job["id"])[0] == 0
    d.wait_for_event("run.aborted", lambda e: e["run_id"] == started["run_id"], timeout=10)
    d.wait_for_event("run.not_recorded", lambda e: e["run_id"] == started["run_id"], timeout=10)
    assert fake_gateway.requests_to(INVOKE, tool="message") == []
    assert_daemon_still_works(cli, db, d)


def test_editing_a_job_mid_run_keeps_its_recording_and_delivery(
    cli, daemon, db, fake_gateway: FakeGateway
) -> None:
    d = daemon(env={"OPENCLAW_GATEWAY_URL": fake_gateway.url})
    d.wait_for_event("gateway.up", timeout=10)
    job = add_job(cli, shell_job(name="edited", payload_message="sleep 2; echo first-version",
                             delivery_mode="announce-always", delivery_channel="telegram",
                             delivery_to="12345", delete_after_run=0, max_retries=2),
              "--in", "1s")
    d.wait_for_event("run.started", lambda e: e["job_id"] == job["id"], timeout=15)
    patch = {"name": "edited twice", "payload_message": "echo second-version", "max_retries": 0,
             "schedule_cron": NEVER_SOON}
    code, _, stdout, stderr = cli("jobs", "update", job["id"], json.dumps(patch))
    assert code == 0, stdout + stderr
    (run,) = wait_until(lambda: [r for r in runs_of(db, job["id"]) if r["status"] == "ok"], timeout=15)
    assert "first-version" in run["shell_stdout"]  # it ran what was claimed
    (message,) = wait_until(lambda: db("SELECT * FROM messages WHERE job_id = ? AND status = "
                                       "'delivered'", (job["id"],)), timeout=15)
    assert "first-version" in message["body"]
    (sent,) = fake_gateway.requests_to(INVOKE, tool="message")
    assert "first-version" in json.dumps(sent.body)
    (after,) = db("SELECT * FROM jobs WHERE id = ?", (job["id"],))
    assert after["name"] == "edited twice" and after["last_status"] == "ok"
    assert_daemon_still_works(cli, db, d)


def test_disabling_a_job_mid_run_records_it_and_schedules_no_retry(cli, daemon, db) -> None:
    d = daemon()
    job = add_job(cli, shell_job(name="disabled midway", payload_message="sleep 2; exit 3",
                             max_retries=3, delete_after_run=0), "--in", "1s")
    d.wait_for_event("run.started", lambda e: e["job_id"] == job["id"], timeout=15)
    assert cli("jobs", "disable", job["id"])[0] == 0
    (run,) = wait_until(lambda: [r for r in runs_of(db, job["id"]) if r["status"] == "error"],
                        timeout=15)
    assert run["shell_exit_code"] == 3
    assert db("SELECT * FROM job_dispatch_queue WHERE job_id = ? AND status = 'pending'",
              (job["id"],)) == []
    (after,) = db("SELECT * FROM jobs WHERE id = ?", (job["id"],))
    assert after["enabled"] == 0 and after["last_status"] == "error"
    assert_daemon_still_works(cli, db, d)
