"""``db copy SOURCE TARGET``: every row moves, in one transaction, with its jobs pinned to the
source's host; what would lose or mix data is refused with the target left as it was.

The source is made by the real CLI and a real daemon (runs, a chain's queue rows and child runs,
an approval, the idempotency ledger, messages with a reply and a broadcast's receipts, a task
group, an alias, a pool, agents, and a run left ``running`` by a killed daemon). ``copy_and_compare``
is written for any two locations: the PostgreSQL backend's round trip calls it with a URL.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import sqlite3
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import (
    CliResult,
    Daemon,
    DaemonFactory,
    kill_quietly,
    processes_with_environment,
    run_cli,
    shell_job,
    wait_until,
)
from scheduler.store import open_location
from scheduler.store.api import Store

HOST = {"SCHEDULER_HOST_NAME": "build-01"}
DAEMON_ENV = {"SCHEDULER_WAKE_POLL_MS": "100", "SCHEDULER_SHUTDOWN_GRACE_MS": "2000",
              "OPENCLAW_GATEWAY_URL": "http://127.0.0.1:9"}
# Schema bookkeeping every database keeps for itself, not copied.
# Bookkeeping, and the daemons that served the source (its fleet, not user data: each daemon
# on the target registers itself).
NOT_COPIED = {"schema_migrations", "instances"}


def ok(result: CliResult) -> Any:
    code, parsed, out, err = result
    assert code == 0, out + err
    return parsed


def _add(path: Path, **spec: Any) -> str:
    return str(ok(run_cli(path, "jobs", "add", shell_job(**spec)))["job"]["id"])


def _build_source(path: Path) -> None:
    """A database holding a row in every table a user's work fills."""
    def cli(*args: str) -> Any:
        return ok(run_cli(path, *args))

    cli("alias", "add", "ops", "telegram", "42", "the ops chat")
    cli("pools", "set", "gpu", "2")
    cli("agents", "register", "helper", "Helper", "--capabilities", '["shell"]')
    cli("tasks", "create", json.dumps({"name": "fanout", "expected_agents": ["a1", "a2"],
                                       "timeout_s": 600, "created_by": "main"}))
    parent = _add(path, name="parent", schedule_cron="0 0 1 1 *", payload_message="echo parent",
                  delivery_guarantee="at-least-once", resource_pool="gpu")
    child = _add(path, name="child", parent_id=parent, trigger_on="success",
                 payload_message="echo child")
    gated = _add(path, name="gated", schedule_cron="0 0 1 1 *", approval_required=1)
    sleeper = _add(path, name="sleeper", schedule_cron="0 0 1 1 *", payload_message="sleep 60",
                   run_timeout_ms=120000)
    first = cli("msg", "send", "main", "helper", "hello")
    cli("messages", "send", "--from", "helper", "--to", "main", "--reply-to",
        str(first["message"]["id"]), "--body", "hi back")
    broadcast = cli("messages", "send", "--from", "main", "--to", "broadcast", "--body", "all")
    cli("msg", "read", str(broadcast["message"]["id"]), "helper")
    cli("msg", "ack", str(first["message"]["id"]), "helper", "seen")
    cli("team", "gate", "core", "deploy", '["writer"]', "900")
    cli("messages", "send", "--from", "writer", "--to", "lead", "--team", "core", "--member",
        "writer", "--task", "deploy", "--body", "on it")
    cli("team", "map")
    labels = path.with_name("labels.json")
    labels.write_text(json.dumps({"old-task": {"sessionKey": "agent:main:subagent:1",
                                               "status": "done", "summary": "shipped",
                                               "spawnedAt": "2026-11-01T10:00:00.000Z"}}))
    cli("dispatch", "import", str(labels))

    daemon = Daemon(path, {**os.environ, **DAEMON_ENV, "SCHEDULER_DB": str(path)})
    try:
        daemon.wait_for_event("daemon.started", timeout=20)
        for _ in range(2):
            cli("jobs", "run", parent)
            wait_until(lambda: len(_rows(path, "SELECT id FROM runs WHERE job_id = ? AND status = 'ok'",
                                         (child,))) >= 1, timeout=20, message="the child ran")
        cli("jobs", "run", gated)
        wait_until(lambda: _rows(path, "SELECT id FROM approvals WHERE status = 'pending'"),
                   timeout=20, message="an approval pending")
        cli("jobs", "run", sleeper)
        wait_until(lambda: _rows(path, "SELECT id FROM runs WHERE job_id = ? AND status = 'running'",
                                 (sleeper,)), timeout=20, message="the sleeper running")
    finally:
        daemon.proc.send_signal(signal.SIGKILL)  # leaves the sleeper's run `running`
        daemon.kill()
        for pid in processes_with_environment(f"SCHEDULER_DB={path}"):
            kill_quietly(pid)
    cli("jobs", "run", parent)  # a queue row nobody claimed
    # A placement already set (written directly: `jobs add` learns the field in another change).
    conn = sqlite3.connect(path)
    with conn:
        conn.execute("UPDATE jobs SET placement = 'label:gpu' WHERE id = ?", (sleeper,))
    conn.close()


