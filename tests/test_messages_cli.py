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


# -- messages send: the flags of issue 9 -------------------------------------------------------------


def test_messages_send_takes_subject_priority_expiry_reply_ack_metadata_and_owner(cli, db) -> None:
    code, out, _, _ = cli("msg", "send", "coder", "main", "which branch?")
    question = out["message"]["id"]
    before = db("SELECT datetime('now', '+2 hours') AS t")[0]["t"]
    code, out, _, _ = cli("messages", "send", "--from", "coder", "--to", "main", "--kind", "status",
                          "--subject", "PR 12", "--priority", "2", "--expires-in", "2h", "--reply-to",
                          question, "--ack-required", "--metadata", '{"pr": 12}', "--owner", "coder",
                          "--body", "tests green")
    assert code == 0
    message = out["message"]
    after = db("SELECT datetime('now', '+2 hours') AS t")[0]["t"]
    assert (message["subject"], message["priority"], message["reply_to"], message["ack_required"],
            message["metadata"], message["owner"]) == ("PR 12", 2, question, 1, {"pr": 12}, "coder")
    assert before <= message["expires_at"] <= after
    (row,) = db("SELECT metadata, expires_at FROM messages WHERE id = ?", (message["id"],))
    assert json.loads(row["metadata"]) == {"pr": 12} and row["expires_at"] == message["expires_at"]


def test_expires_at_takes_a_datetime(cli) -> None:
    code, out, _, _ = cli(*SEND, "--expires-at", "2999-01-02T03:04:05+01:00")
    assert code == 0 and out["message"]["expires_at"] == "2999-01-02 02:04:05"


@pytest.mark.parametrize(("flags", "error"), [
    (["--priority", "3"], '--priority must be 0 (normal), 1 (high) or 2 (urgent), got "3"'),
    (["--priority", "high"], "--priority must be 0 (normal), 1 (high) or 2 (urgent)"),
    (["--expires-in", "5x"], '--expires-in: Invalid duration: "5x". Use e.g. 15m, 2h, 30s, 1d'),
    (["--expires-in", "0s"], "--expires-in: the message would expire at once"),
    (["--expires-at", "2020-01-01"], "--expires-at: the message would expire at once (2020-01-01 00:00:00"),
    (["--expires-at", "soon"], '--expires-at: "soon" is not a datetime'),
    (["--expires-in", "1h", "--expires-at", "2999-01-01"], "give --expires-in or --expires-at, not both"),
    (["--reply-to", "nope"], "Message not found: nope"),
    (["--metadata", "{"], "--metadata is not valid JSON"),
    (["--metadata", "[1]"], "--metadata must be a JSON object"),
    (["--metadata", "NaN"], "--metadata is not valid JSON"),
    (["--owner", "@outbound"], 'owner "@outbound": names starting with'),
    (["--subject", "two\nlines"], "subject must be 1-500 printable characters on one line"),
    (["--kind", "memo"], 'Invalid message kind "memo". Valid: text, task, result, status, system, '
                         "spawn, decision, constraint, fact, preference"),
])
def test_a_bad_flag_fails_in_one_line_and_writes_nothing(cli, db, flags: list[str], error: str) -> None:
    assert cli("status")[0] == 0
    code, out, _, _ = cli(*SEND, *flags)
    assert code == 1 and out["ok"] is False and out["error"].startswith(error), out
    assert db("SELECT id FROM messages") == []


# -- msg inbox | outbox | thread | ack | read | readall | unread | receipts; queue ---------------------


def send(cli, *args: str) -> str:
    code, out, stdout, stderr = cli("messages", "send", *args)
    assert code == 0, stdout + stderr
    return str(out["message"]["id"])


