"""The CLI's command handlers. Each parses its arguments, calls the service or store, and emits."""

from __future__ import annotations

import json
import re
import sys
from typing import TYPE_CHECKING, Any, Final

from scheduler.cli.context import Context, Handler, UsageError
from scheduler.cli.output import printable_lines, table
from scheduler.errors import SchedulerError, ValidationError
from scheduler.text import LINE_BREAKING, UNSAFE_CONTROLS, checked_line, first_lone_surrogate, quoted
from scheduler.timeutil import parse_in_duration, parse_user_datetime, to_sqlite, utcnow

if TYPE_CHECKING:
    from datetime import datetime

# Bounds of the numeric arguments: each far above any useful value, far below SQLite's 2^63.
MAX_STALE_THRESHOLD_S: Final = 365 * 24 * 3600
MAX_CRON_COUNT: Final = 1000
MAX_CRON_EXPR_LENGTH: Final = 128  # as schedule_cron: a preview accepts what a job accepts
_WHOLE_NUMBER: Final = re.compile(r"[0-9]+")


def _reject_constant(token: str) -> Any:
    raise ValueError(f"{token} is not JSON")


def _parse_json(text: str, usage: str) -> Any:
    """The JSON argument, or a ValidationError naming what is wrong with it.

    Strict JSON: ``NaN`` and ``Infinity`` are refused, as is nesting beyond the interpreter's
    recursion limit and an integer with more digits than Python converts (4300).
    """
    try:
        return json.loads(text, parse_constant=_reject_constant)
    except json.JSONDecodeError as exc:
        problem = f"{exc.msg} at line {exc.lineno} column {exc.colno}"
    except ValueError as exc:  # a constant we refuse, or an integer of 4300+ digits
        problem = "an integer with too many digits" if "digits" in str(exc) else str(exc)
    except RecursionError:
        problem = "nested too deeply"
    raise ValidationError(f"Invalid JSON ({problem}). Usage: openclaw-scheduler {usage}")


def _positive_int(text: str, name: str, *, maximum: int, minimum: int = 1) -> int:
    """A whole number in [minimum, maximum], written in ASCII digits (no sign, no ``_``)."""
    if not _WHOLE_NUMBER.fullmatch(text):
        raise UsageError(f"{name} must be a whole number, got {quoted(text)}")
    # Digits beyond the maximum's are too many whatever they say (and int() refuses 4300+).
    value = int(text) if len(text.lstrip("0")) <= len(str(maximum)) else maximum + 1
    if value < minimum:
        raise UsageError(f"{name} must be >= {minimum}, got {value}")
    if value > maximum:
        raise UsageError(f"{name} must be <= {maximum}, got {quoted(text, limit=40)}")
    return value


# -- jobs -----------------------------------------------------------------------------------
# The enums are imported where they are used: defining them costs every CLI call a millisecond.


def _schedule_text(job: dict[str, Any]) -> str:
    from scheduler.models.enums import ScheduleKind

    if job["schedule_kind"] == ScheduleKind.AT:
        return f"at:{(job['schedule_at'] or '')[:16]}"
    return str(job["schedule_cron"])


def jobs_list(ctx: Context) -> int:
    job_type = ctx.option("--type")
    ctx.no_extra(0, "jobs list [--type <job_type>]")
    jobs = ctx.store.list_jobs(job_type)

    def human() -> None:
        rows = [
            {
                "id": j["id"][:8] + "..",
                "name": j["name"],
                "kind": j["schedule_kind"],
                "enabled": bool(j["enabled"]),
                "schedule": _schedule_text(j),
                "tz": j["schedule_tz"],
                "target": j["session_target"],
                "nextRun": j["next_run_at"],
                "lastStatus": j["last_status"],
                "errors": j["consecutive_errors"],
            }
            for j in jobs
        ]
        table(rows, list(rows[0]) if rows else ["id"])

    ctx.out.emit(jobs, human)
    return 0


