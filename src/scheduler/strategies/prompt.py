"""Agent prompts and agent replies: the text contract between the scheduler and its agents.

Port of the reference's ``buildJobPrompt`` (features §4.6), ``prompt-context.js`` (trigger
context), ``dispatcher-utils.js`` (sentinels §4.7, transient/drain detection §4.8), the reply
interpretation of ``executeAgent`` (§4.2 step 8) and ``gateway.js`` message chunking (§8.5).
Agents depend on the exact wording, so every user-visible string here matches the reference
character for character.

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
* Chunking never splits a character (the reference can split a surrogate pair), never emits an
  empty part, and always keeps ``prefix + part`` within the limit (the reference's 256-byte floor
  can exceed small limits).
* Pending messages are chosen and ordered by the caller (the reference's ``getInbox``); see
  :func:`select_injectable_messages`. §17 #12 (job results being swallowed by injection) is the
  caller's selection concern.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Final, Literal

from scheduler.models.enums import ANNOUNCE_MODES

# -- JavaScript string semantics --------------------------------------------------------------

# Characters JavaScript's String.prototype.trim() and the regex class \s treat as whitespace.
_JS_WHITESPACE: Final = (
    "\t\n\v\f\r \u00a0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a"
    "\u2028\u2029\u202f\u205f\u3000\ufeff"
)
# The same set as the body of a regex character class.
_JS_WS_CLASS: Final = (
    r"\t\n\x0b\x0c\r \u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000\ufeff"
)
_JS_S: Final = f"[{_JS_WS_CLASS}]"
# JavaScript's "." without the s flag: anything but a line terminator.
_JS_DOT: Final = "[^\n\r\u2028\u2029]"


def _js_trim(text: str) -> str:
    return text.strip(_JS_WHITESPACE)


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
    return isinstance(value, str) and _js_trim(value) != ""


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
        stdout_bytes=stdout_bytes if stdout_bytes is not None else _utf8_len(stdout),
        stderr_bytes=stderr_bytes if stderr_bytes is not None else _utf8_len(stderr),
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
            if _js_trim(text):
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
) -> tuple[str, dict[str, Any]]:
    """The agent prompt for ``run`` of ``job`` and the metadata stored as ``runs.context_summary``.

    ``pending_messages``: the agent's inbox as the caller selected and ordered it; the messages
    :func:`select_injectable_messages` picks are injected (the caller marks them delivered).
    ``parent_run``/``parent_job``: the run named by ``run['triggered_by_run']`` and its job.
    ``retrieval_text``: the ``--- Prior Run Context ---`` block, appended as given.
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
        meta["retrieval_results"] = retrieval_text.count("\n[")

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


# -- Sentinels (§4.7) ---------------------------------------------------------------------------

SENTINELS: Final = ("HEARTBEAT_OK", "NO_FLUSH", "IDEMPOTENT_SKIP", "TASK_FAILED")
# Sentinels that suppress delivery (status stays ok).
SUPPRESSING_SENTINELS: Final = frozenset({"HEARTBEAT_OK", "NO_FLUSH", "IDEMPOTENT_SKIP"})
FAILURE_SENTINEL: Final = "TASK_FAILED"


def matches_sentinel(content: str | None, token: str) -> bool:
    """Whether the trimmed reply starts with ``token`` followed by end, whitespace or ``:``."""
    if not content:
        return False
    pattern = re.escape(token) + rf"(?:\Z|[{_JS_WS_CLASS}:])"
    return re.match(pattern, _js_trim(content)) is not None


# -- Transient / drain errors (§4.8) ------------------------------------------------------------

TRANSIENT_SCAN_CHARS: Final = 500

