"""``jobs cancel <id> [--no-cascade]``: a job and its descendants stop, whatever they were doing.

Through the real daemon: a running shell chain is cancelled from the CLI, and every process of it
(one that left the process group included) is gone, its runs ``cancelled``, nothing of it left
queued. Beside the SQLite backend: rows the CLI cannot write yet or never writes (a cycle of
parents, a run held at an approval gate). The interface's behaviour is pinned in test_store_contract.py.
"""

from __future__ import annotations

import json
import random
import sqlite3
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from conftest import CliResult, Daemon, add_job, pids_with_marker, runs_of, shell_job, wait_until
from fakegateway import INVOKE, FakeGateway, Reply
from scheduler.service import OPERATOR_CANCEL_REASON
from scheduler.store import open_store
from scheduler.timeutil import to_sqlite, utcnow

Db = Callable[..., list[dict[str, Any]]]
LIVE_ROWS = "('pending', 'claimed', 'awaiting_approval')"


def child_job(cli: Callable[..., CliResult], parent: dict[str, Any], name: str, command: str,
              trigger_on: str = "success") -> dict[str, Any]:
    spec = json.loads(shell_job(name=name, payload_message=command, run_timeout_ms=120000))
    return add_job(cli, json.dumps({**spec, "parent_id": parent["id"], "trigger_on": trigger_on}))


def queue_chain_run(db_path: Path, job_id: str, delay_s: int = 0) -> str:
    """A chained run of ``job_id`` queued as a parent's end queues one (the firing itself is
    another part's work): due now, or after ``delay_s`` as with trigger_delay_s."""
    store = open_store(db_path)
    try:
        row = store.enqueue_dispatch(job_id, "chain", to_sqlite(utcnow() + timedelta(seconds=delay_s)))
    finally:
        store.close()
    assert row is not None
    return str(row["id"])


def sleepers(mark: str) -> set[str]:
    """The ``sleep <n>.<mark>`` processes alive (their shells, whose command lines name them too,
    are not counted)."""
    found = set()
    for pid in pids_with_marker(mark):
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if argv and argv[0].endswith(b"sleep"):
            found.add(b" ".join(argv[:2]).decode())
    return found


def started_run(d: Daemon, job_id: str) -> str:
    event = d.wait_for_event("run.started", lambda e: e["job_id"] == job_id, timeout=15)
    return str(event["run_id"])


def live_rows_of(db: Db, job_ids: list[str]) -> list[dict[str, Any]]:
    marks = ", ".join("?" for _ in job_ids)
    return db(f"SELECT * FROM job_dispatch_queue WHERE job_id IN ({marks}) AND status IN {LIVE_ROWS}",
              job_ids)


def assert_daemon_still_works(cli: Callable[..., CliResult], db: Db, d: Daemon) -> None:
    other = add_job(cli, shell_job(name="after", payload_message="echo after-ok", delete_after_run=0),
                    "--in", "1s")
    wait_until(lambda: [r for r in runs_of(db, other["id"]) if r["status"] == "ok"], timeout=15,
               message="the next job's run recorded ok")
    assert d.events("daemon.task_failed") == []
    assert d.stop() == 0