def add_outbound_result(db_path: Path, *, days_old: int = 0, status: str = "pending") -> str:
    """A result the scheduler has still to send (written as the daemon writes one)."""
    import sqlite3

    message_id = str(uuid.uuid4())
    with sqlite3.connect(db_path) as conn:
        conn.execute(
            "INSERT INTO messages (id, from_agent, to_agent, kind, body, status, channel, delivery_to, "
            "created_at, next_attempt_at) VALUES (?, 'scheduler', '@outbound', 'result', 'a result', ?, "
            "'telegram', '42', datetime('now', ?), datetime('now', '+1 day'))",
            (message_id, status, f"-{days_old} days"))
    conn.close()
    return message_id


def everything(db) -> list[Any]:
    return [db("SELECT * FROM messages ORDER BY id"), db("SELECT * FROM message_receipts ORDER BY id"),
            db("SELECT * FROM message_recipients ORDER BY message_id, agent_id")]


def test_inbox_lists_unread_messages_kind_first_then_priority_then_age(cli) -> None:
    assert cli("msg", "inbox", "main", json_mode=False)[2] == "Inbox empty\n"
    assert cli("msg", "inbox", "main")[1] == []
    text = send(cli, "--from", "a", "--kind", "text", "--priority", "2", "--body", "urgent text")
    task = send(cli, "--from", "a", "--kind", "task", "--subject", "x" * 60, "--body", "do it")
    news = send(cli, "--from", "a", "--to", "broadcast", "--kind", "constraint", "--body", "freeze")
    send(cli, "--from", "a", "--to", "coder", "--body", "not for main")
    code, rows, _, _ = cli("msg", "inbox", "main")
    assert code == 0 and [r["id"] for r in rows] == [news, task, text]
    assert rows[0]["to_agent"] == "broadcast" and rows[0]["metadata"] is None
    assert [r["id"] for r in cli("msg", "inbox", "main", "2")[1]] == [news, task]
    code, _, stdout, _ = cli("msg", "inbox", "main", json_mode=False)
    lines = stdout.splitlines()
    assert lines[0].split() == ["id", "from", "kind", "subject", "status", "priority", "created"]
    assert [line.split()[0] for line in lines[2:]] == [news[:8], task[:8], text[:8]]
    assert "x" * 40 in lines[3] and "x" * 41 not in lines[3]


def test_outbox_and_thread(cli) -> None:
    assert cli("msg", "outbox", "planner", json_mode=False)[2] == "Outbox empty\n"
    question = send(cli, "--from", "planner", "--to", "coder", "--body", "which branch?")
    answer = send(cli, "--from", "coder", "--to", "planner", "--reply-to", question, "--body", "main")
    assert [r["id"] for r in cli("msg", "outbox", "planner")[1]] == [question]
    _, _, stdout, _ = cli("msg", "outbox", "planner", json_mode=False)
    assert stdout.splitlines()[0].split() == ["id", "to", "kind", "subject", "status", "created"]
    assert [r["id"] for r in cli("msg", "thread", question)[1]] == [question, answer]
    _, _, stdout, _ = cli("msg", "thread", question, json_mode=False)
    blocks = stdout.split("\n\n")
    assert blocks[0].startswith("[planner -> coder] (pending) ") and blocks[0].endswith("\n  which branch?")
    assert blocks[1].startswith("[coder -> planner] (pending) ") and blocks[1].endswith("\n  main")


