"""Agent prompts: the text the scheduler sends its agents.

Port of the reference's ``buildJobPrompt`` (features §4.6) and ``prompt-context.js`` (trigger
context). Agents depend on the exact wording, so every user-visible string here matches the
reference character for character. What a reply means is ``strategies/reply.py``; splitting a
result for a channel is ``gateway/channels.py``.

Pure functions over plain mappings: no database access. Callers pass the rows they loaded
(jobs, runs, messages) as dicts or ``sqlite3.Row``-like mappings.

Differences from the reference, all deliberate:

* Trigger context (§17 #19): the reference takes the "Parent shell result:" branch for every
  DB-loaded parent run because ``shell_timed_out`` is ``NOT NULL DEFAULT 0``, hiding an agent
  parent's output. Here the shell branch is used only when the parent job is a shell job or the
  run's shell columns actually carry data; otherwise the child sees ``Parent run output:`` /
  ``Parent run error:`` as intended.
* Lengths (``[:500]``, ``[:5000]`` …) count Unicode code points where JavaScript counts UTF-16
  code units; identical for text in the Basic Multilingual Plane.
* Pending messages are chosen and ordered by the caller (the reference's ``getInbox``); see
  :func:`select_injectable_messages`. §17 #12 (job results being swallowed by injection) is the
  caller's selection concern.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Final

from scheduler.jstext import js_trim, utf8_len

# -- JavaScript rendering of database values ----------------------------------------------------


def _js_str(value: Any) -> str:
    """How a JavaScript template literal renders a value loaded from the database."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _text(value: Any) -> str:
    """A string column, or '' for NULL / non-string values (JavaScript ``value || ''`` on text)."""
    return value if isinstance(value, str) else ""


def _has_text(value: Any) -> bool:
    """JavaScript ``value?.trim()`` truthiness for a text column."""
    return isinstance(value, str) and js_trim(value) != ""


def _or_none(value: Any) -> Any:
    """JavaScript ``value || null``."""
    return value if value else None


# -- Pending messages ---------------------------------------------------------------------------

MAX_INJECTED_MESSAGES: Final = 5
MESSAGE_BODY_LIMIT: Final = 500
MESSAGE_TRUNCATED_SUFFIX: Final = "\n[... message truncated]"
# Kinds rendered without a "[<kind>] (owner: …) " prefix.
UNLABELLED_KINDS: Final = frozenset({"text", "result", "status", "system", "spawn"})
# Inbox ordering (§9.1): lower ranks first; every other kind ranks 5. Then priority DESC, then
# created_at ASC. Kind outranks numeric priority.
KIND_PRIORITY: Final[Mapping[str, int]] = MappingProxyType(
    {"constraint": 0, "decision": 1, "fact": 2, "task": 3, "preference": 4}
)
OTHER_KIND_PRIORITY: Final = 5


