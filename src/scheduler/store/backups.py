"""Backup files of the store, whichever backend holds it: copy, check, preserve, swap.

These work on database files rather than on an open ``Store``: a backup is taken on a
connection of its own (so the daemon's store thread is not held while it is written), and a
restore replaces the file under every connection. Backend-neutral callers (the CLI, the daemon's
backup task) come here; only this module reaches the SQLite implementation.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from scheduler.models.backups import BackupCheck


def create_backup(database: Path, dest: Path) -> None:
    """A consistent online copy of ``database`` as the new file ``dest`` (0600)."""
    from scheduler.store.sqlite.backup import copy_online

    copy_online(database, dest)


def check_backup(path: Path) -> BackupCheck:
    """Integrity check and schema check of a backup file, read-only."""
    from scheduler.store.sqlite.backup import check

    return check(path)


def preserve_database(database: Path, dest: Path) -> None:
    """Keep the current database at ``dest`` (a raw copy if it is too damaged to be read)."""
    from scheduler.store.sqlite.backup import preserve

    preserve(database, dest)


def replace_database(backup: Path, database: Path, *, exclusive: bool) -> None:
    """Swap a copy of ``backup`` in at ``database`` atomically; ``exclusive`` refuses while
    another process has the database open."""
    from scheduler.store.sqlite.backup import replace_database as swap

    swap(backup, database, exclusive=exclusive)
