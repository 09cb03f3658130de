"""Backups as an operator sees them: where they live, their names, retention, and a restore.

Layout under the backup directory (``SCHEDULER_BACKUP_DIR``, else ``<SCHEDULER_HOME>/backups``):
``scheduler-<UTC stamp>.db`` from ``backup create``; ``snapshots/YYYY-MM-DD/HH-MM.db`` and
``rollups/YYYY-MM-DD/HH.db`` from the daemon (the reference's remote layout); and
``pre-restore/scheduler-<UTC stamp>.db``, the database as it was before each restore. The file
work itself (the online copy, the check, the swap) is the store's (store/backups.py).
"""

from __future__ import annotations

import contextlib
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Final

from scheduler import paths
from scheduler.engine.lock import probe
from scheduler.errors import DaemonLockedError, StoreCorruptError, ValidationError
from scheduler.store.backups import check_backup, create_backup, preserve_database, replace_database

SNAPSHOTS: Final = "snapshots"
ROLLUPS: Final = "rollups"
PRE_RESTORE: Final = "pre-restore"
MANUAL: Final = "manual"


def backup_dir(env: dict[str, str] | None = None) -> Path:
    env = dict(os.environ) if env is None else env
    explicit = env.get("SCHEDULER_BACKUP_DIR", "").strip()
    if explicit:
        return Path(explicit).expanduser()
    return paths.scheduler_home(env) / "backups"


def _stamp(now: datetime) -> str:
    return now.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")


def manual_path(directory: Path, now: datetime) -> Path:
    return directory / f"scheduler-{_stamp(now)}.db"


def snapshot_path(directory: Path, now: datetime) -> Path:
    utc = now.astimezone(UTC)
    return directory / SNAPSHOTS / utc.strftime("%Y-%m-%d") / utc.strftime("%H-%M.db")


def rollup_path(directory: Path, now: datetime) -> Path:
    utc = now.astimezone(UTC)
    return directory / ROLLUPS / utc.strftime("%Y-%m-%d") / utc.strftime("%H.db")


def take(database: Path, dest: Path) -> dict[str, Any]:
    """An online backup of ``database`` at ``dest``, checked after it is written."""
    create_backup(database, dest)
    found = check_backup(dest)
    if not found.ok:  # the source itself is damaged: say so, and keep nothing that looks sound
        dest.unlink()
        raise StoreCorruptError(f"the backup of {database} fails its check ({found.problems[0]}); "
                                "the database itself is damaged (nothing was kept)")
    return found.as_dict()


def list_backups(directory: Path) -> list[dict[str, Any]]:
    """Every backup file under ``directory``, newest first."""
    if not directory.is_dir():
        return []
    rows = []
    for path in directory.rglob("*.db"):
        if path.name.startswith("."):
            continue  # a copy being written
        info = path.stat()
        relative = path.relative_to(directory)
        kind = relative.parts[0] if len(relative.parts) > 1 else MANUAL
        rows.append({"path": str(path), "kind": kind, "size_bytes": info.st_size,
                     "modified": datetime.fromtimestamp(info.st_mtime, UTC).isoformat(
                         timespec="seconds")})
    return sorted(rows, key=lambda r: (r["modified"], r["path"]), reverse=True)


def instant_of(path: Path, directory: Path) -> datetime | None:
    """The UTC instant a daemon snapshot or rollup was taken, read from its path."""
    return taken_at(path.relative_to(directory).parts)


def taken_at(relative: tuple[str, ...]) -> datetime | None:
    """The same from the parts of a relative path or object key (``snapshots``, day, file)."""
    formats = {SNAPSHOTS: "%Y-%m-%d/%H-%M.db", ROLLUPS: "%Y-%m-%d/%H.db"}
    if len(relative) != 3 or relative[0] not in formats:
        return None
    try:
        return datetime.strptime("/".join(relative[1:]), formats[relative[0]]).replace(tzinfo=UTC)
    except ValueError:
        return None


def expired(relative: tuple[str, ...], now: datetime, *, snapshot_hours: int,
            rollup_days: int) -> bool:
    """Whether a daemon snapshot or rollup is past its retention (other files never are)."""
    limits = {SNAPSHOTS: timedelta(hours=snapshot_hours), ROLLUPS: timedelta(days=rollup_days)}
    taken = taken_at(relative)
    return taken is not None and now - taken > limits[relative[0]]


def prune(directory: Path, now: datetime, *, snapshot_hours: int, rollup_days: int) -> list[Path]:
    """Delete the daemon's snapshots older than ``snapshot_hours`` and rollups older than
    ``rollup_days``; backups taken by hand and pre-restore copies are never pruned."""
    removed = []
    for kind in (SNAPSHOTS, ROLLUPS):
        for path in sorted((directory / kind).glob("*/*.db")):
            relative = path.relative_to(directory).parts
            if expired(relative, now, snapshot_hours=snapshot_hours, rollup_days=rollup_days):
                path.unlink()
                removed.append(path)
        for day in (directory / kind).glob("*"):
            with contextlib.suppress(OSError):
                day.rmdir()  # only when empty
    return removed


def restore(backup: Path, database: Path, directory: Path, *, force: bool,
            now: datetime) -> dict[str, Any]:
    """Verify ``backup``, keep the current database in ``pre-restore/``, then swap the backup
    in. Refused while a daemon holds the lock, unless ``force`` (which stops nothing)."""
    daemon = probe(database)
    if daemon["running"] and not force:
        raise DaemonLockedError(
            f"a scheduler daemon (pid {daemon['pid']}) serves {database}; stop it first, then "
            "restore (--force restores anyway and does not stop it)")
    found = check_backup(backup)
    if not found.ok:
        raise ValidationError(f"{backup} is not a sound scheduler backup: {found.problems[0]} "
                              "(nothing was changed)")
    kept = None
    if database.exists():
        kept = directory / PRE_RESTORE / f"scheduler-{_stamp(now)}.db"
        preserve_database(database, kept)
    replace_database(backup, database, exclusive=not daemon["running"])
    result: dict[str, Any] = {"restored": str(database), "from": str(backup),
                              "pre_restore": None if kept is None else str(kept),
                              "jobs": found.jobs, "runs": found.runs}
    if daemon["running"]:
        result["warning"] = (f"the daemon (pid {daemon['pid']}) was not stopped; it will see its "
                             "database replaced and exit: start it again")
    return result
