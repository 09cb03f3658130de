"""``db copy SOURCE TARGET [--force] [--free] [--host NAME]``: move a database's rows into
another database (each a SQLite file or a PostgreSQL URL).

The copy itself is store/copying.py (backend-neutral, one transaction on the target, counts
verified before the commit). This module decides what may be copied: never from a SQLite file a
daemon serves (it would keep writing while the copy reads), never into a database holding data
unless ``--force``, never from a source that is missing or at another schema revision; and it
pins the jobs of a SQLite source to its host (docs/multi-host.md, "Moving a host's database").
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from scheduler.cli.context import Context, Handler, UsageError
from scheduler.errors import SchedulerError, StoreConstraintError

if TYPE_CHECKING:
    from scheduler.store.api import Store
    from scheduler.store.copying import CopyReport

USAGE = "db copy SOURCE TARGET [--force] [--free] [--host NAME]"
# The host name a fleet knows this machine by (else the system's host name).
HOST_NAME_VARIABLE = "SCHEDULER_HOST_NAME"


class CopyRefusedError(SchedulerError):
    """The copy would lose or mix data: nothing was written."""


def db_copy(ctx: Context) -> int:
    from scheduler import paths
    from scheduler.store import is_database_url, shown_location

    force, free = ctx.flag("--force"), ctx.flag("--free")
    host = ctx.option("--host")
    ctx.no_extra(2, USAGE)
    source, target = ctx.positional(0, USAGE), ctx.positional(1, USAGE)
    for name, location in (("SOURCE", source), ("TARGET", target)):
        problem = paths.db_setting_problem(location, name)
        if problem:  # a mistyped URL as TARGET would make a SQLite file under the working directory
            raise UsageError(problem)
    if free and host is not None:
        raise UsageError("--free leaves jobs unplaced and --host pins them: give one of them")
    from_sqlite = not is_database_url(source)
    if host is not None and not from_sqlite:
        raise UsageError("--host pins the jobs of a SQLite source; a PostgreSQL source's jobs "
                         "keep their placements")
    host_name = None if free or not from_sqlite else _host_name(host)
    _refuse_same_file(source, target)
    for role, location in (("source", source), ("target", target)):
        _refuse_served(role, location)
    report = _copy(source, target, host_name, force=force)
    shown = shown_location(source), shown_location(target)  # never a URL's password
    ctx.out.emit(_as_json(report, *shown, host_name),
                 _as_text(report, *shown, host_name, from_sqlite=from_sqlite))
    return 0


def _host_name(given: str | None) -> str:
    import socket

    from scheduler.models.placement import check_host_name

    name = given if given is not None else (os.environ.get(HOST_NAME_VARIABLE, "").strip()
                                            or socket.gethostname())
    try:
        # The rule a daemon's SCHEDULER_HOST_NAME follows: a pin no daemon could serve is refused.
        return check_host_name(name)
    except ValueError as exc:
        raise UsageError(f"--host: {exc}") from None


def _sqlite_path(location: str) -> Path | None:
    from scheduler.store import is_database_url

    return None if is_database_url(location) else Path(location).expanduser()


def _refuse_same_file(source: str, target: str) -> None:
    src, dst = _sqlite_path(source), _sqlite_path(target)
    if src is not None and dst is not None and src.resolve() == dst.resolve():
        raise CopyRefusedError(f"SOURCE and TARGET are the same file ({src})")


def _refuse_served(role: str, location: str) -> None:
    """A daemon serving the file would write while the copy reads it (the source) or beside
    the copy's transaction (the target): the copy needs the file to itself."""
    from scheduler.engine.lock import probe

    path = _sqlite_path(location)
    if path is None or not path.exists():
        return
    daemon = probe(path)
    if daemon["running"]:
        raise CopyRefusedError(f"a daemon (pid {daemon.get('pid')}) serves the {role} {path}; "
                               "stop it first, then copy")


def _copy(source: str, target: str, host_name: str | None, *, force: bool) -> CopyReport:
    from scheduler.store import open_location, shown_location

    src = open_location(source, read_only=True)
    try:
        if not src.schema_current():
            raise CopyRefusedError(
                f"the source {shown_location(source)} is not at this version's schema revision; if it "
                "is older, run any command on it with this version first (SCHEDULER_DB=<it> "
                "openclaw-scheduler status); if a newer version wrote it, copy it with that version")
        new_file = _sqlite_path(target)
        created = new_file is not None and not new_file.exists()
        try:
            return _copy_into(src, target, host_name, force=force)
        except BaseException:
            if created and new_file is not None:
                _remove_database_file(new_file)  # a failed copy leaves no half-made target
            raise
    finally:
        src.close()


def _copy_into(src: Store, target: str, host_name: str | None, *, force: bool) -> CopyReport:
    from scheduler.store import open_location, shown_location
    from scheduler.store.copying import copy_store

    dst = open_location(target)
    try:
        if not force and dst.holds_user_data():
            held = sum(dst.row_counts().values())
            raise CopyRefusedError(
                f"the target {shown_location(target)} already holds data ({held} rows); copy into a new or "
                "empty database, or add --force to add the source's rows to it (nothing is "
                "replaced; a clashing row fails the whole copy)")
        pin = None if host_name is None else f"host:{host_name}"
        try:
            return copy_store(src, dst, pin=pin, into_existing=force)
        except StoreConstraintError as exc:
            raise CopyRefusedError(f"nothing was copied, the target is as it was: a source row "
                                   f"clashes with one the target holds ({exc})") from None
    finally:
        dst.close()


def _remove_database_file(path: Path) -> None:
    import contextlib

    for leftover in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        with contextlib.suppress(FileNotFoundError):
            leftover.unlink()


def _as_json(report: CopyReport, source: str, target: str, host_name: str | None) -> dict[str, Any]:
    return {"ok": True, "source": source, "target": target, "tables": report.tables,
            "pinned": report.pinned, "host": host_name,
            "placement": None if host_name is None else f"host:{host_name}",
            "kept": report.kept}


def _as_text(report: CopyReport, source: str, target: str, host_name: str | None, *,
             from_sqlite: bool) -> str:
    width = max(len(name) for name in report.tables)
    lines = [f"Copied {source} -> {target} (one transaction; row counts verified):"]
    lines += [f"  {name:<{width}}  {count}" for name, count in report.tables.items()]
    lines += [f"Kept the target's own {count} {name} rows with the same keys"
              for name, count in report.kept.items()]
    if host_name is not None:
        lines.append(f"Pinned {report.pinned} jobs to host:{host_name}; "
                     "use --free to leave them unplaced")
    elif from_sqlite:
        lines.append("Jobs left unplaced (--free): any instance may run them")
    else:
        lines.append("Placements copied as they are (the source is not a SQLite file)")
    return "\n".join(lines)


COMMANDS: dict[tuple[str, str | None], Handler] = {
    ("db", "copy"): db_copy,
}
