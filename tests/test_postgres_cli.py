"""The same CLI, the same JSON, on PostgreSQL as on SQLite (issue 12).

One script of commands (jobs, chains, approvals, pools, aliases, messages, agents, task groups,
status, housekeeping) runs through the real CLI against a SQLite file and against a PostgreSQL
database; every command must exit the same and print the same JSON once ids and instants are
normalized. What is about the database itself (its path, size, integrity check) is left out.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from conftest import SHELL_JOB

_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_INSTANT = re.compile(r"\d{4}-\d\d-\d\d[ T]\d\d:\d\d:\d\d(\.\d+)?Z?")
# Keys whose values describe the database, not the data, or the moment: they differ by nature.
_ABOUT_THE_DATABASE = {"db_path", "bytes", "integrity", "daemon_running", "size_bytes", "age_s",
                       "version", "elapsed", "remaining_timeout"}  # and what depends on timing


def _normalize(value: Any, ids: dict[str, str]) -> Any:
    if isinstance(value, dict):
        return {k: _normalize(v, ids) for k, v in value.items() if k not in _ABOUT_THE_DATABASE}
    if isinstance(value, list):
        return [_normalize(v, ids) for v in value]
    if isinstance(value, str):
        text = _UUID.sub(lambda m: ids.setdefault(m.group(0), f"<id{len(ids)}>"), value)
        return _INSTANT.sub("<instant>", text)
    return value


class Cli:
    def __init__(self, database: str, home: Path) -> None:
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(("SCHEDULER_", "OPENCLAW_"))}
        self.env |= {"SCHEDULER_DB": database, "HOME": str(home), "SCHEDULER_HOME": str(home)}
        self.ids: dict[str, str] = {}
        self.transcript: list[tuple[list[str], int, Any]] = []

    def __call__(self, *args: str) -> Any:
        done = subprocess.run([sys.executable, "-m", "scheduler", *args, "--json"], env=self.env,
                              capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
        assert "Traceback" not in done.stderr, done.stderr
        try:
            parsed = json.loads(done.stdout)
        except ValueError:
            parsed = {"unparsed": done.stdout, "stderr": done.stderr}
        self.transcript.append((list(args), done.returncode, _normalize(parsed, self.ids)))
        return parsed


def _script(cli: Cli) -> None:
    job = lambda **kw: json.dumps({**SHELL_JOB, **kw})  # noqa: E731
    a = _first_id(cli("jobs", "add", job(name="a", schedule_cron="*/5 * * * *", resource_pool="p")))
    assert a is not None
    b = cli("jobs", "add", job(name="b", schedule_kind="at"), "--in", "1h")
    child = cli("jobs", "add", job(name="child", parent_id=a, trigger_on="success"))
    gated = cli("jobs", "add", job(name="gated", schedule_cron="0 3 * * *", approval_required=True))
    cli("jobs", "add", "{not json")
    cli("jobs", "add", job(name="bad", schedule_cron="61 * * * *"))
    cli("jobs", "get", a)
    cli("jobs", "get", "no-such-job")
    cli("jobs", "tree")
    cli("jobs", "update", a, json.dumps({"payload_message": "echo updated", "misfire_grace_s": 30}))
    cli("jobs", "disable", a)
    cli("jobs", "enable", a)
    cli("jobs", "run", a)
    cli("jobs", "run", a)
    cli("jobs", "list")
    cli("jobs", "explain", a)
    cli("approvals", "list")
    cli("pools", "set", "p", "2")
    cli("pools", "list")
    cli("pools", "remove", "p")
    cli("alias", "add", "ops", "telegram", "12345", "the ops room")
    cli("alias", "list")
    cli("alias", "remove", "ops")
    sent = cli("messages", "send", "--from", "worker", "--to", "main", "--kind", "text",
               "--subject", "hello", "--priority", "2", "--body", "the body")
    cli("msg", "send", "worker", "main", "second message")
    cli("msg", "inbox", "main")
    cli("msg", "outbox", "worker")
    cli("msg", "unread", "main")
    message_id = _first_id(sent)
    if message_id:
        cli("msg", "thread", message_id)
        cli("msg", "read", message_id, "main")
        cli("msg", "ack", message_id, "main", "done")
        cli("msg", "receipts", message_id)
    cli("queue", "list", "main")
    cli("queue", "clear", "main")
    cli("agents", "register", "writer", "The writer", "--capabilities", '["write"]')
    cli("agents", "list")
    cli("agents", "get", "writer")
    group = cli("tasks", "create", json.dumps({"name": "g", "expected_agents": ["x", "y"],
                                               "timeout_s": 600, "created_by": "main"}))
    group_id = _first_id(group)
    cli("tasks", "list")
    if group_id:
        cli("tasks", "heartbeat", group_id, "x", "completed", "all good")
        cli("tasks", "status", group_id)
    cli("tasks", "history")
    cli("runs", "running")
    cli("runs", "stale")
    cli("runs", "list", a)
    cli("status")
    cli("db", "check")
    cli("db", "prune", "--dry-run")
    cli("jobs", "cancel", _first_id(gated) or "x")
    cli("jobs", "delete", _first_id(b) or "x")
    cli("jobs", "delete", _first_id(child) or "x")
    cli("jobs", "list")


def _first_id(value: Any) -> str | None:
    found = _UUID.search(json.dumps(value))
    return found.group(0) if found else None


def test_every_command_answers_the_same_on_postgresql_as_on_sqlite(pg_url: str, tmp_path: Path) -> None:
    on_sqlite = Cli(str(tmp_path / "scheduler.db"), tmp_path / "sqlite-home")
    on_postgres = Cli(pg_url, tmp_path / "pg-home")
    for cli in (on_sqlite, on_postgres):
        (Path(cli.env["HOME"])).mkdir()
        _script(cli)
    assert len(on_sqlite.transcript) == len(on_postgres.transcript) > 50
    for (argv, code, out), (_, pg_code, pg_out) in zip(on_sqlite.transcript, on_postgres.transcript,
                                                        strict=True):
        assert (argv, pg_code, pg_out) == (argv, code, out)
    assert any(code != 0 for _, code, _ in on_postgres.transcript)  # the bad input was refused


def test_a_wrong_postgresql_url_is_one_line_and_names_no_password(pg_cluster: Any, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SCHEDULER_", "OPENCLAW_"))}
    url = f"postgresql://scheduler:s3cret-pw@127.0.0.1:{pg_cluster.port}/no_such_database"
    env |= {"SCHEDULER_DB": url, "HOME": str(tmp_path)}
    for argv in (["jobs", "list"], ["jobs", "list", "--json"]):
        done = subprocess.run([sys.executable, "-m", "scheduler", *argv], env=env, capture_output=True,
                              text=True, timeout=60)
        assert done.returncode != 0
        assert "Traceback" not in done.stderr and "s3cret-pw" not in done.stderr + done.stdout
        said = done.stdout if "--json" in argv else done.stderr
        assert len(said.strip().splitlines()) == 1 or json.loads(said)["ok"] is False
        assert "no_such_database" in said


@pytest.mark.parametrize("url", [
    "postgresql://scheduler:s3cret-pw@[bad/x",  # libpq quotes a URL it cannot parse, whole
    "postgresql://scheduler:s3cret/pw@127.0.0.1:1/x",  # an unencoded / in the password
    "postgresql://127.0.0.1:1/x?password=s3cret-pw&sslmode=bogus",  # a password as a parameter
])
def test_a_malformed_postgresql_url_never_shows_its_password(url: str, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SCHEDULER_", "OPENCLAW_"))}
    env |= {"SCHEDULER_DB": url, "HOME": str(tmp_path)}
    for argv in (["jobs", "list"], ["jobs", "list", "--json"], []):  # [] is the daemon itself
        done = subprocess.run([sys.executable, "-m", "scheduler", *argv], env=env, capture_output=True,
                              text=True, timeout=60)
        said = done.stdout + done.stderr
        assert done.returncode != 0, said
        assert "Traceback" not in said and "s3cret" not in said, said
        assert "cannot connect to postgresql://" in said


@pytest.mark.parametrize("url", ["postgresql:/127.0.0.1/x", "mysql://u:s3cret-pw@h/x", "sqlite:///tmp/x.db"])
def test_a_url_that_is_not_postgresql_is_refused_not_made_a_file(url: str, tmp_path: Path) -> None:
    """A mistyped or foreign URL would otherwise be a relative path: a new, empty SQLite
    database under the working directory, served as if it were the fleet's."""
    workdir = tmp_path / "cwd"
    workdir.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SCHEDULER_", "OPENCLAW_"))}
    env |= {"SCHEDULER_DB": url, "HOME": str(tmp_path)}
    scheme = url.split(":", 1)[0]
    for argv in (["jobs", "list"], ["status", "--json"], []):  # [] is the daemon itself
        done = subprocess.run([sys.executable, "-m", "scheduler", *argv], env=env, cwd=workdir,
                              capture_output=True, text=True, timeout=60)
        said = done.stdout + done.stderr
        assert done.returncode == 2, said
        assert f"SCHEDULER_DB is a {scheme}: URL" in said and "Traceback" not in said
        assert "s3cret" not in said
        if "--json" in argv:
            assert json.loads(done.stdout)["ok"] is False
        else:
            assert len(said.strip().splitlines()) == 1, said
    source = tmp_path / "source.db"
    env |= {"SCHEDULER_DB": str(source)}
    assert subprocess.run([sys.executable, "-m", "scheduler", "status"], env=env, capture_output=True,
                          timeout=60).returncode == 0
    copied = subprocess.run([sys.executable, "-m", "scheduler", "db", "copy", str(source), url],
                            env=env, cwd=workdir, capture_output=True, text=True, timeout=60)
    assert copied.returncode == 2 and f"TARGET is a {scheme}: URL" in copied.stderr
    assert list(workdir.iterdir()) == []  # nothing made where the daemon or the command ran