# The reference's patterns, with JavaScript's \s and "." spelled out; compiled ASCII +
# IGNORECASE so \b, \d and case folding behave like a JavaScript regex without the u flag.
_TRANSIENT_SOURCES: Final = (
    r"\btemporarily overloaded\b",
    r"\bservice\s+(?:is\s+)?unavailable\b",
    r"\brate\s*limit(?:ed|s?)?\b",
    r"\btoo\s+many\s+requests\b",
    r"\b5[0-9]{2}\b\s+(?:internal\s+)?server\s+error\b",
    r"\bgateway\s+timeout\b",
    r"\bbad\s+gateway\b",
    r"\bmodel\s+(?:is\s+)?(?:overloaded|unavailable)\b",
    r"\bAPI\s+(?:error|unavailable|timeout)\b",
    r"\bcapacity\s+(?:exceeded|limit)\b",
    r"\bretry\s+(?:after|later|in\s+\d)\b",
    r"\bcontext\s+(?:length|window)\s+exceeded\b",
    r"\btoken\s+limit\s+exceeded\b",
    r"gateway\s+is\s+draining",
    r"new\s+tasks\s+are\s+not\s+accepted",
    r"gateway.*draining.*restart",
)
_DRAIN_SOURCES: Final = (
    r"gateway\s+is\s+draining",
    r"new\s+tasks\s+are\s+not\s+accepted",
)


def _compile_js(source: str) -> re.Pattern[str]:
    translated = source.replace(r"\s", _JS_S).replace(".*", f"{_JS_DOT}*")
    return re.compile(translated, re.ASCII | re.IGNORECASE)


TRANSIENT_ERROR_PATTERNS: Final = tuple(_compile_js(source) for source in _TRANSIENT_SOURCES)
DRAIN_PATTERNS: Final = tuple(_compile_js(source) for source in _DRAIN_SOURCES)


def detect_transient_error(content: str | None) -> bool:
    """Whether the first 500 characters of the trimmed reply look like a gateway/model error."""
    if not content:
        return False
    trimmed = _js_trim(content)
    if not trimmed:
        return False
    head = trimmed[:TRANSIENT_SCAN_CHARS]
    return any(pattern.search(head) for pattern in TRANSIENT_ERROR_PATTERNS)


def is_drain_error(message: str | None) -> bool:
    """Whether an exception message says the gateway is draining (restart pending)."""
    trimmed = _js_trim("" if message is None else str(message))
    if not trimmed:
        return False
    return any(pattern.search(trimmed) for pattern in DRAIN_PATTERNS)


# -- Reply interpretation (§4.2 step 8) ---------------------------------------------------------

SUMMARY_LIMIT: Final = 5000
TASK_FAILED_MESSAGE: Final = "Agent signalled TASK_FAILED"
TRANSIENT_MESSAGE: Final = "Transient error in agent reply"


@dataclass(frozen=True)
class ReplyVerdict:
    """What an agent's reply means for its run.

    ``deliver`` is whether the reply is announced: mode ``announce`` only when the run is not ok,
    ``announce-always`` unless HEARTBEAT_OK / NO_FLUSH / IDEMPOTENT_SKIP matched, ``none`` (or any
    other mode) never, and never for a blank reply. An error reply is announced with the
    soft-fail prefix, which the caller adds (it knows whether a retry follows).
    """

    status: Literal["ok", "error"]
    error_message: str | None
    sentinel: str | None
    deliver: bool
    summary: str
    keep_idempotency_key: bool


def interpret_reply(content: str | None, delivery_mode: str | None) -> ReplyVerdict:
    """Interpret an agent's final reply like the reference's ``executeAgent``."""
    text = content or ""
    sentinel = next((token for token in SENTINELS if matches_sentinel(text, token)), None)
    task_failed = sentinel == FAILURE_SENTINEL
    transient = detect_transient_error(text)
    status: Literal["ok", "error"] = "error" if task_failed or transient else "ok"
    error_message = None
    if status == "error":
        error_message = TASK_FAILED_MESSAGE if task_failed else TRANSIENT_MESSAGE

    deliver = (
        delivery_mode in ANNOUNCE_MODES
        and sentinel not in SUPPRESSING_SENTINELS
        and not (delivery_mode == "announce" and status == "ok")
        and bool(_js_trim(text))
    )
    return ReplyVerdict(
        status=status,
        error_message=error_message,
        sentinel=sentinel,
        deliver=deliver,
        summary=text[:SUMMARY_LIMIT],
        keep_idempotency_key=status == "ok",
    )


