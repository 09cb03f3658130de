"""The pure rules of sub-agent dispatch: names, the task preamble, the jobs, the guards.

No I/O here: the operations (the other dispatching/ modules) read the ledger and the gateway
and ask these functions what to do.
"""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from scheduler.errors import ValidationError
from scheduler.models.dispatch import DispatchLabel
from scheduler.models.enums import SubagentStatus
from scheduler.timeutil import from_sqlite

# -- names ------------------------------------------------------------------------------------
MAX_LABEL_LENGTH: Final = 128
# A label names jobs (`dispatch-deliver:<label>`) and is written, single-quoted, into the shell
# commands of those jobs and of the task preamble: letters, digits and `._:@+/-`, starting with
# a letter or digit, so it never needs escaping anywhere.
LABEL_PATTERN: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:@+/-]{0,127}")
AGENT_PATTERN: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")
SESSION_KEY_PATTERN: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:@+/-]{0,255}")
DEFAULT_BRAND: Final = "dispatch"
THINKING_LEVELS: Final = ("off", "minimal", "low", "medium", "high", "xhigh")
DELIVERY_MODES: Final = ("announce", "announce-always", "none")
DEFAULT_CHANNEL: Final = "telegram"
MAX_TARGET_LENGTH: Final = 256
MAX_CHANNEL_LENGTH: Final = 64
MAX_MODEL_LENGTH: Final = 200
MAX_VERIFY_CMD_LENGTH: Final = 4096
MAX_SUMMARY_LENGTH: Final = 4000
MAX_REASON_LENGTH: Final = 1000

# -- numbers (the reference's defaults) -------------------------------------------------------
DEFAULT_TIMEOUT_S: Final = 300
MAX_TIMEOUT_S: Final = 7 * 24 * 3600
DEFAULT_IDLE_THRESHOLD_S: Final = 300
DEFAULT_MONITOR_CRON: Final = "*/15 * * * *"
DEFAULT_MONITOR_TIMEOUT_MIN: Final = 60
MAX_MONITOR_TIMEOUT_MIN: Final = 7 * 24 * 60
WATCHER_TTL_HOURS: Final = 48
WATCHER_MIN_TIMEOUT_S: Final = 4 * 3600
WATCHER_GRACE_S: Final = 420
WATCHDOG_RUN_TIMEOUT_MS: Final = 120_000
STARTUP_GRACE_S: Final = 300
YOUNG_SESSION_S: Final = 300
PING_STALE_S: Final = 180
MIN_IDLE_S: Final = 600
PAST_CEILING_IDLE_S: Final = 120
ALIVE_WINDOW_S: Final = 600
DEFAULT_STUCK_THRESHOLD_MIN: Final = 15
SESSIONS_ACTIVE_MINUTES: Final = 1440
# `done` refuses a session that has said this little (the reference's activity check).
MIN_HISTORY_MESSAGES: Final = 3
KEPT_PROMPT_CHARS: Final = 2000

OPEN_STATUSES: Final = frozenset({SubagentStatus.RUNNING, SubagentStatus.SPAWN_WARNING})
# `done` may close a label the watcher or `sync` already gave up on: the agent's own signal is
# the better truth. Never a cancelled one.
DONE_FROM: Final = frozenset({SubagentStatus.RUNNING, SubagentStatus.SPAWN_WARNING,
                              SubagentStatus.INTERRUPTED, SubagentStatus.ERROR})
# What `dispatch result` reports as ended (the watchdog strategy reads `terminal`).
ENDED_STATUSES: Final = frozenset(SubagentStatus) - {SubagentStatus.RUNNING}


class BadArgument(ValidationError):
    """A flag with a value dispatch cannot use (exit code 2, as the reference's argument errors)."""

    exit_code = 2


class Rejected(ValidationError):
    """``done`` refused by one of its guards (exit code 1); the message starts ``REJECTED:``."""


def check_label(value: str | None, flag: str = "--label") -> str:
    """A label for a new dispatch: see LABEL_PATTERN."""
    if not value:
        raise BadArgument(f"{flag} is required")
    if not LABEL_PATTERN.fullmatch(value):
        raise BadArgument(
            f"{flag} must be 1-{MAX_LABEL_LENGTH} characters: letters, digits and ._:@+/- "
            f"(starting with a letter or digit), got {json.dumps(value[:60])}")
    return value


def check_lookup_label(value: str | None, flag: str = "--label") -> str:
    """A label to look up: any text an imported ledger may hold, but bounded and on one line."""
    if not value:
        raise BadArgument(f"{flag} is required")
    if len(value) > 200 or "\n" in value or "\r" in value or "\x00" in value:
        raise BadArgument(f"{flag} must be 1-200 characters on one line")
    return value


