"""Golden tests for agent prompts, sentinels, transient-error detection, replies and chunking.

The expected strings are the reference's, character for character (agents depend on them).
"""

from __future__ import annotations

import json
import random
from typing import Any

import pytest

from scheduler.gateway.channels import (
    CHANNEL_LIMITS,
    DEFAULT_CHANNEL_LIMIT,
    TELEGRAM_MAX_MESSAGE_LENGTH,
    channel_limit,
    chunk_message,
    split_message_for_channel,
)
from scheduler.strategies.prompt import (
    KIND_PRIORITY,
    build_prompt,
    build_trigger_context,
    extract_shell_result,
    select_injectable_messages,
)
from scheduler.strategies.reply import (
    SENTINELS,
    ReplyVerdict,
    detect_transient_error,
    interpret_reply,
    is_drain_error,
    matches_sentinel,
)

JOB: dict[str, Any] = {"id": "job-1", "name": "Daily report", "payload_message": "Summarise the inbox."}
RUN: dict[str, Any] = {"id": "run-1"}

HEADER = "[scheduler:job-1 Daily report]"
PAYLOAD = "\n\nSummarise the inbox."

PLAN_NOTE = (
    "\n\n[SYSTEM NOTE -- execution boundary]\n"
    "This run is planning-only. Analyze, reason, and propose actions, but do not execute external"
    " side effects.\n"
    "If a concrete change is needed, describe it as a recommendation instead of performing it.\n"
    "[END SYSTEM NOTE]"
)
READ_ONLY_NOTE = (
    "\n\n[SYSTEM NOTE -- execution boundary]\n"
    "This run is read-only. Inspect and summarize state, but do not execute external side effects.\n"
    "Treat every write, send, post, mutation, or shelling out for side effects as forbidden.\n"
    "If a concrete change is needed, describe it as a recommendation instead of performing it.\n"
    "[END SYSTEM NOTE]"
)
PLAN_READ_ONLY_NOTE = (
    "\n\n[SYSTEM NOTE -- execution boundary]\n"
    "This run is planning-only. Analyze, reason, and propose actions, but do not execute external"
    " side effects.\n"
    "Treat every write, send, post, mutation, or shelling out for side effects as forbidden.\n"
    "If a concrete change is needed, describe it as a recommendation instead of performing it.\n"
    "[END SYSTEM NOTE]"
)
THINKING_NOTE = "\n\n[SYSTEM NOTE -- model policy]\nPrefer reasoning depth: high.\n[END SYSTEM NOTE]"
FLUSH_NOTE = (
    "\n\n[SYSTEM: Pre-compaction flush required]\n"
    "Write a structured summary of: active decisions, constraints, task owners, open questions.\n"
    "Format as labeled sections. If nothing needs flushing, respond with exactly: NO_FLUSH\n"
    "[END SYSTEM]"
)
GLOBAL_NOTE = (
    "\n\n[SYSTEM NOTE -- scope=global]\n"
    "This job has cross-session sub-agent visibility enabled.\n"
    "When you need to list or inspect sub-agents, do NOT use `subagents list`\n"
    "(which only shows sub-agents spawned by the current session).\n"
    "Instead, call `sessions_list` with no session filter to enumerate ALL active\n"
    "sessions across every requester, then filter by session key prefix or agent id.\n"
    "This lets you observe sub-agents spawned from the main Telegram session or any\n"
    "other session -- not just this isolated scheduler session.\n"
    "[END SYSTEM NOTE]"
)
IDEMPOTENCY_BLOCK = (
    "\n\n[IDEMPOTENCY KEY: key-123]\n"
    "This is an at-least-once job. Before performing side effects, verify this key\n"
    "has not already been processed. If you've already handled this exact execution,\n"
    "respond with: IDEMPOTENT_SKIP"
)

BASE_META: dict[str, Any] = {
    "messages_injected": 0,
    "scope": "own",
    "job_class": "standard",
    "delivery_guarantee": "at-most-once",
    "context_retrieval": "none",
    "execution_intent": "execute",
    "execution_read_only": False,
    "payload_model": None,
    "payload_thinking": None,
    "auth_profile": None,
}

