"""One PostgreSQL database behind the interface of ``store/sqlite/db.py``.

The store's SQL lives once, in ``store/sqlite/``, written in the subset both engines share. This
module is what makes it run on PostgreSQL unchanged:

- placeholders: ``?`` and ``:name`` become psycopg's ``%s`` and ``%(name)s`` (``translate``);
- SQLite's ``datetime()``, ``julianday()``, ``strftime('%s', …)`` and two-argument ``MAX``/``MIN``
  exist as SQL functions in the database (``schema.FUNCTIONS``), and every table has a ``rowid``
  column kept in insertion order, which result rows never show;
- values are sent as untyped literals (client-side binding), so that, as in SQLite, ``'5'`` meets
  a text or an integer column alike; booleans are stored as 0/1, whole numbers come back as ints;
- every write transaction first takes one fleet-wide advisory lock: the SQL was written for
  SQLite's ``BEGIN IMMEDIATE`` (one writer at a time), and the lock gives each read-then-write
  exactly that guarantee across daemons. Claims are the exception (``store.PostgresStore``).

The adapter implements the part of the ``sqlite3`` connection API the SQL modules use (``execute``,
``executemany``, cursors with ``fetchone``/``fetchall``/``rowcount``/``description``); that is why
``transaction()`` is typed as yielding a ``sqlite3.Connection``.
"""

from __future__ import annotations

import re
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from decimal import Decimal
from functools import lru_cache
from pathlib import Path
from typing import Any, cast

from scheduler.errors import (
    StoreBusyError,
    StoreConstraintError,
    StoreError,
    StoreFullError,
    StoreIOError,
    StoreReadOnlyError,
    StoreValueError,
)
from scheduler.store import redact_db_url, scrub_db_url

Row = dict[str, Any]
# The key of the advisory lock every write transaction holds (one writer at a time, fleet-wide).
WRITE_LOCK_KEY = 0x6F63_5363  # "ocSc"
# The channel CLI writes and daemons' claims notify on (store/postgres/wakeups.py listens).
WAKE_CHANNEL = "openclaw_scheduler"
CONNECT_TIMEOUT_S = 10
STATEMENT_TIMEOUT_MS = 60_000


_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# Column names of the schema that PostgreSQL reserves and SQLite does not: quoted wherever they
# appear as identifiers (never inside a string literal).
_RESERVED = frozenset({"authorization"})


@lru_cache(maxsize=4096)
def translate(sql: str, with_params: bool = True) -> str:
    """SQLite-style SQL → psycopg's paramstyle (placeholders outside quotes; ``%`` doubled when
    parameters are bound), with ``CAST(… AS INTEGER)`` widened to 64 bits as in SQLite."""
    out: list[str] = []
    i, n, quote = 0, len(sql), ""
    while i < n:
        ch = sql[i]
        if quote:
            out.append("%%" if ch == "%" and with_params else ch)
            if ch == quote:
                quote = ""
            i += 1
            continue
        word = _NAME.match(sql, i) if ch.isalpha() or ch == "_" else None
        if word is not None:
            name = word.group(0)
            out.append(f'"{name}"' if name in _RESERVED else name)
            i = word.end()
            continue
        if ch in ("'", '"'):
            quote = ch
            out.append(ch)
        elif ch == "?":
            out.append("%s")
        elif ch == ":" and i + 1 < n and sql[i + 1] == ":":
            out.append("::")
            i += 2
            continue
        elif ch == ":" and (param := _NAME.match(sql, i + 1)):
            out.append(f"%({param.group(0)})s")
            i = param.end()
            continue
        elif ch == "%":
            out.append("%%" if with_params else "%")
        else:
            out.append(ch)
        i += 1
    return re.sub(r"\bAS\s+INTEGER\s*\)", "AS BIGINT)", "".join(out), flags=re.IGNORECASE)


def first_line(exc: BaseException) -> str:
    """What a driver error says, on one line (its class name when it says nothing)."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def translate_error(exc: BaseException, where: str) -> StoreError:
    """The project's error for what psycopg raises: its class says how to react."""
    import psycopg
    from psycopg import errors

    text = first_line(exc)
    if isinstance(exc, StoreError):
        return exc
    if isinstance(exc, OverflowError):
        return StoreValueError(f"a number is too large to store in {where} (over 64 bits): {exc}")
    if isinstance(exc, ValueError | UnicodeError):  # psycopg refuses NUL in text
        return StoreValueError(f"a value cannot be stored in {where}: {text}")
    if isinstance(exc, errors.DiskFull | errors.OutOfMemory):
        return StoreFullError(f"the PostgreSQL server of {where} is out of space: {text}")
    if isinstance(exc, errors.ReadOnlySqlTransaction | errors.InsufficientPrivilege):
        return StoreReadOnlyError(f"{where} refused a write: {text}")
    if isinstance(exc, errors.DeadlockDetected | errors.SerializationFailure | errors.LockNotAvailable
                  | errors.QueryCanceled):
        return StoreBusyError(f"{where} was busy ({text}); retry")
    if isinstance(exc, psycopg.IntegrityError):
        said = _as_sqlite_says(exc, text)
        return StoreConstraintError(f"a write to {where} broke a database constraint: {said}")
    if isinstance(exc, psycopg.DataError):
        return StoreValueError(f"a value cannot be stored in {where}: {text}")
    if isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError):
        return StoreIOError(f"lost the connection to {where} ({text}); check the server and the network")
    return StoreError(f"database error on {where}: {text}")