def check_word(value: str, flag: str, pattern: re.Pattern[str], what: str) -> str:
    if not pattern.fullmatch(value):
        raise BadArgument(f"{flag} must be {what}, got {json.dumps(value[:60])}")
    return value


def check_text(value: str, flag: str, limit: int) -> str:
    """A one-line text flag value of at most ``limit`` characters."""
    if not value.strip() or len(value) > limit or any(c in value for c in "\n\r\x00"):
        raise BadArgument(f"{flag} must be 1-{limit} characters on one line")
    return value


def brand_for(agent: str) -> str:
    """The reference's per-agent brand: a named agent brands its own jobs (``coder-deliver:x``),
    the main agent's are ``dispatch``."""
    return agent if agent != "main" else DEFAULT_BRAND


def fresh_session_key(agent: str) -> str:
    return f"agent:{agent}:subagent:{uuid.uuid4()}"


def agent_of_session(session_key: str) -> str:
    parts = session_key.split(":")
    return parts[1] if len(parts) >= 2 and parts[0] == "agent" and parts[1] else "main"


def origin_for(deliver_to: str, channel: str | None) -> str:
    return f"{channel or DEFAULT_CHANNEL}:{deliver_to}"


def split_origin(origin: str | None) -> tuple[str | None, str | None]:
    """``telegram:-100123`` → (``telegram``, ``-100123``); (None, None) when it is not one."""
    match = re.fullmatch(r"([^:]+):(.+)", origin or "")
    return (match.group(1), match.group(2)) if match else (None, None)


# -- the task preamble --------------------------------------------------------------------------
def _quoted(value: str) -> str:
    """``value`` single-quoted for a POSIX shell."""
    return "'" + value.replace("'", "'\\''") + "'"


def checkpoint_command(label: str) -> str:
    return (f"openclaw-scheduler messages send --from {_quoted(label)} --to main --kind status "
            "--body")


def done_command(label: str) -> str:
    return f"openclaw-scheduler dispatch done --label {_quoted(label)}"


def with_origin_chat(message: str, deliver_to: str | None) -> str:
    """The prompt with ``ORIGIN_CHAT_ID: <target>`` first, unless the caller already wrote one."""
    if not deliver_to or "ORIGIN_CHAT_ID:" in message:
        return message
    return f"ORIGIN_CHAT_ID: {deliver_to}\n\n{message}"


def task_message(message: str, label: str, origin: str | None) -> str:
    """What the sub-agent receives: the reference's context, checkpoint, completion-signal and
    delivery rules around the task, with our commands in them."""
    checkpoint = checkpoint_command(label)
    lines = [
        "[Subagent Context] You are running as a subagent (depth 1/3). Results auto-announce to "
        "your requester; do not busy-poll for status.",
        "",
        f"[Subagent Task]: {message}",
        "",
        "---",
        "CHECKPOINT MESSAGING: You can send mid-run status updates using this command:",
        f'  {checkpoint} "<message>"',
        "Call this at logical checkpoints: start of a major step, on conflict/error, before "
        "completing.",
        f'Example: {checkpoint} "Starting step 2: running tests"',
        "---",
        "",
        "---",
        "COMPLETION SIGNAL -- READ CAREFULLY:",
        "",
        "Only run this command when ALL of the following are true:",
        "  1. All file edits are saved",
        "  2. All commits are pushed (git push completed successfully)",
        "  3. All API calls (e.g. replies to review comments) are done",
        "  4. You have verified the work is complete",
        "",
        "Run it as your very last action -- nothing else runs after it:",
        f"  {done_command(label)} \\",
        '    --summary "<what you actually did, for a person>" \\',
        "    --checklist '{\"work_complete\":true,\"tests_passed\":true,\"pushed\":true}' \\",
        '    [--sha "<the git commit SHA, if you committed>"]',
        "",
        "Checklist rules:",
        "  - work_complete MUST be true: you assert that ALL assigned work is finished",
        "  - If tests or a push failed, do NOT set tests_passed or pushed to true: keep working",
        "  - Include tests_passed / pushed only when they apply to your task",
        "If your task involved git commits, --sha is required: the SHA of your pushed commit. "
        "Invented or placeholder SHAs are refused.",
        "Do NOT signal done while planning, reading files or mid-task.",
        "---",
        "",
        "---",
        "DELIVERY RULE: Do NOT use the message tool, sessions_send or any other direct "
        "messaging to send updates or results to a chat. Do NOT mention chat IDs, user IDs or "
        "delivery targets in your work.",
        "Your ONLY output channel is the done signal above. The scheduler delivers the result.",
    ]
    if origin:
        lines.append(f"Note: this job will be delivered to origin channel: {origin}")
    lines.append("---")
    return "\n".join(lines)


