"""Turn OpenClaw cron jobs into scheduler job specs (``openclaw-scheduler migrate``).

Each entry is the gateway's job object, as ``jobs.json`` (releases up to 2026.5) or the
``cron_jobs.job_json`` column (2026.9) holds it. ``convert`` is pure: it returns a spec for the
normal job validator, or the reason the job is skipped or cannot be converted. Field names and
defaults are those the real gateway writes (checked against ``openclaw cron add`` of 2026.9.6;
see tests/fixtures/openclaw-2026.9.6-cron_jobs.json).

Deliberate differences from the reference's migrate.js (docs/differences.md):

* ``at`` becomes a real one-shot job, not a yearly cron;
* ``announce`` becomes ``announce-always``: OpenClaw posts every run's final text, while our
  ``announce`` reports failures only;
* ``every`` is exact where a cron can express it, and says so when it cannot;
* ``command`` payloads (an argv) become shell jobs, the argv quoted for the shell;
* jobs the gateway makes for itself (a ``declarationKey``, the ``heartbeat`` payload) are skipped
  unless asked for;
* what has no equivalent here (webhook delivery, condition triggers, script payloads, event
  schedules) is an error for that job, not a job that silently behaves differently.
"""

from __future__ import annotations

import json
import os
import shlex
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final, Literal

from scheduler.errors import ValidationError
from scheduler.timeutil import parse_user_datetime, to_sqlite

Status = Literal["ok", "skip", "err"]

DEFAULT_RUN_TIMEOUT_MS: Final = 300_000  # the reference's migrate.js
COMMAND_DEFAULT_TIMEOUT_S: Final = 600  # OpenClaw's command payload default ("10 minutes")
ORIGIN: Final = "system"
# A jobs file larger than this is refused unread (a real one holds kilobytes per job).
MAX_JOBS_FILE_BYTES: Final = 64 * 1024 * 1024
NO_TARGET_REASON: Final = "migrated: no delivery target configured"
DELIVERY_OFF_REASON: Final = "migrated: delivery was off in OpenClaw cron"

# Periods (seconds) a cron expression repeats exactly, with the expression.
_EXACT_PERIODS: Final[dict[int, str]] = {
    **{s: f"*/{s} * * * * *" for s in (1, 2, 3, 4, 5, 6, 10, 12, 15, 20, 30)},
    **{m * 60: f"*/{m} * * * *" for m in (1, 2, 3, 4, 5, 6, 10, 12, 15, 20, 30)},
    **{h * 3600: f"0 */{h} * * *" for h in (1, 2, 3, 4, 6, 8, 12)},
    86400: "0 0 * * *",
    7 * 86400: "0 0 * * 0",
}


class Unconvertible(Exception):
    """This job cannot become a scheduler job; the text says why."""


@dataclass
class Outcome:
    """What ``migrate`` does with one entry."""

    status: Status
    job_id: str
    name: str
    reason: str = ""
    spec: dict[str, Any] | None = None
    schedule: str = ""
    warnings: list[str] = field(default_factory=list)
    enabled_in_openclaw: bool = False


def entry_id(entry: dict[str, Any]) -> str:
    value = entry.get("id", entry.get("jobId"))  # jobId: what releases before 2026.3 wrote
    return value if isinstance(value, str) else ""


def entry_name(entry: dict[str, Any]) -> str:
    value = entry.get("name")
    return value if isinstance(value, str) and value else entry_id(entry) or "(unnamed)"


def system_reason(entry: dict[str, Any]) -> str | None:
    """Why the gateway made this job for itself, or None for a job a person made."""
    payload = entry.get("payload")
    if isinstance(payload, dict) and payload.get("kind") == "heartbeat":
        return "the gateway's own heartbeat job"
    key = entry.get("declarationKey")
    if isinstance(key, str) and key:
        return f"managed by the gateway (declarationKey {key})"
    return None