def test_cancel_of_a_running_shell_chain_ends_all_of_it(cli, daemon, db, db_path) -> None:
    mark = f"{random.randint(100000, 999999)}"
    d = daemon()
    # The parent's shell starts a process that leaves its process group (setsid) and one that
    # stays; the running child starts one more. All three must go.
    build = add_job(cli, shell_job(name="build", run_timeout_ms=120000, delete_after_run=0,
                                   payload_message=f"setsid sleep 61.{mark} & sleep 60.{mark}; wait"),
                    "--in", "1s")
    deploy = child_job(cli, build, "deploy", f"sleep 62.{mark}")
    report = child_job(cli, deploy, "report", "echo never")
    notify = child_job(cli, build, "notify", "echo never", trigger_on="failure")
    queue_chain_run(db_path, deploy["id"])
    queued = queue_chain_run(db_path, notify["id"], delay_s=3600)
    run_ids = {started_run(d, build["id"]), started_run(d, deploy["id"])}
    everything = {f"sleep 60.{mark}", f"sleep 61.{mark}", f"sleep 62.{mark}"}
    wait_until(lambda: sleepers(mark) == everything, timeout=15, message="all three processes")

    code, out, stdout, stderr = cli("jobs", "cancel", build["id"])

    assert code == 0, stdout + stderr
    family = [build["id"], deploy["id"], report["id"], notify["id"]]
    assert out["cancelled"] == family and out["cascade"] is True
    assert set(out["runs_cancelled"]) == run_ids and queued in out["dispatches_cancelled"]
    assert out["orphans_killed"] == 0  # the serving daemon stops its own work
    for run_id in run_ids:
        aborted = d.wait_for_event("run.aborted", lambda e, r=run_id: e["run_id"] == r, timeout=10)
        assert OPERATOR_CANCEL_REASON in aborted["reason"]
    wait_until(lambda: not pids_with_marker(mark), timeout=15, message="every process of the chain gone")
    for run_id in run_ids:
        d.wait_for_event("run.not_recorded", lambda e, r=run_id: e["run_id"] == r, timeout=10)
        (run,) = db("SELECT * FROM runs WHERE id = ?", (run_id,))
        assert (run["status"], run["error_message"]) == ("cancelled", OPERATOR_CANCEL_REASON)
    assert live_rows_of(db, family) == []
    assert [j["enabled"] for j in db("SELECT enabled FROM jobs WHERE id IN (?, ?, ?, ?)", family)] == [0] * 4
    (skipped,) = runs_of(db, notify["id"])  # the queued run that never started says why
    assert skipped["status"] == "skipped" and OPERATOR_CANCEL_REASON in skipped["error_message"]
    assert db("SELECT id FROM runs WHERE status = 'running'") == []
    assert_daemon_still_works(cli, db, d)


def test_cancel_without_cascade_stops_only_the_job(cli, daemon, db, db_path) -> None:
    mark, child_mark = (f"{random.randint(100000, 999999)}" for _ in range(2))
    d = daemon()
    build = add_job(cli, shell_job(name="build", run_timeout_ms=120000, delete_after_run=0,
                                   payload_message=f"sleep 60.{mark}"), "--in", "1s")
    deploy = child_job(cli, build, "deploy", f"sleep 62.{child_mark}")
    notify = child_job(cli, build, "notify", "echo later", trigger_on="failure")
    queue_chain_run(db_path, deploy["id"])
    queued = queue_chain_run(db_path, notify["id"], delay_s=3600)
    build_run, deploy_run = started_run(d, build["id"]), started_run(d, deploy["id"])
    wait_until(lambda: pids_with_marker(mark) and pids_with_marker(child_mark), timeout=15,
               message="both processes")

    code, out, stdout, stderr = cli("jobs", "cancel", build["id"], "--no-cascade")

    assert code == 0, stdout + stderr
    assert out["cancelled"] == [build["id"]] and out["runs_cancelled"] == [build_run]
    assert out["cascade"] is False and out["dispatches_cancelled"] == [] and out["orphans_killed"] == 0
    wait_until(lambda: not pids_with_marker(mark), timeout=15, message="the parent's process gone")
    d.wait_for_event("run.not_recorded", lambda e: e["run_id"] == build_run, timeout=10)
    assert pids_with_marker(child_mark), "the child's process was left alone"
    (running,) = db("SELECT * FROM runs WHERE id = ?", (deploy_run,))
    assert running["status"] == "running"
    assert [r["id"] for r in live_rows_of(db, [notify["id"]])] == [queued]
    enabled = {j["id"]: j["enabled"] for j in db("SELECT id, enabled FROM jobs")}
    assert (enabled[build["id"]], enabled[deploy["id"]], enabled[notify["id"]]) == (0, 1, 1)
    assert d.stop() == 0  # the child's run is cancelled by the shutdown, as any other