_GIT_COMMAND: Final = re.compile(
    r"\bgit\s+(?:push|rebase|cherry-pick)\b|(?:^|\s)--force-with-lease\b|(?:^|\s)--force-push\b",
    re.IGNORECASE)
_NEGATION_BEFORE: Final = re.compile(
    r"(?:\b(?:do\s+not|don't|dont|never)\s+(?:use|run|call|invoke)?\s*"
    r"|\bavoid\s+(?:using\s+)?|\bwithout\s+(?:using\s+)?)$",
    re.IGNORECASE)


def requires_git_sha(task_prompt: str | None) -> bool:
    """True when the task asks for a push, rebase, cherry-pick or forced push (not one it
    forbids: "do not git push" does not count)."""
    for match in _GIT_COMMAND.finditer(task_prompt or ""):
        before = (task_prompt or "")[max(0, match.start() - 40): match.start()]
        if not _NEGATION_BEFORE.search(before):
            return True
    return False


# -- the two jobs enqueue registers -----------------------------------------------------------
def watcher_delivery_mode(delivery_mode: str | None, deliver_to: str | None) -> str:
    """The watcher job's delivery mode: ``announce-always`` unless ``--delivery-mode`` named
    another, and ``none`` without a target (the watcher then still watches: ledger, retries)."""
    if not deliver_to:
        return "none"
    return delivery_mode or "announce-always"


def watcher_job(label: str, *, brand: str, deliver_to: str | None, channel: str,
                delivery_mode: str, timeout_s: int, now_text: str) -> dict[str, Any]:
    """The delivery watcher (dispatch-contract.md): run by our daemon in-process through the
    dispatch-watch strategy; its payload is the command the reference's daemon would run."""
    watch_s = timeout_s + 120
    return {
        "name": f"{brand}-deliver:{label}", "schedule_kind": "at", "schedule_at": now_text,
        "session_target": "shell", "payload_kind": "shellCommand",
        "payload_message": f"openclaw-scheduler dispatch watch --label {_quoted(label)}",
        "job_type": "dispatch", "watchdog_target_label": label,
        "delivery_mode": delivery_mode, "delivery_channel": channel if deliver_to else None,
        "delivery_to": deliver_to,
        "delivery_guarantee": "at-least-once", "ttl_hours": WATCHER_TTL_HOURS,
        "overlap_policy": "skip",
        "run_timeout_ms": (max(watch_s, WATCHER_MIN_TIMEOUT_S) + WATCHER_GRACE_S) * 1000,
        "delete_after_run": 1, "origin": "dispatch",
    }


def result_command(label: str) -> str:
    return f"openclaw-scheduler dispatch result --label {_quoted(label)} --json"


def watchdog_job(label: str, *, cron: str, timeout_min: int, channel: str, target: str,
                 origin: str, now_text: str) -> dict[str, Any]:
    """The watchdog (§4.9). Not delete_after_run (§17 #27): it must outlive its "still running"
    checks; it goes when the label ends (self-destruct, ``done``, the watcher's disarm)."""
    check = result_command(label)
    return {
        "name": f"watchdog:{label}", "job_type": "watchdog", "schedule_cron": cron,
        "session_target": "shell", "payload_kind": "shellCommand", "payload_message": check,
        "delivery_mode": "none", "run_timeout_ms": WATCHDOG_RUN_TIMEOUT_MS,
        "watchdog_target_label": label, "watchdog_check_cmd": check,
        "watchdog_timeout_min": timeout_min, "watchdog_alert_channel": channel,
        "watchdog_alert_target": target, "watchdog_self_destruct": 1,
        "watchdog_started_at": now_text, "delete_after_run": 0, "origin": origin,
    }


# -- done's guards ------------------------------------------------------------------------------
SHA_PATTERN: Final = re.compile(r"[0-9a-fA-F]{7,40}")
OPTIONAL_CHECKS: Final = ("tests_passed", "pushed")


def parse_checklist(raw: str | None) -> dict[str, Any]:
    """The ``--checklist`` object; ``Rejected`` unless it asserts ``work_complete: true`` and no
    optional check is false."""
    if not raw:
        raise Rejected("REJECTED: --checklist is required, a JSON object asserting completion, "
                       "e.g. --checklist '{\"work_complete\":true}'. work_complete MUST be true: "
                       "do not signal done while planning, reading files or mid-task.")
    try:
        checklist = json.loads(raw)
    except (ValueError, RecursionError):
        checklist = None
    if not isinstance(checklist, dict):
        raise Rejected("REJECTED: --checklist must be a JSON object, e.g. '{\"work_complete\":true}'")
    if checklist.get("work_complete") is not True:
        raise Rejected("REJECTED: checklist.work_complete must be true: you assert that all "
                       "assigned work is done. Do not signal done until it is.")
    for name in OPTIONAL_CHECKS:
        if checklist.get(name) is False:
            raise Rejected(f"REJECTED: checklist.{name} is false. Fix the failing "
                           f"{name.replace('_', ' ')} before signalling done.")
    return checklist


