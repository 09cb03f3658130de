"""Bring any reference-compatible database up to our schema, additively and idempotently.

``schema.sql`` only creates what is missing. For tables that already exist (an older reference
database), each column the schema declares but the table lacks is added with its type and
default, found by comparing ``PRAGMA table_info`` against a scratch in-memory copy of the schema.
Nothing is ever dropped or rewritten.
"""

from __future__ import annotations

import sqlite3
from functools import lru_cache
from pathlib import Path

from scheduler.errors import StoreNewerSchemaError
from scheduler.store.sqlite.db import Database, translate_error

# The reference records versions 1..23 in schema_migrations; we keep that ledger identical.
REFERENCE_SCHEMA_VERSION = 23
# Our own revision lives in PRAGMA user_version, which the reference never reads or writes.
# Bump it whenever schema.sql gains a table, column or index.
SCHEMA_REVISION = 2318  # 2315: jobs.placement; 2316: instances and 2317: runs lease, merged


@lru_cache(maxsize=1)
def schema_sql() -> str:
    # Beside this module (package data): a plain path read, not importlib.resources, which
    # costs every CLI call tens of milliseconds of imports.
    return Path(__file__).with_name("schema.sql").read_text(encoding="utf-8")


def _columns(conn: sqlite3.Connection, table: str) -> list[dict[str, object]]:
    cursor = conn.execute(f"PRAGMA table_info({table})")
    names = [d[0] for d in cursor.description]
    return [
        dict(row) if isinstance(row, dict) else dict(zip(names, row, strict=True))
        for row in cursor.fetchall()
    ]


@lru_cache(maxsize=1)
def _expected_columns() -> dict[str, list[dict[str, object]]]:
    scratch = sqlite3.connect(":memory:")
    try:
        scratch.executescript(schema_sql())
        tables = [
            row[0]
            for row in scratch.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
        ]
        return {table: _columns(scratch, table) for table in tables}
    finally:
        scratch.close()


def _add_column_sql(table: str, column: dict[str, object]) -> str:
    name, col_type, default = column["name"], column["type"] or "", column["dflt_value"]
    # ALTER TABLE cannot add NOT NULL without a constant default, nor a non-constant default.
    constant_default = default is not None and "(" not in str(default)
    clause = f"ALTER TABLE {table} ADD COLUMN {name} {col_type}"
    if constant_default:
        clause += f" DEFAULT {default}"
        if column["notnull"]:
            clause += " NOT NULL"
    return clause


def missing_columns(db: Database) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    for table, expected in _expected_columns().items():
        present = {str(c["name"]) for c in _columns(db.conn, table)}
        out.extend((table, str(c["name"])) for c in expected if str(c["name"]) not in present)
    return out


def needs_migration(found: int, where: str) -> bool:
    """Whether a database at revision ``found`` is behind this version's. One a newer version
    migrated is refused (``StoreNewerSchemaError``): it is never marked back down nor migrated
    again by code that does not know what the newer revision added."""
    if found > SCHEMA_REVISION:
        raise StoreNewerSchemaError(
            f"{where} is at schema revision {found}, made by a newer openclaw-scheduler than this "
            f"one (revision {SCHEMA_REVISION}); nothing was changed: upgrade openclaw-scheduler "
            "here, or restore a backup this version made")
    return found < SCHEMA_REVISION


def migrate(db: Database) -> None:
    """Create missing tables, indexes and columns; record schema versions. Safe to repeat."""
    if not needs_migration(int(db.scalar("PRAGMA user_version") or 0), str(db.path)):
        return
    try:
        statements = _statements(schema_sql())
        tables = [s for s in statements if s.upper().startswith("CREATE TABLE")]
        others = [s for s in statements if not s.upper().startswith("CREATE TABLE")]
        with db.transaction() as conn:
            # Again inside the write lock: another process may have migrated it meanwhile.
            found = int(conn.execute("PRAGMA user_version").fetchone()["user_version"] or 0)
            if not needs_migration(found, str(db.path)):
                return
            for statement in tables:
                conn.execute(statement)
            # Columns before indexes: an old table may lack a column a new index covers.
            for table, expected in _expected_columns().items():
                present = {str(c["name"]) for c in _columns(conn, table)}
                for column in expected:
                    if str(column["name"]) not in present:
                        conn.execute(_add_column_sql(table, column))
            for statement in others:
                conn.execute(statement)
            conn.executemany(
                "INSERT OR IGNORE INTO schema_migrations (version) VALUES (?)",
                [(v,) for v in range(1, REFERENCE_SCHEMA_VERSION + 1)],
            )
            conn.execute(f"PRAGMA user_version = {SCHEMA_REVISION}")
    except sqlite3.Error as exc:
        raise translate_error(exc, db.path) from None


def is_current(db: Database) -> bool:
    """One pragma read, so CLI calls on a current DB never take the write lock. (The reference
    only ever adds to a schema, so a DB we brought to this revision stays complete.)"""
    return int(db.scalar("PRAGMA user_version") or 0) == SCHEMA_REVISION


def _statements(script: str) -> list[str]:
    """Split the schema into statements (it has no semicolons inside literals or triggers)."""
    lines = [line for line in script.splitlines() if not line.lstrip().startswith("--")]
    return [s.strip() for s in "\n".join(lines).split(";") if s.strip()]