# A runs row as SQLite returns it for an agent run: shell_timed_out is NOT NULL DEFAULT 0 and the
# other shell columns are NULL.
AGENT_PARENT_ROW: dict[str, Any] = {
    "id": "run-parent",
    "job_id": "job-parent",
    "status": "ok",
    "summary": "Found 3 new invoices.",
    "error_message": None,
    "context_summary": json.dumps({**BASE_META, "messages_injected": 0}),
    "shell_exit_code": None,
    "shell_signal": None,
    "shell_timed_out": 0,
    "shell_stdout": None,
    "shell_stderr": None,
    "shell_stdout_path": None,
    "shell_stderr_path": None,
    "shell_stdout_bytes": None,
    "shell_stderr_bytes": None,
}
AGENT_PARENT_JOB: dict[str, Any] = {"id": "job-parent", "name": "Invoice scan", "session_target": "isolated"}
SHELL_PARENT_JOB: dict[str, Any] = {"id": "job-parent", "name": "Backup", "session_target": "shell"}
CHILD_RUN: dict[str, Any] = {"id": "run-child", "triggered_by_run": "run-parent"}


def prompt(job: dict[str, Any] | None = None, run: dict[str, Any] | None = None, **kwargs: Any) -> str:
    return build_prompt({**JOB, **(job or {})}, {**RUN, **(run or {})}, **kwargs)[0]


def meta(
    job: dict[str, Any] | None = None, run: dict[str, Any] | None = None, **kwargs: Any
) -> dict[str, Any]:
    return build_prompt({**JOB, **(job or {})}, {**RUN, **(run or {})}, **kwargs)[1]


def message(**fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "id": "m1", "from_agent": "ops", "to_agent": "main", "kind": "text", "subject": "Hello",
        "body": "Ping", "owner": None, "status": "pending", "priority": 0,
    }
    return {**base, **fields}


# -- individual blocks --------------------------------------------------------------------------


def test_header_only() -> None:
    text, context = build_prompt(JOB, RUN)
    assert text == "[scheduler:job-1 Daily report]\n\nSummarise the inbox."
    assert context == BASE_META


def test_header_renders_numeric_ids_and_missing_payload() -> None:
    text, _ = build_prompt({"id": 7, "name": "n"}, RUN)
    assert text == "[scheduler:7 n]\n\n"


def test_plan_note() -> None:
    assert prompt({"execution_intent": "plan"}) == HEADER + PLAN_NOTE + PAYLOAD
    assert meta({"execution_intent": "plan"})["execution_intent"] == "plan"


def test_read_only_note() -> None:
    assert prompt({"execution_read_only": 1}) == HEADER + READ_ONLY_NOTE + PAYLOAD
    assert meta({"execution_read_only": 1})["execution_read_only"] is True


def test_plan_and_read_only_note() -> None:
    text = prompt({"execution_intent": "plan", "execution_read_only": 1})
    assert text == HEADER + PLAN_READ_ONLY_NOTE + PAYLOAD


def test_execute_and_writable_has_no_note() -> None:
    assert prompt({"execution_intent": "execute", "execution_read_only": 0}) == HEADER + PAYLOAD


def test_thinking_note() -> None:
    assert prompt({"payload_thinking": "high"}) == HEADER + THINKING_NOTE + PAYLOAD
    assert meta({"payload_thinking": "high", "payload_model": "gpt-x"})["payload_thinking"] == "high"
    assert meta({"payload_model": "gpt-x"})["payload_model"] == "gpt-x"


def test_flush_note() -> None:
    assert prompt({"job_class": "pre_compaction_flush"}) == HEADER + FLUSH_NOTE + PAYLOAD
    assert meta({"job_class": "pre_compaction_flush"})["job_class"] == "pre_compaction_flush"


def test_global_scope_note() -> None:
    assert prompt({"payload_scope": "global"}) == HEADER + GLOBAL_NOTE + PAYLOAD
    assert meta({"payload_scope": "global"})["scope"] == "global"
    assert prompt({"payload_scope": "own"}) == HEADER + PAYLOAD


