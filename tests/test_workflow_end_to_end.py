"""The workflow a user reads in docs/workflows.md, through the real daemon and a loopback gateway:
build -> (approval) -> deploy, with notify-failure beside it; then the same chain failing."""

from __future__ import annotations

import json
import time
from typing import Any

from conftest import add_job, runs_of, shell_job, wait_until
from fakegateway import INVOKE, FakeGateway

NEVER_SOON = "0 0 1 1 *"


def chain(cli, build_command: str, **build: Any) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    root = add_job(cli, shell_job(name="build", payload_message=build_command, schedule_cron=NEVER_SOON,
                                  delete_after_run=0, **build))
    deploy = add_job(cli, json.dumps({
        "name": "deploy", "parent_id": root["id"], "trigger_on": "success",
        "trigger_condition": "regex:^BUILD OK", "approval_required": 1, "approval_timeout_s": 1800,
        "approval_auto": "reject", "session_target": "shell", "run_timeout_ms": 10000,
        "payload_message": 'echo "deploying after $SCHEDULER_PARENT_STATUS"; cat',
        "delivery_mode": "announce-always", "delivery_channel": "telegram", "delivery_to": "12345",
        "origin": "system"}))
    notify = add_job(cli, json.dumps({
        "name": "notify-failure", "parent_id": root["id"], "trigger_on": "failure",
        "session_target": "shell", "payload_message": "echo notified", "run_timeout_ms": 10000,
        "delivery_mode": "none", "origin": "system"}))
    return root, deploy, notify


def finished(db, job_id: str) -> list[dict[str, Any]]:
    """Runs of the job that did its work and ended (not the gate runs of its approvals)."""
    return [r for r in runs_of(db, job_id) if r["status"] not in ("running", "awaiting_approval", "approved")]


def test_build_approve_deploy(cli, daemon, db, fake_gateway: FakeGateway) -> None:
    d = daemon(env={"OPENCLAW_GATEWAY_URL": fake_gateway.url})
    d.wait_for_event("gateway.up", timeout=10)
    root, deploy, notify = chain(cli, "echo 'BUILD OK 42'")
    code, out, _, _ = cli("jobs", "tree")
    assert code == 0 and [n["name"] for n in out[0]["children"]] == ["deploy", "notify-failure"]
    assert cli("jobs", "run", root["id"])[0] == 0

    # The build succeeds; deploy asks for approval, through the durable outbound path.
    (pending,) = wait_until(lambda: cli("approvals", "pending")[1], timeout=15, message="an approval")
    assert pending["job_id"] == deploy["id"] and pending["job_name"] == "deploy"
    asked = fake_gateway.wait_for(lambda gw: [r for r in gw.requests_to(INVOKE, tool="message")
                                              if "requires approval" in json.dumps(r.body)], timeout=15)
    assert f"jobs approve {deploy['id']}" in json.dumps(asked[0].body)
    assert finished(db, deploy["id"]) == []

    code, _, stdout, stderr = cli("jobs", "approve", deploy["id"])
    assert code == 0, stdout + stderr
    approved_at = time.monotonic()
    d.wait_for_event("run.started", lambda e: e["job_id"] == deploy["id"], timeout=5)
    assert time.monotonic() - approved_at < 2  # woken by the write, not a 30 s poll
    (run,) = wait_until(lambda: finished(db, deploy["id"]), timeout=15, message="deploy ran")
    assert run["status"] == "ok"
    assert "deploying after ok" in run["shell_stdout"] and "BUILD OK 42" in run["shell_stdout"]
    (build_run,) = runs_of(db, root["id"])
    assert run["triggered_by_run"] == build_run["id"]
    assert runs_of(db, notify["id"]) == []  # a failure child does not follow a success
    assert db("SELECT * FROM job_dispatch_queue WHERE status IN ('pending', 'claimed', "
              "'awaiting_approval')") == []
    assert d.stop() == 0


def test_a_failing_build_notifies_once_after_its_retries_and_never_deploys(cli, daemon, db) -> None:
    d = daemon(env={"SCHEDULER_RETRY_BASE_MS": "500"})
    root, deploy, notify = chain(cli, "echo 'BUILD FAILED'; exit 2", max_retries=2)
    assert cli("jobs", "run", root["id"])[0] == 0
    (note,) = wait_until(lambda: finished(db, notify["id"]), timeout=30, message="the failure child ran")
    assert note["status"] == "ok" and "notified" in note["shell_stdout"]
    builds = runs_of(db, root["id"])
    assert [r["status"] for r in builds] == ["error", "error", "error"]  # the run and two retries
    assert note["triggered_by_run"] in {r["id"] for r in builds}
    time.sleep(1.5)
    assert len(runs_of(db, notify["id"])) == 1  # once, after the retries were exhausted
    assert runs_of(db, deploy["id"]) == [] and cli("approvals", "pending")[1] == []
    assert d.stop() == 0


def test_reject_closes_the_gate_and_leaves_nothing_queued(cli, daemon, db) -> None:
    d = daemon()
    root, deploy, _ = chain(cli, "echo 'BUILD OK'")
    assert cli("jobs", "run", root["id"])[0] == 0
    wait_until(lambda: cli("approvals", "pending")[1], timeout=15, message="an approval")
    code, out, _, _ = cli("jobs", "reject", deploy["id"], "not", "today")
    assert code == 0 and out["status"] == "rejected"
    (gate,) = runs_of(db, deploy["id"])
    assert gate["status"] == "cancelled" and "not today" in gate["error_message"]
    assert db("SELECT * FROM job_dispatch_queue WHERE status IN ('pending', 'claimed', "
              "'awaiting_approval')") == []
    code, out, _, _ = cli("jobs", "approve", deploy["id"])
    assert code != 0 and out["ok"] is False  # nothing pending any more
    assert d.stop() == 0