def convert(entry: object, *, include_system: bool, now: datetime, host_tz: str) -> Outcome:
    """The outcome for one gateway job: a spec to create, or why not."""
    if not isinstance(entry, dict):
        return Outcome("err", "", "(not an object)", reason="entry is not a JSON object")
    outcome = Outcome("ok", entry_id(entry), entry_name(entry),
                      enabled_in_openclaw=entry.get("enabled") is not False)
    if not outcome.job_id:
        return _fail(outcome, "entry has no id")
    reason = system_reason(entry)
    if reason is not None and not include_system:
        return _skip(outcome, f"{reason}; --include-system imports it")
    try:
        spec = _spec(entry, outcome, now=now, host_tz=host_tz)
    except Unconvertible as exc:
        return _fail(outcome, str(exc))
    if spec is None:
        return outcome
    outcome.spec = spec
    return outcome


def _fail(outcome: Outcome, reason: str) -> Outcome:
    outcome.status, outcome.reason = "err", reason
    return outcome


def _skip(outcome: Outcome, reason: str) -> Outcome:
    outcome.status, outcome.reason = "skip", reason
    return outcome


def _spec(entry: dict[str, Any], outcome: Outcome, *, now: datetime, host_tz: str) -> dict[str, Any] | None:
    if entry.get("trigger"):
        raise Unconvertible("a condition trigger script has no equivalent here")
    schedule = _schedule(entry, outcome, now=now, host_tz=host_tz)
    if outcome.status == "skip":
        return None
    spec: dict[str, Any] = {
        "id": outcome.job_id, "name": outcome.name, "enabled": outcome.enabled_in_openclaw,
        "agent_id": entry.get("agentId") or "main", "overlap_policy": "skip", "origin": ORIGIN,
        **schedule,
    }
    spec.update(_payload(entry, outcome.warnings))
    spec.update(_delivery(entry, spec, outcome))
    return spec


# -- schedules --------------------------------------------------------------------------------------

def _schedule(entry: dict[str, Any], outcome: Outcome, *, now: datetime, host_tz: str) -> dict[str, Any]:
    schedule = entry.get("schedule")
    if not isinstance(schedule, dict):
        raise Unconvertible("no schedule object")
    kind = schedule.get("kind")
    if kind == "cron":
        return _cron(schedule, outcome, host_tz)
    if kind == "every":
        return _every(schedule, outcome)
    if kind == "at":
        return _at(entry, schedule, outcome, now)
    raise Unconvertible(f"schedule kind {kind!r} has no equivalent here (cron, every and at do)")


def _cron(schedule: dict[str, Any], outcome: Outcome, host_tz: str) -> dict[str, Any]:
    expr = schedule.get("expr", schedule.get("cron"))  # schedule.cron: a legacy spelling
    if not isinstance(expr, str) or not expr.strip():
        raise Unconvertible("cron schedule without an expression")
    tz = schedule.get("tz")
    if not isinstance(tz, str) or not tz:
        tz = host_tz  # the gateway evaluates a cron without tz in its host's zone
        outcome.warnings.append(f"no tz: evaluated in this host's zone {tz}, as the gateway does")
    stagger = schedule.get("staggerMs")
    if isinstance(stagger, int) and stagger > 0:
        outcome.warnings.append(f"staggerMs {stagger} dropped: runs at the exact cron time")
    outcome.schedule = f"cron {expr.strip()} ({tz})"
    return {"schedule_kind": "cron", "schedule_cron": expr.strip(), "schedule_tz": tz}


def _every(schedule: dict[str, Any], outcome: Outcome) -> dict[str, Any]:
    every_ms = schedule.get("everyMs")
    if not isinstance(every_ms, int) or isinstance(every_ms, bool) or every_ms <= 0:
        raise Unconvertible("every schedule without a positive everyMs")
    expr = cron_for_interval(every_ms, outcome.warnings)
    outcome.schedule = f"cron {expr} (UTC; was every {every_ms} ms)"
    return {"schedule_kind": "cron", "schedule_cron": expr, "schedule_tz": "UTC"}