def test_one_message() -> None:
    text, context = build_prompt(JOB, RUN, pending_messages=[message()])
    assert text == HEADER + "\n\n--- Pending Messages ---\nFrom: ops | text | Hello\nPing\n---" + PAYLOAD
    assert context["messages_injected"] == 1


@pytest.mark.parametrize("kind", ["text", "result", "status", "system", "spawn"])
def test_message_kinds_without_prefix(kind: str) -> None:
    text = prompt(pending_messages=[message(kind=kind, owner="alice")])
    assert f"From: ops | {kind} | Hello\nPing\n---" in text


@pytest.mark.parametrize("kind", ["task", "decision", "constraint", "fact", "preference"])
def test_message_kinds_with_prefix(kind: str) -> None:
    assert f"From: ops | {kind} | Hello\n[{kind}] Ping\n---" in prompt(pending_messages=[message(kind=kind)])
    with_owner = prompt(pending_messages=[message(kind=kind, owner="alice")])
    assert f"From: ops | {kind} | Hello\n[{kind}] (owner: alice) Ping\n---" in with_owner


def test_six_messages_truncation_and_prefixes() -> None:
    long_body = "a" * 499 + "bc"  # 501 characters
    messages = [
        message(id="m1", kind="constraint", owner="lead", subject="Budget", body="Stay under $5."),
        message(id="m2", kind="decision", subject=None, body=long_body),
        message(id="m3", kind="fact", subject="", body="x" * 500),
        message(id="m4", kind="task", from_agent="planner", subject="Todo", body="Do A"),
        message(id="m5", kind="text", subject="Hi", body="é" * 501),
        message(id="m6", kind="text", subject="Sixth", body="never shown"),
    ]
    text, context = build_prompt(JOB, RUN, pending_messages=messages)
    expected_block = (
        "\n\n--- Pending Messages ---\n"
        "From: ops | constraint | Budget\n"
        "[constraint] (owner: lead) Stay under $5.\n"
        "---\n"
        "From: ops | decision | (no subject)\n"
        "[decision] " + "a" * 499 + "b\n[... message truncated]\n"
        "---\n"
        "From: ops | fact | (no subject)\n"
        "[fact] " + "x" * 500 + "\n"
        "---\n"
        "From: planner | task | Todo\n"
        "[task] Do A\n"
        "---\n"
        "From: ops | text | Hi\n"
        + "é" * 500 + "\n[... message truncated]\n"
        "---"
    )
    assert text == HEADER + expected_block + PAYLOAD
    assert "never shown" not in text
    assert context["messages_injected"] == 5


def test_non_pending_messages_are_skipped() -> None:
    messages = [message(id="d", status="delivered", body="old"), message(id="p", body="new")]
    assert [m["id"] for m in select_injectable_messages(messages)] == ["p"]
    text, context = build_prompt(JOB, RUN, pending_messages=messages)
    assert "old" not in text
    assert context["messages_injected"] == 1


def test_kind_priority_order() -> None:
    ordered = sorted(KIND_PRIORITY, key=KIND_PRIORITY.__getitem__)
    assert ordered == ["constraint", "decision", "fact", "task", "preference"]


# -- trigger context ----------------------------------------------------------------------------


def test_trigger_context_shell_parent() -> None:
    parent = {
        **AGENT_PARENT_ROW,
        "status": "error",
        "summary": "stdout:\nbackup failed",
        "error_message": "Shell exited with code 2",
        "shell_exit_code": 2,
        "shell_stdout": "backup failed",
        "shell_stderr": "disk full",
        "shell_stdout_path": "/var/artifacts/runs/run-parent/stdout.txt",
        "shell_stdout_bytes": 70000,
    }
    text, context = build_prompt(JOB, CHILD_RUN, parent_run=parent, parent_job=SHELL_PARENT_JOB)
    expected = (
        "\n\n--- Trigger Context ---\n"
        "Triggered by: Backup\n"
        "Parent run status: error\n"
        "Parent shell result:\n"
        "Exit code: 2\n"
        "Error: Shell exited with code 2\n"
        "stdout:\n"
        "backup failed\n"
        "stdout file: /var/artifacts/runs/run-parent/stdout.txt (70000 bytes)\n"
        "stderr:\n"
        "disk full\n"
        "---"
    )
    assert text == HEADER + expected + PAYLOAD
    assert context == {
        **BASE_META,
        "triggered_by_run": "run-parent",
        "parent_job_id": "job-parent",
        "parent_job_name": "Backup",
        "parent_run_status": "error",
        "parent_shell_exit_code": 2,
        "parent_shell_signal": None,
        "parent_shell_timed_out": False,
        "parent_shell_stdout_path": "/var/artifacts/runs/run-parent/stdout.txt",
        "parent_shell_stderr_path": None,
    }