def test_ack_read_readall_unread_and_receipts(cli) -> None:
    first = send(cli, "--from", "a", "--body", "one")
    second = send(cli, "--from", "a", "--body", "two")
    send(cli, "--from", "a", "--body", "three")
    assert cli("msg", "receipts", first, json_mode=False)[2] == "No receipts for message\n"
    assert cli("msg", "unread", "main")[1] == {"agent": "main", "unread": 3}
    assert cli("msg", "unread", "main", json_mode=False)[2] == "Unread: 3\n"
    code, out, _, _ = cli("msg", "ack", first, "main", "looked", "at", "it")
    assert code == 0 and out["ok"] is True and out["id"] == first and out["status"] == "read"
    assert out["ack_at"] is not None and out["read_at"] is not None
    _, _, stdout, _ = cli("msg", "ack", first, json_mode=False)
    assert stdout.startswith('Acknowledged: {\n  "id": "' + first + '",\n  "status": "read",')
    receipts = cli("msg", "receipts", first)[1]
    assert [(r["event_type"], r["actor"], r["detail"]) for r in receipts] == [
        ("ack", "operator", None), ("ack", "main", "looked at it")]
    assert len(cli("msg", "receipts", first, "1")[1]) == 1
    _, _, stdout, _ = cli("msg", "receipts", first, json_mode=False)
    assert stdout.splitlines()[0].split() == ["id", "type", "attempt", "actor", "detail", "at"]
    assert cli("msg", "read", second)[1] == {"ok": True, "message_id": second, "read": True,
                                             "status": "read"}
    assert cli("msg", "read", second, json_mode=False)[2] == "Marked read\n"
    assert cli("msg", "readall", "main")[1] == {"ok": True, "agent": "main", "changes": 1}
    assert cli("msg", "readall", "main", json_mode=False)[2] == "Marked 0 read\n"
    assert cli("msg", "unread", "main")[1]["unread"] == 0


def test_a_broadcast_read_by_one_agent_is_still_unread_for_the_others(cli, db) -> None:
    """Reference defect §17 #15, through the CLI."""
    news = send(cli, "--from", "ops", "--to", "broadcast", "--body", "deploy freeze")
    code, out, _, _ = cli("msg", "read", news)
    assert code == 2 and "is a broadcast, which every agent reads for itself: name the agent" in out["error"]
    assert cli("msg", "ack", news)[0] == 2
    assert db("SELECT * FROM message_recipients") == [] and db("SELECT * FROM message_receipts") == []
    assert cli("msg", "read", news, "coder")[1] == {"ok": True, "message_id": news, "read": True,
                                                    "status": "read", "agent": "coder"}
    assert cli("msg", "unread", "coder")[1]["unread"] == 0
    assert cli("msg", "unread", "main")[1]["unread"] == 1
    assert cli("msg", "inbox", "coder")[1] == []
    (row,) = cli("msg", "inbox", "main")[1]
    assert (row["id"], row["status"], row["read_at"]) == (news, "pending", None)
    out = cli("msg", "ack", news, "main", "ok")[1]
    assert (out["status"], out["ack_at"] is not None) == ("read", True)
    assert cli("msg", "readall", "planner")[1]["changes"] == 1
    assert cli("msg", "unread", "reviewer")[1]["unread"] == 1
    (own,) = db("SELECT status FROM messages")
    assert own["status"] == "pending"


def test_queue_list_clear_and_prune(cli) -> None:
    out = cli("queue", "list")[1]
    assert out == {"agent": "main", "pending": 0, "delivered": 0, "messages": []}
    assert cli("queue", json_mode=False)[2] == "Queue empty\n"
    one = send(cli, "--from", "a", "--subject", "s" * 50, "--body", "one")
    send(cli, "--from", "a", "--to", "coder", "--body", "two")
    out = cli("queue", "list")[1]
    assert (out["agent"], out["pending"], out["delivered"]) == ("main", 1, 0)
    assert [m["id"] for m in out["messages"]] == [one]
    assert cli("queue", "list", "coder", "5")[1]["pending"] == 1
    _, _, stdout, _ = cli("queue", "list", json_mode=False)
    assert stdout.startswith("\nQueue for agent: main | 1 pending | 0 delivered (showing last 50)\n\n")
    assert "s" * 45 in stdout and "s" * 46 not in stdout
    assert cli("queue", "clear")[1] == {"ok": True, "agent": "main", "changes": 1}
    assert cli("queue", "clear", "coder", json_mode=False)[2] == "Cleared 1 messages\n"
    out = cli("queue", "prune")[1]
    assert out == {"ok": True, "pruned": True, "deleted": 0, "by_rule": {
        "broadcasts": 0, "read_expired_failed": 0, "delivered": 0, "notifications": 0}}
    assert cli("queue", "prune", json_mode=False)[2] == (
        "Pruned 0 old messages (delivered >3d, system/result >3d, read/expired/failed and broadcasts "
        ">30d; results not yet sent are kept)\n")