def cron_for_interval(every_ms: int, warnings: list[str]) -> str:
    """The cron that repeats every ``every_ms``: exact when one exists, else the nearest (with a
    warning). Cron runs on the clock, so the interval's phase (anchorMs) is not kept."""
    seconds = every_ms / 1000
    exact = _EXACT_PERIODS.get(int(seconds)) if seconds == int(seconds) else None
    if exact is not None:
        return exact
    nearest = min(_EXACT_PERIODS, key=lambda period: abs(period - seconds) / period)
    warnings.append(f"every {every_ms} ms has no exact cron; runs every {nearest} s instead")
    return _EXACT_PERIODS[nearest]


def _at(entry: dict[str, Any], schedule: dict[str, Any], outcome: Outcome, now: datetime) -> dict[str, Any]:
    when = _at_instant(schedule)
    outcome.schedule = f"at {to_sqlite(when)} UTC"
    if when <= now and outcome.enabled_in_openclaw:
        outcome.status, outcome.reason = "skip", f"one-shot time {to_sqlite(when)} UTC has passed"
    keep = entry.get("deleteAfterRun")
    return {"schedule_kind": "at", "schedule_at": to_sqlite(when),
            "delete_after_run": True if keep is None else bool(keep)}


def _at_instant(schedule: dict[str, Any]) -> datetime:
    at = schedule.get("at")
    at_ms = schedule.get("atMs")  # atMs: the epoch form of older releases
    try:
        if isinstance(at, str):
            return parse_user_datetime(at)
        if isinstance(at_ms, int) and not isinstance(at_ms, bool):
            return datetime.fromtimestamp(at_ms / 1000, tz=UTC)
    except (ValueError, OverflowError, OSError) as exc:
        raise Unconvertible(f"at schedule: {exc}") from None
    raise Unconvertible("at schedule without a time")


# -- payloads ---------------------------------------------------------------------------------------

def _payload(entry: dict[str, Any], warnings: list[str]) -> dict[str, Any]:
    payload = entry.get("payload")
    if not isinstance(payload, dict):
        raise Unconvertible("no payload object")
    kind = payload.get("kind") or "agentTurn"
    target = entry.get("sessionTarget") or "isolated"
    if kind == "command":
        return _command(payload)
    if kind == "agentTurn":
        if target in ("main", "current"):
            warnings.append(f"sessionTarget {target} becomes an isolated session (a fresh one per run)")
        return _agent_turn(payload, target)
    if kind == "systemEvent":
        text = payload.get("text", payload.get("message"))
        return {"session_target": "main" if target == "main" else "isolated",
                "payload_kind": "systemEvent", "payload_message": text if isinstance(text, str) else "",
                "run_timeout_ms": DEFAULT_RUN_TIMEOUT_MS}
    if kind == "heartbeat":
        raise Unconvertible("the heartbeat payload has no equivalent here")
    raise Unconvertible(f"payload kind {kind!r} has no equivalent here")


def _agent_turn(payload: dict[str, Any], target: str) -> dict[str, Any]:
    if target not in ("isolated", "main") and not str(target).startswith("session:") and target != "current":
        raise Unconvertible(f"sessionTarget {target!r} has no equivalent here")
    message = payload.get("message", payload.get("text"))
    timeout_s = payload.get("timeoutSeconds")
    spec: dict[str, Any] = {
        "session_target": "isolated", "payload_kind": "agentTurn",
        "payload_message": message if isinstance(message, str) else "",
        "payload_model": payload.get("model") or None,
        "payload_thinking": payload.get("thinking") or None,
        "run_timeout_ms": DEFAULT_RUN_TIMEOUT_MS,
    }
    if isinstance(target, str) and target.startswith("session:"):
        spec["preferred_session_key"] = target.removeprefix("session:")
    if isinstance(timeout_s, int) and not isinstance(timeout_s, bool) and timeout_s > 0:
        spec["payload_timeout_seconds"] = timeout_s
        spec["run_timeout_ms"] = max(DEFAULT_RUN_TIMEOUT_MS, timeout_s * 1000)
    return spec