def test_trigger_context_shell_parent_timed_out_with_signal_and_long_output() -> None:
    parent = {
        **AGENT_PARENT_ROW,
        "status": "timeout",
        "error_message": "Shell command timed out after 1000ms",
        "shell_signal": "SIGTERM",
        "shell_timed_out": 1,
        "shell_stdout": "s" * 3001,
        "shell_stderr_path": "/tmp/stderr.txt",
    }
    text, context = build_trigger_context(CHILD_RUN, parent, None)
    assert text == (
        "\n--- Trigger Context ---\n"
        "Triggered by: job-parent\n"
        "Parent run status: timeout\n"
        "Parent shell result:\n"
        "Timed out: true\n"
        "Signal: SIGTERM\n"
        "Error: Shell command timed out after 1000ms\n"
        "stdout:\n" + "s" * 2984 + "\n...[truncated]\n"
        "stderr file: /tmp/stderr.txt (0 bytes)\n"
        "---"
    )
    assert context["parent_job_name"] is None
    assert context["parent_shell_timed_out"] is True
    assert context["parent_shell_signal"] == "SIGTERM"


def test_trigger_context_successful_shell_parent_without_output() -> None:
    # A shell job's ok run has shell_exit_code NULL and maybe no output: its job says it is shell.
    parent = {**AGENT_PARENT_ROW, "summary": "(no output)"}
    text, context = build_trigger_context(CHILD_RUN, parent, SHELL_PARENT_JOB)
    assert text == (
        "\n--- Trigger Context ---\nTriggered by: Backup\nParent run status: ok\nParent shell result:\n---"
    )
    assert context["parent_shell_exit_code"] is None


def test_trigger_context_agent_parent_db_row_shows_output() -> None:
    """§17 #19: an agent parent loaded from the DB (shell_timed_out = 0) shows its output."""
    text, context = build_prompt(JOB, CHILD_RUN, parent_run=AGENT_PARENT_ROW, parent_job=AGENT_PARENT_JOB)
    expected = (
        "\n\n--- Trigger Context ---\n"
        "Triggered by: Invoice scan\n"
        "Parent run status: ok\n"
        "Parent run output:\n"
        "Found 3 new invoices.\n"
        "---"
    )
    assert text == HEADER + expected + PAYLOAD
    assert "Parent shell result:" not in text
    assert context == {
        **BASE_META,
        "triggered_by_run": "run-parent",
        "parent_job_id": "job-parent",
        "parent_job_name": "Invoice scan",
        "parent_run_status": "ok",
    }
    # Also without the parent job (deleted): still the agent output.
    text_without_job, _ = build_trigger_context(CHILD_RUN, AGENT_PARENT_ROW, None)
    assert "Parent run output:\nFound 3 new invoices." in text_without_job
    assert extract_shell_result(AGENT_PARENT_ROW, AGENT_PARENT_JOB) is None


def test_trigger_context_agent_parent_output_truncated_and_error_fallback() -> None:
    long_parent = {**AGENT_PARENT_ROW, "summary": "o" * 6000}
    text, _ = build_trigger_context(CHILD_RUN, long_parent, AGENT_PARENT_JOB)
    assert text.endswith("Parent run output:\n" + "o" * 5000 + "\n---")
    failed = {**AGENT_PARENT_ROW, "status": "error", "summary": "  ", "error_message": "e" * 2500}
    text, _ = build_trigger_context(CHILD_RUN, failed, AGENT_PARENT_JOB)
    assert text == (
        "\n--- Trigger Context ---\nTriggered by: Invoice scan\nParent run status: error\n"
        "Parent run error:\n" + "e" * 2000 + "\n---"
    )
    empty = {**AGENT_PARENT_ROW, "summary": None}
    text, _ = build_trigger_context(CHILD_RUN, empty, AGENT_PARENT_JOB)
    assert text == "\n--- Trigger Context ---\nTriggered by: Invoice scan\nParent run status: ok\n---"


