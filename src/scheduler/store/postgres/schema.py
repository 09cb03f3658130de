"""The PostgreSQL schema, derived from ``store/sqlite/schema.sql``, and its migration.

One schema text serves both engines: each ``CREATE TABLE`` is rewritten for PostgreSQL (64-bit
integers, double precision, text in the "C" collation so that stored instants and ids sort
byte-wise as in SQLite, and a hidden ``rowid`` identity column that keeps insertion order), and
the SQLite functions the store's SQL uses are provided by ``FUNCTIONS``. The migration is
additive and idempotent like SQLite's: missing tables, columns and indexes are created, nothing
is dropped, and several daemons starting at once serialize on an advisory lock.
"""

from __future__ import annotations

import re
import sqlite3
from functools import lru_cache
from typing import Any

from scheduler.store.postgres.db import WAKE_CHANNEL, PgDatabase
from scheduler.store.sqlite.migrations import (
    REFERENCE_SCHEMA_VERSION,
    SCHEMA_REVISION,
    _expected_columns,
    _statements,
    needs_migration,
    schema_sql,
)

MIGRATION_LOCK_KEY = 0x6F63_4D67  # "ocMg"
# Our revision, as SQLite keeps it in PRAGMA user_version (the only table SQLite lacks).
REVISION_TABLE = "scheduler_revision"
# Tables whose writes wake every daemon (LISTEN/NOTIFY): what the CLI changes that a daemon acts on.
WAKING_TABLES = ("jobs", "job_dispatch_queue", "approvals", "messages", "resource_pools")

_TS = "CASE WHEN {t} = 'now' THEN (now() AT TIME ZONE 'UTC') ELSE scheduler_ts({t}) END"
FUNCTIONS = f"""
CREATE OR REPLACE FUNCTION scheduler_ts(t text) RETURNS timestamp LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
  IF t IS NULL THEN RETURN NULL; END IF;
  RETURN t::timestamp;
EXCEPTION WHEN others THEN RETURN NULL;
END $$;
CREATE OR REPLACE FUNCTION scheduler_interval(m text) RETURNS interval LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
  IF m IS NULL THEN RETURN NULL; END IF;
  RETURN m::interval;
EXCEPTION WHEN others THEN RETURN NULL;
END $$;
CREATE OR REPLACE FUNCTION datetime(t text) RETURNS text LANGUAGE sql STABLE AS $$
  SELECT to_char({_TS.format(t='t')}, 'YYYY-MM-DD HH24:MI:SS') $$;
CREATE OR REPLACE FUNCTION datetime(t text, m text) RETURNS text LANGUAGE sql STABLE AS $$
  SELECT to_char({_TS.format(t='t')} + scheduler_interval(m), 'YYYY-MM-DD HH24:MI:SS') $$;
CREATE OR REPLACE FUNCTION julianday(t text) RETURNS double precision LANGUAGE sql STABLE AS $$
  SELECT extract(epoch FROM {_TS.format(t='t')})::double precision / 86400.0 + 2440587.5 $$;
CREATE OR REPLACE FUNCTION strftime(f text, t text) RETURNS text LANGUAGE sql STABLE AS $$
  SELECT CASE WHEN f = '%s' THEN floor(extract(epoch FROM {_TS.format(t='t')}))::bigint::text
              ELSE to_char({_TS.format(t='t')}, 'YYYY-MM-DD HH24:MI:SS') END $$;
CREATE OR REPLACE FUNCTION max(a anycompatible, b anycompatible) RETURNS anycompatible
  LANGUAGE sql IMMUTABLE AS $$ SELECT CASE WHEN a IS NULL OR b IS NULL THEN NULL ELSE GREATEST(a, b) END $$;
CREATE OR REPLACE FUNCTION min(a anycompatible, b anycompatible) RETURNS anycompatible
  LANGUAGE sql IMMUTABLE AS $$ SELECT CASE WHEN a IS NULL OR b IS NULL THEN NULL ELSE LEAST(a, b) END $$;
CREATE OR REPLACE FUNCTION scheduler_wake() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  PERFORM pg_notify('{WAKE_CHANNEL}', '');
  RETURN NULL;
END $$
"""


def _pg_type(sqlite_type: str) -> str:
    kind = sqlite_type.upper()
    if "INT" in kind:
        return "BIGINT"
    if kind in ("REAL", "FLOAT", "DOUBLE"):
        return "DOUBLE PRECISION"
    if kind == "BLOB":
        return "BYTEA"
    return 'TEXT COLLATE "C"'


_TYPE_WORD = re.compile(r"(?<=\s)(INTEGER|REAL|TEXT|BLOB)(?=[\s,)])")


def _strip_comments(statement: str) -> str:
    return "\n".join(re.sub(r"--.*$", "", line) for line in statement.splitlines())


_REFERENCE = re.compile(r"\s+REFERENCES\s+\w+\s*\(\w+\)(\s+ON\s+DELETE\s+(SET\s+NULL|CASCADE))?", re.I)