# -- Delivery chunking (§8.5) -------------------------------------------------------------------

TELEGRAM_MAX_MESSAGE_LENGTH: Final = 4096
# Per-channel limits in UTF-8 bytes; channels not listed are sent as one part.
CHANNEL_LIMITS: Final[Mapping[str, int]] = MappingProxyType({"telegram": TELEGRAM_MAX_MESSAGE_LENGTH})
DEFAULT_CHANNEL_LIMIT: Final[int | None] = None
# Bytes the reference reserves for the "[i/N] " prefix (enough up to N = 9999).
_PREFIX_RESERVE: Final = 12
_MAX_CHAR_BYTES: Final = 4


def _char_bytes(char: str) -> int:
    code = ord(char)
    if code > 0xFFFF:
        return 4
    if code > 0x7FF:
        return 3
    if code > 0x7F:
        return 2
    return 1


def _utf8_len(text: str) -> int:
    return len(text.encode("utf-8", "surrogatepass"))


def _prefix(index: int, total: int) -> str:
    return f"[{index}/{total}] "


def _split(text: str, budget: int) -> list[str]:
    """Parts of at most ``budget`` UTF-8 bytes, cut at a newline or space in the window's second half."""
    parts: list[str] = []
    length = len(text)
    pos = 0
    while pos < length:
        used = 0
        end = pos
        while end < length:
            size = _char_bytes(text[end])
            if used + size > budget:
                break
            used += size
            end += 1
        if end == length:
            parts.append(text[pos:])
            break
        half = (end - pos) * 0.5
        split_at = text.rfind("\n", pos, end + 1)
        if split_at - pos < half:
            split_at = text.rfind(" ", pos, end + 1)
        if split_at - pos < half:
            split_at = end
        part = text[pos:split_at].rstrip(_JS_WHITESPACE)
        if part:
            parts.append(part)
        pos = split_at
        while pos < length and text[pos] in _JS_WHITESPACE:
            pos += 1
    return parts


def chunk_message(text: str, limit: int | None) -> list[str]:
    """Split ``text`` into parts of at most ``limit`` UTF-8 bytes each, prefix included.

    A text within the limit (or any text when ``limit`` is None) is one part without prefix.
    Otherwise the parts are cut at the last newline (else space) in the second half of each
    window, else hard at the limit, with surrounding whitespace trimmed, and each is prefixed
    ``[i/N] ``. As in the reference, 12 bytes
    are reserved for the prefix (more when N needs it), so Telegram parts match the reference's.
    Raises ValueError when ``limit`` leaves no room for a character after the prefix.
    """
    if limit is None or _utf8_len(text) <= limit:
        return [text]
    reserve = _PREFIX_RESERVE
    while True:
        budget = limit - reserve
        if budget < _MAX_CHAR_BYTES:
            raise ValueError(f"chunk limit {limit} is too small for prefixed parts")
        parts = _split(text, budget)
        needed = len(_prefix(len(parts), len(parts)))
        if needed <= reserve:
            return [_prefix(index, len(parts)) + part for index, part in enumerate(parts, start=1)]
        reserve = needed


def channel_limit(channel: str | None) -> int | None:
    """The size limit (UTF-8 bytes) of ``channel``, or None when it takes any length."""
    return CHANNEL_LIMITS.get(channel or "", DEFAULT_CHANNEL_LIMIT)


def split_message_for_channel(channel: str | None, text: str) -> list[str]:
    """The parts sent to ``channel``: chunked to its limit, or the whole text when it has none."""
    return chunk_message(text, channel_limit(channel))
