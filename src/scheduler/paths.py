"""Where the scheduler keeps its files. Light on imports: every CLI call resolves these."""

from __future__ import annotations

import os
import re
from pathlib import Path

from scheduler.errors import ConfigError


def scheduler_home(env: dict[str, str] | None = None) -> Path:
    env = dict(os.environ) if env is None else env
    explicit = env.get("SCHEDULER_HOME", "").strip()
    if explicit:
        return Path(explicit).expanduser()
    return Path(env.get("HOME") or Path.home()) / ".openclaw" / "scheduler"


DB_URL_SCHEMES = ("postgresql://", "postgres://")
# With a PostgreSQL database, this stands in for the database file in <SCHEDULER_HOME>: the
# daemon's lock (one daemon per home) and the default artifacts directory are kept beside it.
FLEET_PLACEHOLDER = "fleet-instance"


# "scheme:/..." that is not one of ours: a mistyped or foreign URL, never meant as a relative file
# path (which would silently make a new, empty SQLite database under the working directory).
_URL_LIKE = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*:/")


def db_setting_problem(value: str, name: str = "SCHEDULER_DB") -> str | None:
    """Why ``value`` (``SCHEDULER_DB``'s, or what ``name`` says) cannot name a database, or None.
    Shows no password."""
    value = value.strip()
    if value.startswith(DB_URL_SCHEMES) or not _URL_LIKE.match(value):
        return None
    scheme = value.split(":", 1)[0]
    return (f"{name} is a {scheme}: URL; a database is a postgresql:// (or postgres://) URL "
            "or a SQLite file's path")


def db_url(env: dict[str, str] | None = None) -> str | None:
    """``SCHEDULER_DB`` when it is a PostgreSQL URL, else None."""
    env = dict(os.environ) if env is None else env
    explicit = env.get("SCHEDULER_DB", "").strip()
    return explicit if explicit.startswith(DB_URL_SCHEMES) else None


def db_path(env: dict[str, str] | None = None) -> Path:
    """``SCHEDULER_DB`` if set, else ``<SCHEDULER_HOME>/scheduler.db``. When SCHEDULER_DB is a
    PostgreSQL URL: ``<SCHEDULER_HOME>/fleet-instance``, which names the local files only."""
    env = dict(os.environ) if env is None else env
    explicit = env.get("SCHEDULER_DB", "").strip()
    if explicit.startswith(DB_URL_SCHEMES):
        return scheduler_home(env) / FLEET_PLACEHOLDER
    problem = db_setting_problem(explicit)
    if problem:
        raise ConfigError(problem)
    if explicit:
        return Path(explicit).expanduser()
    return scheduler_home(env) / "scheduler.db"


def db_target(env: dict[str, str] | None = None) -> Path | str:
    """What the store is opened on: the PostgreSQL URL, or the SQLite file."""
    return db_url(env) or db_path(env)


def artifacts_dir(database: Path, env: dict[str, str] | None = None) -> Path:
    env = dict(os.environ) if env is None else env
    explicit = env.get("SCHEDULER_ARTIFACTS_DIR", "").strip()
    if explicit:
        return Path(explicit).expanduser()
    return database.parent / "artifacts"


def lock_path(database: Path) -> Path:
    """The daemon's single-instance lock file, beside the database."""
    return database.with_name(database.name + ".lock")
