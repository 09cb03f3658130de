"""``db check | prune [--dry-run] | vacuum``: the database's health and size, by hand.

``db prune`` applies the same retention pass as the daemon's hourly prune (engine/retention.py),
with the same ``SCHEDULER_RUNS_KEEP_*`` / ``SCHEDULER_APPROVALS_KEEP_DAYS`` settings; with
``--dry-run`` it only counts. ``db vacuum`` refuses while a daemon serves the file: VACUUM holds
the database's exclusive lock for its whole run, and the daemon's writes would time out.
"""

from __future__ import annotations

from typing import Any, Final

from scheduler.cli.context import Context, Handler
from scheduler.errors import SchedulerError
from scheduler.timeutil import sqlite_now

REFERENCE_SCHEMA_VERSION: Final = 23


class DaemonServesError(SchedulerError):
    """The command needs the database to itself, and a daemon serves it."""


def _retention_pass(ctx: Context, *, dry_run: bool) -> Any:
    from scheduler import paths
    from scheduler.engine import retention
    from scheduler.models.retention import RetentionPolicy

    policy = RetentionPolicy.from_env()
    artifacts = paths.artifacts_dir(paths.db_path())
    return retention.prune(ctx.store, policy, artifacts, sqlite_now(), dry_run=dry_run)


def _database_label() -> str:
    from scheduler import paths
    from scheduler.store import shown_location

    return shown_location(str(paths.db_target()))


def db_check(ctx: Context) -> int:
    from scheduler import paths
    from scheduler.engine.lock import probe

    ctx.no_extra(0, "db check")
    store = ctx.store
    problems = store.integrity_problems()
    version = store.schema_version()
    data = {"ok": not problems, "db_path": _database_label(), "integrity": problems or ["ok"],
            "schema_version": version, "schema_current": store.schema_current(),
            "bytes": store.file_bytes(), "daemon_running": bool(probe(paths.db_path())["running"]),
            "would_prune": _retention_pass(ctx, dry_run=True).as_dict()}

    schema = f"v{version} (reference v{REFERENCE_SCHEMA_VERSION}), revision " + (
        "current" if data["schema_current"] else "NOT current")
    lines = [f"DB:         {data['db_path']} ({_size(store.file_bytes())})",
             f"Integrity:  {'ok' if not problems else '; '.join(problems)}",
             f"Schema:     {schema}",
             f"Daemon:     {'running' if data['daemon_running'] else 'not running'}",
             "Would prune:", *_count_lines(data["would_prune"])]
    ctx.out.emit(data, "\n".join(lines))
    return 0 if not problems else 4


def db_prune(ctx: Context) -> int:
    dry_run = ctx.flag("--dry-run")
    ctx.no_extra(0, "db prune [--dry-run]")
    report = _retention_pass(ctx, dry_run=dry_run).as_dict()

    title = "Would prune (dry run, nothing deleted):" if dry_run else "Pruned:"
    ctx.out.emit({"ok": True, **report}, "\n".join([title, *_count_lines(report)]))
    return 0


def db_vacuum(ctx: Context) -> int:
    from scheduler import paths
    from scheduler.engine.lock import probe

    ctx.no_extra(0, "db vacuum")
    daemon = probe(paths.db_path())
    if daemon["running"]:
        raise DaemonServesError(
            f"a daemon (pid {daemon.get('pid')}) serves this database; VACUUM locks it for its "
            "whole run and would stall the daemon's writes: stop the daemon, then vacuum")
    before = ctx.store.file_bytes()
    ctx.store.vacuum()
    after = ctx.store.file_bytes()
    ctx.out.emit({"ok": True, "bytes_before": before, "bytes_after": after},
                 f"Vacuumed: {_size(before)} -> {_size(after)}")
    return 0


def _count_lines(report: dict[str, Any]) -> list[str]:
    files = report["files"]
    return [f"  runs        {_by_rule(report['runs'])}",
            f"  approvals   {report['approvals']}",
            f"  messages    {_by_rule(report['messages'])}",
            f"  ledger      {report['ledger_entries']}",
            f"  jobs        {_by_rule(report['jobs'])}",
            f"  instances   {report['instances']}",
            f"  files       {files['run_dirs']} run directories, {files['orphan_dirs']} orphaned; "
            f"{files['files']} files, {_size(files['bytes'])}"]


def _by_rule(counts: dict[str, int]) -> str:
    return f"{sum(counts.values())} (" + ", ".join(f"{k} {v}" for k, v in counts.items()) + ")"


def _size(count: int) -> str:
    value = float(count)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


COMMANDS: dict[tuple[str, str | None], Handler] = {
    ("db", "check"): db_check,
    ("db", "prune"): db_prune,
    ("db", "vacuum"): db_vacuum,
}