def test_queue_prune_keeps_a_result_not_yet_sent_however_old(cli, db, db_path: Path) -> None:
    """Reference defect §17 #16: a result older than 3 days was pruned even if never sent."""
    assert cli("status")[0] == 0
    unsent = add_outbound_result(db_path, days_old=40)
    sent = add_outbound_result(db_path, days_old=4, status="delivered")
    failed = add_outbound_result(db_path, days_old=40, status="failed")
    out = cli("queue", "prune")[1]
    assert out["deleted"] == 2 and out["by_rule"]["read_expired_failed"] == 1
    assert [r["id"] for r in db("SELECT id FROM messages")] == [unsent]
    assert sent != failed


def test_outbound_results_show_in_no_agents_inbox_count_or_queue(cli, db_path: Path) -> None:
    assert cli("status")[0] == 0
    result = add_outbound_result(db_path)
    for agent in ("main", "scheduler"):
        assert cli("msg", "inbox", agent)[1] == []
        assert cli("msg", "unread", agent)[1]["unread"] == 0
        assert cli("queue", "list", agent)[1]["messages"] == []
        assert cli("msg", "readall", agent)[1]["changes"] == 0
    assert cli("msg", "outbox", "scheduler")[1] == []
    code, out, _, _ = cli("msg", "read", result)
    assert code == 1 and "is an outbound delivery the scheduler sends" in out["error"]
    assert [r["id"] for r in cli("msg", "thread", result)[1]] == [result]  # looked up by id: shown


@pytest.mark.parametrize(("argv", "code", "error"), [
    (["msg", "inbox"], 2, "usage: openclaw-scheduler msg inbox <agent-id> [limit]"),
    (["msg", "inbox", "main", "0"], 2, 'limit must be a whole number from 1 to 10000, got "0"'),
    (["msg", "inbox", "main", "ten"], 2, "limit must be a whole number"),
    (["msg", "inbox", "main", "5", "6"], 2, "unexpected argument '6'"),
    (["msg", "inbox", "@outbound"], 1, "agent \"@outbound\": names starting with '@' are reserved"),
    (["msg", "inbox", "broadcast"], 1, 'agent "broadcast": broadcast is every agent, not one'),
    (["msg", "outbox"], 2, "usage: openclaw-scheduler msg outbox <agent-id> [limit]"),
    (["msg", "thread"], 2, "usage: openclaw-scheduler msg thread <message-id>"),
    (["msg", "thread", "nope"], 1, "Message not found: nope"),
    (["msg", "ack"], 2, "usage: openclaw-scheduler msg ack <message-id> [actor] [note]"),
    (["msg", "ack", "nope"], 1, "Message not found: nope"),
    (["msg", "ack", "nope", "@x"], 1, "actor \"@x\": names starting with '@'"),
    (["msg", "read"], 2, "usage: openclaw-scheduler msg read <message-id> [agent-id]"),
    (["msg", "read", "nope"], 1, "Message not found: nope"),
    (["msg", "readall"], 2, "usage: openclaw-scheduler msg readall <agent-id>"),
    (["msg", "readall", "broadcast"], 1, 'agent "broadcast": broadcast is every agent'),
    (["msg", "unread"], 2, "usage: openclaw-scheduler msg unread <agent-id>"),
    (["msg", "receipts"], 2, "usage: openclaw-scheduler msg receipts <message-id> [limit]"),
    (["msg", "receipts", "nope"], 1, "Message not found: nope"),
    (["msg", "receipts", "nope", "99999999999999999999"], 2, "limit must be a whole number"),
    (["queue", "list", "main", "-1"], 2, "limit must be a whole number"),
    (["queue", "clear", "a", "b"], 2, "unexpected argument 'b'"),
    (["queue", "prune", "now"], 2, "unexpected argument 'now'"),
    (["queue", "main"], 2, "unknown subcommand 'main' for queue; expected one of: clear, list, prune"),
    (["msg", "recieve"], 2, "unknown subcommand 'recieve' for msg"),
])
def test_bad_reads_fail_in_one_line_and_change_nothing(cli, db, argv: list[str], code: int,
                                                      error: str) -> None:
    send(cli, "--from", "a", "--body", "x")
    before = everything(db)
    got, out, _, _ = cli(*argv)
    assert got == code and out["ok"] is False and out["error"].startswith(error), out
    assert everything(db) == before