def shell_command(argv: list[str], cwd: str | None = None, env: dict[str, str] | None = None,
                  stdin_text: str | None = None) -> str:
    """One shell command line that runs ``argv`` as the gateway would: each word quoted, so the
    shell passes it through unchanged; the working directory, environment and input in front."""
    command = shlex.join(argv)
    if env:
        command = "env " + " ".join(shlex.quote(f"{k}={v}") for k, v in env.items()) + " " + command
    if stdin_text is not None:
        command = f"printf %s {shlex.quote(stdin_text)} | {command}"
    if cwd:
        command = f"cd -- {shlex.quote(cwd)} && {command}"
    return command


def _command(payload: dict[str, Any]) -> dict[str, Any]:
    argv = payload.get("argv")
    if not isinstance(argv, list) or not argv or not all(isinstance(a, str) for a in argv):
        raise Unconvertible("command payload without an argv of strings")
    cwd = payload.get("cwd")
    env = payload.get("env")
    if env is not None and not (isinstance(env, dict) and all(isinstance(v, str) for v in env.values())):
        raise Unconvertible("command payload env is not an object of strings")
    stdin_text = payload.get("input")
    timeout_s = payload.get("timeoutSeconds")
    if not isinstance(timeout_s, int) or isinstance(timeout_s, bool) or timeout_s <= 0:
        timeout_s = COMMAND_DEFAULT_TIMEOUT_S
    return {
        "session_target": "shell", "payload_kind": "shellCommand",
        "payload_message": shell_command(argv, cwd if isinstance(cwd, str) else None, env,
                                         stdin_text if isinstance(stdin_text, str) else None),
        "run_timeout_ms": timeout_s * 1000,
    }


# -- delivery ---------------------------------------------------------------------------------------

def _delivery(entry: dict[str, Any], spec: dict[str, Any], outcome: Outcome) -> dict[str, Any]:
    delivery = entry.get("delivery")
    if not isinstance(delivery, dict):
        delivery = {}
    mode = delivery.get("mode") or "none"
    if mode == "webhook":
        raise Unconvertible("webhook delivery has no equivalent here")
    if mode not in ("announce", "none"):
        raise Unconvertible(f"delivery mode {mode!r} has no equivalent here")
    for dropped in ("threadId", "accountId"):
        if delivery.get(dropped):
            outcome.warnings.append(f"delivery.{dropped} dropped: not supported here")
    if mode == "none":
        return {"delivery_mode": "none", "delivery_opt_out_reason": _opt_out(spec, DELIVERY_OFF_REASON)}
    channel = delivery.get("channel")
    target = delivery.get("to")
    if not isinstance(target, str) or not target.strip():
        outcome.warnings.append("announce without delivery.to (the last chat route): delivery turned off")
        return {"delivery_mode": "none", "delivery_opt_out_reason": _opt_out(spec, NO_TARGET_REASON)}
    return {"delivery_mode": "announce-always", "delivery_to": target,
            "delivery_channel": channel if isinstance(channel, str) and channel != "last" else None}


def _opt_out(spec: dict[str, Any], reason: str) -> str | None:
    """A reason only where the validator asks for one (agent turns that deliver nothing)."""
    return reason if spec.get("payload_kind") == "agentTurn" else None


# -- where the jobs are -----------------------------------------------------------------------------

def host_timezone(env: dict[str, str] | None = None) -> str:
    """This host's IANA zone name (the gateway's default for a cron without tz), else UTC."""
    environ = os.environ if env is None else env
    for name in (environ.get("TZ", "").removeprefix(":"), _etc_timezone(), _localtime_link()):
        if _known_zone(name):
            return name
    return "UTC"