def create_table_sql(statement: str) -> str:
    """A ``CREATE TABLE`` of schema.sql, for PostgreSQL. Its foreign keys are added once every
    table exists (``foreign_keys``): SQLite allows a reference to a table created later, and
    runs and the dispatch queue refer to each other."""
    body = _REFERENCE.sub("", _strip_comments(statement))
    body = _TYPE_WORD.sub(lambda m: _pg_type(m.group(1)), body)
    head, rest = body.split("(", 1)
    return f"{head}(\n  rowid BIGINT GENERATED ALWAYS AS IDENTITY,{rest}"


@lru_cache(maxsize=1)
def foreign_keys() -> list[tuple[str, str, str, str, str]]:
    """(table, column, parent table, parent column, ON DELETE action) of schema.sql."""
    scratch = sqlite3.connect(":memory:")
    try:
        scratch.executescript(schema_sql())
        tables = [row[0] for row in scratch.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        found = []
        for table in tables:
            for row in scratch.execute(f"PRAGMA foreign_key_list({table})"):
                found.append((table, str(row[3]), str(row[2]), str(row[4]), str(row[6])))
        return found
    finally:
        scratch.close()


def _add_foreign_keys(conn: Any) -> None:
    present = {str(row["conname"]) for row in conn.execute(
        "SELECT conname FROM pg_constraint WHERE contype = 'f'").fetchall()}
    for table, column, parent, parent_column, on_delete in foreign_keys():
        name = f"fk_{table}_{column}"
        if name not in present:
            action = "" if on_delete.upper() == "NO ACTION" else f" ON DELETE {on_delete}"
            conn.execute(f"ALTER TABLE {table} ADD CONSTRAINT {name} FOREIGN KEY ({column}) "
                         f"REFERENCES {parent}({parent_column}){action}")


def _default_sql(column: dict[str, Any]) -> str:
    default = column["dflt_value"]
    return "" if default is None else f" DEFAULT {default}"


def add_column_sql(table: str, column: dict[str, Any]) -> str:
    kind = _pg_type(str(column["type"] or "TEXT"))
    clause = f"ALTER TABLE {table} ADD COLUMN IF NOT EXISTS {column['name']} {kind}"
    clause += _default_sql(column)
    if column["notnull"] and column["dflt_value"] is not None:
        clause += " NOT NULL"
    return clause


def _present_columns(conn: Any, table: str) -> set[str]:
    rows = conn.execute(
        "SELECT column_name FROM information_schema.columns "
        "WHERE table_schema = current_schema() AND table_name = ?", (table,)
    ).fetchall()
    return {str(row["column_name"]) for row in rows}


def _revision(conn: Any) -> int:
    present = conn.execute("SELECT to_regclass(?) IS NOT NULL AS present", (REVISION_TABLE,)).fetchone()
    if not present or not present["present"]:
        return 0
    row = conn.execute(f"SELECT COALESCE(MAX(revision), 0) AS revision FROM {REVISION_TABLE}").fetchone()
    return int(row["revision"]) if row else 0


def revision(db: PgDatabase) -> int:
    with db.reading() as conn:
        return _revision(conn)


def is_current(db: PgDatabase) -> bool:
    return revision(db) == SCHEMA_REVISION


def migrate(db: PgDatabase) -> None:
    """Create what is missing; record the revision. Safe to repeat, and to run from several
    daemons at once."""
    if not needs_migration(revision(db), db.where):
        return
    statements = _statements(schema_sql())
    tables = [s for s in statements if s.upper().startswith("CREATE TABLE")]
    others = [s for s in statements if not s.upper().startswith("CREATE TABLE")]
    with db.transaction(write_lock=False) as conn:
        conn.execute("SELECT pg_advisory_xact_lock(?)", (MIGRATION_LOCK_KEY,))
        if not needs_migration(_revision(conn), db.where):
            return  # another process migrated while this one waited for the lock
        conn.execute(FUNCTIONS)  # several statements: sent as one simple query
        for statement in tables:
            conn.execute(create_table_sql(statement))
        for table, expected in _expected_columns().items():
            present = _present_columns(conn, table)
            for column in expected:
                if str(column["name"]) not in present:
                    conn.execute(add_column_sql(table, column))
        _add_foreign_keys(conn)
        for statement in others:
            conn.execute(_strip_comments(statement))
        for table in WAKING_TABLES:
            conn.execute(f"DROP TRIGGER IF EXISTS scheduler_wake ON {table}")
            conn.execute(f"CREATE TRIGGER scheduler_wake AFTER INSERT OR UPDATE OR DELETE ON {table} "
                         "FOR EACH ROW EXECUTE FUNCTION scheduler_wake()")
        conn.executemany(
            "INSERT INTO schema_migrations (version) VALUES (?) ON CONFLICT (version) DO NOTHING",
            [(v,) for v in range(1, REFERENCE_SCHEMA_VERSION + 1)],
        )
        conn.execute(f"CREATE TABLE IF NOT EXISTS {REVISION_TABLE} (revision BIGINT NOT NULL, "
                     "applied_at TEXT NOT NULL DEFAULT (datetime('now')))")
        conn.execute(f"INSERT INTO {REVISION_TABLE} (revision) VALUES (?)", (SCHEMA_REVISION,))