def _rows(path: Path, sql: str, params: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
    try:
        conn.row_factory = sqlite3.Row
        return [dict(row) for row in conn.execute(sql, params)]
    finally:
        conn.close()


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("made") / "source.db"
    _build_source(path)
    return path


@pytest.fixture
def source(made: Path, tmp_path: Path) -> Path:
    """A private copy of the made database (its files byte for byte), for one test to use."""
    path = tmp_path / "host-a" / "scheduler.db"
    path.parent.mkdir()
    for suffix in ("", "-wal"):
        made_file = Path(f"{made}{suffix}")
        if made_file.exists():
            Path(f"{path}{suffix}").write_bytes(made_file.read_bytes())
    return path


def dump(location: str) -> dict[str, list[dict[str, Any]]]:
    """Every copied table, all columns, rows in their stored order, through the Store."""
    store = open_location(location, read_only=True)
    try:
        return {table.name: [row for batch in store.read_rows(table.name, 7) for row in batch]
                for table in store.copy_tables()}
    finally:
        store.close()


def unpinned(tables: dict[str, list[dict[str, Any]]], pin: str) -> dict[str, list[dict[str, Any]]]:
    jobs = [{**job, "placement": None if job["placement"] == pin else job["placement"]}
            for job in tables["jobs"]]
    return {**tables, "jobs": jobs}


def _beside(*locations: str) -> Path:
    """A path beside the first SQLite location (else in the temp directory), for the CLI's
    SCHEDULER_DB and HOME: db copy reads only its arguments, so this names neither."""
    from scheduler.store import is_database_url

    for location in locations:
        if not is_database_url(location):
            return Path(location).parent / "unused.db"
    return Path(tempfile.gettempdir()) / "unused.db"


def copy(source: str, target: str, *options: str, env: dict[str, str] | None = None,
         json_mode: bool = True) -> CliResult:
    return run_cli(_beside(source, target), "db", "copy", source, target, *options,
                   env=HOST if env is None else env, json_mode=json_mode)


def copy_and_compare(source: str, target: str, *options: str,
                     pin: str | None = "host:build-01") -> dict[str, Any]:
    """Copy, then require every table of the target equal to the source's, row for row and
    column for column (the pin aside). Any two locations: SQLite paths, PostgreSQL URLs."""
    before = dump(source)
    result = ok(copy(source, target, *options))
    after = dump(target)
    assert (unpinned(after, pin) if pin else after) == before
    assert result["tables"] == {name: len(rows) for name, rows in before.items()}
    return dict(result)


def digest(path: Path) -> str:
    """The database's files, byte for byte (the main file and its WAL)."""
    h = hashlib.sha256()
    for suffix in ("", "-wal"):
        part = Path(f"{path}{suffix}")
        h.update(part.read_bytes() if part.exists() else b"<none>")
    return h.hexdigest()


# -- a whole copy --------------------------------------------------------------------------------


def test_the_made_source_fills_every_copied_table(source: Path) -> None:
    tables = dump(str(source))
    assert [name for name, rows in tables.items() if not rows] == []
    assert any(run["status"] == "running" for run in tables["runs"])
    assert any(run["dispatch_queue_id"] for run in tables["runs"])
    assert any(message["reply_to"] for message in tables["messages"])


def test_every_row_of_every_table_is_copied_and_unplaced_jobs_are_pinned(
        source: Path, tmp_path: Path) -> None:
    target = tmp_path / "new" / "copy.db"
    jobs = dump(str(source))["jobs"]
    free = [job["id"] for job in jobs if job["placement"] is None]
    source_files = digest(source)

    result = copy_and_compare(str(source), str(target))

    assert (result["ok"], result["pinned"], result["host"]) == (True, len(free), "build-01")
    assert result["placement"] == "host:build-01"
    placements = {job["id"]: job["placement"] for job in dump(str(target))["jobs"]}
    assert {placements[i] for i in free} == {"host:build-01"}
    assert "label:gpu" in placements.values()  # a placement already set is kept
    assert digest(source) == source_files  # the source is never written


def test_a_round_trip_a_to_b_to_c_gives_back_a(source: Path, tmp_path: Path) -> None:
    b, c = tmp_path / "b.db", tmp_path / "c.db"
    copy_and_compare(str(source), str(b), "--free", pin=None)
    copy_and_compare(str(b), str(c), "--free", pin=None)
    assert dump(str(c)) == dump(str(source))


def test_the_copys_running_run_is_recovered_by_the_targets_daemon_as_after_a_crash(
        source: Path, tmp_path: Path, daemon: DaemonFactory) -> None:
    target = tmp_path / "scheduler.db"  # the daemon fixture's database
    ok(copy(str(source), str(target)))
    (running,) = _rows(target, "SELECT id FROM runs WHERE status = 'running'")
    daemon()
    wait_until(lambda: _rows(target, "SELECT status FROM runs WHERE id = ? AND status = 'crashed'",
                             (running["id"],)), timeout=20, message="the copied running run crashed")


def test_the_text_output_lists_each_table_and_says_how_jobs_were_pinned(
        source: Path, tmp_path: Path) -> None:
    code, _, out, err = copy(str(source), str(tmp_path / "t.db"), json_mode=False)
    assert code == 0, out + err
    assert "one transaction; row counts verified" in out
    jobs_line = next(line for line in out.splitlines() if line.split()[:1] == ["jobs"])
    assert jobs_line.split()[1] == "4"
    assert "Pinned 3 jobs to host:build-01; use --free to leave them unplaced" in out


def test_free_leaves_jobs_unplaced_and_host_names_the_pin(source: Path, tmp_path: Path) -> None:
    free = ok(copy(str(source), str(tmp_path / "free.db"), "--free"))
    assert (free["pinned"], free["host"], free["placement"]) == (0, None, None)
    assert dump(str(tmp_path / "free.db")) == dump(str(source))

    named = copy_and_compare(str(source), str(tmp_path / "named.db"), "--host", "gpu-07",
                             pin="host:gpu-07")
    assert (named["pinned"], named["host"]) == (3, "gpu-07")


def test_without_host_or_variable_the_machines_host_name_is_the_pin(
        source: Path, tmp_path: Path) -> None:
    import socket

    result = ok(copy(str(source), str(tmp_path / "t.db"), env={}))
    assert result["host"] == socket.gethostname()


# -- refusals: nothing written --------------------------------------------------------------------


def test_a_target_holding_data_is_refused_in_one_line_and_left_as_it_was(
        source: Path, tmp_path: Path) -> None:
    target = tmp_path / "t.db"
    ok(run_cli(target, "jobs", "add", shell_job(name="already here", schedule_cron="0 0 1 1 *")))
    before = digest(target)
    code, parsed, out, err = copy(str(source), str(target))
    assert code != 0 and parsed["ok"] is False
    assert "already holds data" in parsed["error"] and "--force" in parsed["error"]
    assert "\n" not in parsed["error"]
    assert digest(target) == before

    code, _, out, err = copy(str(source), str(target), json_mode=False)
    assert code != 0 and out == "" and len(err.strip().splitlines()) == 1


def test_force_adds_the_sources_rows_to_a_target_holding_others(
        source: Path, tmp_path: Path) -> None:
    target = tmp_path / "t.db"
    ok(run_cli(target, "agents", "register", "helper", "Theirs"))  # a registry row both hold
    own = _add(target, name="theirs", schedule_cron="0 0 1 1 *")
    held = dump(str(target))
    src = dump(str(source))

    result = ok(copy(str(source), str(target), "--force"))

    after = dump(str(target))
    assert result["kept"] == {"agents": 1}
    for name, rows in src.items():
        expected = held[name] + rows
        if name == "agents":
            expected = held[name] + [row for row in rows if row["id"] != "helper"]
        got = unpinned(after, "host:build-01")[name] if name == "jobs" else after[name]
        assert got == expected, name
    assert next(j for j in after["jobs"] if j["id"] == own)["placement"] is None
    assert next(a for a in after["agents"] if a["id"] == "helper")["name"] == "Theirs"


def test_force_with_a_clashing_key_half_way_writes_nothing(source: Path, tmp_path: Path) -> None:
    """The target holds the source's ledger keys and messages (its jobs deleted): the jobs and
    runs, copied before those, are rolled back with everything else."""
    target = tmp_path / "t.db"
    ok(copy(str(source), str(target)))
    for job in dump(str(target))["jobs"]:
        ok(run_cli(target, "jobs", "delete", job["id"]))
    left = dump(str(target))
    assert left["jobs"] == [] and left["messages"] != []

    code, parsed, out, err = copy(str(source), str(target), "--force")

    assert code != 0 and "nothing was copied" in parsed["error"], out + err
    assert "UNIQUE constraint failed: idempotency_ledger.key" in parsed["error"]
    # Every row as it was (the files may differ: a rolled-back transaction can leave uncommitted
    # pages in the WAL, which SQLite ignores).
    assert dump(str(target)) == left


def test_a_source_a_daemon_serves_is_refused(
        source: Path, tmp_path: Path, daemon: DaemonFactory) -> None:
    served = tmp_path / "scheduler.db"  # the daemon fixture's database
    ok(copy(str(source), str(served)))
    d = daemon()
    target = tmp_path / "t.db"
    code, parsed, _out, _err = copy(str(served), str(target))
    assert code != 0 and f"pid {d.pid}" in parsed["error"] and "stop it" in parsed["error"]
    assert not target.exists()
    # and as a target
    code, parsed, _out, _err = copy(str(source), str(served), "--force")
    assert code != 0 and "serves the target" in parsed["error"]


def test_a_missing_source_is_an_error_and_is_not_created(tmp_path: Path) -> None:
    missing, target = tmp_path / "missing.db", tmp_path / "t.db"
    code, parsed, _out, _err = copy(str(missing), str(target))
    assert code != 0 and parsed["error"] == f"no scheduler database at {missing}"
    assert not missing.exists() and not target.exists()


@pytest.mark.parametrize(("revision", "said"), [
    (2300, "if it is older, run any command on it with this version first"),
    (9999, "if a newer version wrote it, copy it with that version"),
])
def test_a_source_at_another_revision_is_refused_and_no_file_is_made(
        source: Path, tmp_path: Path, revision: int, said: str) -> None:
    """A source from an older or a newer schema revision is refused before anything is made,
    and is only read."""
    conn = sqlite3.connect(source)
    conn.execute(f"PRAGMA user_version = {revision}")
    conn.close()
    target = tmp_path / "new.db"
    code, parsed, _out, _err = copy(str(source), str(target))
    assert code != 0 and "schema revision" in parsed["error"] and said in parsed["error"]
    assert not target.exists()
    conn = sqlite3.connect(source)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == revision
    conn.close()


def test_a_column_the_target_lacks_is_named_and_the_new_target_removed(
        source: Path, tmp_path: Path) -> None:
    """The target file is created and migrated, the copy starts, then fails on a column the
    target has not: the half-made file goes."""
    conn = sqlite3.connect(source)
    with conn:
        conn.execute("ALTER TABLE messages ADD COLUMN colour TEXT")
        conn.execute("UPDATE messages SET colour = 'red'")
    conn.close()
    target = tmp_path / "new.db"
    code, parsed, _out, _err = copy(str(source), str(target))
    assert code != 0 and "has no column colour" in parsed["error"]
    assert "messages" in parsed["error"]
    assert not target.exists() and not Path(f"{target}-wal").exists()


def test_bad_arguments_are_usage_errors(source: Path, tmp_path: Path) -> None:
    target = str(tmp_path / "t.db")
    for args in ((str(source),), (str(source), target, "--free", "--host", "x"),
                 (str(source), target, "--host", "two words"), (str(source), str(source)),
                 (str(source), target, "--bogus"), ("postgresql://db/x", target, "--host", "a")):
        code, parsed, _out, _err = run_cli(tmp_path / "unused.db", "db", "copy", *args)
        assert code != 0 and parsed["ok"] is False, args
    assert not Path(target).exists()


# -- the table list --------------------------------------------------------------------------------


@pytest.fixture
def fresh(tmp_path: Path) -> Iterator[Store]:
    store = open_location(str(tmp_path / "fresh.db"))
    yield store
    store.close()


def test_the_copy_list_holds_every_table_parents_first(fresh: Store, tmp_path: Path) -> None:
    order = [table.name for table in fresh.copy_tables()]
    conn = sqlite3.connect(tmp_path / "fresh.db")
    try:
        tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        assert set(order) == tables - NOT_COPIED
        deferred = {(t.name, c) for t in fresh.copy_tables() for c in t.deferred}
        for child in order:
            for fk in conn.execute(f"PRAGMA foreign_key_list({child})").fetchall():
                parent, column = fk[2], fk[3]
                if (child, column) not in deferred:
                    assert order.index(parent) < order.index(child), (child, column, parent)
    finally:
        conn.close()




# -- between SQLite and PostgreSQL -----------------------------------------------------------------


def test_a_round_trip_sqlite_postgresql_sqlite_loses_nothing(
        source: Path, tmp_path: Path, pg_url: str) -> None:
    # A password in the URL (the test server does not ask for it) is never printed.
    secret_url = pg_url.replace("scheduler@", "scheduler:s3cret-pw@", 1)
    there = copy_and_compare(str(source), secret_url)
    assert there["pinned"] == 3
    assert "s3cret-pw" not in json.dumps(there) and "***" in there["target"]
    for json_mode in (True, False):
        code, _, out, err = copy(str(source), secret_url, json_mode=json_mode)
        assert code != 0 and "already holds data" in out + err
        assert "s3cret-pw" not in out + err and "***" in out + err
    back = tmp_path / "back.db"
    again = copy_and_compare(pg_url, str(back), pin=None)  # from PostgreSQL nothing is pinned
    assert (again["pinned"], again["host"]) == (0, None)
    assert unpinned(dump(str(back)), "host:build-01") == dump(str(source))


def test_a_postgresql_target_holding_data_is_refused_and_a_clash_half_way_writes_nothing(
        source: Path, pg_url: str) -> None:
    ok(copy(str(source), pg_url, "--free"))
    held = dump(pg_url)
    code, parsed, _out, _err = copy(str(source), pg_url)
    assert code != 0 and "already holds data" in parsed["error"]
    store = open_location(pg_url)
    try:  # what is left clashes only after the jobs and runs are written
        for job in held["jobs"]:
            store.delete_job(job["id"])
    finally:
        store.close()
    left = dump(pg_url)
    assert left["jobs"] == [] and left["idempotency_ledger"] != []
    code, parsed, _out, _err = copy(str(source), pg_url, "--force")
    assert code != 0 and "nothing was copied" in parsed["error"]
    assert "UNIQUE constraint failed: idempotency_ledger.key" in parsed["error"]
    assert dump(pg_url) == left