def jobs_tree(ctx: Context) -> int:
    from scheduler.models.chains import job_tree

    ctx.no_extra(0, "jobs tree")
    tree = job_tree(ctx.store.list_jobs())

    def human() -> None:
        lines = [line for node in tree for line in node.lines()]
        sys.stdout.write(printable_lines("\n".join(lines)) + "\n" if lines else "(none)\n")

    ctx.out.emit([node.as_json() for node in tree], human)
    return 0


def jobs_get(ctx: Context) -> int:
    job_id = ctx.positional(0, "jobs get <id>")
    ctx.no_extra(1, "jobs get <id>")
    ctx.out.emit(ctx.store.require_job(job_id).as_row(), None)
    return 0


def _one_shot_time(ctx: Context) -> datetime | None:
    """When ``--at <datetime>`` or ``--in <duration>`` says the one-shot job is due."""
    at_value = ctx.option("--at")
    in_value = ctx.option("--in")
    if at_value is None and in_value is None:
        return None
    if at_value is not None and in_value is not None:
        raise UsageError("use either --at or --in, not both")
    try:
        if in_value is not None:
            return utcnow() + parse_in_duration(in_value)
        return parse_user_datetime(str(at_value))
    except ValueError as exc:  # also a time outside datetime's range, or an --in beyond 1000 years
        raise ValidationError(f"--at/--in error: {exc}") from None


def jobs_add(ctx: Context) -> int:
    from scheduler import service

    usage = "jobs add '<json>' [--dry-run] [--at <datetime> | --in <duration>] [--watchdog] [--profile <p>]"
    dry_run = ctx.flag("--dry-run")
    watchdog = ctx.flag("--watchdog")
    profile = ctx.option("--profile")
    when = _one_shot_time(ctx)
    payload = ctx.positional(0, usage)
    ctx.no_extra(1, usage)
    spec = service.job_spec_object(_parse_json(payload, "jobs add '{\"name\": \"...\", ...}'"))
    if profile is not None:
        spec["auth_profile"] = profile
    if when is not None:
        service.one_shot_spec(spec, when)
    if watchdog:
        service.watchdog_spec(spec)
    now = utcnow()
    if dry_run:
        normalized = service.check_new_job(ctx.store, spec, now)
        ctx.out.emit({"ok": True, "dry_run": True, "valid": True, "normalized": normalized},
                     "Valid (dry run; nothing written)")
        return 0
    job = service.create_job(ctx.store, spec, now)
    ctx.out.emit(
        {"ok": True, "job": job.as_row()},
        f"Created job {job.id} ({job.name}); next run: {job.next_run_at or 'never'} UTC",
    )
    return 0


def jobs_validate(ctx: Context) -> int:
    from scheduler import service

    payload = ctx.positional(0, "jobs validate '<json>'")
    ctx.no_extra(1, "jobs validate '<json>'")
    normalized = service.validate_job(_parse_json(payload, "jobs validate '{\"name\": \"...\"}'"),
                                      utcnow())
    ctx.out.emit({"ok": True, "valid": True, "normalized": normalized}, "Valid")
    return 0


def jobs_update(ctx: Context) -> int:
    from scheduler import service

    usage = "jobs update <id> '<json>' [--dry-run] [--profile <p>]"
    dry_run = ctx.flag("--dry-run")
    profile = ctx.option("--profile")
    job_id = ctx.positional(0, usage)
    payload = ctx.positional(1, usage)
    ctx.no_extra(2, usage)
    patch = service.job_spec_object(_parse_json(payload, "jobs update <id> '{\"key\": \"value\"}'"))
    if profile is not None:
        patch["auth_profile"] = profile
    now = utcnow()
    if dry_run:
        _, normalized = service.plan_update(ctx.store, job_id, patch, now)
        ctx.out.emit({"ok": True, "dry_run": True, "valid": True, "normalized": normalized},
                     "Valid (dry run; nothing written)")
        return 0
    job = service.update_job(ctx.store, job_id, patch, now)
    ctx.out.emit({"ok": True, "job": job.as_row()}, f"Updated job {job.id} ({job.name})")
    return 0