def test_trigger_context_from_context_summary_shell_result() -> None:
    parent = {
        **AGENT_PARENT_ROW,
        "status": "error",
        "context_summary": json.dumps(
            {"shell_result": {"exit_code": 3, "stdout_excerpt": "partial", "stdout_bytes": 7}}
        ),
    }
    text, context = build_trigger_context(CHILD_RUN, parent, None)
    assert "Parent shell result:\nExit code: 3\nstdout:\npartial\n---" in text
    assert context["parent_shell_exit_code"] == 3


def test_missing_parent_run() -> None:
    text, context = build_prompt(JOB, CHILD_RUN, parent_run=None)
    assert text == HEADER + PAYLOAD
    assert context == {**BASE_META, "triggered_by_run": "run-parent", "parent_run_missing": True}
    assert build_trigger_context({"id": "r"}, AGENT_PARENT_ROW, None) == ("", {})
    assert build_trigger_context(None, None, None) == ("", {})


# -- retrieval and idempotency ------------------------------------------------------------------

RETRIEVAL = (
    "--- Prior Run Context ---\n"
    "[2024-05-01 10:00:00] first\n"
    "[2024-05-02 10:00:00] second\n"
    "--- End Prior Run Context ---"
)


def test_retrieval_text() -> None:
    text, context = build_prompt({**JOB, "context_retrieval": "recent"}, RUN, retrieval_text=RETRIEVAL)
    assert text == HEADER + "\n" + RETRIEVAL + PAYLOAD
    assert context["retrieval_results"] == 2
    assert context["context_retrieval"] == "recent"
    assert "retrieval_results" not in meta(retrieval_text="")


def test_idempotency_block() -> None:
    job = {"delivery_guarantee": "at-least-once"}
    assert prompt(job, {"idempotency_key": "key-123"}) == HEADER + IDEMPOTENCY_BLOCK + PAYLOAD
    assert prompt(job, {"idempotency_key": None}) == HEADER + PAYLOAD
    assert prompt({"delivery_guarantee": "at-most-once"}, {"idempotency_key": "key-123"}) == HEADER + PAYLOAD
    assert meta(job)["delivery_guarantee"] == "at-least-once"


def test_full_combination_order() -> None:
    job = {
        **JOB,
        "execution_intent": "plan",
        "execution_read_only": 1,
        "payload_thinking": "high",
        "job_class": "pre_compaction_flush",
        "payload_scope": "global",
        "delivery_guarantee": "at-least-once",
        "context_retrieval": "hybrid",
        "payload_model": "model-a",
        "auth_profile": "inherit",
    }
    run = {**CHILD_RUN, "idempotency_key": "key-123"}
    text, context = build_prompt(
        job, run, pending_messages=[message()], parent_run=AGENT_PARENT_ROW, parent_job=AGENT_PARENT_JOB,
        retrieval_text=RETRIEVAL,
    )
    expected = (
        HEADER
        + PLAN_READ_ONLY_NOTE
        + THINKING_NOTE
        + FLUSH_NOTE
        + GLOBAL_NOTE
        + "\n\n--- Pending Messages ---\nFrom: ops | text | Hello\nPing\n---"
        + "\n\n--- Trigger Context ---\nTriggered by: Invoice scan\nParent run status: ok\n"
        + "Parent run output:\nFound 3 new invoices.\n---"
        + "\n"
        + RETRIEVAL
        + IDEMPOTENCY_BLOCK
        + PAYLOAD
    )
    assert text == expected
    assert list(context) == [
        "messages_injected", "scope", "job_class", "delivery_guarantee", "context_retrieval",
        "execution_intent", "execution_read_only", "payload_model", "payload_thinking", "auth_profile",
        "triggered_by_run", "parent_job_id", "parent_job_name", "parent_run_status", "retrieval_results",
    ]
    assert context["payload_model"] == "model-a"
    assert context["auth_profile"] == "inherit"
    assert context["messages_injected"] == 1


