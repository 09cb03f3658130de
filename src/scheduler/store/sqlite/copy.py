"""The SQL of ``db copy``: tables of user data read in bounded batches, and written in one
transaction (store/copying.py holds the backend-neutral copy built on these).

Portable SQL only (the PostgreSQL backend reuses it): ``SELECT * ... LIMIT 0`` for a table's
columns, keyset pages on ``rowid``, ``INSERT ... ON CONFLICT DO NOTHING``. Table and column names
are never taken from input as they are: each is checked against ``COPY_TABLES`` and the table's
own columns before it is put into a statement.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress

from scheduler.errors import StoreValueError
from scheduler.store.api import CopyTable, Row
from scheduler.store.sqlite.db import Database, translate_error

# Parents before children for every foreign key, except the deferred columns, which are written
# once every table is in: runs.dispatch_queue_id and the queue's run columns form a cycle, and a
# reply may be stored before the message it answers. schema_migrations is bookkeeping: every
# database records its own; so is instances: the daemons that served the source are not the
# target's fleet (each daemon registers itself where it runs). tests/test_db_copy.py checks this
# list against the schema.
COPY_TABLES: tuple[CopyTable, ...] = (
    CopyTable("agents", ("id",), registry=True),
    CopyTable("delivery_aliases", ("alias",), registry=True),
    CopyTable("resource_pools", ("name",), registry=True),
    CopyTable("jobs", ("id",)),
    CopyTable("runs", ("id",), deferred=("dispatch_queue_id",)),
    CopyTable("job_dispatch_queue", ("id",)),
    CopyTable("approvals", ("id",)),
    CopyTable("idempotency_ledger", ("key",)),
    CopyTable("messages", ("id",), deferred=("reply_to",)),
    CopyTable("message_receipts", ("id",)),
    CopyTable("message_recipients", ("message_id", "agent_id")),
    CopyTable("task_tracker", ("id",)),
    CopyTable("task_tracker_agents", ("id",)),
    CopyTable("team_tasks", ("team_id", "id")),
    CopyTable("team_mailbox_events", ("id",)),
    CopyTable("dispatch_labels", ("label",)),
)
_BY_NAME = {table.name: table for table in COPY_TABLES}
# The PostgreSQL backend gives every table a rowid column of its own: never a column to copy.
_ROWID = "rowid"
_PAGE_KEY = "copy_rowid"


def _known(table: str) -> str:
    if table not in _BY_NAME:
        raise StoreValueError(f"{table!r} is not a table db copy moves")
    return table


def table_columns(conn: sqlite3.Connection, table: str) -> list[str]:
    """The table's columns, in their declared order."""
    cursor = conn.execute(f"SELECT * FROM {_known(table)} LIMIT 0")
    return [str(column[0]) for column in cursor.description if column[0] != _ROWID]


def _columns(db: Database, table: str) -> list[str]:
    try:
        with db.reading() as conn:
            return table_columns(conn, table)
    except sqlite3.Error as exc:
        raise translate_error(exc, db.path) from None


def read_rows(db: Database, table: str, batch_size: int,
              columns: Sequence[str] | None) -> Iterator[list[Row]]:
    """Pages of at most ``batch_size`` rows in rowid order, each page one query after the last
    rowid seen: nothing holds more than one page, and rows tied on any other order keep theirs."""
    present = _columns(db, table)
    wanted = list(columns) if columns is not None else present
    unknown = [name for name in wanted if name not in present]
    if unknown:
        raise StoreValueError(f"table {table} has no column {unknown[0]}")
    select = ", ".join(wanted)
    size = max(1, int(batch_size))
    last: int | None = None
    while True:
        if last is None:
            rows = db.query(f"SELECT rowid AS {_PAGE_KEY}, {select} FROM {table} "
                            "ORDER BY rowid LIMIT ?", (size,))
        else:
            rows = db.query(f"SELECT rowid AS {_PAGE_KEY}, {select} FROM {table} "
                            "WHERE rowid > ? ORDER BY rowid LIMIT ?", (last, size))
        if not rows:
            return
        last = int(rows[-1][_PAGE_KEY])
        yield [{name: row[name] for name in wanted} for row in rows]
        if len(rows) < size:
            return


def _count(conn: sqlite3.Connection, table: str) -> int:
    row = conn.execute(f"SELECT COUNT(*) AS n FROM {_known(table)}").fetchone()
    return int(row["n"])  # the connection's rows are dicts (db._dict_row)


def row_counts(db: Database) -> dict[str, int]:
    return {t.name: int(db.scalar(f"SELECT COUNT(*) AS n FROM {t.name}")) for t in COPY_TABLES}


def holds_user_data(db: Database) -> bool:
    return any(db.query_one(f"SELECT 1 AS present FROM {t.name} LIMIT 1") for t in COPY_TABLES)


@contextmanager
def read_snapshot(db: Database) -> Iterator[None]:
    """A read transaction: every read inside it sees one instant of the file (in WAL mode the
    daemon's or the CLI's commits meanwhile are not seen, and not blocked). PostgreSQL needs
    its own (store/postgres/store.py: REPEATABLE READ)."""
    try:
        db.conn.execute("BEGIN")
    except sqlite3.Error as exc:
        raise translate_error(exc, db.path) from None
    try:
        yield
    finally:
        if db.conn.in_transaction:
            with suppress(sqlite3.Error):
                db.conn.execute("ROLLBACK")  # it only read


class SqliteBulkWriter:
    """The writes of one copy, on the connection of its open transaction."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn
        self._present: dict[str, frozenset[str]] = {}

    def _check(self, table: CopyTable, names: Sequence[str]) -> None:
        if table.name not in self._present:
            self._present[table.name] = frozenset(table_columns(self.conn, table.name))
        for name in names:
            if name not in self._present[table.name]:
                raise StoreValueError(
                    f"the target's table {table.name} has no column {name}; bring the target "
                    "to this version's schema (or the source's) first")

    def insert(self, table: CopyTable, rows: Sequence[Row], *, keep_existing: bool = False) -> int:
        if not rows:
            return 0
        names = list(rows[0])
        self._check(_BY_NAME[_known(table.name)], names)
        sql = (f"INSERT INTO {table.name} ({', '.join(names)}) "
               f"VALUES ({', '.join('?' for _ in names)})")
        if keep_existing:
            sql += " ON CONFLICT DO NOTHING"
        cursor = self.conn.executemany(sql, [tuple(row[name] for name in names) for row in rows])
        return int(cursor.rowcount)

    def update(self, table: CopyTable, rows: Sequence[Row]) -> int:
        if not rows:
            return 0
        names = list(rows[0])
        self._check(_BY_NAME[_known(table.name)], names)
        values = [name for name in names if name not in table.key]
        if not values:
            return 0
        sql = (f"UPDATE {table.name} SET {', '.join(f'{name} = ?' for name in values)} "
               f"WHERE {' AND '.join(f'{name} = ?' for name in table.key)}")
        params = [tuple(row[name] for name in (*values, *table.key)) for row in rows]
        return int(self.conn.executemany(sql, params).rowcount)

    def counts(self) -> dict[str, int]:
        return {t.name: _count(self.conn, t.name) for t in COPY_TABLES}


@contextmanager
def bulk_load(db: Database) -> Iterator[SqliteBulkWriter]:
    """The whole copy in one ``BEGIN IMMEDIATE`` transaction (Database.transaction): whatever
    raises inside, from SQLite or from the copy's own checks, rolls every write back."""
    with db.transaction() as conn:
        yield SqliteBulkWriter(conn)