def _set_enabled(ctx: Context, enabled: bool) -> int:
    from scheduler import service

    verb = "enable" if enabled else "disable"
    job_id = ctx.positional(0, f"jobs {verb} <id>")
    ctx.no_extra(1, f"jobs {verb} <id>")
    job = service.set_enabled(ctx.store, job_id, enabled, utcnow())
    ctx.out.emit(
        {"ok": True, "job_id": job_id, "enabled": enabled},
        f"{'Enabled' if enabled else 'Disabled'} {job.name}"
        + (f"; next run: {job.next_run_at} UTC" if enabled and job.next_run_at else ""),
    )
    return 0


def jobs_enable(ctx: Context) -> int:
    return _set_enabled(ctx, True)


def jobs_disable(ctx: Context) -> int:
    return _set_enabled(ctx, False)


def jobs_delete(ctx: Context) -> int:
    from scheduler import service

    job_id = ctx.positional(0, "jobs delete <id>")
    ctx.no_extra(1, "jobs delete <id>")
    job = service.delete_job(ctx.store, job_id)
    ctx.out.emit({"ok": True, "job_id": job_id, "deleted": True}, f"Deleted {job.name} ({job_id})")
    return 0


def jobs_run(ctx: Context) -> int:
    from scheduler import service

    job_id = ctx.positional(0, "jobs run <id>")
    ctx.no_extra(1, "jobs run <id>")
    job, dispatch = service.run_now(ctx.store, job_id, utcnow())
    ctx.out.emit(
        {"ok": True, "job_id": job.id, "name": job.name, "dispatch_id": dispatch["id"],
         "dispatch_kind": dispatch["dispatch_kind"]},
        f"Queued for immediate run: {job.name} (dispatch: {dispatch['id']})",
    )
    return 0


def jobs_cancel(ctx: Context) -> int:
    from scheduler import paths, service

    usage = "jobs cancel <id> [--no-cascade]"
    cascade = not ctx.flag("--no-cascade")
    job_id = ctx.positional(0, usage)
    ctx.no_extra(1, usage)
    outcome = service.cancel_job(ctx.store, job_id, cascade=cascade, now=utcnow(),
                                 database=paths.db_path())
    done, orphans = outcome.cancellation, outcome.orphans_killed
    lines = [f"Cancelled {len(done.job_ids)} job(s): {', '.join(done.job_ids)}"]
    for ids, what in ((done.run_ids, "run(s) in flight cancelled"),
                      (done.dispatch_ids, "queued run(s) closed"),
                      (done.approval_ids, "pending approval(s) rejected")):
        if ids:
            lines.append(f"{len(ids)} {what}: {', '.join(ids)}")
    if orphans:
        lines.append(f"{orphans} process(es) left by a stopped daemon killed")
    ctx.out.emit(
        {"ok": True, "cancelled": done.job_ids, "cascade": cascade, "runs_cancelled": done.run_ids,
         "dispatches_cancelled": done.dispatch_ids, "approvals_rejected": done.approval_ids,
         "orphans_killed": orphans},
        "\n".join(lines),
    )
    return 0


# -- approval gates ---------------------------------------------------------------------------

def jobs_approve(ctx: Context) -> int:
    from scheduler.service import approvals

    usage = "jobs approve <job-id>"
    job_id = ctx.positional(0, usage)
    ctx.no_extra(1, usage)
    approval = approvals.approve(ctx.store, job_id, utcnow())
    ctx.out.emit(
        {"ok": True, "approval_id": approval["id"], "job_id": approval["job_id"],
         "status": approval["status"], "run_id": approval["run_id"],
         "dispatch_id": approval["dispatch_queue_id"]},
        f"Approved: {approval['job_name']} ({approval['job_id']}); the daemon starts it at once",
    )
    return 0


