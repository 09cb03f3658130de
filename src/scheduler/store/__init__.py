"""Persistent state: the ``Store`` interface (``api``) and its backends (``sqlite``)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from scheduler.errors import StoreError

if TYPE_CHECKING:
    from scheduler.store.api import Store

# How a location names a PostgreSQL database rather than a SQLite file.
_URL_SCHEMES = ("postgresql://", "postgres://")


def open_store(path: Path, *, synchronous: str = "FULL") -> Store:
    """The store for ``path``, created and migrated as needed (SQLite: the only backend yet)."""
    from scheduler.store.sqlite.store import SqliteStore

    return SqliteStore.open(path, synchronous=synchronous)


def is_database_url(location: str) -> bool:
    """Whether ``location`` is a PostgreSQL URL (else it is a SQLite file's path)."""
    return location.strip().lower().startswith(_URL_SCHEMES)


def open_location(location: str, *, read_only: bool = False) -> Store:
    """The store a command names by text (``db copy``'s SOURCE and TARGET): a SQLite file's
    path, or a PostgreSQL URL once that backend is built in. ``read_only``: an existing
    database, opened as it is (never created, migrated or written); else created and migrated
    as ``open_store`` does."""
    if is_database_url(location):
        raise StoreError("this build has no PostgreSQL backend yet: give a SQLite file's path")
    path = Path(location).expanduser()
    if read_only:
        from scheduler.store.sqlite.store import SqliteStore

        return SqliteStore.open_read_only(path)
    return open_store(path)