def test_cancel_of_an_agent_job_cancels_its_gateway_request(cli, daemon, db,
                                                            fake_gateway: FakeGateway) -> None:
    fake_gateway.script("/v1/chat/completions", Reply(body={"choices": [
        {"message": {"role": "assistant", "content": "late"}}]}, delay_s=60))
    d = daemon(env={"OPENCLAW_GATEWAY_URL": fake_gateway.url})
    d.wait_for_event("gateway.up", timeout=10)
    job = add_job(cli, json.dumps({
        "name": "slow turn", "session_target": "isolated", "payload_message": "think",
        "run_timeout_ms": 120000, "origin": "system", "delivery_mode": "announce-always",
        "delivery_channel": "telegram", "delivery_to": "12345", "delete_after_run": 0}), "--in", "1s")
    run_id = started_run(d, job["id"])
    fake_gateway.wait_for_requests("/v1/chat/completions", 1, timeout=10)

    code, out, stdout, stderr = cli("jobs", "cancel", job["id"])

    assert code == 0, stdout + stderr
    assert out["runs_cancelled"] == [run_id] and out["orphans_killed"] == 0
    aborted = d.wait_for_event("run.aborted", lambda e: e["run_id"] == run_id, timeout=10)
    assert OPERATOR_CANCEL_REASON in aborted["reason"]
    # The turn ends long before the gateway's reply (60 s) would have come: the request was cancelled.
    d.wait_for_event("run.not_recorded", lambda e: e["run_id"] == run_id, timeout=15)
    (run,) = db("SELECT * FROM runs WHERE id = ?", (run_id,))
    assert (run["status"], run["error_message"]) == ("cancelled", OPERATOR_CANCEL_REASON)
    assert fake_gateway.requests_to(INVOKE, tool="message") == []
    assert db("SELECT * FROM messages WHERE to_agent = '@outbound'") == []
    assert_daemon_still_works(cli, db, d)


def test_cancel_kills_what_a_killed_daemon_left_running(cli, daemon, db) -> None:
    mark = f"{random.randint(100000, 999999)}"
    d = daemon()
    job = add_job(cli, shell_job(name="orphaned", run_timeout_ms=120000, delete_after_run=0,
                                 payload_message=f"sleep 60.{mark}"), "--in", "1s")
    run_id = started_run(d, job["id"])
    wait_until(lambda: sleepers(mark), timeout=15, message="the job's process")
    d.kill()  # SIGKILL: nothing ends the run's process
    assert sleepers(mark) == {f"sleep 60.{mark}"}

    code, out, stdout, stderr = cli("jobs", "cancel", job["id"])

    assert code == 0, stdout + stderr
    assert out["runs_cancelled"] == [run_id] and out["orphans_killed"] >= 1
    wait_until(lambda: not pids_with_marker(mark), timeout=10, message="the orphaned process gone")
    (run,) = db("SELECT * FROM runs WHERE id = ?", (run_id,))
    assert (run["status"], run["error_message"]) == ("cancelled", OPERATOR_CANCEL_REASON)
    again = daemon()  # the next daemon finds no orphan of it: the run ended
    assert again.events("run.crashed") == [] and again.stop() == 0


@pytest.mark.parametrize("json_mode", [False, True])
def test_cancel_of_an_unknown_job_is_one_line_and_fails(cli, db, json_mode: bool) -> None:
    job = add_job(cli, shell_job(name="bystander", schedule_cron="0 0 1 1 *"))
    code, out, stdout, stderr = cli("jobs", "cancel", "no-such-job", json_mode=json_mode)
    assert code == 1
    if json_mode:
        assert out == {"ok": False, "error": "Job not found: no-such-job"} and stderr == ""
    else:
        assert (stdout, stderr) == ("", "error: Job not found: no-such-job\n")
    (row,) = db("SELECT enabled FROM jobs WHERE id = ?", (job["id"],))
    assert row["enabled"] == 1


@pytest.mark.parametrize("args", [(), ("a", "b"), ("a", "--cascade")])
def test_cancel_with_wrong_arguments_is_a_usage_error(cli, args: tuple[str, ...]) -> None:
    code, _, stdout, stderr = cli("jobs", "cancel", *args, json_mode=False)
    assert code == 2 and stdout == ""
    assert stderr.count("\n") == 1 and "jobs cancel <id> [--no-cascade]" in stderr