def jobs_reject(ctx: Context) -> int:
    from scheduler.service import approvals

    usage = "jobs reject <job-id> [reason]"
    job_id = ctx.positional(0, usage)
    ctx.no_extra(len(ctx.args), usage)  # every word after the id is the reason
    reason = " ".join(ctx.args[1:]).strip() or None
    approval = approvals.reject(ctx.store, job_id, reason, utcnow())
    ctx.out.emit(
        {"ok": True, "approval_id": approval["id"], "job_id": approval["job_id"],
         "status": approval["status"], "reason": reason, "run_id": approval["run_id"],
         "dispatch_id": approval["dispatch_queue_id"]},
        f"Rejected: {approval['job_name']} ({approval['job_id']})" + (f" -- {reason}" if reason else ""),
    )
    return 0


def approvals_list(ctx: Context) -> int:
    from scheduler.service import approvals

    ctx.no_extra(0, "approvals list")
    pending = approvals.pending(ctx.store, utcnow())

    def human() -> None:
        if not pending:
            sys.stdout.write("No pending approvals\n")
            return
        rows = [{"job": a["job_id"], "job_name": a["job_name"] or "-", "run": (a["run_id"] or "-")[:8],
                 "requested": a["requested_at"], "age": _age_text(a["age_s"]),
                 "times_out": f"{a['timeout_at']} ({a['on_timeout']})"} for a in pending]
        table(rows, list(rows[0]))

    ctx.out.emit(pending, human)
    return 0


def _age_text(seconds: int) -> str:
    """``42s``, ``5m``, ``3h``, ``2d``: how long an approval has waited."""
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


# -- runs -----------------------------------------------------------------------------------


def runs_list(ctx: Context) -> int:
    from scheduler import service

    usage = "runs list <job-id> [limit]"
    job_id = ctx.positional(0, usage)
    limit = _positive_int(ctx.args[1], "limit", maximum=service.MAX_RUNS_LIMIT) if len(ctx.args) > 1 else 20
    ctx.no_extra(2, usage)
    runs = service.list_runs(ctx.store, job_id, limit)
    rows = [
        {"id": r["id"][:8], "status": r["status"], "started": r["started_at"],
         "finished": r["finished_at"], "durationMs": r["duration_ms"],
         "exit": r["shell_exit_code"], "error": r["error_message"]}
        for r in runs
    ]
    ctx.out.emit(runs, lambda: table(rows, list(rows[0]) if rows else ["id"]))
    return 0


def runs_get(ctx: Context) -> int:
    from scheduler import service

    run_id = ctx.positional(0, "runs get <run-id>")
    ctx.no_extra(1, "runs get <run-id>")
    ctx.out.emit(service.get_run(ctx.store, run_id).as_row(), None)
    return 0


def runs_output(ctx: Context) -> int:
    usage = "runs output <run-id> [stdout|stderr]"
    run_id = ctx.positional(0, usage)
    kind = (ctx.args[1] if len(ctx.args) > 1 else "stdout").lower()
    ctx.no_extra(2, usage)
    if kind not in ("stdout", "stderr"):
        raise UsageError(f"usage: openclaw-scheduler {usage}")
    run = ctx.store.require_run(run_id).row
    file_path = run[f"shell_{kind}_path"]
    if ctx.out.json_mode:
        content = _read_output_file(file_path) if file_path else run[f"shell_{kind}"] or ""
        ctx.out.emit({"ok": True, "run_id": run["id"], "kind": kind, "file_path": file_path,
                      "content": content})
    elif file_path:
        _copy_output_file(file_path)
    else:
        content = run[f"shell_{kind}"] or ""
        sys.stdout.write(content if content.endswith("\n") or not content else content + "\n")
    return 0


def _read_output_file(file_path: str) -> str:
    try:
        with open(file_path, encoding="utf-8", errors="replace") as handle:
            return handle.read()
    except OSError as exc:
        raise SchedulerError(f"Cannot read output file {file_path}: {exc.strerror or exc}") from None


