"""The strategy for watchdog jobs (``job_type = 'watchdog'``): a check command watches a task
that runs elsewhere (a sub-agent), and alerts when it looks stuck or reports how it ended.

The check's exit code decides (the reference's contract, §4.9):
``0`` with a terminal JSON payload on stdout (``terminal: true`` or a ``status`` of done / error /
interrupted / spawn-warning) → the task ended: a completion or failure notice goes to the alert
target and, with ``watchdog_self_destruct``, the watchdog removes itself; ``1``, or the task
running longer than ``watchdog_timeout_min`` → a stuck alert; ``0`` otherwise → still running;
``2`` → the check itself failed transiently; anything else → the run is an ``error``.
Alerts go to ``watchdog_alert_channel``/``watchdog_alert_target`` whatever ``delivery_mode`` says.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from typing import Any

from scheduler.models.records import Job, Run
from scheduler.strategies.base import Outcome
from scheduler.strategies.process_tree import DeferredSweeper
from scheduler.strategies.shell import run_shell_command, scrubbed_environment
from scheduler.timeutil import from_sqlite, utcnow

CHECK_TIMEOUT_CAP_MS = 60_000
# A check prints a verdict, not a log: this much of each stream is kept, the rest only counted.
CHECK_OUTPUT_LIMIT = 1024 * 1024
TERMINAL_STATUSES = frozenset({"done", "error", "interrupted", "spawn-warning"})
_DETAIL_KEYS = ("deliveryText", "lastReply", "error", "summary")


def _text(value: Any) -> str | None:
    return value.strip() or None if isinstance(value, str) else None


def _payload(stdout: str) -> dict[str, Any] | None:
    """The JSON object on stdout, or the first ``{`` … last ``}`` of it."""
    for candidate in (stdout, stdout[stdout.find("{"): stdout.rfind("}") + 1]):
        try:
            parsed = json.loads(candidate)
        except ValueError:
            continue
        if isinstance(parsed, dict):
            return parsed
    return None


def terminal_outcome(stdout: str) -> tuple[str, str] | None:
    """("completed" | "failed", detail) when the check reports the task has ended."""
    parsed = _payload(stdout.strip()) if stdout.strip() else None
    if parsed is None:
        return None
    status = parsed.get("status") if isinstance(parsed.get("status"), str) else None
    if not (parsed.get("terminal") is True or status in TERMINAL_STATUSES):
        return None
    raw_completion = parsed.get("completion")
    completion: dict[str, Any] = raw_completion if isinstance(raw_completion, dict) else {}
    candidates = [parsed.get(k) for k in _DETAIL_KEYS]
    candidates += [completion.get("deliveryText"), completion.get("summary")]
    detail = next((t for t in map(_text, candidates) if t), None)
    if status and status != "done":
        return "failed", detail or f"Task ended with status {status}."
    return "completed", detail or f"Task reported terminal status {status or 'done'}."


def elapsed_minutes(started_at: str | None) -> int | None:
    if not started_at:
        return None
    try:
        started = from_sqlite(started_at)
    except ValueError:
        return None
    return round((utcnow() - started).total_seconds() / 60)


def completion_notice(label: str, kind: str, detail: str) -> str:
    if kind == "failed":
        headline = f"\u26a0\ufe0f [watchdog] Task \"{label}\" ended with failure -- watchdog disarmed"
        return f"{headline}\nDetails: {detail}"
    return f"\u2705 [watchdog] Task \"{label}\" completed -- watchdog disarmed\n\n{detail}"


def stuck_alert(job: Job, command: str, reason: str, elapsed: int, stdout: str, stderr: str) -> str:
    lines = [
        f"\U0001f6a8 [watchdog] Task \"{job.watchdog_target_label}\" appears stuck",
        f"- Dispatched: {job.watchdog_started_at or 'unknown'}",
        f"- Running for: {elapsed} minutes (threshold: {job.watchdog_timeout_min or '?'} min)",
        f"- Reason: {reason}",
        f"- Check: {command.split()[0]}{' [...]' if len(command) > 80 else ''}",
    ]
    if stderr:
        lines.append(f"- Error: {stderr[:500]}")
    if stdout:
        lines.append(f"- Output: {stdout[:500]}")
    return "\n".join(lines)


class WatchdogStrategy:
    def __init__(self, *, shell: str, env_allow: Iterable[str] = (),
                 environ: Mapping[str, str] | None = None) -> None:
        self.shell = shell
        self.env = scrubbed_environment(os.environ if environ is None else environ, env_allow)
        self.sweeper = DeferredSweeper()

    async def execute(self, job: Job, run: Run) -> Outcome:
        command = job.watchdog_check_cmd or ""
        if not command:
            return Outcome("error", {"error_message": "Watchdog job missing watchdog_check_cmd"})
        timeout_ms = min(job.run_timeout_ms, CHECK_TIMEOUT_CAP_MS)
        # The run id in the check's environment lets every process it starts be found and ended.
        result = await run_shell_command(command, shell=self.shell, timeout_s=timeout_ms / 1000,
                                         env=self.env, run_id=run.id, sweeper=self.sweeper,
                                         capture_limit_bytes=CHECK_OUTPUT_LIMIT)
        stdout = result.stdout.decode("utf-8", "replace").strip()
        stderr = result.stderr.decode("utf-8", "replace").strip()
        elapsed = elapsed_minutes(job.watchdog_started_at)
        limit = job.watchdog_timeout_min
        timed_out = elapsed is not None and limit is not None and elapsed >= int(limit)
        shown = elapsed or 0
        channel, target = job.watchdog_alert_channel, job.watchdog_alert_target
        alert_to = (str(channel), str(target)) if channel and target else None

        def alert(summary: str, text: str, *, remove: bool = False) -> Outcome:
            return Outcome("ok", {"summary": summary}, delivery_text=text if alert_to else None,
                           delivery_target=alert_to, remove_job=remove)

        if result.exit_code == 2:
            return Outcome("ok", {"summary": f"Watchdog check failed (transient): {stderr or stdout}"})
        ended = terminal_outcome(stdout) if result.exit_code == 0 else None
        if ended is not None:
            text = completion_notice(str(job.watchdog_target_label), *ended)
            return alert(text, text, remove=job.watchdog_self_destruct)
        if result.exit_code == 1 or timed_out:
            reason = (f"running for {shown}min (threshold: {limit}min)" if timed_out
                      else "check command reported stuck")
            return alert(f"Watchdog alert fired: {reason}",
                         stuck_alert(job, command, reason, shown, stdout, stderr))
        if result.exit_code == 0:
            still = f"target still running ({shown}min elapsed)"
            summary = (f"Watchdog check returned non-terminal output; {still}" if stdout
                       else f"Watchdog check: {still}")
            return Outcome("ok", {"summary": summary})
        code = result.exit_code if result.exit_code is not None else (result.signal or "none")
        message = f"Watchdog check command returned unexpected exit code {code}"
        return Outcome("error", {"error_message": message, "summary": message})
