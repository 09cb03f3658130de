"""A database a newer version migrated is refused by this one, and left exactly as it was.

Going back to an older openclaw-scheduler (a package downgrade, or an old daemon restarted in a
fleet half-way through an upgrade) must not mark the schema back down nor re-run this version's
migration over the newer one's tables, functions and triggers. Both backends, through the real
CLI and the real daemon.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from scheduler.store import open_store
from scheduler.store.sqlite.migrations import SCHEMA_REVISION

NEWER = SCHEMA_REVISION + 7


def _sqlite_database(tmp_path: Path) -> tuple[str, Callable[[], Any]]:
    import sqlite3

    path = tmp_path / "scheduler.db"
    open_store(path).close()
    with contextlib.closing(sqlite3.connect(path)) as conn:
        conn.execute(f"PRAGMA user_version = {NEWER}")

    def state() -> Any:
        # What the database holds, not its file's bytes: a checkpoint rewrites those.
        with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as conn:
            dump = hashlib.sha256("\n".join(conn.iterdump()).encode()).hexdigest()
            return conn.execute("PRAGMA user_version").fetchone()[0], dump

    return str(path), state


def _postgres_database(url: str) -> tuple[str, Callable[[], Any]]:
    import psycopg

    open_store(url).close()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("INSERT INTO scheduler_revision (revision) VALUES (%s)", (NEWER,))

    def state() -> Any:
        with psycopg.connect(url, autocommit=True) as conn:
            revisions = conn.execute("SELECT revision, applied_at FROM scheduler_revision "
                                     "ORDER BY revision").fetchall()
            # A re-run migration drops and recreates the wake-up triggers: new oids.
            triggers = conn.execute("SELECT oid FROM pg_trigger WHERE tgname = 'scheduler_wake' "
                                    "ORDER BY oid").fetchall()
            functions = conn.execute("SELECT oid, md5(prosrc) FROM pg_proc "
                                     "WHERE proname = 'scheduler_wake'").fetchall()
        return revisions, triggers, functions

    return url, state


@pytest.fixture(params=["sqlite", "postgresql"])
def newer_database(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[str, Callable[[], Any]]:
    if request.param == "sqlite":
        return _sqlite_database(tmp_path)
    return _postgres_database(str(request.getfixturevalue("pg_url")))


def _run(location: str, home: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SCHEDULER_", "OPENCLAW_"))}
    env |= {"SCHEDULER_DB": location, "HOME": str(home), "OPENCLAW_GATEWAY_URL": "http://127.0.0.1:9"}
    return subprocess.run([sys.executable, "-m", "scheduler", *argv], env=env, capture_output=True,
                          text=True, timeout=60)


def test_a_newer_schema_is_refused_in_one_line_and_left_untouched(
        newer_database: tuple[str, Callable[[], Any]], tmp_path: Path) -> None:
    location, state = newer_database
    before = state()
    expected = f"is at schema revision {NEWER}, made by a newer openclaw-scheduler"

    listed = _run(location, tmp_path, "jobs", "list")
    assert listed.returncode == 1, listed
    assert listed.stderr.strip().count("\n") == 0 and expected in listed.stderr
    assert "Traceback" not in listed.stderr

    as_json = _run(location, tmp_path, "jobs", "list", "--json")
    assert as_json.returncode == 1
    said = json.loads(as_json.stdout)
    assert said["ok"] is False and expected in said["error"]

    added = _run(location, tmp_path, "jobs", "add", json.dumps(
        {"name": "x", "schedule_cron": "0 3 * * *", "session_target": "shell",
         "payload_message": "true", "run_timeout_ms": 1000, "delivery_mode": "none", "origin": "system"}))
    assert added.returncode == 1 and expected in added.stderr

    daemon = _run(location, tmp_path)  # python -m scheduler: ends at once, it does not serve
    assert daemon.returncode != 0
    assert expected in daemon.stderr and "Traceback" not in daemon.stderr

    assert state() == before  # not marked down, not migrated again, nothing written