def _copy_output_file(file_path: str) -> None:
    """Stream an offloaded output file to stdout in chunks: it may hold gigabytes."""
    last = b"\n"
    try:
        with open(file_path, "rb") as handle:
            while chunk := handle.read(1 << 20):
                sys.stdout.buffer.write(chunk)
                last = chunk[-1:]
    except OSError as exc:
        raise SchedulerError(f"Cannot read output file {file_path}: {exc.strerror or exc}") from None
    if last != b"\n":
        sys.stdout.buffer.write(b"\n")
    sys.stdout.buffer.flush()


def runs_running(ctx: Context) -> int:
    ctx.no_extra(0, "runs running")
    runs = ctx.store.running_runs()
    rows = [{"id": r["id"][:8], "job": r["job_name"], "started": r["started_at"],
             "heartbeat": r["last_heartbeat"]} for r in runs]
    ctx.out.emit(runs, lambda: table(rows, ["id", "job", "started", "heartbeat"]))
    return 0


def runs_stale(ctx: Context) -> int:
    threshold = (
        _positive_int(ctx.args[0], "threshold-s", maximum=MAX_STALE_THRESHOLD_S) if ctx.args else 90
    )
    ctx.no_extra(1, "runs stale [threshold-s]")
    runs = ctx.store.stale_runs(threshold, to_sqlite(utcnow()))
    rows = [{"id": r["id"][:8], "job": r["job_name"], "heartbeat": r["last_heartbeat"]} for r in runs]
    ctx.out.emit(runs, lambda: table(rows, ["id", "job", "heartbeat"]))
    return 0


# -- idempotency ledger --------------------------------------------------------------------------


def idem_status(ctx: Context) -> int:
    job_id = ctx.positional(0, "idem status <job-id>")
    ctx.no_extra(1, "idem status <job-id>")
    entries = ctx.store.ledger_for_job(job_id)
    if not entries:
        ctx.store.require_job(job_id)
    rows = [{"key": e["key"][:12] + "..", "run": (e["run_id"] or "-")[:8], "status": e["status"],
             "claimed": e["claimed_at"], "released": e["released_at"], "expires": e["expires_at"]}
            for e in entries]
    ctx.out.emit(entries, lambda: table(rows, ["key", "run", "status", "claimed", "released", "expires"]))
    return 0


def idem_check(ctx: Context) -> int:
    key = ctx.positional(0, "idem check <key>")
    ctx.no_extra(1, "idem check <key>")
    entry = ctx.store.ledger_entry(key)
    if entry is None:
        ctx.out.emit({"found": False, "key": key}, "Key not found in ledger")
    else:
        ctx.out.emit(entry, None)
    return 0


def idem_release(ctx: Context) -> int:
    key = ctx.positional(0, "idem release <key>")
    ctx.no_extra(1, "idem release <key>")
    before = ctx.store.ledger_entry(key)
    if before is not None and before["status"] == "released":
        ctx.out.emit({"ok": True, "key": key, "already_released": True}, "Key already released")
        return 0
    ctx.store.release_key(key, to_sqlite(utcnow()))
    ctx.out.emit({"ok": True, "key": key, "released": True}, f"Released idempotency key: {key[:12]}..")
    return 0


def idem_prune(ctx: Context) -> int:
    ctx.no_extra(0, "idem prune")
    pruned = ctx.store.prune_ledger( to_sqlite(utcnow()))
    ctx.out.emit({"ok": True, "pruned": pruned}, f"Pruned {pruned} expired idempotency entries")
    return 0


# -- delivery aliases ------------------------------------------------------------------------------

_ALIAS_NAME: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}")


def alias_list(ctx: Context) -> int:
    ctx.no_extra(0, "alias list")
    aliases = ctx.store.list_aliases()
    ctx.out.emit(aliases, lambda: table(aliases, ["alias", "channel", "target", "description"]))
    return 0


