"""``messages send`` and ``msg send`` as a real CLI on a temp database (no daemon)."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest

from conftest import add_job, run_cli, shell_job
from test_cli import HOSTILE, run_sweep, sweep_problems

SPAWN_BODY = json.dumps({"name": "one-off", "session_target": "shell", "payload_message": "true"})


def test_messages_send_writes_a_pending_message_with_the_reference_defaults(cli, db) -> None:
    code, out, _, _ = cli("messages", "send", "--from", "planner", "--body", "build done")
    assert code == 0 and out["ok"] is True
    message = out["message"]
    assert (message["from_agent"], message["to_agent"], message["kind"], message["body"]) == (
        "planner", "main", "status", "build done")
    assert message["status"] == "pending" and message["delivered_at"] is None
    (row,) = db("SELECT * FROM messages")
    assert row["id"] == message["id"] and row["created_at"] == message["created_at"]


def test_messages_send_takes_every_flag(cli, db) -> None:
    job = add_job(cli, shell_job(schedule_cron="0 0 1 1 *"))
    code, out, _, _ = cli("messages", "send", "--from=planner", "--to", "researcher", "--kind", "task",
                          "--channel", "telegram", "--delivery-to", "@ops", "--job-id", job["id"],
                          "--body", "look\ninto it")
    assert code == 0
    message = out["message"]
    assert (message["to_agent"], message["kind"], message["channel"], message["delivery_to"],
            message["job_id"], message["body"]) == ("researcher", "task", "telegram", "@ops", job["id"],
                                                    "look\ninto it")


def test_msg_send_is_the_positional_form_of_a_text_message(cli) -> None:
    code, out, _, _ = cli("msg", "send", "planner", "researcher", "hello", "there")
    assert code == 0
    assert (out["message"]["kind"], out["message"]["body"]) == ("text", "hello there")


def test_human_output_is_one_line(cli) -> None:
    code, _, stdout, _ = cli("messages", "send", "--from", "planner", "--body", "hi", json_mode=False)
    assert code == 0
    assert stdout.startswith("Sent message ") and stdout.endswith("(status) from planner to main\n")


@pytest.mark.parametrize(("argv", "code", "error"), [
    (["messages", "send", "--body", "x"], 2, "usage: openclaw-scheduler messages send --from <label>"),
    (["messages", "send", "--from", "a"], 2, "usage: openclaw-scheduler messages send"),
    (["messages", "send", "--from", "a", "--body", "x", "--urgent"], 2, "unknown option --urgent"),
    (["messages", "send", "--from", "a", "--body", "x", "extra"], 2, "unexpected argument 'extra'"),
    (["messages", "send", "--from", "a", "--body", "x", "--kind", "memo"], 1,
     'Invalid message kind "memo". Valid: text, task, result, status, system, spawn, decision, '
     "constraint, fact, preference"),
    (["messages", "send", "--from", "a", "--to", "@outbound", "--body", "x"], 1,
     'to "@outbound": names starting with \'@\' are reserved for the scheduler'),
    (["messages", "send", "--from", "a", "--body", ""], 1, "the message body cannot be empty"),
    (["messages", "send", "--from", "a", "--body", "x", "--job-id", "nope"], 1, "Job not found: nope"),
    (["messages", "send", "--from", "a", "--body", "x", "--run-id", "nope"], 1, "Run not found: nope"),
    (["msg", "send", "a", "b"], 2, "usage: openclaw-scheduler msg send <from> <to> <body>"),
    (["messages", "receive"], 2, "unknown subcommand 'receive' for messages; expected one of: send"),
])
def test_bad_arguments_fail_in_one_line_and_write_nothing(cli, db, argv: list[str], code: int,
                                                         error: str) -> None:
    assert cli("status")[0] == 0  # the database exists, so that "nothing written" can be seen
    got, out, _, _ = cli(*argv)
    assert got == code and out["ok"] is False and out["error"].startswith(error)
    assert db("SELECT id FROM messages") == []


@pytest.mark.parametrize(("body", "error"), [
    ("{", "the spawn body is not valid JSON (Expecting property name enclosed in double quotes at "
          "line 1 column 2)"),
    ('{"name": "x"}', "payload_message is required"),
    ('{"payload_message": "x", "session_target": "shell", "schedule_cron": "61 * * * *"}',
     'Invalid cron expression "61 * * * *"'),
    ('{"payload_message": "x", "session_target": "shell", "parent_id": "gone", "trigger_on": "success"}',
     "parent job does not exist: gone"),
])
def test_a_spawn_the_daemon_would_reject_is_refused_up_front(cli, db, body: str, error: str) -> None:
    code, out, _, _ = cli("messages", "send", "--from", "planner", "--kind", "spawn", "--body", body)
    assert code == 1 and error in out["error"]
    assert db("SELECT id FROM messages") == []


def test_a_spawn_naming_its_parent_job_is_written_with_the_link(cli, db) -> None:
    parent = add_job(cli, shell_job(schedule_cron="0 0 1 1 *"))
    code, out, _, _ = cli("messages", "send", "--from", "planner", "--kind", "spawn", "--job-id",
                          parent["id"], "--body", SPAWN_BODY)
    assert code == 0 and out["message"]["job_id"] == parent["id"]
    assert db("SELECT id FROM jobs") == [{"id": parent["id"]}]  # the daemon creates the spawned job


SEND = ["messages", "send", "--from", "planner", "--body", "x"]
SWEEP_TEMPLATES: list[list[str]] = [
    ["messages", "send", "--from", "{h}", "--body", "x"],
    ["messages", "send", "--from", "planner", "--to", "{h}", "--body", "x"],
    [*SEND, "--kind", "{h}"],
    [*SEND, "--channel", "{h}"],
    [*SEND, "--delivery-to", "{h}"],
    [*SEND, "--job-id", "{h}"],
    [*SEND, "--run-id", "{h}"],
    [*SEND, "{h}"],
    ["messages", "send", "--from", "planner", "--body", "{h}"],
    ["messages", "send", "--from", "planner", "--kind", "spawn", "--body", "{h}"],
    ["messages", "{h}"],
    ["msg", "send", "{h}", "b", "c"],
    ["msg", "send", "a", "{h}", "c"],
    ["msg", "send", "a", "b", "{h}"],
]


def test_hostile_arguments_in_every_position(tmp_path: Path) -> None:
    path = tmp_path / "scheduler.db"
    assert run_cli(path, "status")[0] == 0
    cases = [[hostile if arg == "{h}" else arg for arg in template]
             for template in SWEEP_TEMPLATES for hostile in HOSTILE]
    results = run_sweep(path, cases)
    failures: list[Any] = []
    for result in results:
        problems = [p for p in sweep_problems(result) if p != "wrote"]  # a valid send writes
        if result["changed"] and tuple(result["argv"][:2]) not in (("messages", "send"), ("msg", "send")):
            problems.append("wrote")
        if problems:
            failures.append((problems, repr(result["argv"])[:160], result["code"],
                             (result["stdout"] + result["stderr"])[-300:]))
    assert not failures, f"{len(failures)} bad outcomes, e.g. {failures[:5]}"
    sent = [r for r in results if r["argv"] == ["messages", "send", "--from", "planner", "--body", "😀"]]
    assert [r["code"] for r in sent] == [0, 0]  # the sweep reaches the command, in both modes


def test_a_message_links_to_an_existing_run(cli, db, db_path: Path) -> None:
    import sqlite3

    job = add_job(cli, shell_job(schedule_cron="0 0 1 1 *"))
    run_id = str(uuid.uuid4())
    with sqlite3.connect(db_path) as conn:
        conn.execute("INSERT INTO runs (id, job_id, status) VALUES (?, ?, 'ok')", (run_id, job["id"]))
    conn.close()
    code, out, _, _ = cli("messages", "send", "--from", "planner", "--run-id", run_id, "--body", "x")
    assert code == 0 and out["message"]["run_id"] == run_id