def minimum_runtime_s(timeout_s: int) -> int:
    return 120 if timeout_s > 600 else 60


def elapsed_s(since: str | None, now: datetime) -> float | None:
    if not since:
        return None
    try:
        return (now - from_sqlite(since)).total_seconds()
    except ValueError:
        return None


def check_runtime(entry: DispatchLabel, now: datetime, force_reason: str | None,
                  forced: bool) -> float | None:
    """Reject a done signal sooner than the minimum runtime unless forced with a reason; the
    elapsed seconds when it was forced through early (for the audit line), else None."""
    elapsed = elapsed_s(entry.spawned_at, now)
    if elapsed is None or elapsed >= minimum_runtime_s(entry.timeout_s):
        return None
    if not forced:
        raise Rejected(f"REJECTED: the session ran for only {round(elapsed)}s -- suspiciously "
                       "short for this task. If the work is genuinely complete, run again with "
                       "--force-done --reason \"<why>\".")
    if not (force_reason or "").strip():
        raise Rejected("REJECTED: --force-done requires --reason explaining why the short "
                       "runtime is valid.")
    return elapsed


def check_sha_needed(entry: DispatchLabel, sha: str | None) -> None:
    if sha is None and requires_git_sha(entry.task_prompt):
        raise Rejected("REJECTED: the task involves git commits but --sha was not given. Pass "
                       "--sha with the HEAD SHA of your pushed branch.")


def check_sha_format(sha: str) -> str:
    if not SHA_PATTERN.fullmatch(sha):
        raise Rejected(f"REJECTED: --sha {json.dumps(sha[:60])} is not a git SHA (7-40 hex "
                       "characters). Pass the commit's actual SHA.")
    return sha.lower()


def check_activity(message_count: int) -> None:
    if message_count < MIN_HISTORY_MESSAGES:
        raise Rejected(f"REJECTED: the session has only {message_count} messages -- it likely "
                       "did not do the assigned work. Use --force-done --reason if it genuinely "
                       "did, or --skip-activity-check to bypass this check.")


# -- auto-resolve (status, stuck, sync) ---------------------------------------------------------
@dataclass(frozen=True)
class SessionView:
    """What ``sessions.list`` says of one session."""

    key: str
    status: str | None
    updated_at_ms: int | None
    total_tokens: int | None


@dataclass(frozen=True)
class Verdict:
    """Whether a running label should be closed as ``interrupted``, and why; ``last_activity_s``
    is the session's silence in seconds when known."""

    resolve: bool
    reason: str
    silence_s: float | None = None


def idle_threshold_s(timeout_s: int) -> int:
    return max(timeout_s, MIN_IDLE_S)


def hard_ceiling_s(timeout_s: int) -> float:
    return max(timeout_s * 1.5, idle_threshold_s(timeout_s) * 1.5)


def silence_s(session: SessionView, now: datetime) -> float | None:
    if session.updated_at_ms is None:
        return None
    return max(0.0, now.timestamp() - session.updated_at_ms / 1000)


def session_verdict(session: SessionView | None, *, age_s: float, threshold_s: float,
                    now: datetime) -> Verdict:
    """The reference's checkSessionDone on the gateway's session list (``None``: not listed)."""
    if session is None:
        if age_s < YOUNG_SESSION_S:
            return Verdict(False, "session young, not yet listed by the gateway -- deferring")
        return Verdict(True, "session not found in the gateway's session list")
    quiet = silence_s(session, now)
    if session.status == "running":
        # Ours: a session the gateway says is running is never closed here (stuck reports it).
        return Verdict(False, "the gateway reports the session running", quiet)
    if quiet is not None and quiet >= threshold_s:
        return Verdict(True, f"session idle {round(quiet / 60)}min (completed)", quiet)
    return Verdict(False, "session has recent activity", quiet)


def auto_resolve_threshold(entry: DispatchLabel, now: datetime) -> float | None:
    """The silence after which a running label is closed, or None while it must not be:
    within the startup grace, or while the watcher's ping is fresh and the run below its ceiling."""
    age = elapsed_s(entry.spawned_at, now)
    if age is None or age < STARTUP_GRACE_S:
        return None
    ceiling = hard_ceiling_s(entry.timeout_s)
    ping_age = elapsed_s(entry.last_ping, now)
    if ping_age is not None and ping_age < PING_STALE_S and age < ceiling:
        return None
    return PAST_CEILING_IDLE_S if age >= ceiling else idle_threshold_s(entry.timeout_s)


INTERRUPTED_SUMMARY: Final = ("Auto-resolved: session went idle without calling done. Work may "
                              "be incomplete. ({reason})")
