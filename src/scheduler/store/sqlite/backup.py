"""Backup files of a SQLite store: the online copy, the check, and the swap of a restore.

The copy goes through SQLite's online backup API on a connection of its own, in one step: in
WAL mode that is one read transaction, so the copy is a consistent snapshot while the daemon
goes on writing (the reference copies the raw file, which can tear). Each file is written under
a temporary name, 0600, flushed, then linked into place: a path never holds half a backup.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sqlite3
import tempfile
from pathlib import Path

from scheduler.errors import StoreBusyError, StoreCorruptError, StoreError
from scheduler.models.backups import BackupCheck
from scheduler.store.sqlite.db import BUSY_TIMEOUT_MS, translate_error
from scheduler.store.sqlite.migrations import SCHEMA_REVISION, _expected_columns

SQLITE_HEADER = b"SQLite format 3\x00"
# The tables without which a file is no scheduler database, whatever its revision.
CORE_TABLES = ("jobs", "runs", "schema_migrations")
SIDE_FILES = ("-wal", "-shm", "-journal")


def copy_online(source: Path, dest: Path) -> None:
    """A consistent copy of the database at ``source`` as a new file ``dest`` (never replaced)."""
    if not source.exists():
        raise StoreError(f"no scheduler database at {source}")
    if dest.exists():
        raise StoreError(f"{dest} already exists; choose another path (nothing was written)")
    temp = _private_temp(dest)
    try:
        _backup_into(source, temp)
        _link_into_place(temp, dest)
    finally:
        with contextlib.suppress(FileNotFoundError):
            temp.unlink()


def _private_temp(beside: Path) -> Path:
    """A new empty 0600 file in the directory of ``beside`` (made, 0700, if missing)."""
    try:
        beside.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd, name = tempfile.mkstemp(prefix=f".{beside.name}.", suffix=".part", dir=beside.parent)
    except OSError as exc:
        raise StoreError(f"cannot write in {beside.parent}: {exc.strerror or exc} "
                         "(nothing was written)") from None
    os.close(fd)  # mkstemp creates it 0600, and so it stays
    return Path(name)


def _backup_into(source: Path, target: Path) -> None:
    try:
        src = sqlite3.connect(f"file:{source}?mode=ro", uri=True, timeout=BUSY_TIMEOUT_MS / 1000)
    except sqlite3.Error as exc:
        raise translate_error(exc, source) from None
    try:
        dst = sqlite3.connect(str(target), isolation_level=None)
        try:
            src.backup(dst)  # pages=-1: the whole file in one step, one read transaction
            # A rollback journal: the copy is one self-contained file, no -wal beside it.
            dst.execute("PRAGMA journal_mode = DELETE")
        finally:
            dst.close()
    except sqlite3.Error as exc:
        raise translate_error(exc, source) from None
    finally:
        src.close()
    _fsync(target)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _link_into_place(temp: Path, dest: Path) -> None:
    try:
        os.link(temp, dest)
    except FileExistsError:
        raise StoreError(f"{dest} already exists; choose another path (nothing was written)") from None
    except OSError as exc:
        raise StoreError(f"cannot write {dest}: {exc.strerror or exc}") from None
    _fsync_dir(dest.parent)


def _fsync_dir(directory: Path) -> None:
    with contextlib.suppress(OSError):  # not every file system lets a directory be flushed
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def check(path: Path) -> BackupCheck:
    """Integrity and schema of the file at ``path``, read-only; every finding is a problem line."""
    try:
        size = path.stat().st_size
        with path.open("rb") as handle:
            header = handle.read(len(SQLITE_HEADER))
    except OSError as exc:
        return BackupCheck(str(path), [f"cannot read {path}: {exc.strerror or exc}"])
    if header != SQLITE_HEADER:
        return BackupCheck(str(path), ["not a SQLite database (the file header is wrong)"],
                           size_bytes=size)
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    except sqlite3.Error as exc:
        return BackupCheck(str(path), [f"cannot open: {exc}"], size_bytes=size)
    try:
        return _check_open(conn, path, size)
    except sqlite3.Error as exc:
        return BackupCheck(str(path), [f"unreadable: {exc}"], size_bytes=size)
    finally:
        conn.close()


def _check_open(conn: sqlite3.Connection, path: Path, size: int) -> BackupCheck:
    rows = conn.execute("PRAGMA integrity_check(5)").fetchall()
    problems = [] if [r[0] for r in rows] == ["ok"] else [f"integrity: {r[0]}" for r in rows]
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    revision = int(conn.execute("PRAGMA user_version").fetchone()[0])
    problems += _schema_problems(conn, tables, revision)
    reference = jobs = runs = None
    if not problems:
        reference = conn.execute("SELECT max(version) FROM schema_migrations").fetchone()[0]
        jobs = int(conn.execute("SELECT count(*) FROM jobs").fetchone()[0])
        runs = int(conn.execute("SELECT count(*) FROM runs").fetchone()[0])
    return BackupCheck(str(path), problems, revision, reference, jobs, runs, size)


def _schema_problems(conn: sqlite3.Connection, tables: set[str], revision: int) -> list[str]:
    missing = [t for t in CORE_TABLES if t not in tables]
    if missing:
        return [f"schema: not a scheduler database (no table {', '.join(missing)})"]
    if revision > SCHEMA_REVISION:
        return [f"schema: revision {revision} is newer than this scheduler's ({SCHEMA_REVISION}); "
                "restore it with the version that made it"]
    if revision < SCHEMA_REVISION:
        return []  # an older (or the reference's) database: opening it migrates it, additively
    problems = []
    for table, expected in _expected_columns().items():
        if table not in tables:
            problems.append(f"schema: table {table} is missing")
            continue
        present = {str(row[1]) for row in conn.execute(f"PRAGMA table_info({table})")}
        absent = [str(c["name"]) for c in expected if str(c["name"]) not in present]
        if absent:
            problems.append(f"schema: table {table} lacks column(s) {', '.join(absent)}")
    return problems


def preserve(database: Path, dest: Path) -> None:
    """Keep the current database at ``dest`` before a restore replaces it: the online copy, or,
    when the database is too damaged for that, the raw files (main file and its WAL)."""
    try:
        copy_online(database, dest)
    except StoreError:
        if dest.exists():
            raise
        _raw_copy(database, dest)


def _raw_copy(database: Path, dest: Path) -> None:
    try:
        dest.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        for suffix in ("", "-wal"):
            source = database.with_name(database.name + suffix)
            if source.exists():
                target = dest.with_name(dest.name + suffix)
                fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                os.close(fd)
                shutil.copyfile(source, target)
    except OSError as exc:
        raise StoreError(f"cannot keep a copy of {database} at {dest}: {exc.strerror or exc}; "
                         "nothing was restored") from None


def replace_database(backup: Path, database: Path, *, exclusive: bool) -> None:
    """Put a copy of ``backup`` at ``database`` in one rename. Its old WAL and shared-memory
    files go first: SQLite would otherwise replay the old database's WAL into the new file.
    ``exclusive``: first fold the WAL in with a journal-mode switch, which SQLite refuses while
    any other connection has the database open, so no writer is lost in the swap."""
    staged = _private_temp(database)
    try:
        shutil.copyfile(backup, staged)
        _fsync(staged)
        staged_check = check(staged)  # what is swapped in is what was checked, not the path
        if not staged_check.ok:
            raise StoreCorruptError(f"the copy of {backup} fails its check "
                                    f"({staged_check.problems[0]}); {database} was not changed")
        if exclusive and database.exists():
            _leave_wal_mode(database)
        for suffix in SIDE_FILES:
            with contextlib.suppress(FileNotFoundError):
                database.with_name(database.name + suffix).unlink()
        os.replace(staged, database)
        _fsync_dir(database.parent)
    except OSError as exc:
        raise StoreError(f"cannot replace {database}: {exc.strerror or exc} (it was not changed)") from None
    finally:
        for leftover in (staged, *(staged.with_name(staged.name + x) for x in SIDE_FILES)):
            with contextlib.suppress(FileNotFoundError):
                leftover.unlink()


def _leave_wal_mode(database: Path) -> None:
    try:
        conn = sqlite3.connect(str(database), timeout=0, isolation_level=None)
    except sqlite3.Error as exc:
        raise translate_error(exc, database) from None
    try:
        mode = str(conn.execute("PRAGMA journal_mode = DELETE").fetchone()[0])
    except sqlite3.Error as exc:
        # Busy: another connection. Anything else: a damaged file, with nothing to fold in.
        mode = "busy" if isinstance(translate_error(exc, database), StoreBusyError) else "delete"
    finally:
        conn.close()
    if mode.lower() != "delete":
        raise StoreBusyError(f"another process has {database} open; stop it and retry "
                             "(nothing was changed)")