def test_cancel_prints_what_it_stopped(cli, db_path) -> None:
    build = add_job(cli, shell_job(name="build", schedule_cron="0 0 1 1 *"))
    deploy = child_job(cli, build, "deploy", "true")
    queued = queue_chain_run(db_path, deploy["id"], delay_s=3600)
    code, _, stdout, _ = cli("jobs", "cancel", build["id"], json_mode=False)
    assert code == 0
    assert stdout.splitlines() == [
        f"Cancelled 2 job(s): {build['id']}, {deploy['id']}",
        f"1 queued run(s) closed: {queued}",
    ]


# -- what a reference database can hold ------------------------------------------------------------


def write(db_path: Path, sql: str, params: tuple[Any, ...] = ()) -> None:
    conn = sqlite3.connect(db_path)
    try:
        with conn:
            conn.execute(sql, params)
    finally:
        conn.close()


def test_a_cycle_of_parents_in_the_data_is_cancelled_once_each(cli, db, db_path) -> None:
    a = add_job(cli, shell_job(name="a", schedule_cron="0 0 1 1 *"))
    b = child_job(cli, a, "b", "true")
    c = child_job(cli, b, "c", "true")
    write(db_path, "UPDATE jobs SET parent_id = ? WHERE id = ?", (c["id"], a["id"]))  # a -> b -> c -> a
    code, out, stdout, stderr = cli("jobs", "cancel", b["id"])
    assert code == 0, stdout + stderr
    assert out["cancelled"] == [b["id"], c["id"], a["id"]]
    assert {j["enabled"] for j in db("SELECT enabled FROM jobs")} == {0}


def test_a_job_that_is_its_own_parent_is_cancelled(cli, db_path) -> None:
    a = add_job(cli, shell_job(name="a", schedule_cron="0 0 1 1 *"))
    write(db_path, "UPDATE jobs SET parent_id = id WHERE id = ?", (a["id"],))
    code, out, stdout, stderr = cli("jobs", "cancel", a["id"])
    assert code == 0, stdout + stderr
    assert out["cancelled"] == [a["id"]]


def test_a_run_held_at_an_approval_gate_is_cancelled_with_its_approval(cli, db, db_path) -> None:
    job = add_job(cli, shell_job(name="deploy", schedule_cron="0 0 1 1 *", approval_required=1))
    now = to_sqlite(utcnow())
    write(db_path, "INSERT INTO job_dispatch_queue (id, job_id, dispatch_kind, status, scheduled_for) "
          "VALUES ('gate-row', ?, 'chain', 'awaiting_approval', ?)", (job["id"], now))
    write(db_path, "INSERT INTO runs (id, job_id, status, started_at, dispatch_queue_id) "
          "VALUES ('gate-run', ?, 'awaiting_approval', ?, 'gate-row')", (job["id"], now))
    write(db_path, "INSERT INTO approvals (id, job_id, run_id, dispatch_queue_id, status, requested_at) "
          "VALUES ('gate', ?, 'gate-run', 'gate-row', 'pending', ?)", (job["id"], now))

    code, out, stdout, stderr = cli("jobs", "cancel", job["id"])

    assert code == 0, stdout + stderr
    assert (out["runs_cancelled"], out["dispatches_cancelled"], out["approvals_rejected"]) == (
        ["gate-run"], ["gate-row"], ["gate"])
    (approval,) = db("SELECT * FROM approvals")
    assert (approval["status"], approval["resolved_by"], approval["notes"]) == (
        "rejected", "operator", OPERATOR_CANCEL_REASON)
    assert approval["resolved_at"] is not None
    (run,) = runs_of(db, job["id"])  # the gate run tells the story; no second run is recorded
    assert (run["id"], run["status"], run["error_message"]) == (
        "gate-run", "cancelled", OPERATOR_CANCEL_REASON)
    assert live_rows_of(db, [job["id"]]) == []