def select_injectable_messages(messages: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """The messages :func:`build_prompt` injects, in the caller's order.

    Skips any message whose ``status`` is set to something other than ``pending`` (the
    reference's guard against re-showing delivered messages) and keeps at most five. The caller
    marks exactly these messages delivered.
    """
    chosen: list[Mapping[str, Any]] = []
    for msg in messages:
        status = msg.get("status")
        if status and status != "pending":
            continue
        chosen.append(msg)
        if len(chosen) == MAX_INJECTED_MESSAGES:
            break
    return chosen


def _message_lines(msg: Mapping[str, Any]) -> list[str]:
    kind = msg.get("kind")
    owner = msg.get("owner")
    kind_label = ""
    if kind and kind not in UNLABELLED_KINDS:
        kind_label = f"[{_js_str(kind)}]" + (f" (owner: {_js_str(owner)})" if owner else "") + " "
    subject = msg.get("subject")
    header = f"From: {_js_str(msg.get('from_agent'))} | {_js_str(kind)} | "
    header += _js_str(subject) if subject else "(no subject)"
    body = msg.get("body")
    body_text = "" if body is None else _js_str(body)
    if len(body_text) > MESSAGE_BODY_LIMIT:
        body_text = body_text[:MESSAGE_BODY_LIMIT] + MESSAGE_TRUNCATED_SUFFIX
    return [header, f"{kind_label}{body_text}", "---"]


# -- Trigger context (prompt-context.js) -------------------------------------------------------

TRIGGER_OUTPUT_LIMIT: Final = 5000
TRIGGER_ERROR_LIMIT: Final = 2000
TRIGGER_STREAM_LIMIT: Final = 3000
_STREAM_TRUNCATED_SUFFIX: Final = "\n...[truncated]"


@dataclass(frozen=True)
class _ShellResult:
    exit_code: Any
    signal: Any
    timed_out: bool
    stdout: str
    stderr: str
    stdout_path: Any
    stderr_path: Any
    stdout_bytes: Any
    stderr_bytes: Any
    error_message: Any


def _truncate_stream(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    return text[: max(0, limit - 16)] + _STREAM_TRUNCATED_SUFFIX


def _shell_columns_carry_data(run: Mapping[str, Any]) -> bool:
    """Whether a run row's shell columns hold a shell result (not just their defaults).

    ``shell_timed_out`` is ``NOT NULL DEFAULT 0`` on every run, so only a true value counts.
    """
    if run.get("shell_exit_code") is not None:
        return True
    if run.get("shell_timed_out"):
        return True
    return any(
        _text(run.get(column))
        for column in ("shell_signal", "shell_stdout", "shell_stderr", "shell_stdout_path",
                       "shell_stderr_path")
    )


def _shell_result_from_columns(run: Mapping[str, Any]) -> _ShellResult:
    stdout = _text(run.get("shell_stdout"))
    stderr = _text(run.get("shell_stderr"))
    stdout_bytes = run.get("shell_stdout_bytes")
    stderr_bytes = run.get("shell_stderr_bytes")
    return _ShellResult(
        exit_code=run.get("shell_exit_code"),
        signal=run.get("shell_signal"),
        timed_out=bool(run.get("shell_timed_out")),
        stdout=stdout,
        stderr=stderr,
        stdout_path=_or_none(run.get("shell_stdout_path")),
        stderr_path=_or_none(run.get("shell_stderr_path")),
        stdout_bytes=stdout_bytes if stdout_bytes is not None else utf8_len(stdout),
        stderr_bytes=stderr_bytes if stderr_bytes is not None else utf8_len(stderr),
        error_message=_or_none(run.get("error_message")),
    )


def _shell_result_from_context(run: Mapping[str, Any]) -> _ShellResult | None:
    raw = run.get("context_summary")
    if not raw:
        return None
    parsed: Any = raw
    if isinstance(raw, str | bytes):
        try:
            parsed = json.loads(raw)
        except ValueError:
            return None
    shell = parsed.get("shell_result") if isinstance(parsed, Mapping) else None
    if not shell or not isinstance(shell, Mapping):
        return None
    stdout_bytes = shell.get("stdout_bytes")
    stderr_bytes = shell.get("stderr_bytes")
    return _ShellResult(
        exit_code=shell.get("exit_code"),
        signal=shell.get("signal"),
        timed_out=bool(shell.get("timed_out")),
        stdout=_text(shell.get("stdout_excerpt")),
        stderr=_text(shell.get("stderr_excerpt")),
        stdout_path=_or_none(shell.get("stdout_path")),
        stderr_path=_or_none(shell.get("stderr_path")),
        stdout_bytes=stdout_bytes if stdout_bytes is not None else 0,
        stderr_bytes=stderr_bytes if stderr_bytes is not None else 0,
        error_message=_or_none(shell.get("error_message")),
    )


def extract_shell_result(
    parent_run: Mapping[str, Any], parent_job: Mapping[str, Any] | None = None
) -> dict[str, Any] | None:
    """The parent's shell result as the reference's ``extractShellResultFromRun`` shapes it.

    Fixed (§17 #19): None for agent runs loaded from the database. A run counts as a shell run
    when its shell columns carry data, when its ``context_summary`` holds a ``shell_result``, or
    when its job is a shell job (``session_target='shell'``).
    """
    result = _extract_shell_result(parent_run, parent_job)
    if result is None:
        return None
    return {
        "exitCode": result.exit_code,
        "signal": result.signal,
        "timedOut": result.timed_out,
        "stdout": result.stdout,
        "stderr": result.stderr,
        "stdoutPath": result.stdout_path,
        "stderrPath": result.stderr_path,
        "stdoutBytes": result.stdout_bytes,
        "stderrBytes": result.stderr_bytes,
        "errorMessage": result.error_message,
    }


def _extract_shell_result(
    parent_run: Mapping[str, Any], parent_job: Mapping[str, Any] | None
) -> _ShellResult | None:
    if _shell_columns_carry_data(parent_run):
        return _shell_result_from_columns(parent_run)
    from_context = _shell_result_from_context(parent_run)
    if from_context is not None:
        return from_context
    if parent_job is not None and parent_job.get("session_target") == "shell":
        return _shell_result_from_columns(parent_run)
    return None


def build_trigger_context(
    run: Mapping[str, Any] | None,
    parent_run: Mapping[str, Any] | None,
    parent_job: Mapping[str, Any] | None = None,
) -> tuple[str, dict[str, Any]]:
    """The ``--- Trigger Context ---`` block and its metadata (reference ``buildTriggeredRunContext``).

    ``parent_run`` is the row ``run['triggered_by_run']`` points at (None when it no longer
    exists) and ``parent_job`` that run's job (None when deleted). Returns ``('', {})`` for runs
    not triggered by another run; the text starts with a newline (a blank line in the prompt).
    """
    if not run or not run.get("triggered_by_run"):
        return "", {}
    if parent_run is None:
        return "", {"triggered_by_run": run.get("triggered_by_run"), "parent_run_missing": True}

    parent_name = parent_job.get("name") if parent_job is not None else None
    lines = [
        "",
        "--- Trigger Context ---",
        f"Triggered by: {_js_str(parent_name or parent_run.get('job_id'))}",
        f"Parent run status: {_js_str(parent_run.get('status'))}",
    ]
    shell = _extract_shell_result(parent_run, parent_job)
    if shell is not None:
        lines.append("Parent shell result:")
        if shell.timed_out:
            lines.append("Timed out: true")
        if isinstance(shell.exit_code, int | float) and not isinstance(shell.exit_code, bool):
            lines.append(f"Exit code: {_js_str(shell.exit_code)}")
        if shell.signal:
            lines.append(f"Signal: {_js_str(shell.signal)}")
        if shell.error_message:
            lines.append(f"Error: {_js_str(shell.error_message)}")
        for stream, text, path, size in (
            ("stdout", shell.stdout, shell.stdout_path, shell.stdout_bytes),
            ("stderr", shell.stderr, shell.stderr_path, shell.stderr_bytes),
        ):
            if js_trim(text):
                lines.append(f"{stream}:")
                lines.append(_truncate_stream(text, TRIGGER_STREAM_LIMIT))
            if path:
                lines.append(f"{stream} file: {_js_str(path)} ({_js_str(size or 0)} bytes)")
    elif _has_text(parent_run.get("summary")):
        lines.append("Parent run output:")
        lines.append(parent_run["summary"][:TRIGGER_OUTPUT_LIMIT])
    elif _has_text(parent_run.get("error_message")):
        lines.append("Parent run error:")
        lines.append(parent_run["error_message"][:TRIGGER_ERROR_LIMIT])
    lines.append("---")

    meta: dict[str, Any] = {
        "triggered_by_run": parent_run.get("id"),
        "parent_job_id": parent_run.get("job_id"),
        "parent_job_name": parent_name or None,
        "parent_run_status": parent_run.get("status"),
    }
    if shell is not None:
        meta.update(
            parent_shell_exit_code=shell.exit_code,
            parent_shell_signal=shell.signal,
            parent_shell_timed_out=shell.timed_out,
            parent_shell_stdout_path=shell.stdout_path or None,
            parent_shell_stderr_path=shell.stderr_path or None,
        )
    return "\n".join(lines), meta


# -- Prompt -------------------------------------------------------------------------------------


_PLAN_LINE: Final = (
    "This run is planning-only. Analyze, reason, and propose actions, but do not execute external "
    "side effects."
)
_READ_ONLY_LINE: Final = (
    "This run is read-only. Inspect and summarize state, but do not execute external side effects."
)
_FORBIDDEN_LINE: Final = (
    "Treat every write, send, post, mutation, or shelling out for side effects as forbidden."
)


def build_execution_intent_note(job: Mapping[str, Any]) -> str:
    """The execution-boundary system note for plan / read-only jobs ('' otherwise)."""
    plan = job.get("execution_intent") == "plan"
    read_only = bool(job.get("execution_read_only"))
    if not plan and not read_only:
        return ""
    lines = ["[SYSTEM NOTE -- execution boundary]", _PLAN_LINE if plan else _READ_ONLY_LINE]
    if read_only:
        lines.append(_FORBIDDEN_LINE)
    lines.append("If a concrete change is needed, describe it as a recommendation instead of performing it.")
    lines.append("[END SYSTEM NOTE]")
    return "\n".join(lines)


_GLOBAL_SCOPE_NOTE: Final = (
    "\n[SYSTEM NOTE -- scope=global]",
    "This job has cross-session sub-agent visibility enabled.",
    "When you need to list or inspect sub-agents, do NOT use `subagents list`",
    "(which only shows sub-agents spawned by the current session).",
    "Instead, call `sessions_list` with no session filter to enumerate ALL active",
    "sessions across every requester, then filter by session key prefix or agent id.",
    "This lets you observe sub-agents spawned from the main Telegram session or any",
    "other session -- not just this isolated scheduler session.",
    "[END SYSTEM NOTE]",
)

_FLUSH_NOTE: Final = (
    "\n[SYSTEM: Pre-compaction flush required]",
    "Write a structured summary of: active decisions, constraints, task owners, open questions.",
    "Format as labeled sections. If nothing needs flushing, respond with exactly: NO_FLUSH",
    "[END SYSTEM]",
)


def build_prompt(
    job: Mapping[str, Any],
    run: Mapping[str, Any],
    *,
    pending_messages: Sequence[Mapping[str, Any]] = (),
    parent_job: Mapping[str, Any] | None = None,
    parent_run: Mapping[str, Any] | None = None,
    retrieval_text: str | None = None,
    retrieval_results: int | None = None,
) -> tuple[str, dict[str, Any]]:
    """The agent prompt for ``run`` of ``job`` and the metadata stored as ``runs.context_summary``.

    ``pending_messages``: the agent's inbox as the caller selected and ordered it; the messages
    :func:`select_injectable_messages` picks are injected (the caller marks them delivered).
    ``parent_run``/``parent_job``: the run named by ``run['triggered_by_run']`` and its job.
    ``retrieval_text``: the ``--- Prior Run Context ---`` block, appended as given;
    ``retrieval_results``: how many runs it shows (by default counted as the reference does, by
    its ``\n[`` occurrences, which a prior output holding that sequence would inflate).
    """
    parts: list[str] = [f"[scheduler:{_js_str(job.get('id'))} {_js_str(job.get('name'))}]"]

    execution_note = build_execution_intent_note(job)
    if execution_note:
        parts.append(f"\n{execution_note}")

    thinking = job.get("payload_thinking")
    if thinking:
        parts.extend(
            (
                "\n[SYSTEM NOTE -- model policy]",
                f"Prefer reasoning depth: {_js_str(thinking)}.",
                "[END SYSTEM NOTE]",
            )
        )

    if job.get("job_class") == "pre_compaction_flush":
        parts.extend(_FLUSH_NOTE)

    if job.get("payload_scope") == "global":
        parts.extend(_GLOBAL_SCOPE_NOTE)

    injected = select_injectable_messages(pending_messages)
    if injected:
        parts.append("\n--- Pending Messages ---")
        for msg in injected:
            parts.extend(_message_lines(msg))

    meta: dict[str, Any] = {
        "messages_injected": len(injected),
        "scope": job.get("payload_scope") or "own",
        "job_class": job.get("job_class") or "standard",
        "delivery_guarantee": job.get("delivery_guarantee") or "at-most-once",
        "context_retrieval": job.get("context_retrieval") or "none",
        "execution_intent": job.get("execution_intent") or "execute",
        "execution_read_only": bool(job.get("execution_read_only")),
        "payload_model": job.get("payload_model") or None,
        "payload_thinking": thinking or None,
        "auth_profile": job.get("auth_profile") or None,
    }

    trigger_text, trigger_meta = build_trigger_context(run, parent_run, parent_job)
    if trigger_text:
        parts.append(trigger_text)
        meta.update(trigger_meta)
    elif trigger_meta:
        # The reference merges metadata only with text, so a missing parent leaves no trace.
        # Keeping parent_run_missing tells operators why the child saw no context.
        meta.update(trigger_meta)

    if retrieval_text:
        parts.append(retrieval_text)
        meta["retrieval_results"] = (retrieval_text.count("\n[") if retrieval_results is None
                                     else retrieval_results)

    idempotency_key = run.get("idempotency_key")
    if idempotency_key and job.get("delivery_guarantee") == "at-least-once":
        parts.extend(
            (
                f"\n[IDEMPOTENCY KEY: {_js_str(idempotency_key)}]",
                "This is an at-least-once job. Before performing side effects, verify this key",
                "has not already been processed. If you've already handled this exact execution,",
                "respond with: IDEMPOTENT_SKIP",
            )
        )

    payload = job.get("payload_message")
    parts.append("\n" + ("" if payload is None else _js_str(payload)))
    return "\n".join(parts), meta
