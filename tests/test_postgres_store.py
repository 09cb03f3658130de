"""The PostgreSQL backend itself (issue 12): its SQL translation, its migration, its wake-ups and
what it does with bad input. The store's behaviour is the contract suite's
(tests/test_store_contract.py runs on both backends)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from conftest import SHELL_JOB
from scheduler.errors import StoreValueError
from scheduler.store import open_store, redact_db_url, scrub_db_url
from scheduler.store.postgres.db import translate


def test_placeholders_are_translated_outside_literals_only() -> None:
    sql = "SELECT a FROM t WHERE b = ? AND c = :name AND d = '?:x %' AND e LIKE '%' AND f::text = ?"
    assert translate(sql) == (
        "SELECT a FROM t WHERE b = %s AND c = %(name)s AND d = '?:x %%' AND e LIKE '%%' "
        "AND f::text = %s")
    assert translate("SELECT '100%'", False) == "SELECT '100%'"  # no parameters: % stays


def test_a_reserved_column_name_is_quoted_wherever_it_is_an_identifier() -> None:
    sql = "UPDATE jobs SET authorization = ?, authorization_ref = ? WHERE j.authorization = 'authorization'"
    assert translate(sql) == ('UPDATE jobs SET "authorization" = %s, authorization_ref = %s '
                              "WHERE j.\"authorization\" = 'authorization'")


def test_casts_to_integer_are_64_bits_as_in_sqlite() -> None:
    assert translate("SELECT CAST(x * 1000 AS INTEGER) FROM t") == "SELECT CAST(x * 1000 AS BIGINT) FROM t"


def test_a_password_in_a_url_is_never_shown() -> None:
    assert redact_db_url("postgresql://u:secret@h:5432/db?sslmode=require") == \
        "postgresql://u:***@h:5432/db?sslmode=require"
    assert redact_db_url("postgresql://u@h/db") == "postgresql://u@h/db"


@pytest.mark.parametrize(("url", "shown"), [
    ("postgresql://u:s3cret@[bad/x", "postgresql://u:***@[bad/x"),  # libpq cannot parse it
    ("postgresql://u:s3/cret@h/db", "postgresql://u:***@h/db"),  # an unencoded / in the password
    ("postgresql://u:s3@cret@h/db", "postgresql://u:***@h/db"),  # an unencoded @ in the password
    ("postgresql://h/db?sslmode=require&password=s3cret", "postgresql://h/db?sslmode=require&password=***"),
    ("postgres://", "postgres://"),
])
def test_a_malformed_url_is_shown_without_its_password_too(url: str, shown: str) -> None:
    assert redact_db_url(url) == shown


def test_a_drivers_error_quoting_the_url_is_scrubbed() -> None:
    url = "postgresql://u:s3cret-pw@[bad/x?password=other-pw"
    text = f'invalid URI "{url}"; near s3cret-pw and other-pw'
    scrubbed = scrub_db_url(text, url)
    assert "s3cret-pw" not in scrubbed and "other-pw" not in scrubbed
    assert scrubbed.startswith('invalid URI "postgresql://u:***@[bad/x?password=***"')


def _revisions(url: str) -> list[int]:
    import psycopg

    with psycopg.connect(url) as conn:
        return [int(r[0]) for r in conn.execute("SELECT revision FROM scheduler_revision ORDER BY revision")]


def test_the_migration_is_idempotent_and_safe_when_daemons_start_together(pg_url: str) -> None:
    def open_and_close(_: int) -> int | None:
        store = open_store(pg_url)
        try:
            return store.schema_version()
        finally:
            store.close()

    with ThreadPoolExecutor(6) as pool:
        versions = list(pool.map(open_and_close, range(6)))
    assert versions == [23] * 6
    assert len(_revisions(pg_url)) == 1  # migrated once, then found current
    open_and_close(0)
    assert len(_revisions(pg_url)) == 1


def test_an_older_schema_gains_what_it_lacks_and_keeps_its_rows(pg_url: str) -> None:
    import psycopg

    from scheduler.models.job import new_job_row
    from scheduler.models.validation import validate_job_spec
    from scheduler.timeutil import utcnow

    store = open_store(pg_url)
    now = utcnow()
    job = store.insert_job(new_job_row(validate_job_spec({**SHELL_JOB, "schedule_cron": "0 * * * *"},
                                                         now=now), now))
    store.close()
    with psycopg.connect(pg_url, autocommit=True) as conn:  # as an older version left it
        conn.execute("ALTER TABLE jobs DROP COLUMN placement")
        conn.execute("DROP INDEX idx_jobs_next_run")
        conn.execute("DELETE FROM scheduler_revision")
    reopened = open_store(pg_url)
    try:
        assert reopened.schema_current()
        kept = reopened.require_job(job.id)
        assert kept.name == job.name and kept.row.get("placement") is None
    finally:
        reopened.close()
    with psycopg.connect(pg_url) as conn:
        assert conn.execute("SELECT to_regclass('idx_jobs_next_run') IS NOT NULL").fetchone() == (True,)


def _cli(url: str, home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SCHEDULER_", "OPENCLAW_"))}
    env |= {"SCHEDULER_DB": url, "HOME": str(home)}
    return subprocess.run([sys.executable, "-m", "scheduler", *args], env=env, capture_output=True,
                          text=True, timeout=60)


def test_a_cli_write_wakes_a_listener_and_its_own_writes_do_not(pg_url: str, tmp_path: Path) -> None:
    from scheduler.timeutil import sqlite_now

    daemon_side = open_store(pg_url)
    try:
        before = daemon_side.change_token()
        assert daemon_side.change_token() == before  # nothing happened
        daemon_side.set_pool_capacity("own", 2, sqlite_now())  # its own write: no news
        time.sleep(1.5)
        assert daemon_side.change_token() == before
        done = _cli(pg_url, tmp_path, "jobs", "add", json.dumps({**SHELL_JOB, "schedule_cron": "0 * * * *"}))
        assert done.returncode == 0, done.stderr
        deadline = time.monotonic() + 10
        while daemon_side.change_token() == before and time.monotonic() < deadline:
            time.sleep(0.05)
        assert daemon_side.change_token() != before
    finally:
        daemon_side.close()


def test_text_postgresql_cannot_store_is_a_one_line_error_and_nothing_is_written(
        pg_url: str, tmp_path: Path) -> None:
    spec = json.dumps({**SHELL_JOB, "schedule_cron": "0 * * * *", "payload_message": "echo a\u0000b"})
    done = _cli(pg_url, tmp_path, "jobs", "add", spec, "--json")
    assert done.returncode != 0 and "Traceback" not in done.stderr
    answer: dict[str, Any] = json.loads(done.stdout)
    assert answer["ok"] is False and "\n" not in answer["error"]
    listed = _cli(pg_url, tmp_path, "jobs", "list", "--json")
    assert json.loads(listed.stdout) == []


def test_the_store_error_for_nul_text_is_a_value_error(pg_url: str) -> None:
    store = open_store(pg_url)
    try:
        with pytest.raises(StoreValueError):
            store.add_alias("x\u0000y", "telegram", "1", None)
    finally:
        store.close()


def test_a_daemon_rides_out_a_database_restart_and_goes_on(tmp_path: Path, pg_cluster: Any) -> None:
    """The server goes away under a serving daemon and comes back: the daemon stays up (its
    calls fail, are logged, and are retried), reconnects, and runs its every-second job again."""
    import pgcluster
    from fleet import Fleet, wait_for

    own = pgcluster.Cluster(pg_cluster.bindir)  # its own cluster: the shared one stays up
    own.start()
    fleet = Fleet(own.new_database(), tmp_path)
    try:
        daemon = fleet.start("solo")
        (job,) = fleet.add_jobs([{"name": "tick", "schedule_cron": "* * * * * *"}])

        def ok_runs() -> int:
            return int(fleet.query("SELECT COUNT(*) AS n FROM runs WHERE job_id = ? AND status = 'ok'",
                                   (job,))[0]["n"])

        wait_for(lambda: ok_runs() >= 2, timeout=30)
        fleet.store.close()
        fleet._store = None
        own.halt()
        time.sleep(4)
        assert daemon.proc.poll() is None  # still serving, not half-dead
        own.resume()
        before = ok_runs()
        wait_for(lambda: ok_runs() >= before + 3, timeout=60)
        assert daemon.proc.poll() is None
        failures = [e for e in daemon.logs if e.get("level") in ("warning", "error")]
        assert failures  # the outage was noticed and said
        assert not any("Traceback" in line for line in daemon.lines)
        assert daemon.stop() == 0
    finally:
        fleet.close()
        own.stop()