def alias_add(ctx: Context) -> int:
    usage = "alias add <name> <channel> <target> [description]"
    name = ctx.positional(0, usage).lstrip("@")
    channel = checked_line(ctx.positional(1, usage), "channel", 64)
    target = checked_line(ctx.positional(2, usage), "target", 256)
    description = " ".join(ctx.args[3:]) or None
    if not _ALIAS_NAME.fullmatch(name):
        raise ValidationError(
            f"alias name {quoted(name)} must be 1-64 letters, digits, '_', '.', ':' or '-' (jobs use it as "
            "delivery_to \"@<name>\")"
        )
    if description is not None:
        checked_line(description, "description", 256)
    row = ctx.store.add_alias(name, channel, target, description)
    ctx.out.emit({"ok": True, "alias": row["alias"], "channel": row["channel"], "target": row["target"],
                  "description": row["description"]}, f"Added alias: @{name} -> {channel}/{target}")
    return 0


def alias_remove(ctx: Context) -> int:
    from scheduler.errors import NotFoundError

    name = ctx.positional(0, "alias remove <name>").lstrip("@")
    ctx.no_extra(1, "alias remove <name>")
    if not ctx.store.remove_alias(name):
        raise NotFoundError(f"Alias not found: {name}")
    ctx.out.emit({"ok": True, "alias": name, "removed": True}, f"Removed alias: @{name}")
    return 0


# -- resource pools -------------------------------------------------------------------------------


def pools_list(ctx: Context) -> int:
    ctx.no_extra(0, "pools list")
    rows = ctx.store.pool_overview(to_sqlite(utcnow()))
    ctx.out.emit({"ok": True, "pools": rows},
                 lambda: table(rows, ["name", "capacity", "configured", "jobs", "running", "waiting"]))
    return 0


def pools_set(ctx: Context) -> int:
    from scheduler.models import pools

    usage = "pools set <name> <capacity>"
    name = pools.check_name(ctx.positional(0, usage))
    capacity = pools.check_capacity(
        _positive_int(ctx.positional(1, usage), "capacity", maximum=pools.MAX_CAPACITY))
    ctx.no_extra(2, usage)
    previous = ctx.store.pool_capacity(name)
    ctx.store.set_pool_capacity(name, capacity, to_sqlite(utcnow()))
    was = pools.DEFAULT_CAPACITY if previous is None else previous
    ctx.out.emit({"ok": True, "pool": name, "capacity": capacity, "previous_capacity": was},
                 f"Pool {name!r}: capacity {capacity} (was {was})")
    return 0


def pools_remove(ctx: Context) -> int:
    from scheduler.errors import NotFoundError
    from scheduler.models import pools

    name = ctx.positional(0, "pools remove <name>")
    ctx.no_extra(1, "pools remove <name>")
    if not ctx.store.remove_pool(name):
        raise NotFoundError(
            f"No capacity is set for pool {name!r}; it already has the default, {pools.DEFAULT_CAPACITY}"
        )
    ctx.out.emit({"ok": True, "pool": name, "removed": True, "capacity": pools.DEFAULT_CAPACITY},
                 f"Pool {name!r}: capacity back to the default, {pools.DEFAULT_CAPACITY}")
    return 0


def _pool_lines(busy: list[dict[str, Any]]) -> list[str]:
    """``status`` lines for the pools with work running or waiting."""
    return [f"Pool:     {p['name']!r} {p['running']}/{p['capacity']} running, {p['waiting']} waiting"
            for p in busy]


def _agent_lines(agents: list[dict[str, Any]]) -> list[str]:
    """``status`` lines for the registry, as the reference prints them."""
    lines = [f"Agents:   {len(agents)}"]
    for agent in agents:
        unread = f" ({agent['unread']} unread)" if agent.get("unread") else ""
        lines.append(f"  {agent['id']}: {agent['status']}{unread}")
    return lines


# -- status, version, schema, cron --------------------------------------------------------------