READ_TEMPLATES: list[list[str]] = [
    ["msg", "inbox", "{h}"], ["msg", "inbox", "main", "{h}"], ["msg", "outbox", "{h}"],
    ["msg", "outbox", "a", "{h}"], ["msg", "thread", "{h}"], ["msg", "ack", "{h}"],
    ["msg", "ack", "{id}", "{h}"], ["msg", "ack", "{id}", "main", "{h}"], ["msg", "read", "{h}"],
    ["msg", "read", "{id}", "{h}"], ["msg", "readall", "{h}"], ["msg", "unread", "{h}"],
    ["msg", "receipts", "{h}"], ["msg", "receipts", "{id}", "{h}"], ["queue", "{h}"],
    ["queue", "list", "{h}"], ["queue", "list", "main", "{h}"], ["queue", "clear", "{h}"],
    ["queue", "prune", "{h}"],
    [*SEND, "--subject", "{h}"], [*SEND, "--priority", "{h}"], [*SEND, "--expires-in", "{h}"],
    [*SEND, "--expires-at", "{h}"], [*SEND, "--reply-to", "{h}"], [*SEND, "--metadata", "{h}"],
    [*SEND, "--owner", "{h}"],
]
STATE_CHANGERS = {("msg", "ack"), ("msg", "read"), ("msg", "readall"), ("queue", "clear"),
                  ("messages", "send")}


def test_hostile_arguments_to_the_inbox_commands(tmp_path: Path) -> None:
    path = tmp_path / "scheduler.db"
    code, out, _, _ = run_cli(path, "messages", "send", "--from", "a", "--to", "broadcast", "--body", "x")
    assert code == 0
    target = out["message"]["id"]
    cases = [[hostile if arg == "{h}" else target if arg == "{id}" else arg for arg in template]
             for template in READ_TEMPLATES for hostile in HOSTILE]
    failures: list[Any] = []
    for result in run_sweep(path, cases):
        problems = [p for p in sweep_problems(result) if p != "wrote"]
        if result["changed"] and tuple(result["argv"][:2]) not in STATE_CHANGERS:
            problems.append("wrote")
        if problems:
            failures.append((problems, repr(result["argv"])[:160], result["code"],
                             (result["stdout"] + result["stderr"])[-300:]))
    assert not failures, f"{len(failures)} bad outcomes, e.g. {failures[:5]}"


def test_status_counts_each_agents_unread_messages_broadcasts_included(cli, db_path: Path) -> None:
    import sqlite3

    assert cli("status")[0] == 0
    with sqlite3.connect(db_path) as conn:
        conn.executemany("INSERT INTO agents (id, name) VALUES (?, ?)", [("a", "A"), ("b", "B")])
    conn.close()
    news = send(cli, "--from", "ops", "--to", "broadcast", "--body", "freeze")
    send(cli, "--from", "ops", "--to", "a", "--body", "for a")
    assert cli("msg", "read", news, "b")[0] == 0
    agents = {agent["id"]: agent["unread"] for agent in cli("status")[1]["agents"]}
    assert agents == {"a": 2, "b": 0}


def test_schema_messages_lists_the_kinds_statuses_and_priorities(cli) -> None:
    code, out, _, _ = cli("schema", "message")
    assert code == 0 and out == {
        "kinds": ["text", "task", "result", "status", "system", "spawn", "decision", "constraint",
                  "fact", "preference"],
        "statuses": ["pending", "delivered", "read", "expired", "failed"],
        "priorities": {"0": "normal", "1": "high", "2": "urgent"}}