# -- sentinels ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("HEARTBEAT_OK", True),
        ("HEARTBEAT_OK: fine", True),
        ("HEARTBEAT_OK all quiet", True),
        ("  HEARTBEAT_OK\n", True),
        ("HEARTBEAT_OK\nmore", True),
        ("HEARTBEAT_OKAY", False),
        ("HEARTBEAT_OK.", False),
        ("ok HEARTBEAT_OK", False),
        ("heartbeat_ok", False),
        ("", False),
    ],
)
def test_matches_sentinel_table(content: str, expected: bool) -> None:
    assert matches_sentinel(content, "HEARTBEAT_OK") is expected


@pytest.mark.parametrize("token", SENTINELS)
def test_every_sentinel_token(token: str) -> None:
    assert matches_sentinel(token, token)
    assert matches_sentinel(f"{token}: reason", token)
    assert not matches_sentinel(f"{token}X", token)
    assert not matches_sentinel(f"The {token}", token)


def test_sentinels_constant() -> None:
    assert SENTINELS == ("HEARTBEAT_OK", "NO_FLUSH", "IDEMPOTENT_SKIP", "TASK_FAILED")


# -- transient and drain errors -----------------------------------------------------------------


@pytest.mark.parametrize(
    "content",
    [
        "The model is temporarily overloaded",
        "service unavailable",
        "Service is unavailable right now",
        "rate limited",
        "Rate limit exceeded",
        "ratelimits hit",
        "Too Many Requests",
        "502 server error",
        "500 Internal Server Error",
        "gateway timeout",
        "502 Bad Gateway",
        "model is overloaded",
        "model unavailable",
        "API error",
        "API unavailable",
        "api timeout",
        "capacity exceeded",
        "capacity limit reached",
        "retry after 30s",
        "please retry later",
        "retry in 5 seconds",
        "context length exceeded",
        "context window exceeded",
        "token limit exceeded",
        "Gateway is draining for restart",
        "new tasks are not accepted",
        "the gateway will be draining before a restart",
    ],
)
def test_transient_patterns(content: str) -> None:
    assert detect_transient_error(content)
    assert detect_transient_error(f"  {content.upper()}  ")


@pytest.mark.parametrize(
    "content",
    [
        "",
        "   ",
        "HEARTBEAT_OK",
        "All 12 tasks completed successfully.",
        "The deploy went fine; no errors.",
        "5000 server error",
        "retry in x",
        "rapi error",
    ],
)
def test_not_transient(content: str) -> None:
    assert not detect_transient_error(content)


def test_transient_none() -> None:
    assert not detect_transient_error(None)


def test_transient_only_first_500_chars() -> None:
    assert detect_transient_error("x" * 480 + " rate limited")
    assert not detect_transient_error("x" * 500 + " rate limited")
    assert not detect_transient_error("A long report. " * 40 + "We hit a rate limit yesterday.")
    # Measured after trimming.
    assert detect_transient_error(" " * 600 + "rate limited")


@pytest.mark.parametrize(
    ("message_text", "expected"),
    [
        ("Gateway is draining for restart; new tasks are not accepted", True),
        ("GATEWAY IS DRAINING", True),
        ("new tasks are not accepted", True),
        ("Chat completions failed (503): gateway is draining", True),
        ("rate limited", False),
        ("service unavailable", False),
        ("", False),
        (None, False),
        ("The gateway timed out", False),
    ],
)
def test_is_drain_error(message_text: str | None, expected: bool) -> None:
    assert is_drain_error(message_text) is expected


# -- reply interpretation -----------------------------------------------------------------------

OK_REPLY = "Report sent: 3 invoices."
TRANSIENT_REPLY = "Error: rate limited, retry later"

