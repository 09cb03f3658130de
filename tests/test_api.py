"""The Python API (scheduler.api, docs/api.md): each operation on a real SQLite file, the CLI's
validation errors word for word, the CLI and the API on one file, and a daemon that runs what
the API asks for."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import SHELL_JOB, CliResult, DaemonFactory, _base_env, add_job, shell_job, wait_until
from scheduler.api import (
    NotFoundError,
    Scheduler,
    StoreError,
    UsageError,
    ValidationError,
    open_scheduler,
)
from scheduler.models.enums import RunStatus
from scheduler.store.api import Owner

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "docs" / "examples" / "api_example.py"
API_PAGE = ROOT / "docs" / "api.md"


@pytest.fixture
def sched(db_path: Path) -> Iterator[Scheduler]:
    with open_scheduler(db_path) as opened:
        yield opened


def spec(**overrides: Any) -> dict[str, Any]:
    return {**SHELL_JOB, "schedule_cron": "0 7 * * *", **overrides}


# -- jobs ---------------------------------------------------------------------------------------


def test_jobs_create_get_list_update_enable_disable_delete(sched: Scheduler) -> None:
    job = sched.jobs.create(spec(name="nightly", schedule_tz="Europe/Berlin"))
    assert (job.name, job.schedule_cron, job.schedule_tz, job.enabled) == (
        "nightly", "0 7 * * *", "Europe/Berlin", True)
    assert job.next_run_at is not None
    assert sched.jobs.get(job.id) == job
    assert [j.id for j in sched.jobs.list()] == [job.id]
    assert sched.jobs.list("watchdog") == []

    updated = sched.jobs.update(job.id, {"payload_message": "echo changed"})
    assert updated.payload_message == "echo changed"
    assert sched.jobs.disable(job.id).enabled is False
    assert sched.jobs.enable(job.id).enabled is True

    assert sched.jobs.delete(job.id).id == job.id
    assert sched.jobs.find(job.id) is None
    with pytest.raises(NotFoundError, match="Job not found"):
        sched.jobs.get(job.id)
    with pytest.raises(NotFoundError):
        sched.jobs.delete(job.id)


def test_validate_returns_the_normalised_spec_and_writes_nothing(sched: Scheduler) -> None:
    normalized = sched.jobs.validate(spec(name="x"))
    assert normalized == spec(name="x")  # already in normal form
    assert sched.jobs.validate(spec(name="x", enabled=True))["enabled"] == 1
    assert sched.jobs.check(spec(name="x"))["name"] == "x"
    assert sched.jobs.list() == []


def test_an_empty_update_and_a_bad_parent_are_refused(sched: Scheduler) -> None:
    job = sched.jobs.create(spec())
    with pytest.raises(ValidationError, match="names no field"):
        sched.jobs.update(job.id, {})
    with pytest.raises(ValidationError):
        sched.jobs.check(spec(parent_id="no-such-parent", schedule_cron="0 0 31 2 *"))


BAD_SPECS: list[tuple[str, dict[str, Any]]] = [
    ("bad-cron", spec(schedule_cron="61 * * * *")),
    ("bad-zone", spec(schedule_tz="Mars/Olympus")),
    ("no-timeout", {k: v for k, v in spec().items() if k != "run_timeout_ms"}),
    ("bad-enum", spec(overlap_policy="sometimes")),
    ("no-delivery-target", spec(delivery_mode="announce")),
    ("unknown-session", spec(session_target="moon")),
]


@pytest.mark.parametrize(("bad",), [pytest.param(s, id=i) for i, s in BAD_SPECS])
def test_a_bad_spec_fails_with_the_clis_words_and_writes_nothing(
        sched: Scheduler, cli: Callable[..., CliResult], bad: dict[str, Any]) -> None:
    code, out, stdout, _ = cli("jobs", "validate", json.dumps(bad))
    assert code == 1 and out["ok"] is False, stdout
    with pytest.raises(ValidationError) as validated:
        sched.jobs.validate(bad)
    with pytest.raises(ValidationError) as created:
        sched.jobs.create(bad)
    assert str(validated.value) == str(created.value) == out["error"]
    assert sched.jobs.list() == []
    code, out, _, _ = cli("jobs", "add", json.dumps(bad))
    assert code == 1 and out["error"] == str(created.value)


def test_an_update_fails_with_the_clis_words(sched: Scheduler, cli: Callable[..., CliResult]) -> None:
    job = sched.jobs.create(spec())
    patch = {"schedule_cron": "* * * * * * * *"}
    code, out, _, _ = cli("jobs", "update", job.id, json.dumps(patch))
    assert code == 1
    with pytest.raises(ValidationError) as refused:
        sched.jobs.update(job.id, patch)
    assert str(refused.value) == out["error"]
    assert sched.jobs.get(job.id).schedule_cron == "0 7 * * *"


def test_run_now_queues_a_manual_run_and_respects_the_backlog_cap(sched: Scheduler) -> None:
    job = sched.jobs.create(spec(max_queued_dispatches=1))
    dispatch = sched.jobs.run_now(job.id)
    assert (dispatch.job_id, dispatch.dispatch_kind, dispatch.status) == (job.id, "manual", "pending")
    with pytest.raises(ValidationError, match="Dispatch backlog limit reached"):
        sched.jobs.run_now(job.id)
    with pytest.raises(NotFoundError):
        sched.jobs.run_now("no-such-job")


def test_cancel_disables_the_job_and_its_children(sched: Scheduler, cli: Callable[..., CliResult]) -> None:
    parent = sched.jobs.create(spec(name="parent"))
    child = sched.jobs.create(spec(name="child", parent_id=parent.id, trigger_on="success",
                                  schedule_cron="0 0 31 2 *"))
    sched.jobs.run_now(child.id)
    outcome = sched.jobs.cancel(parent.id)
    assert outcome.cancellation.job_ids == [parent.id, child.id]
    assert len(outcome.cancellation.dispatch_ids) == 1 and outcome.orphans_killed == 0
    _, listed, _, _ = cli("jobs", "list")
    assert {j["name"]: j["enabled"] for j in listed} == {"parent": 0, "child": 0}
    with pytest.raises(NotFoundError):
        sched.jobs.cancel("no-such-job")


# -- runs ---------------------------------------------------------------------------------------


def test_runs_get_and_list(sched: Scheduler) -> None:
    job = sched.jobs.create(spec())
    assert sched.runs.list(job.id) == []
    sched.jobs.run_now(job.id)
    batch = sched.store.claim_due(_in_seconds(1), 10, {"shell"}, lambda j: None,
                                  Owner.new())
    (claim,) = batch.claims
    (run,) = sched.runs.list(job.id)
    assert run.id == claim.run.id and run.status is RunStatus.RUNNING
    assert sched.runs.get(run.id).job_id == job.id
    with pytest.raises(NotFoundError):
        sched.runs.get("no-such-run")
    with pytest.raises(NotFoundError):
        sched.runs.list("no-such-job")
    with pytest.raises(ValidationError, match="limit"):
        sched.runs.list(job.id, limit=0)


# -- messages -----------------------------------------------------------------------------------


def test_send_inbox_ack(sched: Scheduler, cli: Callable[..., CliResult]) -> None:
    sent = sched.messages.send("ci", "reviewer", "PR 12 is ready", subject="PR 12", priority=2,
                               metadata={"pr": 12}, ack_required=True)
    assert (sent.from_agent, sent.to_agent, sent.kind, sent.status) == ("ci", "reviewer", "text", "pending")
    assert sent.metadata == {"pr": 12}
    (seen,) = sched.messages.inbox("reviewer")
    assert seen.id == sent.id and seen.subject == "PR 12"
    acked = sched.messages.ack(sent.id, "reviewer", "on it")
    assert acked.status == "read" and acked.row["ack_at"]
    assert sched.messages.inbox("reviewer") == []
    _, receipts, _, _ = cli("msg", "receipts", sent.id)
    assert ("ack", "reviewer", "on it") in [(r["event_type"], r["actor"], r["detail"]) for r in receipts]


def test_message_errors_are_the_clis(sched: Scheduler, cli: Callable[..., CliResult]) -> None:
    code, out, _, _ = cli("messages", "send", "--from", "a", "--to", "b", "--kind", "shout",
                          "--body", "x")
    assert code == 1
    with pytest.raises(ValidationError) as refused:
        sched.messages.send("a", "b", "x", kind="shout")
    assert str(refused.value) == out["error"]

    body = json.dumps({"name": "spawned"})  # no session_target, no payload: the daemon refuses it
    code, out, _, _ = cli("messages", "send", "--from", "a", "--to", "main", "--kind", "spawn",
                          "--body", body)
    assert code == 1
    with pytest.raises(ValidationError) as spawn:
        sched.messages.send("a", "main", body, kind="spawn")
    assert str(spawn.value) == out["error"]
    assert sched.messages.inbox("main") == []

    with pytest.raises(ValidationError, match="priority"):
        sched.messages.send("a", "b", "x", priority=5)
    with pytest.raises(ValidationError, match="reserved"):
        sched.messages.send("@outbound", "b", "x")
    with pytest.raises(NotFoundError):
        sched.messages.get("no-such-message")
    broadcast = sched.messages.send("ops", "broadcast", "maintenance at 5")
    with pytest.raises(ValidationError, match="broadcast"):
        sched.messages.ack(broadcast.id)  # whose copy? name the agent
    assert sched.messages.ack(broadcast.id, "alice").status == "read"
    assert [m.id for m in sched.messages.inbox("bob")] == [broadcast.id]


# -- task groups --------------------------------------------------------------------------------


def test_task_groups(sched: Scheduler, cli: Callable[..., CliResult]) -> None:
    group = sched.tasks.create({"name": "review", "expected_agents": ["writer", "checker"],
                                "timeout_s": 600})
    assert sorted(a["agent_label"] for a in group["agents"]) == ["checker", "writer"]
    assert [g["id"] for g in sched.tasks.active()] == [group["id"]]
    sched.tasks.register_session(group["id"], "writer", "agent:main:subagent:1")
    assert sched.tasks.heartbeat(group["id"], "writer", "completed", "done") is None
    finished = sched.tasks.heartbeat(group["id"], "checker", "failed", "broke")
    assert finished is not None and finished.group["status"] == "failed"

    status = sched.tasks.status(group["id"])
    _, printed, _, _ = cli("tasks", "status", group["id"])
    moving = ("elapsed", "remaining_timeout")  # seconds pass between the two reads
    assert {k: v for k, v in status.items() if k not in moving} == {
        k: v for k, v in printed.items() if k not in moving}
    assert status["status"] == "failed"
    assert sorted((a["label"], a["status"]) for a in status["agents"]) == [
        ("checker", "failed"), ("writer", "completed")]
    assert [g["id"] for g in sched.tasks.history()] == [group["id"]]
    with pytest.raises(NotFoundError):
        sched.tasks.status("no-such-group")
    with pytest.raises(ValidationError, match="Unknown status"):
        sched.tasks.heartbeat(group["id"], "writer", "sleeping")
    with pytest.raises(UsageError):
        sched.tasks.heartbeat(group["id"], "bad\nlabel")
    code, out, _, _ = cli("tasks", "create", json.dumps({"name": "x", "expected_agents": []}))
    with pytest.raises(ValidationError) as refused:
        sched.tasks.create({"name": "x", "expected_agents": []})
    assert code == 1 and str(refused.value) == out["error"]


# -- approvals ----------------------------------------------------------------------------------


def _gate(sched: Scheduler, name: str) -> str:
    job = sched.jobs.create(spec(name=name, approval_required=1))
    sched.jobs.run_now(job.id)
    batch = sched.store.claim_due(_in_seconds(1), 10, {"shell"}, lambda j: None,
                                  Owner.new())
    assert len(batch.gated) == 1
    return job.id


def test_approvals_pending_approve_reject(sched: Scheduler, cli: Callable[..., CliResult]) -> None:
    first, second = _gate(sched, "deploy"), _gate(sched, "migrate")
    pending = sched.approvals.pending()
    assert [(a.job_id, a.job_name, a.status) for a in pending] == [
        (first, "deploy", "pending"), (second, "migrate", "pending")]
    _, listed, _, _ = cli("approvals", "list")
    assert [a["id"] for a in listed] == [a.id for a in pending]

    approved = sched.approvals.approve(first)
    assert (approved.job_id, approved.status) == (first, "approved")
    rejected = sched.approvals.reject(second, "not today")
    assert (rejected.status, rejected.notes) == ("rejected", "not today")
    assert sched.approvals.pending() == []
    with pytest.raises(NotFoundError):
        sched.approvals.approve(first)  # nothing pending any more
    with pytest.raises(ValidationError, match="reason"):
        sched.approvals.reject(second, "two\nlines")


# -- the CLI and the API on one file --------------------------------------------------------------


def test_the_cli_and_the_api_see_each_others_jobs(db_path: Path, cli: Callable[..., CliResult]) -> None:
    with Scheduler(db_path) as sched:
        made_here = sched.jobs.create(spec(name="from api"))
    from_cli = add_job(cli, shell_job(name="from cli", schedule_cron="0 8 * * *"))
    _, listed, _, _ = cli("jobs", "list")
    assert sorted(j["name"] for j in listed) == ["from api", "from cli"]
    _, shown, _, _ = cli("jobs", "get", made_here.id)
    assert shown == made_here.as_row()
    with open_scheduler(db_path) as sched:
        assert sched.jobs.get(from_cli["id"]).as_row() == from_cli
        sched.jobs.run_now(from_cli["id"])
        sched.messages.send("api", "cli-reader", "hello")
    _, inbox, _, _ = cli("msg", "inbox", "cli-reader")
    assert [m["body"] for m in inbox] == ["hello"]
    code, out, _, _ = cli("jobs", "run", from_cli["id"])
    assert code == 0 and out["job_id"] == from_cli["id"]


def test_the_default_database_is_the_clis(db_path: Path, monkeypatch: pytest.MonkeyPatch,
                                          cli: Callable[..., CliResult]) -> None:
    add_job(cli, shell_job(name="via env", schedule_cron="0 9 * * *"))
    monkeypatch.setenv("SCHEDULER_DB", str(db_path))
    with open_scheduler() as sched:
        assert sched.db_path == db_path
        assert [j.name for j in sched.jobs.list()] == ["via env"]


def test_a_database_that_is_not_one_raises_a_store_error(tmp_path: Path) -> None:
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"not a database at all" * 100)
    with pytest.raises(StoreError):
        Scheduler(junk)


def test_importing_scheduler_does_not_load_the_api() -> None:
    code = ("import sys, scheduler\n"
            "assert 'scheduler.api' not in sys.modules\n"
            "from scheduler.api import Scheduler\n"
            "assert scheduler.Scheduler is Scheduler and scheduler.open_scheduler\n"
            "print('ok')")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.stdout.strip() == "ok", result.stderr


# -- the daemon runs what the API asks for ----------------------------------------------------------


def test_a_daemon_runs_jobs_created_and_run_through_the_api(db_path: Path, daemon: DaemonFactory) -> None:
    daemon()
    with open_scheduler(db_path) as sched:
        soon = sched.jobs.create(spec(name="at job", schedule_kind="at",
                                      schedule_at=_in_seconds(2), payload_message="echo at"))
        manual = sched.jobs.create(spec(name="manual", payload_message="echo manual"))
        sched.jobs.run_now(manual.id)
        wait_until(lambda: _finished(sched, manual.id), timeout=60)
        (run,) = sched.runs.list(manual.id)
        assert run.status is RunStatus.OK and run.row["shell_stdout"].strip() == "manual"
        wait_until(lambda: _finished(sched, soon.id), timeout=60)
        assert sched.runs.list(soon.id)[0].row["shell_stdout"].strip() == "at"


def _in_seconds(seconds: int) -> str:
    from datetime import timedelta

    from scheduler.timeutil import to_sqlite, utcnow

    return to_sqlite(utcnow() + timedelta(seconds=seconds))


def _finished(sched: Scheduler, job_id: str) -> bool:
    return any(run.finished_at for run in sched.runs.list(job_id))


# -- the documented examples ------------------------------------------------------------------------


def test_the_examples_pass_mypy_strict() -> None:
    result = subprocess.run([sys.executable, "-m", "mypy", "--strict", str(EXAMPLE)], cwd=ROOT,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_python_block_of_the_api_page_is_in_the_checked_example() -> None:
    blocks = re.findall(r"```python\n(.*?)```", API_PAGE.read_text(encoding="utf-8"), re.S)
    assert len(blocks) >= 5
    example = EXAMPLE.read_text(encoding="utf-8")
    for block in blocks:
        assert block in example, f"docs/api.md shows code the tests do not check:\n{block}"


def test_the_example_runs_against_a_daemon(db_path: Path, daemon: DaemonFactory) -> None:
    daemon()
    result = subprocess.run([sys.executable, str(EXAMPLE), str(db_path)], env=_base_env(db_path),
                            capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert "ran: ok" in lines
    assert any(line.startswith("refused: Invalid cron expression") for line in lines)
    assert "message: read" in lines
    assert "approved: ['deploy']" in lines
    assert any(line.startswith("not found: Job not found") for line in lines)
    with open_scheduler(db_path) as sched:
        deploy = next(j for j in sched.jobs.list() if j.name == "deploy")
        # The gate run ends "approved"; the approved work then runs in a run of its own.
        wait_until(lambda: RunStatus.OK in [r.status for r in sched.runs.list(deploy.id)],
                   timeout=60)
        assert sorted(r.status for r in sched.runs.list(deploy.id)) == [
            RunStatus.APPROVED, RunStatus.OK]


def test_one_shot_and_watchdog_jobs_get_the_clis_defaults(sched: Scheduler,
                                                          cli: Callable[..., CliResult]) -> None:
    from datetime import UTC, datetime, timedelta

    when = datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)
    one_shot = {k: v for k, v in spec(name="once").items() if k != "schedule_cron"}
    made = sched.jobs.create(one_shot, at=when)
    _, out, _, _ = cli("jobs", "add", json.dumps(one_shot), "--at", "2030-01-02T03:04:05Z")
    twin = out["job"]
    moving = ("id", "created_at", "updated_at")
    assert {k: v for k, v in made.as_row().items() if k not in moving} == {
        k: v for k, v in twin.items() if k not in moving}
    assert (made.schedule_kind, made.schedule_at, made.row["delete_after_run"]) == (
        "at", "2030-01-02 03:04:05", 1)
    with pytest.raises(ValidationError, match="aware"):
        sched.jobs.create(one_shot, at=datetime(2030, 1, 1))  # naive: refused
    with pytest.raises(ValidationError, match="must be a JSON object"):
        sched.jobs.create([1, 2], at=datetime.now(UTC) + timedelta(hours=1))  # type: ignore[arg-type]

    watch = {"name": "watch", "schedule_cron": "*/5 * * * *", "watchdog_check_cmd": "test -f /x",
             "run_timeout_ms": 1000, "origin": "system"}
    dog = sched.jobs.create(watch, watchdog=True)
    _, out, _, _ = cli("jobs", "add", json.dumps(watch), "--watchdog")
    assert {k: v for k, v in dog.as_row().items() if k not in moving} == {
        k: v for k, v in out["job"].items() if k not in moving}
    assert dog.is_watchdog and dog.payload_message == "test -f /x"


def test_a_message_expiry_must_be_an_aware_future_instant(sched: Scheduler) -> None:
    from datetime import UTC, datetime, timedelta

    later = datetime.now(UTC) + timedelta(hours=2)
    sent = sched.messages.send("a", "b", "soon gone", expires_at=later)
    assert sent.expires_at is not None and sent.expires_at[:13] == later.strftime("%Y-%m-%d %H")
    with pytest.raises(ValidationError, match="aware"):
        sched.messages.send("a", "b", "x", expires_at=datetime(2030, 1, 1))  # naive: refused
    with pytest.raises(ValidationError, match="expire at once"):
        sched.messages.send("a", "b", "x", expires_at=datetime.now(UTC) - timedelta(hours=1))
    assert [m.id for m in sched.messages.inbox("b")] == [sent.id]
