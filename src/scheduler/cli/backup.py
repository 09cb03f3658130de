"""``backup create|list|verify|restore``: online backups of the database, and their restore.

None of these opens the database through the store: a backup must not create or migrate the
file it copies, and a restore replaces it. See docs/operating.md, "Back up" and "Restore".
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from scheduler import paths
from scheduler.cli.context import Context, Handler
from scheduler.cli.output import table
from scheduler.errors import ValidationError
from scheduler.timeutil import utcnow

CREATE_USAGE = "backup create [PATH]"
VERIFY_USAGE = "backup verify PATH"
RESTORE_USAGE = "backup restore PATH [--force]"


def _existing_file(text: str) -> Path:
    path = Path(text).expanduser()
    if not path.is_file():
        raise ValidationError(f"no backup file at {path}")
    return path


def _sqlite_only() -> None:
    if paths.db_url():
        raise ValidationError("backup files are for a SQLite database; SCHEDULER_DB is PostgreSQL: "
                              "back it up with pg_dump (or the server's own backups)")


def backup_create(ctx: Context) -> int:
    from scheduler.ops.backup import backup_dir, manual_path, take

    plain = [a for a in ctx.args if not a.startswith("--")]
    ctx.no_extra(1, CREATE_USAGE)
    dest = Path(plain[0]).expanduser() if plain else manual_path(backup_dir(), utcnow())
    _sqlite_only()
    found = take(paths.db_path(), dest)
    ctx.out.emit({"ok": True, **found},
                 f"backup written: {dest} ({found['jobs']} jobs, {found['runs']} runs, "
                 f"{found['size_bytes']} bytes)")
    return 0


def backup_list(ctx: Context) -> int:
    from scheduler.ops.backup import backup_dir, list_backups

    ctx.no_extra(0, "backup list")
    directory = backup_dir()
    rows = list_backups(directory)

    def human() -> None:
        sys.stdout.write(f"backups in {directory}:\n")
        table(rows, ["modified", "kind", "size_bytes", "path"])

    ctx.out.emit(rows, human)
    return 0


def backup_verify(ctx: Context) -> int:
    from scheduler.store.backups import check_backup

    path = _existing_file(ctx.positional(0, VERIFY_USAGE))
    ctx.no_extra(1, VERIFY_USAGE)
    found = check_backup(path)
    ctx.out.emit(found.as_dict(), lambda: _print_check(found.as_dict()))
    return 0 if found.ok else 4


def _print_check(found: dict[str, Any]) -> None:
    if found["ok"]:
        sys.stdout.write(f"OK {found['path']}: integrity and schema pass (revision "
                         f"{found['revision']}, {found['jobs']} jobs, {found['runs']} runs)\n")
        return
    sys.stdout.write(f"FAIL {found['path']}:\n")
    for problem in found["problems"]:
        sys.stdout.write(f"  {problem}\n")


def backup_restore(ctx: Context) -> int:
    from scheduler.ops.backup import backup_dir, restore

    force = ctx.flag("--force")
    path = _existing_file(ctx.positional(0, RESTORE_USAGE))
    ctx.no_extra(1, RESTORE_USAGE)
    _sqlite_only()
    result = restore(path, paths.db_path(), backup_dir(), force=force, now=utcnow())
    lines = [f"restored {result['restored']} from {result['from']} "
             f"({result['jobs']} jobs, {result['runs']} runs)"]
    if result["pre_restore"]:
        lines.append(f"the database as it was is kept at {result['pre_restore']}")
    if "warning" in result:
        lines.append(f"warning: {result['warning']}")
    ctx.out.emit({"ok": True, **result}, "\n".join(lines))
    return 0


COMMANDS: dict[tuple[str, str | None], Handler] = {
    ("backup", "create"): backup_create,
    ("backup", "list"): backup_list,
    ("backup", "verify"): backup_verify,
    ("backup", "restore"): backup_restore,
}
