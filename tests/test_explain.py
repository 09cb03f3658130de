"""``jobs explain``: a real daemon makes each decision, then the command reports it."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from conftest import CliResult, DaemonFactory, add_job, shell_job, wait_until
from fakegateway import CHAT, FakeGateway, Reply
from scheduler.store import open_store

Cli = Callable[..., CliResult]
Query = Callable[..., list[dict[str, Any]]]
GATEWAY_DOWN = {"OPENCLAW_GATEWAY_URL": "http://127.0.0.1:9"}


def agent_spec(**overrides: Any) -> str:
    return json.dumps({"name": "digest", "session_target": "isolated",
                       "payload_message": "Summarise the day", "run_timeout_ms": 30000,
                       "delivery_mode": "none", "delivery_opt_out_reason": "test",
                       "origin": "system", "delete_after_run": 0, **overrides})


def explain(cli: Cli, job_id: str) -> dict[str, Any]:
    code, out, stdout, stderr = cli("jobs", "explain", job_id, env=GATEWAY_DOWN)
    assert code == 0, stdout + stderr
    assert out["ok"] is True
    return dict(out)


def decisions(report: dict[str, Any]) -> list[str]:
    return [o["decision"] for o in report["occurrences"]]


def skipped_runs(db: Query, job_id: str) -> list[dict[str, Any]]:
    return db("SELECT * FROM runs WHERE job_id = ? AND status = 'skipped'", (job_id,))


def test_overlap_pool_and_backlog_decisions_are_explained(cli: Cli, daemon: DaemonFactory,
                                                          db: Query) -> None:
    every_2s = "*/2 * * * * *"
    overlapping = add_job(cli, shell_job(name="overlapping", schedule_cron=every_2s,
                                         payload_message="sleep 30", run_timeout_ms=60000))
    queued = add_job(cli, shell_job(name="queued", schedule_cron=every_2s, overlap_policy="queue",
                                    max_queued_dispatches=1, payload_message="sleep 30",
                                    run_timeout_ms=60000))
    holder = add_job(cli, shell_job(name="holder", resource_pool="gpu", payload_message="sleep 30",
                                    run_timeout_ms=60000), "--in", "1s")
    waiter = add_job(cli, shell_job(name="waiter", resource_pool="gpu", schedule_cron=every_2s,
                                    misfire_grace_s=1))
    d = daemon(GATEWAY_DOWN)
    for job in (overlapping, queued, waiter):
        wait_until(lambda j=job: skipped_runs(db, j["id"]), timeout=30, message=f"{job['name']} skipped")
    wait_until(lambda: any("max_queued_dispatches" in (r["error_message"] or "")
                           for r in skipped_runs(db, queued["id"])), timeout=30, message="queue full")

    report = explain(cli, overlapping["id"])
    assert "overlap" in decisions(report) and "running" in decisions(report)
    assert any("run is in progress" in note for note in report["now"])
    assert len(report["next_fires"]) == 5
    assert "backlog cap" in decisions(explain(cli, queued["id"]))
    report = explain(cli, waiter["id"])
    assert "pool" in decisions(report)
    assert any("resource pool gpu is full" in note for note in report["now"])
    assert decisions(explain(cli, holder["id"])) == ["running"]  # the run that holds the pool
    assert d.stop() == 0


def test_approval_disabled_and_gateway_down_are_explained(cli: Cli, daemon: DaemonFactory,
                                                          db: Query, db_path: Path) -> None:
    gated = add_job(cli, shell_job(name="deploy", schedule_cron="0 0 1 1 *", approval_required=1,
                                   payload_message="echo deployed"))
    paused = add_job(cli, shell_job(name="paused", schedule_cron="0 0 1 1 *"))
    agent = add_job(cli, agent_spec(), "--in", "1s")
    d = daemon(GATEWAY_DOWN)
    assert cli("jobs", "run", gated["id"])[0] == 0
    d.wait_for_event("run.awaiting_approval", lambda e: e.get("job_id") == gated["id"], timeout=15)
    # A chained run queued for later, then the job disabled: the run is cancelled with the reason.
    store = open_store(db_path)
    try:
        assert store.enqueue_dispatch(paused["id"], "chain", "2999-01-01 00:00:00") is not None
    finally:
        store.close()
    assert cli("jobs", "disable", paused["id"])[0] == 0

    report = explain(cli, gated["id"])
    assert decisions(report) == ["awaiting approval"]
    assert [q["status"] for q in report["queued"]] == ["awaiting_approval"]
    assert len(report["approvals"]) == 1
    assert any("approval(s) pending" in note for note in report["now"])

    report = explain(cli, paused["id"])
    assert any("the job is disabled" in note for note in report["now"])
    assert decisions(report) == ["disabled"]
    assert report["queued"] == []

    wait_until(lambda: db("SELECT 1 FROM jobs WHERE id = ? AND next_run_at <= datetime('now')",
                          (agent["id"],)), timeout=10, message="agent job due")
    report = explain(cli, agent["id"])
    assert report["occurrences"] == []  # it waits: nothing is claimed while the gateway is down
    assert any("gateway is unreachable" in note for note in report["now"]), report["now"]
    assert d.stop() == 0


def test_a_deferred_agent_run_reads_as_gateway_down(cli: Cli, daemon: DaemonFactory, db: Query,
                                                    fake_gateway: FakeGateway) -> None:
    """The gateway drops an at-least-once turn: the run is given back (recorded skipped, with
    the reason), then runs again."""
    fake_gateway.script(CHAT, Reply.dropped())
    d = daemon({"OPENCLAW_GATEWAY_URL": fake_gateway.url})
    job = add_job(cli, agent_spec(delivery_guarantee="at-least-once"), "--in", "1s")
    wait_until(lambda: db("SELECT 1 FROM runs WHERE job_id = ? AND status = 'ok'", (job["id"],)),
               timeout=30, message="the turn ran again")
    assert explain(cli, job["id"])["occurrences"][-1]["decision"] == "gateway down"
    assert decisions(explain(cli, job["id"])) == ["ran", "gateway down"]
    assert d.stop() == 0


def test_unknown_job_is_a_one_line_error(cli: Cli) -> None:
    code, out, stdout, stderr = cli("jobs", "explain", "no-such-job")
    assert code != 0 and out == {"ok": False, "error": "Job not found: no-such-job"}
    code, _, stdout, stderr = cli("jobs", "explain", "no-such-job", json_mode=False)
    assert code != 0 and stdout == "" and stderr == "error: Job not found: no-such-job\n"


def test_text_output_names_each_section(cli: Cli) -> None:
    job = add_job(cli, shell_job(name="nightly", schedule_cron="0 3 * * *"))
    code, _, stdout, stderr = cli("jobs", "explain", job["id"], json_mode=False, env=GATEWAY_DOWN)
    assert code == 0, stderr
    for heading in ("Now:", "Next 5 fire times:", "Queued now:", "Recent occurrences"):
        assert heading in stdout
    assert "no daemon serves this database" in stdout
    assert stdout.count("T03:00:00+00:00") == 5


def test_a_missed_fire_time_reads_as_misfire_grace(cli: Cli, db_path: Path) -> None:
    """The claim code's own message for a fire time claimed past its grace (no pool involved)."""
    from scheduler.cli.explain import decision_of
    from scheduler.store.api import Owner

    job = add_job(cli, shell_job(name="late", schedule_cron="0 3 * * *", misfire_grace_s=1))
    store = open_store(db_path)
    try:
        store.set_next_run(job["id"], "2020-01-01 03:00:00")
        batch = store.claim_due("2020-01-01 03:10:00", 10, {"shell"}, lambda j: None, Owner.new())
    finally:
        store.close()
    (skipped,) = batch.skipped
    assert decision_of(skipped.row)[0] == "misfire grace"
    assert decisions(explain(cli, job["id"])) == ["misfire grace"]