REPLY_CASES: list[tuple[str, str, str, str | None, str | None, bool]] = [
    # (mode, content, status, error_message, sentinel, deliver)
    ("announce", OK_REPLY, "ok", None, None, False),
    ("announce", "HEARTBEAT_OK", "ok", None, "HEARTBEAT_OK", False),
    ("announce", "NO_FLUSH", "ok", None, "NO_FLUSH", False),
    ("announce", "IDEMPOTENT_SKIP: done before", "ok", None, "IDEMPOTENT_SKIP", False),
    ("announce", "TASK_FAILED: no access", "error", "Agent signalled TASK_FAILED", "TASK_FAILED", True),
    ("announce", TRANSIENT_REPLY, "error", "Transient error in agent reply", None, True),
    ("announce", "", "ok", None, None, False),
    ("announce-always", OK_REPLY, "ok", None, None, True),
    ("announce-always", "HEARTBEAT_OK", "ok", None, "HEARTBEAT_OK", False),
    ("announce-always", "NO_FLUSH", "ok", None, "NO_FLUSH", False),
    ("announce-always", "IDEMPOTENT_SKIP", "ok", None, "IDEMPOTENT_SKIP", False),
    ("announce-always", "TASK_FAILED", "error", "Agent signalled TASK_FAILED", "TASK_FAILED", True),
    ("announce-always", TRANSIENT_REPLY, "error", "Transient error in agent reply", None, True),
    ("announce-always", "   ", "ok", None, None, False),
    ("none", OK_REPLY, "ok", None, None, False),
    ("none", "HEARTBEAT_OK", "ok", None, "HEARTBEAT_OK", False),
    ("none", "TASK_FAILED", "error", "Agent signalled TASK_FAILED", "TASK_FAILED", False),
    ("none", TRANSIENT_REPLY, "error", "Transient error in agent reply", None, False),
]


@pytest.mark.parametrize(("mode", "content", "status", "error", "sentinel", "deliver"), REPLY_CASES)
def test_interpret_reply_table(
    mode: str, content: str, status: str, error: str | None, sentinel: str | None, deliver: bool
) -> None:
    verdict = interpret_reply(content, mode)
    assert verdict == ReplyVerdict(
        status=status,  # type: ignore[arg-type]
        error_message=error,
        sentinel=sentinel,
        deliver=deliver,
        summary=content[:5000],
        keep_idempotency_key=status == "ok",
    )


def test_interpret_reply_sentinel_with_transient_text() -> None:
    verdict = interpret_reply("HEARTBEAT_OK: recovered after rate limit", "announce-always")
    assert verdict.status == "error"
    assert verdict.error_message == "Transient error in agent reply"
    assert verdict.sentinel == "HEARTBEAT_OK"
    assert verdict.deliver is False
    assert verdict.keep_idempotency_key is False


def test_interpret_reply_summary_is_first_5000_chars() -> None:
    content = "r" * 7000
    verdict = interpret_reply(content, "announce-always")
    assert verdict.summary == "r" * 5000
    assert verdict.status == "ok"
    assert verdict.deliver is True


def test_task_failed_wins_over_transient_message() -> None:
    verdict = interpret_reply("TASK_FAILED: API error", "announce")
    assert verdict.error_message == "Agent signalled TASK_FAILED"


# -- chunking -----------------------------------------------------------------------------------


def utf8(text: str) -> int:
    return len(text.encode("utf-8"))


def bodies(parts: list[str]) -> list[str]:
    total = len(parts)
    result = []
    for index, part in enumerate(parts, start=1):
        prefix = f"[{index}/{total}] "
        assert part.startswith(prefix)
        result.append(part[len(prefix):])
    return result


def test_one_chunk_has_no_prefix() -> None:
    assert chunk_message("hello world", 4096) == ["hello world"]
    exact = "é" * 50  # 100 bytes
    assert chunk_message(exact, 100) == [exact]
    assert chunk_message("", 20) == [""]


