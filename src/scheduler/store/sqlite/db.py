"""One SQLite connection, its pragmas, transactions and error translation.

Store functions are synchronous and take a ``Database``; the CLI calls them directly (a command
must start in a few tens of milliseconds) and the daemon runs them on one dedicated thread
through ``AsyncDatabase``. That keeps every query in one place for both.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any, TypeVar

from scheduler.errors import (
    StoreBusyError,
    StoreConstraintError,
    StoreCorruptError,
    StoreError,
    StoreFullError,
    StoreIOError,
    StoreReadOnlyError,
    StoreValueError,
)

Row = dict[str, Any]
BUSY_TIMEOUT_MS = 5000
_SYNCHRONOUS_MODES = ("OFF", "NORMAL", "FULL", "EXTRA")


# The column names of the statement read last: (its description, the names). Rebuilt only when
# another statement is read; one tuple, so a thread never pairs a description with wrong names.
_names_of: tuple[Any, tuple[str, ...]] = (None, ())


def _dict_row(cursor: sqlite3.Cursor, row: Sequence[Any]) -> Row:
    global _names_of
    description, names = _names_of
    if cursor.description is not description:
        description = cursor.description
        names = tuple(column[0] for column in description)
        _names_of = (description, names)
    return dict(zip(names, row, strict=True))


# SQLite's primary result codes (the low byte of an extended code) we tell apart.
_SQLITE_BUSY, _SQLITE_LOCKED, _SQLITE_READONLY, _SQLITE_IOERR = 5, 6, 8, 10
_SQLITE_CORRUPT, _SQLITE_FULL, _SQLITE_CANTOPEN, _SQLITE_TOOBIG = 11, 13, 14, 18
_SQLITE_CONSTRAINT, _SQLITE_NOTADB = 19, 26

CORRUPT_FIX = (
    "stop every process that uses it, then restore the latest backup, or salvage what is left "
    "with: sqlite3 {path} .recover | sqlite3 {path}.recovered"
)


_NOT_UTF8 = "Could not decode to UTF-8"
T = TypeVar("T")


def _tolerant_text(raw: bytes) -> str:
    return raw.decode("utf-8", "replace")


def _primary_code(exc: sqlite3.Error) -> int | None:
    code = getattr(exc, "sqlite_errorcode", None)
    return None if code is None else int(code) & 0xFF


def translate_error(exc: BaseException, path: Path) -> StoreError:
    """The project's error for anything SQLite (or binding a value for it) can raise: its class
    says how to react, its message what a person can do."""
    if isinstance(exc, OverflowError):
        return StoreValueError(f"a number is too large to store in {path} (over 64 bits): {exc}")
    if isinstance(exc, UnicodeError):
        return StoreValueError(f"a text is not valid Unicode and cannot be stored in {path}: {exc}")
    text = str(exc)
    lowered = text.lower()
    code = _primary_code(exc) if isinstance(exc, sqlite3.Error) else None
    if code == _SQLITE_FULL or "disk is full" in lowered:
        return StoreFullError(f"the disk holding {path} is full; free space and retry (nothing was written)")
    if code == _SQLITE_READONLY or "readonly" in lowered or "read-only" in lowered:
        return StoreReadOnlyError(
            f"{path} is read-only for this user; check its permissions and those of its directory"
        )
    if code in (_SQLITE_BUSY, _SQLITE_LOCKED) or "locked" in lowered or "busy" in lowered:
        return StoreBusyError(f"{path} stayed locked by another writer for {BUSY_TIMEOUT_MS} ms; retry")
    if code == _SQLITE_CANTOPEN or "unable to open" in lowered:
        return StoreError(f"cannot open {path}: check that its directory exists and is writable")
    if code in (_SQLITE_CORRUPT, _SQLITE_NOTADB) or "malformed" in lowered or "not a database" in lowered:
        return StoreCorruptError(
            f"{path} is damaged or not a scheduler database ({text}); " + CORRUPT_FIX.format(path=path)
        )
    if code == _SQLITE_CONSTRAINT or isinstance(exc, sqlite3.IntegrityError):
        return StoreConstraintError(f"a write to {path} broke a database constraint: {text}")
    if code == _SQLITE_TOOBIG or isinstance(exc, sqlite3.DataError):
        return StoreValueError(f"a value is too large to store in {path}: {text}")
    if code == _SQLITE_IOERR:
        return StoreIOError(f"the operating system failed a read or write of {path} ({text}); "
                            "check the disk and the kernel log")
    return StoreError(f"database error on {path}: {text}")


# What binding a Python value for SQLite can raise besides sqlite3.Error.
_STORE_FAILURES = (sqlite3.Error, OverflowError, UnicodeError)


def _create_private_file(path: Path) -> None:
    """Create a new, valid, empty database at ``path``, 0600, in one step: it is written under a
    temporary name and linked into place, so the path never holds a half-made (0-byte) file and
    two processes creating it at once end up sharing one. A 0-byte file at the path is then
    never ours, and is refused rather than taken for a new database."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    if path.exists():
        return
    import tempfile  # only here: it costs every CLI call on an existing database its imports

    fd, temp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".new", dir=path.parent)
    os.close(fd)  # mkstemp makes it 0600
    temp = Path(temp_name)
    try:
        conn = sqlite3.connect(temp_name, isolation_level=None)
        try:
            conn.execute("PRAGMA journal_mode = WAL")  # writes the header: a non-empty file
        finally:
            conn.close()
        with suppress(FileExistsError):
            os.link(temp, path)
    finally:
        for leftover in (temp, temp.with_name(temp.name + "-wal"), temp.with_name(temp.name + "-shm")):
            with suppress(FileNotFoundError):
                leftover.unlink()