def status(ctx: Context) -> int:
    from scheduler import paths
    from scheduler.cli import fleet
    from scheduler.engine.lock import probe

    ctx.no_extra(0, "status")
    database = paths.db_path()
    data = {"db_path": str(database), **ctx.store.overview(90, to_sqlite(utcnow()))}
    data["daemon"] = probe(database)
    data["instances"], data["unplaceable"] = fleet.fleet(ctx.store)

    def human() -> None:
        daemon = data["daemon"]
        served = (f"running (pid {daemon['pid']}, since {daemon['since']} UTC, v{daemon['version']})"
                  if daemon["running"] else "not running")
        if daemon["running"] and daemon.get("state") not in (None, "serving"):
            served += f"; {daemon['state']}"
            if daemon.get("error"):
                served += f": {daemon['error']}"
        budgets = data["budgets"]
        nxt = data["next_job"]
        lines = [
            f"DB:       {data['db_path']}",
            f"Daemon:   {served}",
            f"Jobs:     {data['jobs_total']} total, {data['jobs_enabled']} enabled",
            f"Running:  {data['running_runs']} ({data['stale_runs']} stale)",
            f"Dispatch: {budgets.get('pending_dispatches', 0)} pending, "
            f"{budgets.get('overlap_queued_dispatches', 0)} overlap-queued",
            f"Approval: {budgets.get('pending_approvals', 0)} pending",
            f"Next:     {nxt['name']} at {nxt['next_run_at']} UTC" if nxt else "Next:     -",
            *_pool_lines(data["pools"]),
            *_agent_lines(data["agents"]),
            *fleet.status_lines(data["instances"], data["unplaceable"]),
        ]
        sys.stdout.write(printable_lines("\n".join(lines)) + "\n")

    ctx.out.emit(data, human)
    return 0


def version(ctx: Context) -> int:
    from scheduler import __version__

    ctx.no_extra(0, "version")
    ctx.out.emit({"ok": True, "name": "openclaw-scheduler", "version": __version__,
                  "schema_version": ctx.store.schema_version()})
    return 0


def schema(ctx: Context) -> int:
    from scheduler.models.schemas import DISPATCH_SCHEMA, JOB_SCHEMA, MESSAGE_SCHEMA, RUN_SCHEMA

    target = (ctx.args[0] if ctx.args else "all").lower()
    ctx.no_extra(1, "schema [jobs|runs|dispatches|messages|all]")
    schemas: dict[str, Any] = {"jobs": JOB_SCHEMA, "runs": RUN_SCHEMA, "dispatches": DISPATCH_SCHEMA,
                               "messages": MESSAGE_SCHEMA}
    aliases = {"job": "jobs", "run": "runs", "dispatch": "dispatches", "message": "messages"}
    target = aliases.get(target, target)
    if target == "all":
        ctx.out.emit(schemas)
    elif target in schemas:
        ctx.out.emit(schemas[target])
    else:
        raise UsageError(f"Unknown schema target: {target}; expected jobs, runs, dispatches, messages or all")
    return 0


def cron_next(ctx: Context) -> int:
    from scheduler import cron

    usage = "cron next '<expr>' [--tz <zone>] [--from <ISO 8601>] [--count <n>]"
    tz = ctx.option("--tz") or "UTC"
    start_text = ctx.option("--from")
    count_text = ctx.option("--count")
    expr = ctx.positional(0, usage)
    ctx.no_extra(1, usage)
    count = _positive_int(count_text, "--count", maximum=MAX_CRON_COUNT) if count_text else 5
    _check_cron_expression(expr)
    try:
        start = parse_user_datetime(start_text) if start_text else utcnow()
    except ValueError as exc:
        raise ValidationError(f"--from: {exc}") from None
    if expr.strip() == cron.NEVER_SENTINEL:
        raise ValidationError(f"{quoted(expr)} is the reserved never-fires sentinel; it has no fire times")
    try:
        cron.zone(tz)
    except ValidationError:
        raise ValidationError(
            f"--tz {quoted(tz)} is not a valid IANA timezone (e.g. UTC, Europe/Berlin, America/New_York)"
        ) from None
    times = cron.preview(expr, tz, start, count)
    ctx.out.emit({"ok": True, "expr": expr, "tz": tz, "next": times}, "\n".join(times))
    return 0