def _as_sqlite_says(exc: Any, text: str) -> str:
    """A constraint failure worded as SQLite words it ("UNIQUE constraint failed: jobs.id"):
    the store's callers explain constraint errors by that wording, whichever engine raised it."""
    from psycopg import errors

    diag = exc.diag
    table = diag.table_name or "?"
    if isinstance(exc, errors.UniqueViolation):
        found = re.match(r"Key \((.+?)\)=", diag.message_detail or "")
        columns = ", ".join(f"{table}.{c.strip()}" for c in (found.group(1) if found else "?").split(","))
        return f"UNIQUE constraint failed: {columns} ({text})"
    if isinstance(exc, errors.NotNullViolation):
        return f"NOT NULL constraint failed: {table}.{diag.column_name} ({text})"
    if isinstance(exc, errors.CheckViolation):
        return f"CHECK constraint failed: {diag.constraint_name} ({text})"
    if isinstance(exc, errors.ForeignKeyViolation):
        return f"FOREIGN KEY constraint failed ({text})"
    return text


def _adapters() -> Any:
    """Adapters for every connection: untyped literals for numbers and booleans (0/1), ints for
    whole numerics (SQLite's SUM of integers is an integer)."""
    import psycopg
    from psycopg.adapt import Dumper, Loader

    class UntypedNumber(Dumper):
        def dump(self, obj: Any) -> bytes:
            if isinstance(obj, bool):
                return b"1" if obj else b"0"
            return repr(obj).encode() if isinstance(obj, float) else str(int(obj)).encode()

        def quote(self, obj: Any) -> bytes:
            return b"'" + self.dump(obj) + b"'"

    class WholeNumeric(Loader):
        def load(self, data: Any) -> Any:
            number = Decimal(bytes(data).decode())
            return int(number) if number == number.to_integral_value() else float(number)

    adapters = psycopg.adapt.AdaptersMap(psycopg.adapters)
    for kind in (bool, int, float):
        adapters.register_dumper(kind, UntypedNumber)
    adapters.register_loader("numeric", WholeNumeric)
    return adapters


class _Cursor:
    def __init__(self, cursor: Any) -> None:
        self._cursor = cursor
        self._names: list[str] | None = None  # psycopg builds its description anew on each read

    @property
    def rowcount(self) -> int:
        return int(self._cursor.rowcount)

    @property
    def description(self) -> Any:
        return self._cursor.description

    def _columns(self) -> list[str] | None:
        if self._names is None:
            # Straight from the result: psycopg's description builds a Column object (with its
            # type lookups) per column, which for a jobs row costs more than the query.
            result = self._cursor.pgresult
            if result is None or result.nfields == 0:
                return None
            self._names = [bytes(result.fname(i) or b"").decode() for i in range(result.nfields)]
        return self._names

    def _rows(self, names: list[str], rows: list[Any]) -> list[Row]:
        if "rowid" not in names:
            return [dict(zip(names, row, strict=True)) for row in rows]
        keep = [i for i, name in enumerate(names) if name != "rowid"]
        return [{names[i]: row[i] for i in keep} for row in rows]

    def fetchone(self) -> Row | None:
        names = self._columns()
        if names is None:
            return None
        row = self._cursor.fetchone()
        return None if row is None else self._rows(names, [row])[0]

    def fetchall(self) -> list[Row]:
        names = self._columns()
        if names is None:
            return []
        return self._rows(names, self._cursor.fetchall())

    def __iter__(self) -> Iterator[Row]:
        return iter(self.fetchall())


