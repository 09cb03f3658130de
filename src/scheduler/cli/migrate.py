"""``migrate``: import the jobs of OpenClaw's built-in cron (docs/operating.md, "Move from OpenClaw
cron").

The gateway's jobs are read from its jobs file or its state database (read-only), converted by
``ops/cron_import.py``, validated by the normal job validator and written through the Store, one
job at a time. Ids are kept, so a job already here is skipped: a second run imports nothing twice.
A job that cannot be converted or validated is an ERR line; the others are still imported, and
the exit status is 1 when any line is ERR.
"""

from __future__ import annotations

import os
import sys
from datetime import datetime
from typing import TYPE_CHECKING, Any, Final

from scheduler.cli.context import Context, Handler
from scheduler.errors import SchedulerError
from scheduler.timeutil import utcnow

if TYPE_CHECKING:  # imported by the command itself: every CLI call imports this module
    from scheduler.ops.cron_import import Outcome, Source

USAGE: Final = "migrate [--from PATH] [--dry-run] [--include-system] [--json]"
DISABLE_ALL: Final = "openclaw config set cron.enabled false"
ALREADY_HERE: Final = "already imported (a job with this id exists)"


def migrate(ctx: Context) -> int:
    from scheduler.ops.cron_import import convert, find_source, host_timezone, load_entries

    from_path = ctx.option("--from")
    dry_run = ctx.flag("--dry-run")
    include_system = ctx.flag("--include-system")
    ctx.no_extra(0, USAGE)
    source = find_source(from_path, dict(os.environ))
    entries = load_entries(source)
    now = utcnow()
    host_tz = host_timezone()
    seen: set[str] = set()
    outcomes = [_apply(ctx, convert(entry, include_system=include_system, now=now, host_tz=host_tz),
                       seen, dry_run, now) for entry in entries]
    report = _report(source, outcomes, dry_run)
    ctx.out.emit(report, lambda: _print_human(report))
    return 1 if report["totals"]["errors"] else 0


def _apply(ctx: Context, outcome: Outcome, seen: set[str], dry_run: bool, now: datetime) -> Outcome:
    """Check the outcome against what is stored, then validate and (unless a dry run) create."""
    if outcome.job_id in seen and outcome.job_id:
        outcome.status, outcome.reason, outcome.spec = "skip", "duplicate id: listed earlier", None
        return outcome
    if outcome.job_id and ctx.store.get_job(outcome.job_id) is not None:
        outcome.status, outcome.reason, outcome.spec = "skip", ALREADY_HERE, None
        return outcome
    seen.add(outcome.job_id)
    if outcome.status != "ok" or outcome.spec is None:
        return outcome
    try:
        _create(ctx, outcome.spec, dry_run, now)
    except SchedulerError as exc:
        outcome.status, outcome.reason = "err", str(exc)
    return outcome


def _create(ctx: Context, spec: dict[str, Any], dry_run: bool, now: datetime) -> None:
    from scheduler import service
    from scheduler.models.job import new_job_row
    from scheduler.models.validation import validate_job_spec

    if dry_run:
        new_job_row(validate_job_spec(dict(spec), None, "create", now=now), now)
        return
    service.create_job(ctx.store, dict(spec), now)


def _report(source: Source, outcomes: list[Outcome], dry_run: bool) -> dict[str, Any]:
    counts = {status: sum(1 for o in outcomes if o.status == status) for status in ("ok", "skip", "err")}
    return {
        "ok": counts["err"] == 0,
        "dry_run": dry_run,
        "source": {"kind": source.kind, "path": str(source.path)},
        "jobs": [_job_line(o) for o in outcomes],
        "totals": {"imported": counts["ok"], "skipped": counts["skip"], "errors": counts["err"]},
        "disable_commands": _disable_commands(outcomes),
    }


def _job_line(outcome: Outcome) -> dict[str, Any]:
    return {"status": outcome.status, "id": outcome.job_id, "name": outcome.name,
            "schedule": outcome.schedule or None, "reason": outcome.reason or None,
            "warnings": outcome.warnings, "job": outcome.spec}


def _disable_commands(outcomes: list[Outcome]) -> list[str]:
    """``openclaw cron disable <id>`` for each job that now (or already) lives here and is still
    enabled in the gateway: otherwise both would run it."""
    moved = [o for o in outcomes if o.enabled_in_openclaw and o.job_id
             and (o.status == "ok" or o.reason == ALREADY_HERE)]
    return [f"openclaw cron disable {o.job_id}" for o in moved]


def _print_human(report: dict[str, Any]) -> None:
    from scheduler.cli.output import printable_lines

    lines = [f"Reading {report['source']['kind']} {report['source']['path']}"]
    for job in report["jobs"]:
        label = {"ok": "OK  ", "skip": "SKIP", "err": "ERR "}[job["status"]]
        detail = job["schedule"] if job["status"] == "ok" else job["reason"]
        lines.append(f"  {label} {job['id'] or '-'} {job['name']}: {detail}")
        lines.extend(f"       WARN {warning}" for warning in job["warnings"])
    totals = report["totals"]
    verb = "would be imported" if report["dry_run"] else "imported"
    lines.append(f"Done: {totals['imported']} {verb}, {totals['skipped']} skipped, "
                 f"{totals['errors']} errors" + (" (dry run: nothing written)" if report["dry_run"] else ""))
    if report["disable_commands"]:
        lines.append("Disable them in OpenClaw's cron, so they do not run twice:")
        lines.extend(f"  {command}" for command in report["disable_commands"])
        lines.append(f"or turn the gateway's cron off altogether: {DISABLE_ALL}")
    sys.stdout.write(printable_lines("\n".join(lines)) + "\n")


COMMANDS: dict[tuple[str, str | None], Handler] = {("migrate", None): migrate}
