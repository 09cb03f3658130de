"""Persistent state: the ``Store`` interface (``api``) and its backends (``sqlite``, and
``postgres`` for a fleet of daemons sharing one database)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from scheduler.store.api import Store

# How long a claimed run stays its owner's without a heartbeat, when the caller does not say
# (SCHEDULER_LEASE_S's default). Here, not in api.py, so the store modules a CLI command loads
# can name it without importing the whole interface.
DEFAULT_LEASE_S = 30


def is_database_url(target: str | Path) -> bool:
    """A PostgreSQL URL rather than a SQLite file path."""
    from scheduler.paths import DB_URL_SCHEMES

    return isinstance(target, str) and target.startswith(DB_URL_SCHEMES)


def redact_db_url(url: str) -> str:
    """A database URL without its password, for logs and messages."""
    from urllib.parse import urlsplit, urlunsplit

    try:
        parts = urlsplit(url)
        if parts.password is None:
            return url
        host = parts.netloc.rsplit("@", 1)[1]
        return urlunsplit(parts._replace(netloc=f"{parts.username or ''}:***@{host}"))
    except ValueError:
        return "postgresql://<unparseable URL>"


def open_store(target: Path | str, *, synchronous: str = "FULL") -> Store:
    """The store at ``target`` (a SQLite file path, or a ``postgresql://`` URL), created and
    migrated as needed."""
    if is_database_url(target):
        from scheduler.store.postgres.store import PostgresStore

        return PostgresStore.open_url(str(target))
    from scheduler.store.sqlite.store import SqliteStore

    return SqliteStore.open(Path(target), synchronous=synchronous)


def open_location(location: str, *, read_only: bool = False) -> Store:
    """The store a command names by text (``db copy``'s SOURCE and TARGET): a SQLite file's
    path or a PostgreSQL URL. ``read_only``: an existing database, opened as it is (never
    created or migrated; nothing of the copy writes it); else as ``open_store`` opens it."""
    if not read_only:
        return open_store(location if is_database_url(location) else Path(location).expanduser())
    if is_database_url(location):
        from scheduler.store.postgres.db import PgDatabase
        from scheduler.store.postgres.store import PostgresStore

        return PostgresStore(PgDatabase.open(location))
    from scheduler.store.sqlite.store import SqliteStore

    return SqliteStore.open_read_only(Path(location).expanduser())


def shown_location(location: str) -> str:
    """The location as a command may print it: a URL without its password."""
    return redact_db_url(location) if is_database_url(location) else location