def _known_zone(name: str) -> bool:
    from scheduler import cron
    from scheduler.errors import ValidationError

    if not name:
        return False
    try:
        cron.zone(name)
    except ValidationError:
        return False
    return True


def _etc_timezone() -> str:
    try:
        return Path("/etc/timezone").read_text().strip()
    except OSError:
        return ""


def _localtime_link() -> str:
    """``Europe/Berlin`` from the ``/etc/localtime -> .../zoneinfo/Europe/Berlin`` link."""
    try:
        target = str(Path("/etc/localtime").resolve())
    except OSError:
        return ""
    marker = "/zoneinfo/"
    return target.split(marker, 1)[1] if marker in target else ""


@dataclass(frozen=True)
class Source:
    """Where the gateway's jobs were read: a jobs file or the state database."""

    kind: Literal["file", "database"]
    path: Path


def openclaw_state_dir(env: dict[str, str]) -> Path:
    chosen = env.get("OPENCLAW_STATE_DIR")
    if chosen:
        return Path(chosen).expanduser()
    return Path(env.get("HOME") or Path.home()) / ".openclaw"


def find_source(from_path: str | None, env: dict[str, str]) -> Source:
    """``--from`` (a file or a database, told apart by the SQLite header); else
    ``OPENCLAW_JOBS_JSON``; else the 2026.9 state database when it has a ``cron_jobs`` table;
    else the legacy ``cron/jobs.json``."""
    from scheduler.store import openclaw_cron

    if from_path is not None:
        path = Path(from_path).expanduser()
        if not path.is_file():
            raise ValidationError(f"--from {from_path}: "
                                  f"{'not a regular file' if path.exists() else 'no such file'}")
        return Source("database" if openclaw_cron.is_sqlite_file(path) else "file", path)
    explicit = env.get("OPENCLAW_JOBS_JSON")
    if explicit:
        path = Path(explicit).expanduser()
        if not path.is_file():
            raise ValidationError(f"OPENCLAW_JOBS_JSON={explicit}: "
                                  f"{'not a regular file' if path.exists() else 'no such file'}")
        return Source("file", path)
    state = openclaw_state_dir(env)
    database = state / "state" / "openclaw.sqlite"
    if database.is_file() and openclaw_cron.has_cron_jobs_table(database):
        return Source("database", database)
    legacy = state / "cron" / "jobs.json"
    if legacy.is_file():
        return Source("file", legacy)
    raise ValidationError(
        f"no OpenClaw cron jobs found: neither {database} (with a cron_jobs table) nor {legacy} "
        "exists; pass --from PATH"
    )


def load_entries(source: Source) -> list[object]:
    """The job objects of ``source``, in its order."""
    if source.kind == "database":
        from scheduler.store import openclaw_cron

        return [_parse(text, f"{source.path} (a job_json value)") for text in
                openclaw_cron.read_cron_job_texts(source.path)]
    try:
        with source.path.open("rb") as handle:
            raw = handle.read(MAX_JOBS_FILE_BYTES + 1)
        if len(raw) > MAX_JOBS_FILE_BYTES:
            raise ValidationError(f"{source.path} is larger than {MAX_JOBS_FILE_BYTES} bytes: "
                                  "not an OpenClaw jobs file")
        text = raw.decode("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ValidationError(f"cannot read {source.path}: {exc}") from None
    data = _parse(text, str(source.path))
    jobs = data.get("jobs") if isinstance(data, dict) else data
    if not isinstance(jobs, list):
        raise ValidationError(f"{source.path} is not an OpenClaw jobs file: expected {{\"jobs\": [...]}}")
    return list(jobs)


def _parse(text: str, where: str) -> Any:
    try:
        return json.loads(text)
    except (json.JSONDecodeError, RecursionError) as exc:
        raise ValidationError(f"{where} is not valid JSON: {exc}") from None
