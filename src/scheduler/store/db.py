"""One SQLite connection, its pragmas, transactions and error translation.

Store functions are synchronous and take a ``Database``; the CLI calls them directly (a command
must start in a few tens of milliseconds) and the daemon runs them on one dedicated thread
through ``AsyncDatabase``. That keeps every query in one place for both.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

from scheduler.errors import StoreError

Row = dict[str, Any]
BUSY_TIMEOUT_MS = 5000
_SYNCHRONOUS_MODES = ("OFF", "NORMAL", "FULL", "EXTRA")


def _dict_row(cursor: sqlite3.Cursor, row: Sequence[Any]) -> Row:
    return {column[0]: value for column, value in zip(cursor.description, row, strict=True)}


def explain_sqlite_error(exc: sqlite3.Error, path: Path) -> str:
    """Turn an SQLite error into a sentence that says what to do."""
    text = str(exc)
    lowered = text.lower()
    if "database or disk is full" in lowered or "disk is full" in lowered:
        return f"the disk holding {path} is full; free space and retry (nothing was written)"
    if "readonly" in lowered or "read-only" in lowered:
        return f"{path} is read-only for this user; check its permissions and those of its directory"
    if "locked" in lowered or "busy" in lowered:
        return f"{path} stayed locked by another writer for {BUSY_TIMEOUT_MS} ms; retry the command"
    if "unable to open" in lowered:
        return f"cannot open {path}: check that its directory exists and is writable"
    if "malformed" in lowered or "not a database" in lowered:
        return f"{path} is not a readable scheduler database ({text})"
    return f"database error on {path}: {text}"


def _create_private_file(path: Path) -> None:
    """Create the DB file 0600 before SQLite does, so it never exists with looser bits."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    except FileExistsError:
        return
    os.close(fd)


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
            raise StoreError(explain_sqlite_error(exc, path)) from None
        except OSError as exc:
            raise StoreError(f"cannot create {path}: {exc.strerror or exc}") from None
        return cls(path, conn)

    def close(self) -> None:
        self.conn.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """``BEGIN IMMEDIATE`` … ``COMMIT``: the write lock is taken up front, so a claim that
        reads then writes cannot interleave with another process's claim."""
        try:
            self.conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            raise StoreError(explain_sqlite_error(exc, self.path)) from None
        try:
            yield self.conn
            self.conn.execute("COMMIT")
        except sqlite3.Error as exc:
            self._rollback()
            if isinstance(exc, sqlite3.IntegrityError):
                raise
            raise StoreError(explain_sqlite_error(exc, self.path)) from None
        except BaseException:
            self._rollback()
            raise

    def _rollback(self) -> None:
        if self.conn.in_transaction:
            with suppress(sqlite3.Error):
                self.conn.execute("ROLLBACK")

    def query(self, sql: str, params: Sequence[Any] | dict[str, Any] = ()) -> list[Row]:
        try:
            return list(self.conn.execute(sql, params).fetchall())
        except sqlite3.Error as exc:
            raise StoreError(explain_sqlite_error(exc, self.path)) from None

    def query_one(self, sql: str, params: Sequence[Any] | dict[str, Any] = ()) -> Row | None:
        try:
            row: Row | None = self.conn.execute(sql, params).fetchone()
        except sqlite3.Error as exc:
            raise StoreError(explain_sqlite_error(exc, self.path)) from None
        return row

    def scalar(self, sql: str, params: Sequence[Any] | dict[str, Any] = ()) -> Any:
        row = self.query_one(sql, params)
        return None if row is None else next(iter(row.values()))

    def data_version(self) -> int:
        """Changes whenever another connection commits; the daemon's cue that the CLI wrote."""
        return int(self.scalar("PRAGMA data_version"))

    def checkpoint(self, mode: str = "PASSIVE") -> None:
        self.query(f"PRAGMA wal_checkpoint({mode})")