@pytest.mark.parametrize("argv", [["backup", "create"], ["backup", "restore", "/nonexistent.db"]])
def test_file_backups_refuse_a_postgresql_database(pg_url: str, tmp_path: Path, argv: list[str]) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SCHEDULER_", "OPENCLAW_"))}
    env |= {"SCHEDULER_DB": pg_url, "HOME": str(tmp_path)}
    done = subprocess.run([sys.executable, "-m", "scheduler", *argv, "--json"], env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode != 0 and "Traceback" not in done.stderr
    if argv[1] == "create":
        assert "pg_dump" in json.loads(done.stdout)["error"]


def test_doctor_checks_a_postgresql_database_by_opening_it(pg_url: str, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SCHEDULER_", "OPENCLAW_"))}
    env |= {"SCHEDULER_DB": pg_url, "HOME": str(tmp_path)}
    done = subprocess.run([sys.executable, "-m", "scheduler", "doctor", "--json"], env=env,
                          capture_output=True, text=True, timeout=60)
    assert "Traceback" not in done.stderr
    checks = {c["name"]: c for c in json.loads(done.stdout)["checks"]}
    assert checks["database"]["verdict"] == "PASS" and "PostgreSQL" in checks["database"]["detail"]
    assert checks["schema"]["verdict"] == "PASS"