class Connection:
    """What the SQL modules call on a ``sqlite3.Connection``, on one psycopg connection."""

    def __init__(self, conn: Any, where: str) -> None:
        self.raw = conn
        self.where = where

    @property
    def in_transaction(self) -> bool:
        from psycopg.pq import TransactionStatus

        return bool(self.raw.info.transaction_status != TransactionStatus.IDLE)

    def execute(self, sql: str, params: Sequence[Any] | dict[str, Any] = ()) -> _Cursor:
        cursor = self.raw.cursor()
        try:
            if params:
                cursor.execute(translate(sql), params)
            else:
                cursor.execute(translate(sql, False))
        except Exception as exc:
            raise translate_error(exc, self.where) from None
        return _Cursor(cursor)

    def executemany(self, sql: str, seq: Sequence[Sequence[Any]] | Iterator[Sequence[Any]]) -> _Cursor:
        cursor = self.raw.cursor()
        try:
            cursor.executemany(translate(sql), list(seq))
        except Exception as exc:
            raise translate_error(exc, self.where) from None
        return _Cursor(cursor)


class PgDatabase:
    """A small psycopg pool; every call checks a connection out for its duration, so a server
    restart costs the calls in flight, not the process."""

    def __init__(self, url: str, pool: Any) -> None:
        self.url = url
        self.where = redact_db_url(url)
        self.path = Path(self.where)  # for messages; never opened as a file
        self.pool = pool
        self._local = threading.local()
        # The server sessions of this process's pool: their notifications are our own writes.
        self.backend_pids: set[int] = set()

    @classmethod
    def open(cls, url: str, *, min_size: int = 1, max_size: int = 4) -> PgDatabase:
        try:
            import psycopg
            from psycopg import ClientCursor
            from psycopg_pool import ConnectionPool
        except ImportError:
            raise StoreError(
                "SCHEDULER_DB is a PostgreSQL URL but psycopg is not installed: "
                "pip install 'openclaw-scheduler[postgres]'"
            ) from None
        adapters = _adapters()
        pids: set[int] = set()

        def configure(conn: Any) -> None:
            pids.add(int(conn.info.backend_pid))

        where = redact_db_url(url)
        try:
            # One connection first: a wrong URL or a down server is an error at once, not a
            # pool that retries in the background.
            psycopg.connect(url, connect_timeout=CONNECT_TIMEOUT_S).close()
            pool = ConnectionPool(
                url, min_size=min_size, max_size=max_size, open=True, timeout=CONNECT_TIMEOUT_S,
                kwargs={"autocommit": True, "cursor_factory": ClientCursor, "context": adapters,
                        "connect_timeout": CONNECT_TIMEOUT_S,
                        "options": f"-c statement_timeout={STATEMENT_TIMEOUT_MS} -c TimeZone=UTC"},
                configure=configure, name="scheduler",
            )
        except Exception as exc:
            # libpq quotes a URL it cannot parse whole, password included.
            raise StoreIOError(f"cannot connect to {where}: {scrub_db_url(first_line(exc), url)}") from None
        db = cls(url, pool)
        db.backend_pids = pids
        return db

    def close(self) -> None:
        self.pool.close()

    @contextmanager
    def _connection(self) -> Iterator[Connection]:
        held: Connection | None = getattr(self._local, "conn", None)
        if held is not None:  # inside a transaction on this thread
            yield held
            return
        try:
            manager = self.pool.connection()
            raw = manager.__enter__()
        except Exception as exc:
            raise translate_error(exc, self.where) from None
        try:
            yield Connection(raw, self.where)
        except BaseException as exc:
            manager.__exit__(type(exc), exc, exc.__traceback__)
            raise
        else:
            manager.__exit__(None, None, None)

    @contextmanager
    def transaction(self, *, write_lock: bool = True) -> Iterator[sqlite3.Connection]:
        """One transaction; with ``write_lock`` (the default) it first waits for the fleet-wide
        writer lock, so it runs as SQLite's ``BEGIN IMMEDIATE`` would."""
        with self._connection() as conn:
            try:
                with conn.raw.transaction():
                    if write_lock:
                        conn.execute("SELECT pg_advisory_xact_lock(?)", (WRITE_LOCK_KEY,))
                    self._local.conn = conn
                    try:
                        yield cast(sqlite3.Connection, conn)
                    finally:
                        self._local.conn = None
            except StoreError:
                raise
            except Exception as exc:
                if type(exc).__module__.startswith("psycopg"):
                    raise translate_error(exc, self.where) from None
                raise

    @contextmanager
    def reading(self) -> Iterator[sqlite3.Connection]:
        with self._connection() as conn:
            yield cast(sqlite3.Connection, conn)

    def query(self, sql: str, params: Sequence[Any] | dict[str, Any] = ()) -> list[Row]:
        with self._connection() as conn:
            return conn.execute(sql, params).fetchall()

    def query_one(self, sql: str, params: Sequence[Any] | dict[str, Any] = ()) -> Row | None:
        with self._connection() as conn:
            return conn.execute(sql, params).fetchone()

    def scalar(self, sql: str, params: Sequence[Any] | dict[str, Any] = ()) -> Any:
        row = self.query_one(sql, params)
        return None if row is None else next(iter(row.values()))
