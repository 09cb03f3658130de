"""Approval gates through the real daemon and CLI: cron, at, manual and chained work waits for an
approval, whose request reaches the gateway; `jobs approve` starts it at once, `jobs reject`
leaves nothing queued, and timeouts are resolved on time, not on a polling cadence."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from conftest import CliResult, DaemonFactory, add_job, runs_of, shell_job
from fakegateway import FakeGateway
from scheduler.store import open_store
from scheduler.store.api import Owner
from scheduler.timeutil import sqlite_now

Query = Callable[..., list[dict[str, Any]]]
Cli = Callable[..., CliResult]
LIVE = "('pending', 'claimed', 'awaiting_approval')"
# A tick far longer than any wait below: whatever happens in time is due to the sleep computed
# from the next due instant, not to a polling cadence.
SLOW_TICK = {"SCHEDULER_TICK_MS": "60000"}


def gated_job(cli: Cli, *options: str, **overrides: Any) -> dict[str, Any]:
    spec = {"name": "deploy", "schedule_cron": "0 0 1 1 *", "approval_required": 1,
            "delivery_mode": "none", "delivery_channel": "telegram", "delivery_to": "ops-chat",
            "payload_message": "echo deployed", **overrides}
    return add_job(cli, shell_job(**spec), *options)


def make_due(cli: Cli, db_path: Path, job: dict[str, Any], source: str) -> None:
    """Work of ``source`` for ``job``, due now (an at-job fires by itself)."""
    if source == "manual":
        code, _, out, err = cli("jobs", "run", job["id"])
        assert code == 0, out + err
        return
    if source == "at":
        return
    store = open_store(db_path)
    try:
        if source == "cron":
            store.set_next_run(job["id"], sqlite_now())
        else:  # the row another engineer's chain code writes when a parent ends
            assert store.enqueue_dispatch(job["id"], "chain", sqlite_now()) is not None
    finally:
        store.close()


def for_job(job: dict[str, Any]) -> Callable[[dict[str, Any]], bool]:
    return lambda event: event.get("job_id") == job["id"]


@pytest.mark.parametrize("source", ["cron", "at", "manual", "chain"])
def test_gated_work_asks_then_starts_within_a_second_of_approve(
        cli: Cli, daemon: DaemonFactory, db: Query, db_path: Path, fake_gateway: FakeGateway,
        source: str) -> None:
    options: tuple[str, ...] = ()
    overrides: dict[str, Any] = {}
    if source == "at":
        options, overrides = ("--in", "1s"), {"delete_after_run": 0}
    if source == "chain":
        parent = add_job(cli, shell_job(name="build", schedule_cron="0 0 1 1 *"))
        overrides = {"parent_id": parent["id"], "trigger_on": "success", "schedule_cron": None}
    job = gated_job(cli, *options, **overrides)
    d = daemon(env={"OPENCLAW_GATEWAY_URL": fake_gateway.url, **SLOW_TICK})
    make_due(cli, db_path, job, source)

    gate = d.wait_for_event("run.awaiting_approval", for_job(job), timeout=10)
    notice = fake_gateway.wait_for(lambda gw: gw.deliveries, timeout=10)[0]
    assert notice["message"] == (f"\u26a0\ufe0f Job 'deploy' requires approval.\n"
                                 f"Approve: openclaw-scheduler jobs approve {job['id']}\n"
                                 f"Reject: openclaw-scheduler jobs reject {job['id']}")
    assert (notice["channel"], notice["target"]) == ("telegram", "ops-chat")
    (row,) = db(f"SELECT * FROM job_dispatch_queue WHERE job_id = ? AND status IN {LIVE}", (job["id"],))
    assert row["status"] == "awaiting_approval" and row["id"] == gate["dispatch_id"]
    assert d.events("run.started") == []

    code, approved, out, err = cli("jobs", "approve", job["id"])
    approved_at = time.monotonic()
    assert code == 0 and approved["status"] == "approved", out + err
    d.wait_for_event("run.started", for_job(job), timeout=10)
    latency = time.monotonic() - approved_at
    assert latency < 2.0, f"the approved run started {latency:.2f}s after `jobs approve`"

    d.wait_for_event("run.finished", for_job(job), timeout=10)
    assert [r["status"] for r in runs_of(db, job["id"])] == ["approved", "ok"]
    assert db("SELECT status FROM approvals") == [{"status": "dispatched"}]
    assert db(f"SELECT * FROM job_dispatch_queue WHERE status IN {LIVE}") == []
    assert len(d.events("run.started")) == 1


def test_reject_cancels_and_leaves_no_pending_dispatch_rows(
        cli: Cli, daemon: DaemonFactory, db: Query) -> None:
    job = gated_job(cli, delivery_to=None, delivery_channel=None)
    other = add_job(cli, shell_job(name="other", schedule_cron="0 0 1 1 *"))
    d = daemon()
    cli("jobs", "run", job["id"])
    gate = d.wait_for_event("run.awaiting_approval", for_job(job), timeout=10)

    code, rejected, out, err = cli("jobs", "reject", job["id"], "change", "freeze")
    assert code == 0 and rejected["status"] == "rejected" and rejected["reason"] == "change freeze", out + err
    # Work queued after the rejection runs: the daemon has looked at the queue since.
    cli("jobs", "run", other["id"])
    d.wait_for_event("run.finished", for_job(other), timeout=10)

    (run,) = runs_of(db, job["id"])
    assert (run["id"], run["status"], run["error_message"]) == (gate["run_id"], "cancelled", "change freeze")
    assert db(f"SELECT * FROM job_dispatch_queue WHERE status IN {LIVE}") == []
    assert d.events("run.started") == [e for e in d.events("run.started") if e["job_id"] == other["id"]]
    code, _, out, _ = cli("approvals", "pending", json_mode=False)
    assert code == 0 and out.strip() == "No pending approvals"


@pytest.mark.parametrize("auto", ["reject", "approve"])
def test_a_timeout_is_resolved_at_its_deadline(cli: Cli, daemon: DaemonFactory, db: Query, auto: str) -> None:
    job = gated_job(cli, approval_timeout_s=2, approval_auto=auto)
    d = daemon(env=SLOW_TICK)
    cli("jobs", "run", job["id"])
    d.wait_for_event("run.awaiting_approval", for_job(job), timeout=10)
    asked = time.monotonic()
    resolved = d.wait_for_event("approval.timed_out", for_job(job), timeout=20)
    # Well before the 60 s tick: the deadline is part of what the loop sleeps until.
    assert time.monotonic() - asked < 15
    (approval,) = db("SELECT * FROM approvals")
    if auto == "reject":
        assert resolved["outcome"] == "cancelled" and approval["status"] == "timed_out"
        assert db(f"SELECT * FROM job_dispatch_queue WHERE status IN {LIVE}") == []
    else:
        assert resolved["outcome"] == "approved"
        d.wait_for_event("run.finished", for_job(job), timeout=10)
        assert [r["status"] for r in runs_of(db, job["id"])] == ["approved", "ok"]
    assert approval["resolved_by"] == "timeout"


def test_max_pending_approvals_refuses_with_a_recorded_reason(
        cli: Cli, daemon: DaemonFactory, db: Query) -> None:
    job = gated_job(cli, max_pending_approvals=1)
    d = daemon()
    cli("jobs", "run", job["id"])
    d.wait_for_event("run.awaiting_approval", for_job(job), timeout=10)
    cli("jobs", "run", job["id"])
    skipped = d.wait_for_event("run.skipped", for_job(job), timeout=10)
    assert "max_pending_approvals 1" in skipped["reason"]
    assert [r["status"] for r in runs_of(db, job["id"])] == ["awaiting_approval", "skipped"]
    assert len(db(f"SELECT * FROM job_dispatch_queue WHERE status IN {LIVE}")) == 1


# -- the CLI ----------------------------------------------------------------------------------


def _gate_now(db_path: Path, job: dict[str, Any]) -> None:
    """Gate a manual run of ``job`` as the daemon would (one claim, in this process)."""
    store = open_store(db_path)
    try:
        store.enqueue_dispatch(job["id"], "manual", sqlite_now())
        batch = store.claim_due(sqlite_now(), 10, {"shell"}, lambda j: None, Owner.new())
        assert len(batch.gated) == 1
    finally:
        store.close()


def test_approvals_list_and_pending_show_job_age_and_run(cli: Cli, db_path: Path, db: Query) -> None:
    job = gated_job(cli)
    _gate_now(db_path, job)
    (gate,) = runs_of(db, job["id"])
    for sub in ("list", "pending"):
        code, rows, out, err = cli("approvals", sub)
        assert code == 0, out + err
        (row,) = rows
        assert (row["job_id"], row["job_name"], row["run_id"], row["status"]) == (
            job["id"], "deploy", gate["id"], "pending")
        assert row["requested_at"] and isinstance(row["age_s"], int) and row["age_s"] >= 0
    code, _, out, _ = cli("approvals", "list", json_mode=False)
    assert code == 0 and "deploy" in out and gate["id"][:8] in out


@pytest.mark.parametrize("verb", ["approve", "reject"])
def test_approve_and_reject_errors_are_one_line(cli: Cli, verb: str) -> None:
    job = gated_job(cli)
    code, out, stdout, _ = cli("jobs", verb, "no-such-job")
    assert code == 1 and out == {"ok": False, "error": "Job not found: no-such-job"}
    code, out, _, _ = cli("jobs", verb, job["id"])
    assert code == 1 and out == {"ok": False, "error": f"No pending approval for job: {job['id']}"}
    code, _, stdout, stderr = cli("jobs", verb, job["id"], json_mode=False)
    assert code == 1 and stdout == "" and stderr == f"error: No pending approval for job: {job['id']}\n"
    code, _, _, stderr = cli("jobs", verb, json_mode=False)
    assert code == 2 and stderr.count("\n") == 1 and "usage" in stderr


def test_a_reject_reason_must_be_printable(cli: Cli, db_path: Path) -> None:
    job = gated_job(cli)
    _gate_now(db_path, job)
    code, out, _, _ = cli("jobs", "reject", job["id"], "bad\x1b[2Jreason")
    assert code == 1 and "reason must be" in out["error"]
    code, out, _, _ = cli("approvals", "pending")
    assert code == 0 and len(out) == 1  # nothing was written
