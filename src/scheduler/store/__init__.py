"""Persistent state: the ``Store`` interface (``api``) and its backends (``sqlite``, and
``postgres`` for a fleet of daemons sharing one database)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from scheduler.store.api import Store

URL_SCHEMES = ("postgresql://", "postgres://")


def is_database_url(target: str | Path) -> bool:
    """A PostgreSQL URL rather than a SQLite file path."""
    return isinstance(target, str) and target.startswith(URL_SCHEMES)


def open_store(target: Path | str, *, synchronous: str = "FULL") -> Store:
    """The store at ``target`` (a SQLite file path, or a ``postgresql://`` URL), created and
    migrated as needed."""
    if is_database_url(target):
        from scheduler.store.postgres.store import PostgresStore

        return PostgresStore.open_url(str(target))
    from scheduler.store.sqlite.store import SqliteStore

    return SqliteStore.open(Path(target), synchronous=synchronous)