def test_chunk_on_line_boundaries_golden() -> None:
    lines = [f"Line {i:02d}: the quick brown fox jumps over the lazy dog." for i in range(1, 13)]
    parts = chunk_message("\n".join(lines), 300)
    assert parts == [
        "[1/3] " + "\n".join(lines[0:5]),
        "[2/3] " + "\n".join(lines[5:10]),
        "[3/3] " + "\n".join(lines[10:12]),
    ]


def test_chunk_on_spaces_golden() -> None:
    parts = chunk_message(" ".join(["word"] * 130), 300)
    assert parts == [
        "[1/3] " + " ".join(["word"] * 57),
        "[2/3] " + " ".join(["word"] * 57),
        "[3/3] " + " ".join(["word"] * 16),
    ]


def test_very_long_word_is_hard_split() -> None:
    parts = chunk_message("x" * 700, 300)
    assert parts == ["[1/3] " + "x" * 288, "[2/3] " + "x" * 288, "[3/3] " + "x" * 124]
    word = "abcdefghij" * 1000
    small = chunk_message(word, 100)
    assert all(utf8(part) <= 100 for part in small)
    assert "".join(bodies(small)) == word


def test_paragraphs_preferred_and_order_preserved() -> None:
    paragraphs = [f"Paragraph {i}. " + "text " * 15 for i in range(10)]
    text = "\n\n".join(p.strip() for p in paragraphs)
    parts = chunk_message(text, 120)
    assert all(utf8(part) <= 120 for part in parts)
    assert " ".join(bodies(parts)).split() == text.split()


def test_unicode_never_split_and_limit_in_bytes() -> None:
    text = ("naïve café 中文字符 😀🎉 " * 40).strip()
    for limit in (20, 33, 64, 101, 300):
        parts = chunk_message(text, limit)
        assert len(parts) > 1
        assert all(utf8(part) <= limit for part in parts)
        assert "".join(bodies(parts)).replace(" ", "") == text.replace(" ", "")
    emoji = "😀" * 100  # 400 bytes, no break points
    parts = chunk_message(emoji, 50)
    assert all(utf8(part) <= 50 for part in parts)
    assert "".join(bodies(parts)) == emoji


def test_random_texts_respect_limits() -> None:
    rnd = random.Random(1234)
    alphabet = ["word ", "a", "\n", "\n\n", " ", "é", "中", "😀", "longwordwithoutspaces" * 4, "\t"]
    for _ in range(200):
        text = "".join(rnd.choice(alphabet) for _ in range(rnd.randint(1, 600)))
        limit = rnd.choice([16, 40, 100, 268, 1000])
        parts = chunk_message(text, limit)
        assert all(utf8(part) <= limit for part in parts)
        if len(parts) == 1 and utf8(text) <= limit:
            assert parts == [text]
            continue
        assert all(body.strip() for body in bodies(parts))
        assert "".join("".join(bodies(parts)).split()) == "".join(text.split())


def test_many_chunks_widen_the_prefix_reserve() -> None:
    parts = chunk_message("a" * 200_000, 30)
    assert len(parts) == 12_500
    assert parts[0] == "[1/12500] " + "a" * 16
    assert all(utf8(part) <= 30 for part in parts)


def test_limit_too_small() -> None:
    with pytest.raises(ValueError):
        chunk_message("a" * 100, 15)


def test_channel_limits_and_split_for_channel() -> None:
    assert CHANNEL_LIMITS == {"telegram": 4096}
    assert TELEGRAM_MAX_MESSAGE_LENGTH == 4096
    assert DEFAULT_CHANNEL_LIMIT is None
    assert split_message_for_channel("telegram", "short") == ["short"]
    long_text = "y" * (TELEGRAM_MAX_MESSAGE_LENGTH + 250)
    parts = split_message_for_channel("telegram", long_text)
    assert len(parts) >= 2
    assert parts[0].startswith("[1/")
    assert all(utf8(part) <= TELEGRAM_MAX_MESSAGE_LENGTH for part in parts)
    assert split_message_for_channel("discord", long_text) == [long_text]
    assert split_message_for_channel(None, long_text) == [long_text]
    assert channel_limit("telegram") == 4096
    assert channel_limit("slack") is None
    assert channel_limit(None) is None
    assert chunk_message(long_text, None) == [long_text]
