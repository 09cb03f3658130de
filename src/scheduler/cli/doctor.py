"""``doctor``: what an operator would check by hand, each as a PASS/WARN/FAIL line with its fix.

The checks read the same settings the daemon does (config.py), so a variable the daemon would
refuse is itself a failure here. Nothing is changed: the database is opened only if it exists
(opening migrates it, as the daemon would), and the gateway sees one ``GET /health``.
"""

from __future__ import annotations

import os
import shutil
import stat
import sys
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Final, Literal

from scheduler.cli.context import Context, Handler
from scheduler.errors import SchedulerError

if TYPE_CHECKING:
    from scheduler.config import Settings
    from scheduler.store.api import Store

Verdict = Literal["PASS", "WARN", "FAIL"]

GATEWAY_HEALTH_TIMEOUT_S: Final = 3.0
LOW_DISK_BYTES: Final = 256 * 1024**2
USAGE: Final = "doctor [--json]"


@dataclass(frozen=True)
class Check:
    name: str
    verdict: Verdict
    detail: str
    fix: str | None = None


def _passed(name: str, detail: str) -> Check:
    return Check(name, "PASS", detail)


# -- the database -----------------------------------------------------------------------------


def _mode_check(name: str, path: Path, verdict: Verdict, wanted: int) -> Check:
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        return Check(name, verdict, f"{path} is mode {mode:04o}: other users can reach it",
                     f"chmod {wanted:o} {path}")
    return _passed(name, f"{path} is mode {mode:04o}")


def shared_database_checks(label: str, open_store: Callable[[], Store]) -> Iterator[Check]:
    """A PostgreSQL database: no file to check, only that it opens at the current schema."""
    try:
        store = open_store()
        revision = store.schema_version()
    except SchedulerError as exc:
        yield Check("database", "FAIL", f"cannot open {label}: {exc}",
                    "check the URL, the server and the network (docs/multi-host.md)")
        return
    yield _passed("database", f"{label} (PostgreSQL, shared by the fleet)")
    yield _passed("database integrity", "kept by the server")
    yield _passed("schema", f"migrated, reference schema version {revision}")


def database_checks(database: Path, open_store: Callable[[], Store]) -> Iterator[Check]:
    if not database.exists():
        yield Check("database", "FAIL", f"{database} does not exist",
                    "start the daemon once (openclaw-scheduler start) to create it, or point "
                    "SCHEDULER_DB at the existing database")
        return
    yield _passed("database", str(database))
    db_files = [database, *(p for p in (Path(f"{database}-wal"), Path(f"{database}-shm")) if p.exists())]
    for path in db_files:
        yield _mode_check("database permissions", path, "FAIL", 0o600)
    try:
        store = open_store()
        problems = store.integrity_problems()
        revision = store.schema_version()
    except SchedulerError as exc:
        yield Check("database integrity", "FAIL", f"cannot open it: {exc}",
                    "restore a backup, or see docs/operating.md (Check the installation)")
        return
    if problems:
        yield Check("database integrity", "FAIL", "; ".join(problems[:3]), store.repair_hint())
    else:
        yield _passed("database integrity", "integrity_check: ok")
    yield _passed("schema", f"migrated, reference schema version {revision}")
    free = shutil.disk_usage(database.parent).free
    if free < LOW_DISK_BYTES:
        yield Check("free disk", "WARN", f"{free // 1024**2} MiB free in {database.parent}",
                    "free some space: SQLite needs room to write its journal and to vacuum")
    else:
        yield _passed("free disk", f"{free // 1024**2} MiB free in {database.parent}")