def _refuse_empty_file(path: Path) -> None:
    try:
        empty = path.stat().st_size == 0
    except OSError:
        return
    wal = path.with_name(path.name + "-wal")
    if empty and not (wal.exists() and wal.stat().st_size > 0):
        raise StoreCorruptError(
            f"{path} is an empty file (0 bytes), not a scheduler database. If it held your jobs, "
            "restore it from a backup; to start with a new database, delete the file and run again"
        )


class Database:
    """A connection in autocommit mode; writes go through ``transaction()``."""

    def __init__(self, path: Path, conn: sqlite3.Connection) -> None:
        self.path = path
        self.conn = conn

    @classmethod
    def open(cls, path: Path, *, synchronous: str = "FULL", create: bool = True) -> Database:
        if synchronous.upper() not in _SYNCHRONOUS_MODES:
            raise StoreError(f"unknown SQLite synchronous mode {synchronous!r}")
        is_memory = str(path) == ":memory:"
        try:
            if not is_memory:
                if create:
                    _create_private_file(path)
                elif not path.exists():
                    raise StoreError(f"no scheduler database at {path}")
                _refuse_empty_file(path)
            conn = sqlite3.connect(
                str(path),
                timeout=BUSY_TIMEOUT_MS / 1000,
                isolation_level=None,
                check_same_thread=False,
            )
            conn.row_factory = _dict_row
            conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            if not is_memory:
                conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA foreign_keys = ON")
            conn.execute(f"PRAGMA synchronous = {synchronous.upper()}")
        except sqlite3.Error as exc:
            raise translate_error(exc, path) from None
        except OSError as exc:
            raise StoreError(f"cannot create {path}: {exc.strerror or exc}") from None
        return cls(path, conn)

    @classmethod
    def open_read_only(cls, path: Path) -> Database:
        """An existing database, opened so that nothing can write it: no file is created, no
        pragma that writes is set, and every write fails (``db copy``'s source)."""
        from urllib.parse import quote

        if not path.is_file():
            raise StoreError(f"no scheduler database at {path}")
        _refuse_empty_file(path)
        try:
            conn = sqlite3.connect(f"file:{quote(str(path.resolve()))}?mode=ro", uri=True,
                                   timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None,
                                   check_same_thread=False)
            conn.row_factory = _dict_row
            conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        except sqlite3.Error as exc:
            raise translate_error(exc, path) from None
        return cls(path, conn)

    def close(self) -> None:
        self.conn.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """``BEGIN IMMEDIATE`` … ``COMMIT``: the write lock is taken up front, so a claim that
        reads then writes cannot interleave with another process's claim. Whatever SQLite raises,
        at any step, leaves as a ``StoreError`` subclass, with the transaction rolled back."""
        try:
            self.conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            raise translate_error(exc, self.path) from None
        try:
            yield self.conn
            self.conn.execute("COMMIT")
        except _STORE_FAILURES as exc:
            self._rollback()
            raise translate_error(exc, self.path) from None
        except BaseException:
            self._rollback()
            raise

    @contextmanager
    def reading(self) -> Iterator[sqlite3.Connection]:
        """The connection for a read of several statements, outside any transaction."""
        yield self.conn

    def _rollback(self) -> None:
        if self.conn.in_transaction:
            with suppress(sqlite3.Error):
                self.conn.execute("ROLLBACK")

    def query(self, sql: str, params: Sequence[Any] | dict[str, Any] = ()) -> list[Row]:
        try:
            return list(self.conn.execute(sql, params).fetchall())
        except sqlite3.OperationalError as exc:
            if _NOT_UTF8 not in str(exc):
                raise translate_error(exc, self.path) from None
            return self._read_tolerantly(lambda: list(self.conn.execute(sql, params).fetchall()))
        except _STORE_FAILURES as exc:
            raise translate_error(exc, self.path) from None

    def query_one(self, sql: str, params: Sequence[Any] | dict[str, Any] = ()) -> Row | None:
        try:
            row: Row | None = self.conn.execute(sql, params).fetchone()
        except sqlite3.OperationalError as exc:
            if _NOT_UTF8 not in str(exc):
                raise translate_error(exc, self.path) from None
            row = self._read_tolerantly(lambda: self.conn.execute(sql, params).fetchone())
        except _STORE_FAILURES as exc:
            raise translate_error(exc, self.path) from None
        return row

    def _read_tolerantly(self, read: Callable[[], T]) -> T:
        """Read again, text that is not UTF-8 (another program wrote it) decoded with U+FFFD for
        the bad bytes, rather than fail every read of its rows. Only then: the C decoder is much
        faster than a Python one for every text value."""
        self.conn.text_factory = _tolerant_text
        try:
            return read()
        except _STORE_FAILURES as exc:
            raise translate_error(exc, self.path) from None
        finally:
            self.conn.text_factory = str

    def scalar(self, sql: str, params: Sequence[Any] | dict[str, Any] = ()) -> Any:
        row = self.query_one(sql, params)
        return None if row is None else next(iter(row.values()))

    def data_version(self) -> int:
        """Changes whenever another connection commits; the daemon's cue that the CLI wrote."""
        return int(self.scalar("PRAGMA data_version"))

    def checkpoint(self, mode: str = "PASSIVE") -> None:
        self.query(f"PRAGMA wal_checkpoint({mode})")

    def integrity_problems(self, *, quick: bool = False, limit: int = 5) -> list[str]:
        """What ``PRAGMA integrity_check`` (or the faster ``quick_check``) finds; [] when sound.
        A file too damaged to be read at all is one problem, not an exception."""
        pragma = "quick_check" if quick else "integrity_check"
        try:
            rows = self.conn.execute(f"PRAGMA {pragma}({int(limit)})").fetchall()
        except sqlite3.Error as exc:
            return [str(exc)]
        found = [str(next(iter(row.values()))) for row in rows]
        return [] if found == ["ok"] else found

    def file_identity(self) -> tuple[int, int] | None:
        """(device, inode) of the database path now; None when nothing is there."""
        try:
            info = os.stat(self.path)
        except OSError:
            return None
        return info.st_dev, info.st_ino
