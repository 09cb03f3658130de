"""Where the scheduler keeps its files. Light on imports: every CLI call resolves these."""

from __future__ import annotations

import os
from pathlib import Path


def scheduler_home(env: dict[str, str] | None = None) -> Path:
    env = dict(os.environ) if env is None else env
    explicit = env.get("SCHEDULER_HOME", "").strip()
    if explicit:
        return Path(explicit).expanduser()
    return Path(env.get("HOME") or Path.home()) / ".openclaw" / "scheduler"


def db_path(env: dict[str, str] | None = None) -> Path:
    """``SCHEDULER_DB`` if set, else ``<SCHEDULER_HOME>/scheduler.db``."""
    env = dict(os.environ) if env is None else env
    explicit = env.get("SCHEDULER_DB", "").strip()
    if explicit:
        return Path(explicit).expanduser()
    return scheduler_home(env) / "scheduler.db"


def artifacts_dir(database: Path, env: dict[str, str] | None = None) -> Path:
    env = dict(os.environ) if env is None else env
    explicit = env.get("SCHEDULER_ARTIFACTS_DIR", "").strip()
    if explicit:
        return Path(explicit).expanduser()
    return database.parent / "artifacts"


def lock_path(database: Path) -> Path:
    """The daemon's single-instance lock file, beside the database."""
    return database.with_name(database.name + ".lock")