def daemon_check(database: Path) -> Check:
    from scheduler.engine.lock import probe

    holder = probe(database)
    if not holder["running"]:
        return Check("daemon", "WARN", f"no daemon holds the lock of {database}: nothing runs",
                     "start it: openclaw-scheduler service install, or openclaw-scheduler start")
    detail = f"pid {holder['pid']} serves it since {holder['since']} (state {holder['state']})"
    if holder["state"] not in (None, "serving"):
        return Check("daemon", "FAIL", f"{detail}: {holder.get('error') or 'not serving'}",
                     "read the daemon's log (journalctl --user -u openclaw-scheduler)")
    return _passed("daemon", detail)


# -- the gateway ------------------------------------------------------------------------------


def gateway_reachable(url: str, token: str | None, timeout_s: float = GATEWAY_HEALTH_TIMEOUT_S) -> bool:
    """One ``GET /health`` within ``timeout_s``, as the daemon's health check sends it."""
    import asyncio

    from scheduler import logs
    from scheduler.gateway.client import GatewayClient

    # The client logs a refused connection at debug level; a CLI answer has no use for it.
    logs.configure(debug=False, secrets=[token] if token else [])

    async def ask() -> bool:
        client = GatewayClient(url, token)
        try:
            return await client.health(timeout_s=timeout_s)
        finally:
            await client.aclose()

    return asyncio.run(ask())


def _token(settings: Settings) -> tuple[str | None, list[Check]]:
    """The token the daemon would use, and the checks on where it comes from."""
    from scheduler.gateway.client import resolve_token

    path = settings.gateway_token_path.expanduser()
    checks: list[Check] = []
    if settings.gateway_token is not None and settings.gateway_token.get_secret_value().strip():
        checks.append(_passed("gateway token", "from OPENCLAW_GATEWAY_TOKEN"))
        return settings.gateway_token.get_secret_value(), checks
    if not path.exists():
        checks.append(Check("gateway token", "WARN", f"none: no OPENCLAW_GATEWAY_TOKEN and no {path}",
                            f"write the gateway's token to {path} (chmod 600), unless the gateway "
                            "needs none"))
        return None, checks
    checks.append(_mode_check("gateway token file", path, "FAIL", 0o600))
    try:
        token = resolve_token(None, path)
    except SchedulerError as exc:
        checks.append(Check("gateway token", "FAIL", str(exc), f"make {path} readable by this user"))
        return None, checks
    checks.append(_passed("gateway token", f"from {path}" if token else f"{path} is empty"))
    return token, checks


def gateway_checks(settings: Settings) -> Iterator[Check]:
    token, token_checks = _token(settings)
    yield from token_checks
    url = settings.gateway_url
    if gateway_reachable(url, token):
        yield _passed("gateway", f"{url}/health answers")
    else:
        yield Check("gateway", "FAIL", f"{url}/health does not answer within {GATEWAY_HEALTH_TIMEOUT_S:g}s "
                    "(agent jobs wait, due, until it does)",
                    "start the gateway (openclaw gateway start), or set OPENCLAW_GATEWAY_URL to "
                    "where it listens")


# -- the host ---------------------------------------------------------------------------------


def shell_check(shell: str) -> Check:
    found = shutil.which(shell)
    if found is None:
        return Check("shell", "FAIL", f"SCHEDULER_SHELL {shell} is missing or not executable: "
                     "every shell job fails", "install it, or set SCHEDULER_SHELL to an existing "
                     "shell such as /bin/sh")
    return _passed("shell", found)


def artifacts_check(directory: Path) -> Check:
    if not directory.exists():
        return _passed("artifacts", f"{directory} (created at the first shell run)")
    if not directory.is_dir() or not os.access(directory, os.W_OK | os.X_OK):
        return Check("artifacts", "FAIL", f"{directory} is not a writable directory: shell output "
                     "cannot be kept", f"chown $USER {directory} && chmod 700 {directory}, or set "
                     "SCHEDULER_ARTIFACTS_DIR")
    return _mode_check("artifacts", directory, "WARN", 0o700)


