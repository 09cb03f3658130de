"""``openclaw-scheduler dispatch ...`` as a subprocess, on a real SQLite file, against the fake
gateway's WebSocket control plane (tests/fakerpc.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import _base_env, query
from fakegateway import FakeGateway, fake_gateway  # noqa: F401  (the fixture)
from fakerpc import RpcReply, RunScript
from scheduler.strategies.watchdog import terminal_outcome

TOKEN = "dispatch-test-token"
Run = Callable[..., tuple[int, Any, str, str]]


@pytest.fixture
def gateway(fake_gateway: FakeGateway) -> Iterator[FakeGateway]:  # noqa: F811
    fake_gateway.token = TOKEN
    yield fake_gateway


@pytest.fixture
def dispatch(db_path: Path, gateway: FakeGateway) -> Run:
    """``dispatch("enqueue", "--label", ...)`` → (exit code, JSON or None, stdout, stderr)."""

    def run(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None,
            stdin: str | None = None, json_mode: bool = True) -> tuple[int, Any, str, str]:
        full_env = {"OPENCLAW_GATEWAY_URL": gateway.url, "OPENCLAW_GATEWAY_TOKEN": TOKEN,
                    **(env or {})}
        argv = [sys.executable, "-m", "scheduler", "dispatch", *args,
                *(["--json"] if json_mode else [])]
        proc = subprocess.run(argv, env=_base_env(db_path, full_env), capture_output=True,
                              text=True, timeout=60, cwd=cwd,
                              input=stdin, stdin=None if stdin is not None else subprocess.DEVNULL)
        try:
            parsed = json.loads(proc.stdout)
        except ValueError:
            parsed = None
        return proc.returncode, parsed, proc.stdout, proc.stderr

    return run


def enqueue(dispatch: Run, label: str = "fix-bug", *extra: str,
            message: str = "Fix the bug in parser.py") -> dict[str, Any]:
    timeout = () if "--timeout" in extra else ("--timeout", "900")
    code, out, stdout, stderr = dispatch("enqueue", "--label", label, "--message", message,
                                         "--deliver-to", "-100200", *timeout, *extra)
    assert code == 0, stdout + stderr
    assert isinstance(out, dict)
    return out


def ledger(db_path: Path, label: str = "fix-bug") -> dict[str, Any] | None:
    rows = query(db_path, "SELECT * FROM dispatch_labels WHERE label = ?", (label,))
    return rows[0] if rows else None


def age(db_path: Path, seconds: int, label: str = "fix-bug") -> None:
    """Pretend the label was spawned ``seconds`` ago."""
    import sqlite3

    with sqlite3.connect(db_path) as conn:
        conn.execute("UPDATE dispatch_labels SET spawned_at = datetime('now', ?) WHERE label = ?",
                     (f"-{seconds} seconds", label))


def events(stderr: str) -> list[dict[str, Any]]:
    """The structured log events a command wrote to stderr."""
    found = []
    for line in stderr.splitlines():
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if isinstance(event, dict) and "event" in event:
            found.append(event)
    return found


def jobs(db_path: Path) -> dict[str, dict[str, Any]]:
    return {row["name"]: row for row in query(db_path, "SELECT * FROM jobs")}


# -- enqueue ----------------------------------------------------------------------------------
def test_enqueue_starts_the_turn_records_the_ledger_and_registers_both_jobs(
        dispatch: Run, db_path: Path, gateway: FakeGateway) -> None:
    code, out, stdout, stderr = dispatch("enqueue", "--label", "fix-bug", "--message",
                                         "Fix the bug in parser.py", "--deliver-to", "-100200",
                                         "--timeout", "900")
    assert code == 0, stdout + stderr
    [started] = [e for e in events(stderr) if e["event"] == "dispatch.started"]
    assert (started["label"], started["mode"], started["run_id"]) == (
        "fix-bug", "fresh", out["runId"])
    assert (out["ok"], out["label"], out["status"], out["mode"], out["agent"]) == (
        True, "fix-bug", "accepted", "fresh", "main")
    key = out["sessionKey"]
    assert key.startswith("agent:main:subagent:") and len(key) == len("agent:main:subagent:") + 36

    [turn] = gateway.rpc.requests_for("agent")
    params = turn.params
    assert (params["sessionKey"], params["deliver"], params["lane"], params["label"],
            params["timeout"]) == (key, False, "subagent", "fix-bug", 900)
    assert params["idempotencyKey"]
    assert "ORIGIN_CHAT_ID: -100200" in params["message"]
    assert "[Subagent Task]: ORIGIN_CHAT_ID: -100200\n\nFix the bug in parser.py" in params["message"]
    assert "openclaw-scheduler dispatch done --label 'fix-bug'" in params["message"]
    assert not any("spawnDepth" in json.dumps(r.params) for r in gateway.rpc.requests)
    assert gateway.rpc.requests_for("sessions.patch") == []  # no model, no thinking
    assert out["runId"] == gateway.rpc.runs[0].run_id

    row = ledger(db_path)
    assert row is not None
    assert (row["session_key"], row["gateway_run_id"], row["status"], row["agent_id"],
            row["mode"], row["deliver_to"], row["deliver_channel"], row["origin"],
            row["timeout_s"], row["delivery_mode"]) == (
        key, out["runId"], "running", "main", "fresh", "-100200", "telegram",
        "telegram:-100200", 900, "announce")
    assert row["task_prompt"] == "ORIGIN_CHAT_ID: -100200\n\nFix the bug in parser.py"

    registered = jobs(db_path)
    watcher, watchdog = registered["dispatch-deliver:fix-bug"], registered["watchdog:fix-bug"]
    assert (row["watcher_job_id"], row["watchdog_job_id"]) == (watcher["id"], watchdog["id"])
    assert out["delivery"]["watcherJobId"] == watcher["id"] and out["watchdog"]["jobId"] == watchdog["id"]
    expected_watcher = {
        "schedule_kind": "at", "session_target": "shell", "payload_kind": "shellCommand",
        "payload_message": "openclaw-scheduler dispatch watch --label 'fix-bug'",
        "job_type": "dispatch", "watchdog_target_label": "fix-bug",
        "delivery_mode": "announce-always", "delivery_channel": "telegram",
        "delivery_to": "-100200", "delivery_guarantee": "at-least-once", "ttl_hours": 48,
        "overlap_policy": "skip", "run_timeout_ms": (max(900 + 120, 14400) + 420) * 1000,
        "delete_after_run": 1, "origin": "dispatch",
    }
    assert {k: watcher[k] for k in expected_watcher} == expected_watcher
    check = "openclaw-scheduler dispatch result --label 'fix-bug' --json"
    expected_watchdog = {
        "job_type": "watchdog", "schedule_cron": "*/15 * * * *", "session_target": "shell",
        "payload_kind": "shellCommand", "payload_message": check, "watchdog_check_cmd": check,
        "watchdog_target_label": "fix-bug", "watchdog_timeout_min": 60,
        "watchdog_alert_channel": "telegram", "watchdog_alert_target": "-100200",
        "watchdog_self_destruct": 1, "run_timeout_ms": 120000, "delivery_mode": "none",
        "delete_after_run": 0,  # §17 #27: it must survive its "still running" checks
        "origin": "telegram:-100200",
    }
    assert {k: watchdog[k] for k in expected_watchdog} == expected_watchdog

    [notice] = query(db_path, "SELECT * FROM messages WHERE to_agent = '@outbound'")
    assert (notice["kind"], notice["channel"], notice["delivery_to"], notice["status"]) == (
        "text", "telegram", "-100200", "pending")
    assert "[fix-bug] starting..." in notice["body"]


def test_enqueue_requires_a_delivery_target_unless_no_monitor(
        dispatch: Run, db_path: Path, gateway: FakeGateway) -> None:
    code, out, _, _ = dispatch("enqueue", "--label", "x", "--message", "hi", "--timeout", "60")
    assert code == 2 and out["ok"] is False and "--deliver-to is required" in out["error"]
    assert ledger(db_path, "x") is None and gateway.rpc.requests_for("agent") == []

    code, out, stdout, stderr = dispatch("enqueue", "--label", "x", "--message", "hi",
                                         "--timeout", "60", "--no-monitor", "local test")
    assert code == 0, stdout + stderr
    assert out["watchdog"] is None and out["delivery"] is None
    registered = jobs(db_path)
    assert set(registered) == {"dispatch-deliver:x"}  # still watched, delivered nowhere
    assert registered["dispatch-deliver:x"]["delivery_mode"] == "none"


def test_an_origin_supplies_the_delivery_target(dispatch: Run, db_path: Path) -> None:
    code, _, stdout, stderr = dispatch("enqueue", "--label", "o", "--message", "hi",
                                         "--timeout", "60", "--origin", "discord:42")
    assert code == 0, stdout + stderr
    row = ledger(db_path, "o")
    assert row is not None and (row["deliver_to"], row["deliver_channel"]) == ("42", "discord")


def test_a_gateway_failure_registers_nothing(dispatch: Run, db_path: Path,
                                             gateway: FakeGateway) -> None:
    gateway.rpc.on("agent", lambda request: RpcReply.fail("UNAVAILABLE", "lane full"))
    code, out, _, _ = dispatch("enqueue", "--label", "x", "--message", "hi", "--deliver-to", "1",
                               "--timeout", "60")
    assert code == 1 and "gateway agent call failed" in out["error"] and "lane full" in out["error"]
    assert ledger(db_path, "x") is None and jobs(db_path) == {}
    assert query(db_path, "SELECT * FROM messages") == []


def test_an_unreachable_gateway_is_one_line_and_nothing_is_written(dispatch: Run,
                                                                   db_path: Path) -> None:
    code, _, stdout, stderr = dispatch(
        "enqueue", "--label", "x", "--message", "hi", "--deliver-to", "1", "--timeout", "60",
        env={"OPENCLAW_GATEWAY_URL": "http://127.0.0.1:9"}, json_mode=False)
    assert code == 1 and stdout == "" and stderr.count("\n") == 1
    assert stderr.startswith("error: cannot reach the gateway")
    assert ledger(db_path, "x") is None


def test_model_and_thinking_are_patched_onto_a_fresh_session(dispatch: Run,
                                                             gateway: FakeGateway) -> None:
    gateway.rpc.on("sessions.patch", lambda request: RpcReply({"ok": True}))
    out = enqueue(dispatch, "m", "--model", "anthropic/claude-x", "--thinking", "off")
    patches = [r.params for r in gateway.rpc.requests_for("sessions.patch")]
    assert patches == [{"key": out["sessionKey"], "model": "anthropic/claude-x"},
                       {"key": out["sessionKey"], "thinkingLevel": None}]


def test_a_label_still_running_cannot_be_enqueued_again_and_reuse_continues_its_session(
        dispatch: Run, db_path: Path, gateway: FakeGateway) -> None:
    first = enqueue(dispatch)
    code, out, _, _ = dispatch("enqueue", "--label", "fix-bug", "--message", "again",
                               "--deliver-to", "1", "--timeout", "60", "--mode", "reuse")
    assert code == 1 and "still running" in out["error"]
    query(db_path, "SELECT 1")  # the ledger is untouched
    import sqlite3

    with sqlite3.connect(db_path) as conn:
        conn.execute("UPDATE dispatch_labels SET status = 'error' WHERE label = 'fix-bug'")
    again = enqueue(dispatch, "fix-bug", "--mode", "reuse", message="again")
    assert again["mode"] == "reuse" and again["sessionKey"] == first["sessionKey"]
    row = ledger(db_path)
    assert row is not None and row["status"] == "running" and row["mode"] == "reuse"
    assert len([n for n in jobs(db_path) if n == "watchdog:fix-bug"]) == 1


@pytest.mark.parametrize("args", [
    ("--label", "bad label!", "--message", "x", "--deliver-to", "1"),
    ("--label", "", "--message", "x", "--deliver-to", "1"),
    ("--label", "a" * 129, "--message", "x", "--deliver-to", "1"),
    ("--label", "ok", "--message", "x", "--deliver-to", "1", "--timeout", "0"),
    ("--label", "ok", "--message", "x", "--deliver-to", "1", "--thinking", "huge"),
    ("--label", "ok", "--message", "x", "--deliver-to", "1", "--mode", "other"),
    ("--label", "ok", "--message", "x", "--deliver-to", "1", "--bogus", "1"),
    ("--label", "ok", "--deliver-to", "1"),
    ("--label", "ok", "--message", "x", "--message-env", "HOME", "--deliver-to", "1"),
])
def test_bad_enqueue_flags_are_one_line_errors_and_write_nothing(
        dispatch: Run, db_path: Path, gateway: FakeGateway, args: tuple[str, ...]) -> None:
    code, out, stdout, _ = dispatch("enqueue", *args)
    assert code == 2, stdout
    assert out["ok"] is False and "\n" not in out["error"]
    assert gateway.rpc.requests_for("agent") == []
    assert not db_path.exists() or query(db_path, "SELECT * FROM dispatch_labels") == []


def test_a_bad_monitor_interval_is_refused_before_the_gateway_is_called(
        dispatch: Run, gateway: FakeGateway) -> None:
    code, out, _, _ = dispatch("enqueue", "--label", "x", "--message", "m", "--deliver-to", "1",
                               "--monitor-interval", "every day")
    assert code != 0 and out["ok"] is False
    assert gateway.rpc.requests_for("agent") == []


# -- message sources ----------------------------------------------------------------------------
HOSTILE = "Run $(rm -rf /) and `id` with 'quotes' \"and\" $HOME\n\\n second line"


def _task_of(gateway: FakeGateway) -> str:
    message: str = gateway.rpc.requests_for("agent")[-1].params["message"]
    return message


def test_a_message_file_arrives_literally(dispatch: Run, gateway: FakeGateway,
                                          tmp_path: Path) -> None:
    prompt = tmp_path / "prompt.txt"
    prompt.write_text(HOSTILE, encoding="utf-8")
    code, _, stdout, stderr = dispatch("enqueue", "--label", "f", "--message-file", str(prompt),
                                       "--deliver-to", "1", "--timeout", "60")
    assert code == 0, stdout + stderr
    assert f"[Subagent Task]: ORIGIN_CHAT_ID: 1\n\n{HOSTILE}" in _task_of(gateway)


def test_an_environment_variable_and_piped_stdin_are_sources(dispatch: Run,
                                                             gateway: FakeGateway) -> None:
    code, _, stdout, stderr = dispatch("enqueue", "--label", "e", "--message-env", "TASK",
                                       "--deliver-to", "1", "--timeout", "60",
                                       env={"TASK": HOSTILE})
    assert code == 0, stdout + stderr
    assert HOSTILE in _task_of(gateway)
    code, _, stdout, stderr = dispatch("enqueue", "--label", "s", "--deliver-to", "1",
                                       "--timeout", "60", stdin="from a pipe $(x)")
    assert code == 0, stdout + stderr
    assert "from a pipe $(x)" in _task_of(gateway)
    code, _, stdout, stderr = dispatch("enqueue", "--label", "d", "--message-file", "-",
                                       "--deliver-to", "1", "--timeout", "60", stdin="dash")
    assert code == 0, stdout + stderr
    assert "[Subagent Task]: ORIGIN_CHAT_ID: 1\n\ndash" in _task_of(gateway)


def test_an_oversized_or_unreadable_message_source_is_refused(dispatch: Run, tmp_path: Path,
                                                              gateway: FakeGateway) -> None:
    big = tmp_path / "big.txt"
    big.write_bytes(b"x" * (256 * 1024 + 1))
    code, out, _, _ = dispatch("enqueue", "--label", "b", "--message-file", str(big),
                               "--deliver-to", "1")
    assert code == 2 and "256 KiB" in out["error"]
    code, out, _, _ = dispatch("enqueue", "--label", "b", "--message-file", str(tmp_path),
                               "--deliver-to", "1")
    assert code == 2 and "not a regular file" in out["error"]
    code, out, _, _ = dispatch("enqueue", "--label", "b", "--message-env", "NOPE_NOT_SET",
                               "--deliver-to", "1")
    assert code == 2 and "NOPE_NOT_SET is not set" in out["error"]
    assert gateway.rpc.requests_for("agent") == []


# -- done ---------------------------------------------------------------------------------------
DONE_OK = '{"work_complete":true,"tests_passed":true}'


def _done(dispatch: Run, *extra: str, checklist: str | None = DONE_OK,
          cwd: Path | None = None) -> tuple[int, Any, str, str]:
    args = ["done", "--label", "fix-bug", "--summary", "Fixed the parser crash on empty input."]
    if checklist is not None:
        args += ["--checklist", checklist]
    return dispatch(*args, *extra, cwd=cwd)


@pytest.mark.parametrize(("checklist", "needle"), [
    (None, "--checklist is required"),
    ("not json", "must be a JSON object"),
    ('{"work_complete":false}', "work_complete must be true"),
    ('{"work_complete":true,"tests_passed":false}', "checklist.tests_passed is false"),
    ('{"work_complete":true,"pushed":false}', "checklist.pushed is false"),
])
def test_done_requires_a_checklist_asserting_the_work_is_complete(
        dispatch: Run, db_path: Path, checklist: str | None, needle: str) -> None:
    enqueue(dispatch)
    age(db_path, 3600)
    code, out, _, _ = _done(dispatch, "--skip-activity-check", checklist=checklist)
    assert code == 1 and out["error"].startswith("REJECTED:") and needle in out["error"]
    row = ledger(db_path)
    assert row is not None and row["status"] == "running"


def test_done_too_early_needs_force_done_with_a_reason(dispatch: Run, db_path: Path) -> None:
    enqueue(dispatch)  # timeout 900 > 600: two minutes minimum
    age(db_path, 90)
    code, out, _, _ = _done(dispatch, "--skip-activity-check")
    assert code == 1 and "ran for only" in out["error"] and "--force-done" in out["error"]
    code, out, _, _ = _done(dispatch, "--force-done")
    assert code == 1 and "--force-done requires --reason" in out["error"]
    assert ledger(db_path)["status"] == "running"  # type: ignore[index]
    code, out, stdout, stderr = _done(dispatch, "--force-done", "--reason", "trivial fix")
    assert code == 0, stdout + stderr
    assert "force-done used for label=fix-bug" in stderr
    assert ledger(db_path)["status"] == "done"  # type: ignore[index]


def _git_repo(path: Path) -> str:
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=path, check=True, capture_output=True,
                              text=True, env={**os.environ, "GIT_AUTHOR_NAME": "t",
                                              "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
                                              "GIT_COMMITTER_EMAIL": "t@t"}).stdout.strip()
    path.mkdir()
    git("init", "-q")
    (path / "f").write_text("x")
    git("add", "f")
    git("commit", "-qm", "c")
    return git("rev-parse", "HEAD")


def test_done_requires_a_real_sha_when_the_task_pushes(dispatch: Run, db_path: Path,
                                                       tmp_path: Path) -> None:
    enqueue(dispatch, message="Fix it, then git push origin main")
    age(db_path, 3600)
    code, out, _, _ = _done(dispatch, "--skip-activity-check")
    assert code == 1 and "--sha was not given" in out["error"]
    code, out, _, _ = _done(dispatch, "--skip-activity-check", "--sha", "nothex!")
    assert code == 1 and "is not a git SHA" in out["error"]
    repo = tmp_path / "repo"
    sha = _git_repo(repo)
    code, out, _, _ = _done(dispatch, "--skip-activity-check", "--sha", "deadbeef1", cwd=repo)
    assert code == 1 and "not found in the local git" in out["error"]
    code, out, stdout, stderr = _done(dispatch, "--skip-activity-check", "--sha", sha, cwd=repo)
    assert code == 0, stdout + stderr
    assert ledger(db_path)["sha"] == sha  # type: ignore[index]


def test_a_task_that_forbids_pushing_needs_no_sha(dispatch: Run, db_path: Path) -> None:
    enqueue(dispatch, message="Investigate only; do not git push anything")
    age(db_path, 3600)
    code, _, stdout, stderr = _done(dispatch, "--skip-activity-check")
    assert code == 0, stdout + stderr


def test_done_refuses_a_session_that_barely_spoke(dispatch: Run, db_path: Path,
                                                  gateway: FakeGateway) -> None:
    enqueue(dispatch)  # the fake's run: one user message, one reply
    age(db_path, 3600)
    code, out, _, _ = _done(dispatch)
    assert code == 1 and "only 2 messages" in out["error"]
    gateway.down()
    code, out, stdout, stderr = _done(dispatch)  # the check fails open
    assert code == 0, stdout + stderr
    assert "session activity check unavailable" in stderr


def test_done_marks_the_label_done_disarms_the_watchdog_and_announces_it(
        dispatch: Run, db_path: Path, gateway: FakeGateway) -> None:
    out = enqueue(dispatch)
    code, _, stdout, stderr = dispatch("steer", "--label", "fix-bug", "--message", "status?")
    assert code == 0, stdout + stderr
    age(db_path, 3600)
    code, done, stdout, stderr = _done(dispatch)
    assert code == 0, stdout + stderr
    assert [e["status"] for e in events(stderr) if e["event"] == "dispatch.finished"] == ["ok"]
    assert (done["ok"], done["status"], done["message"]) == (
        True, "done", "Label marked done via agent signal.")
    row = ledger(db_path)
    assert row is not None and row["status"] == "done" and row["finished_at"]
    assert row["summary"] == "Fixed the parser crash on empty input."
    assert row["completion"] == done["completion"] and "parser" in done["completion"]
    names = set(jobs(db_path))
    assert "watchdog:fix-bug" not in names and "dispatch-deliver:fix-bug" in names
    [result] = query(db_path, "SELECT * FROM messages WHERE kind = 'result'")
    assert (result["from_agent"], result["subject"], result["delivery_to"]) == (
        "dispatch", "fix-bug", "-100200")
    assert result["body"].startswith("\u2705 [fix-bug] done")
    # a second signal changes nothing
    code, again, _, _ = _done(dispatch)
    assert code == 0 and again["message"] == "Label already done."
    assert len(query(db_path, "SELECT * FROM messages WHERE kind = 'result'")) == 1
    assert out["sessionKey"] == row["session_key"]


def test_done_for_an_unknown_label_is_an_error(dispatch: Run) -> None:
    code, out, _, _ = _done(dispatch)
    assert code == 1 and "No session found for label 'fix-bug'" in out["error"]


# -- result / status / list / heartbeat ---------------------------------------------------------
def test_result_prints_the_last_assistant_reply_and_whether_the_label_ended(
        dispatch: Run, db_path: Path, gateway: FakeGateway) -> None:
    gateway.rpc.script_runs(RunScript.ok("All tests pass now."))
    enqueue(dispatch)
    code, out, stdout, stderr = dispatch("result", "--label", "fix-bug")
    assert code == 0, stdout + stderr
    assert (out["lastReply"], out["status"], out["terminal"], out["summary"]) == (
        "All tests pass now.", "running", False, "All tests pass now.")
    assert terminal_outcome(stdout) is None  # the watchdog keeps watching
    import sqlite3

    with sqlite3.connect(db_path) as conn:
        conn.execute("UPDATE dispatch_labels SET status = 'error', error = 'boom'")
    code, out, stdout, _ = dispatch("result", "--label", "fix-bug")
    assert code == 0 and out["terminal"] is True
    assert terminal_outcome(stdout) == ("failed", "All tests pass now.")
    assert "watchdog:fix-bug" in jobs(db_path)  # result itself never disarms


def test_status_closes_an_idle_session_as_interrupted(dispatch: Run, db_path: Path) -> None:
    enqueue(dispatch, "idle", "--timeout", "60")
    code, out, _, _ = dispatch("status", "--label", "idle")
    assert code == 0 and out["status"] == "running" and "syncAction" not in out
    assert out["liveness"]["status"] == "done"
    age(db_path, 3600, "idle")
    # the fake's session was updated at spawn, seconds ago: not idle long enough
    code, out, _, _ = dispatch("status", "--label", "idle")
    assert out["status"] == "running"
    import sqlite3

    with sqlite3.connect(db_path) as conn:  # a session the gateway never heard of
        conn.execute("UPDATE dispatch_labels SET session_key = 'agent:main:subagent:gone'")
    code, out, _, _ = dispatch("status", "--label", "idle")
    assert code == 0 and out["status"] == "interrupted"
    assert out["syncAction"].startswith("auto-resolved as interrupted")
    assert "watchdog:idle" not in jobs(db_path)


def test_list_filters_by_status(dispatch: Run, db_path: Path) -> None:
    enqueue(dispatch, "a")
    enqueue(dispatch, "b")
    import sqlite3

    with sqlite3.connect(db_path) as conn:
        conn.execute("UPDATE dispatch_labels SET status = 'done' WHERE label = 'a'")
    code, out, _, _ = dispatch("list")
    assert code == 0 and out["count"] == 2
    code, out, _, _ = dispatch("list", "--status", "done")
    assert [e["label"] for e in out["labels"]] == ["a"]
    assert out["labels"][0]["sessionKey"].startswith("agent:main:subagent:")
    code, out, _, _ = dispatch("list", "--status", "weird")
    assert code == 2


def test_heartbeat_reports_a_recently_active_session(dispatch: Run) -> None:
    enqueue(dispatch)
    code, out, _, _ = dispatch("heartbeat", "--label", "fix-bug")
    assert code == 0 and out["alive"] is True and out["ok"] is True
    code, out, _, _ = dispatch("heartbeat", "--session-key", "agent:main:subagent:nobody")
    assert code == 0 and out["alive"] is False


def test_unknown_labels_are_errors(dispatch: Run) -> None:
    for command in ("status", "result", "cancel"):
        code, out, _, _ = dispatch(command, "--label", "nope")
        assert code == 1 and "No session found for label 'nope'" in out["error"], command


# -- stuck / sync -------------------------------------------------------------------------------
def test_stuck_reports_a_silent_running_session_and_exits_1(dispatch: Run, db_path: Path,
                                                           gateway: FakeGateway) -> None:
    gateway.rpc.script_runs(RunScript.hang())
    enqueue(dispatch, "slow", "--timeout", "60")
    code, out, _, _ = dispatch("stuck")
    assert code == 0 and out["stuck_count"] == 0
    age(db_path, 7200, "slow")
    import sqlite3

    with sqlite3.connect(db_path) as conn:  # the session has been silent for an hour
        conn.execute("UPDATE dispatch_labels SET last_ping = NULL")
    gateway.rpc.on("sessions.list", lambda request: RpcReply({"sessions": [
        {"key": ledger(db_path, "slow")["session_key"], "status": "running",  # type: ignore[index]
         "updatedAt": 1_000, "totalTokens": 5}]}))
    code, out, stdout, _ = dispatch("stuck", json_mode=False)
    assert code == 1 and "1 stuck session" in stdout and "* slow (running 120min" in stdout
    code, out, _, _ = dispatch("stuck", "--threshold-min", "30")
    assert code == 1 and out["stuck_sessions"][0]["label"] == "slow"
    assert ledger(db_path, "slow")["status"] == "running"  # type: ignore[index]


def test_sync_closes_running_labels_whose_session_is_gone(dispatch: Run, db_path: Path) -> None:
    enqueue(dispatch, "gone")
    age(db_path, 3600, "gone")
    import sqlite3

    with sqlite3.connect(db_path) as conn:
        conn.execute("UPDATE dispatch_labels SET session_key = 'agent:main:subagent:gone'")
    code, out, _, _ = dispatch("sync", "--dry-run")
    assert code == 0 and out["changes"] == 1 and out["dryRun"] is True
    assert ledger(db_path, "gone")["status"] == "running"  # type: ignore[index]
    code, out, _, _ = dispatch("sync")
    assert out["changes"] == 1 and out["details"][0]["to"] == "interrupted"
    assert ledger(db_path, "gone")["status"] == "interrupted"  # type: ignore[index]


# -- send / cancel ------------------------------------------------------------------------------
def test_steer_reaches_the_session(dispatch: Run, gateway: FakeGateway, db_path: Path) -> None:
    out = enqueue(dispatch)
    code, sent, stdout, stderr = dispatch("steer", "--label", "fix-bug",
                                          "--message", "use the $(new) API")
    assert code == 0, stdout + stderr
    [request] = gateway.rpc.requests_for("sessions.send")
    assert request.params == {"key": out["sessionKey"], "message": "use the $(new) API"}
    assert sent["status"] == "sent" and sent["runId"] == gateway.rpc.runs[-1].run_id
    assert ledger(db_path)["steered_at"]  # type: ignore[index]


def test_cancel_aborts_the_session_closes_the_label_and_disarms_its_jobs(
        dispatch: Run, db_path: Path, gateway: FakeGateway) -> None:
    gateway.rpc.script_runs(RunScript.hang())
    out = enqueue(dispatch)
    code, cancelled, stdout, stderr = dispatch("cancel", "--label", "fix-bug", "--reason", "wrong")
    assert code == 0, stdout + stderr
    [abort] = gateway.rpc.requests_for("sessions.abort")
    assert abort.params == {"key": out["sessionKey"]}
    assert cancelled["abortedRunId"] == out["runId"]
    row = ledger(db_path)
    assert row is not None and row["status"] == "cancelled" and "wrong" in row["summary"]
    assert jobs(db_path) == {}
    assert [e["label"] for e in events(stderr) if e["event"] == "dispatch.cancelled"] == ["fix-bug"]
    [notice] = query(db_path, "SELECT * FROM messages WHERE to_agent = 'main'")
    assert notice["kind"] == "text" and "[fix-bug] cancelled: wrong" in notice["body"]
    code, again, _, _ = dispatch("cancel", "--label", "fix-bug")
    assert code == 1 and "already ended" in again["error"]


# -- import -------------------------------------------------------------------------------------
def test_import_reads_a_reference_ledger_once(dispatch: Run, db_path: Path,
                                              tmp_path: Path) -> None:
    labels = tmp_path / "labels.json"
    labels.write_text(json.dumps({
        "old-task": {"sessionKey": "agent:main:subagent:1", "status": "done",
                     "spawnedAt": "2026-11-01T10:00:00.000Z", "summary": "shipped"},
        "broken": {"status": "running"},
        "scalar": 5,
    }), encoding="utf-8")
    code, out, _, _ = dispatch("import", str(labels))
    assert code == 1  # two entries refused, the good one imported
    assert (out["imported"], out["alreadyPresent"], out["labels"]) == (1, 0, ["old-task"])
    assert {r["label"] for r in out["rejected"]} == {"broken", "scalar"}
    row = ledger(db_path, "old-task")
    assert row is not None and (row["status"], row["spawned_at"], row["summary"]) == (
        "done", "2026-11-01 10:00:00", "shipped")
    code, out, _, _ = dispatch("import", env={"DISPATCH_LABELS_PATH": str(labels)})
    assert (out["imported"], out["alreadyPresent"]) == (0, 1)
    code, out, _, _ = dispatch("import", str(tmp_path))
    assert code == 1 and "not a regular file" in out["error"]


def test_a_flag_given_twice_is_refused_but_a_value_that_looks_like_a_flag_is_not(
        dispatch: Run, gateway: FakeGateway) -> None:
    code, out, _, _ = dispatch("enqueue", "--label", "x", "--message", "m", "--deliver-to", "1",
                               "--timeout", "60", "--timeout", "90")
    assert code == 2 and out["error"] == "--timeout given twice"
    code, _, stdout, stderr = dispatch("enqueue", "--label", "x", "--message", "--timeout",
                                       "--deliver-to", "1", "--timeout", "60")
    assert code == 0, stdout + stderr
    assert "[Subagent Task]: ORIGIN_CHAT_ID: 1\n\n--timeout" in _task_of(gateway)


def test_enqueue_flags_reach_the_ledger_and_the_jobs(dispatch: Run, db_path: Path,
                                                     gateway: FakeGateway) -> None:
    out = enqueue(dispatch, "flags", "--agent", "coder", "--verify-cmd", "make test",
                  "--idle-threshold", "120", "--delivery-mode", "announce",
                  "--monitor-interval", "*/5 * * * *", "--monitor-timeout", "30",
                  "--deliver-channel", "discord", "--timeout", "600")
    assert out["sessionKey"].startswith("agent:coder:subagent:") and out["agent"] == "coder"
    row = ledger(db_path, "flags")
    assert row is not None
    assert (row["agent_id"], row["verify_cmd"], row["idle_threshold_s"], row["delivery_mode"],
            row["deliver_channel"], row["timeout_s"]) == (
        "coder", "make test", 120, "announce", "discord", 600)
    registered = jobs(db_path)
    watcher, watchdog = registered["coder-deliver:flags"], registered["watchdog:flags"]
    assert (watcher["delivery_mode"], watcher["delivery_channel"], watcher["run_timeout_ms"]) == (
        "announce", "discord", (14400 + 420) * 1000)
    assert (watchdog["schedule_cron"], watchdog["watchdog_timeout_min"],
            watchdog["watchdog_alert_channel"]) == ("*/5 * * * *", 30, "discord")
    assert gateway.rpc.requests_for("agent")[0].params["timeout"] == 600


@pytest.mark.parametrize(("prompt", "needed"), [
    ("Fix it and git push origin main", True),
    ("rebase: git rebase -i main, then push", True),
    ("git cherry-pick abc123 onto release", True),
    ("push with --force-with-lease", True),
    ("Do not git push anything", False),
    ("never run git push", False),
    ("avoid using git rebase here", False),
    ("without git cherry-pick please", False),
    ("Read the code and report; no commits", False),
    ("don't git push, but then git push to your fork", True),
])
def test_the_sha_gate_reads_git_commands_not_their_prohibition(prompt: str, needed: bool) -> None:
    from scheduler.dispatching.spec import requires_git_sha

    assert requires_git_sha(prompt) is needed


def test_a_message_file_may_be_a_pipe_but_stdin_must_be_piped(tmp_path: Path) -> None:
    import threading

    from scheduler.dispatching.inputs import MessageSources, resolve_message
    from scheduler.dispatching.spec import BadArgument

    fifo = tmp_path / "prompt.fifo"
    os.mkfifo(fifo)
    writer = threading.Thread(target=lambda: fifo.write_text("through a fifo", encoding="utf-8"))
    writer.start()
    assert resolve_message(MessageSources(message_file=str(fifo))) == "through a fifo"
    writer.join(timeout=10)
    with open(os.devnull, "rb") as null:
        with pytest.raises(BadArgument, match="requires piped stdin"):
            resolve_message(MessageSources(message_stdin=True), stdin=null)
        assert resolve_message(MessageSources(), stdin=null) is None  # /dev/null is not piped
    (tmp_path / "bad.txt").write_bytes(b"\xff\xfe not utf-8")
    with pytest.raises(BadArgument, match="not UTF-8"):
        resolve_message(MessageSources(message_file=str(tmp_path / "bad.txt")))


def test_watch_follows_the_label_to_its_completion_in_the_foreground(
        dispatch: Run, db_path: Path, gateway: FakeGateway) -> None:
    gateway.rpc.script_runs(RunScript.ok("The parser no longer crashes on empty input."))
    enqueue(dispatch)
    code, out, stdout, stderr = dispatch("watch", "--label", "fix-bug")
    assert code == 0, stdout + stderr
    assert (out["ok"], out["status"], out["lastReply"]) == (
        True, "ok", "The parser no longer crashes on empty input.")
    row = ledger(db_path)
    assert row is not None and row["status"] == "done" and row["completion"] == out["completion"]
    code, _, stdout, _ = dispatch("watch", "--label", "fix-bug", json_mode=False)
    assert code == 0 and "parser no longer crashes" in stdout  # already done: the recorded text
    code, out, _, _ = dispatch("watch", "--label", "nope")
    assert code == 1 and out["ok"] is False and out["status"] == "error"


def test_a_failed_enqueue_is_one_error_line_without_the_timeout_warning(tmp_path: Path) -> None:
    env = _base_env(tmp_path / "s.db", {"OPENCLAW_GATEWAY_URL": "http://127.0.0.1:9"})
    proc = subprocess.run([sys.executable, "-m", "scheduler", "dispatch", "enqueue", "--label",
                           "x", "--message", "hi", "--deliver-to", "1"], env=env,
                          capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert proc.returncode != 0 and proc.stdout == ""
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("error: "), proc.stderr