def _check_cron_expression(expr: str) -> None:
    """What ``schedule_cron`` must be, checked before the evaluator sees the expression."""
    if len(expr) > MAX_CRON_EXPR_LENGTH:
        raise ValidationError(f"cron expression exceeds max length of {MAX_CRON_EXPR_LENGTH}")
    if UNSAFE_CONTROLS.search(expr) or LINE_BREAKING.search(expr) or first_lone_surrogate(expr):
        raise ValidationError(f"cron expression {quoted(expr)} contains control characters")


# -- messages (cli/messaging.py, loaded only by these commands) --------------------------------


def _messaging(name: str) -> Handler:
    def handler(ctx: Context) -> int:
        from scheduler.cli import messaging

        result: int = getattr(messaging, name)(ctx)
        return result

    handler.__name__ = name
    return handler


_MESSAGING: Final = {
    ("messages", "send"): "messages_send",
    ("msg", "send"): "msg_send",
    ("msg", "inbox"): "msg_inbox",
    ("msg", "outbox"): "msg_outbox",
    ("msg", "thread"): "msg_thread",
    ("msg", "ack"): "msg_ack",
    ("msg", "receipts"): "msg_receipts",
    ("msg", "read"): "msg_read",
    ("msg", "readall"): "msg_readall",
    ("msg", "unread"): "msg_unread",
    ("queue", "list"): "queue_list",
    ("queue", None): "queue_bare",
    ("queue", "clear"): "queue_clear",
    ("queue", "prune"): "queue_prune",
}


# -- agents (cli/agents.py) ----------------------------------------------------------------------


def agents_list(ctx: Context) -> int:
    from scheduler.cli import agents

    return agents.agents_list(ctx)


def agents_get(ctx: Context) -> int:
    from scheduler.cli import agents

    return agents.agents_get(ctx)


def agents_register(ctx: Context) -> int:
    from scheduler.cli import agents

    return agents.agents_register(ctx)


COMMANDS: dict[tuple[str, str | None], Handler] = {
    ("jobs", "list"): jobs_list,
    ("jobs", "get"): jobs_get,
    ("jobs", "tree"): jobs_tree,
    ("jobs", "add"): jobs_add,
    ("jobs", "validate"): jobs_validate,
    ("jobs", "update"): jobs_update,
    ("jobs", "enable"): jobs_enable,
    ("jobs", "disable"): jobs_disable,
    ("jobs", "delete"): jobs_delete,
    ("jobs", "run"): jobs_run,
    ("jobs", "cancel"): jobs_cancel,
    ("jobs", "approve"): jobs_approve,
    ("jobs", "reject"): jobs_reject,
    ("approvals", "list"): approvals_list,
    ("approvals", "pending"): approvals_list,
    ("runs", "list"): runs_list,
    ("runs", "get"): runs_get,
    ("runs", "output"): runs_output,
    ("runs", "running"): runs_running,
    ("runs", "stale"): runs_stale,
    ("alias", "list"): alias_list,
    ("alias", "add"): alias_add,
    ("alias", "remove"): alias_remove,
    ("idem", "status"): idem_status,
    ("idem", "check"): idem_check,
    ("idem", "release"): idem_release,
    ("idem", "prune"): idem_prune,
    ("pools", "list"): pools_list,
    ("pools", "set"): pools_set,
    ("pools", "remove"): pools_remove,
    ("status", None): status,
    ("version", None): version,
    ("schema", None): schema,
    ("cron", "next"): cron_next,
    **{key: _messaging(name) for key, name in _MESSAGING.items()},
    ("agents", "list"): agents_list,
    ("agents", "get"): agents_get,
    ("agents", "register"): agents_register,
}
