"""Persistent state: the ``Store`` interface (``api``) and its backends (``sqlite``, and
``postgres`` for a fleet of daemons sharing one database)."""

from __future__ import annotations

import re
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


# A password may also come as a query parameter (``?password=...``), which libpq accepts.
_PASSWORD_PARAMETER = re.compile(r"(?i)([?&]password=)([^&#]*)")
_MASK = "***"
_MIN_SCRUBBED_PASSWORD = 4  # a shorter one would mask common letters of an error text


def _split_at_password(url: str) -> tuple[str, str | None, str]:
    """(what precedes the user part's password, the password or None, what follows it).

    Parsed by hand rather than with ``urlsplit``: the URL may be malformed (an unclosed ``[``,
    an unencoded ``/`` or ``@`` in the password) and must still never be shown with its
    password. Everything up to the last ``@`` counts as the user part, so a malformed URL is
    masked too much rather than too little.
    """
    scheme, separator, rest = url.partition("://")
    userinfo, at, host_part = rest.rpartition("@")
    if not (separator and at and ":" in userinfo):
        return url, None, ""
    user, _, password = userinfo.partition(":")
    return f"{scheme}://{user}:", password, f"@{host_part}"


def redact_db_url(url: str) -> str:
    """A database URL without its password, for logs and messages."""
    head, password, tail = _split_at_password(url)
    if password is not None:
        url = f"{head}{_MASK}{tail}"
    return _PASSWORD_PARAMETER.sub(lambda m: m.group(1) + _MASK, url)


def _db_url_passwords(url: str) -> list[str]:
    """The passwords a database URL carries: in its user part, in its query."""
    password = _split_at_password(url)[1]
    found = [] if password is None else [password]
    return found + [m.group(2) for m in _PASSWORD_PARAMETER.finditer(url)]


def scrub_db_url(text: str, url: str) -> str:
    """``text`` (a driver's error message, which may quote the URL it was given) with ``url``
    shown redacted and its password masked wherever else it appears."""
    text = text.replace(url, redact_db_url(url))
    for password in _db_url_passwords(url):
        if len(password) >= _MIN_SCRUBBED_PASSWORD:
            text = text.replace(password, _MASK)
    return text


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