def service_check(db: Path, environ: Mapping[str, str]) -> Check:
    """Whether ``service install`` installed a unit or plist that runs this database (the
    installer's own rules: where units live, and the ``SCHEDULER_DB`` each one names)."""
    from scheduler import servicefiles

    inputs = servicefiles.inputs_from(environ, python=sys.executable, db=db,
                                      user=environ.get("USER", ""), uid=os.getuid())
    ours = servicefiles.service_files_for_database(inputs.db, inputs, skip=Path())
    if ours:
        return _passed("service", f"installed: {', '.join(map(str, ours))}")
    others = servicefiles.installed_service_files(inputs)
    if others:
        return Check("service", "WARN", f"installed units run another database: "
                     f"{', '.join(map(str, others))}", "openclaw-scheduler service install "
                     "(with this SCHEDULER_DB)")
    return Check("service", "WARN", "not installed as a service: nothing restarts the daemon",
                 "openclaw-scheduler service install")


# -- stored schedules -------------------------------------------------------------------------


def schedule_checks(store: Store) -> Iterator[Check]:
    """Jobs whose stored cron expression or zone our evaluator refuses (a reference database
    may hold croner-only syntax): such a job never gets another fire time."""
    from scheduler import cron
    from scheduler.timeutil import utcnow

    now = utcnow()
    bad = 0
    for row in store.list_jobs():
        expr = row.get("schedule_cron")
        if not expr or row.get("schedule_kind") != "cron":
            continue
        tz = row.get("schedule_tz") or "UTC"
        try:
            cron.next_fire(str(expr), str(tz), now)
        except SchedulerError as exc:
            bad += 1
            yield Check(f"schedule of job {row['id']}", "FAIL",
                        f"{row['name']}: {exc} (tz {tz}); it will not fire again",
                        f"openclaw-scheduler jobs update {row['id']} "
                        "'{\"schedule_cron\": \"<expr>\"}' with an expression that "
                        "`openclaw-scheduler cron next '<expr>'` accepts")
    if not bad:
        yield _passed("schedules", "every stored cron schedule can be evaluated")


# -- the command ------------------------------------------------------------------------------


def all_checks(ctx: Context) -> Iterator[Check]:
    from scheduler.config import load_settings

    try:
        settings = load_settings()
    except SchedulerError as exc:
        yield Check("settings", "FAIL", str(exc), "fix or unset that variable (docs/operating.md)")
        return
    yield _passed("settings", "the environment is valid")
    database = settings.db_path
    opened = False
    checks = (shared_database_checks(settings.db_label, lambda: ctx.store) if settings.db_url
              else database_checks(database, lambda: ctx.store))
    for check in checks:
        opened = opened or (check.name == "database integrity" and check.verdict == "PASS")
        yield check
    yield daemon_check(database)
    yield from gateway_checks(settings)
    yield shell_check(settings.shell)
    yield artifacts_check(settings.artifacts_path)
    yield service_check(database, os.environ)
    if opened:
        yield from schedule_checks(ctx.store)


def doctor(ctx: Context) -> int:
    ctx.no_extra(0, USAGE)
    checks = list(all_checks(ctx))
    failed = [c for c in checks if c.verdict == "FAIL"]
    data = {"ok": not failed, "failures": len(failed),
            "warnings": sum(c.verdict == "WARN" for c in checks),
            "checks": [asdict(c) for c in checks]}

    def human() -> None:
        from scheduler.cli.output import printable_lines

        lines = []
        for check in checks:
            lines.append(f"{check.verdict:4}  {check.name}: {check.detail}")
            if check.fix and check.verdict != "PASS":
                lines.append(f"      fix: {check.fix}")
        summary = "all checks passed" if not failed else f"{len(failed)} check(s) failed"
        lines.append(f"{summary}, {data['warnings']} warning(s)")
        sys.stdout.write(printable_lines("\n".join(lines)) + "\n")

    ctx.out.emit(data, human)
    return 1 if failed else 0


COMMANDS: dict[tuple[str, str | None], Handler] = {
    ("doctor", None): doctor,
}
