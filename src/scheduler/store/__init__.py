"""Persistent state: the ``Store`` interface (``api``) and its backends (``sqlite``)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from scheduler.store.api import Store

# How long a claimed run stays its owner's without a heartbeat, when the caller does not say
# (SCHEDULER_LEASE_S's default). Here, not in api.py, so the store modules a CLI command loads
# can name it without importing the whole interface.
DEFAULT_LEASE_S = 30


def open_store(path: Path, *, synchronous: str = "FULL") -> Store:
    """The store for ``path``, created and migrated as needed (SQLite: the only backend yet)."""
    from scheduler.store.sqlite.store import SqliteStore

    return SqliteStore.open(path, synchronous=synchronous)
