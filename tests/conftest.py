"""Shared fixtures: a temp database, the CLI and the daemon as real subprocesses."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from fakegateway import fake_gateway  # noqa: F401 - a fixture for every test module

CliResult = tuple[int, Any, str, str]

# A shell job that passes validation; tests override what they need.
SHELL_JOB: dict[str, Any] = {
    "name": "test job",
    "session_target": "shell",
    "payload_message": "true",
    "run_timeout_ms": 10000,
    "origin": "system",
    "delivery_mode": "none",
}


def shell_job(**overrides: Any) -> str:
    """A valid shell job spec as a JSON string, with ``overrides`` applied."""
    return json.dumps({**SHELL_JOB, **overrides})


def _base_env(db_path: Path, extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SCHEDULER_", "OPENCLAW_"))}
    env["SCHEDULER_DB"] = str(db_path)
    env["HOME"] = str(db_path.parent)  # nothing may touch the real ~/.openclaw
    env.update(extra or {})
    return env


def add_job(cli: Callable[..., CliResult], spec: str, *options: str) -> dict[str, Any]:
    """``jobs add`` through the CLI; the stored row (fails the test on a non-zero exit)."""
    code, out, stdout, stderr = cli("jobs", "add", spec, *options)
    assert code == 0, stdout + stderr
    job: dict[str, Any] = out["job"]
    return job


def runs_of(db: Callable[..., list[dict[str, Any]]], job_id: str) -> list[dict[str, Any]]:
    """The job's runs, oldest first, read straight from the database."""
    return db("SELECT * FROM runs WHERE job_id = ? ORDER BY started_at, rowid", (job_id,))


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "scheduler.db"


def run_cli(db_path: Path, *args: str, json_mode: bool = True, env: dict[str, str] | None = None,
            timeout: float = 30) -> CliResult:
    """Run the CLI on ``db_path`` → (exit code, parsed JSON or None, stdout, stderr)."""
    argv = [sys.executable, "-m", "scheduler", *args, *(["--json"] if json_mode else [])]
    proc = subprocess.run(argv, env=_base_env(db_path, env), capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL)
    try:
        parsed = json.loads(proc.stdout)
    except ValueError:
        parsed = None
    return proc.returncode, parsed, proc.stdout, proc.stderr


@pytest.fixture
def cli(db_path: Path) -> Callable[..., CliResult]:
    """``cli("jobs", "list")``: the CLI on the test database, ``--json`` appended unless
    ``json_mode=False``; ``env`` adds variables."""

    def run(*args: str, **kwargs: Any) -> CliResult:
        return run_cli(db_path, *args, **kwargs)

    return run


class Daemon:
    """One ``python -m scheduler`` process; stderr is read by a thread into ``logs``/``lines``."""

    def __init__(self, db_path: Path, env: dict[str, str], prefix: tuple[str, ...] = ()) -> None:
        self.db = env.get("SCHEDULER_DB", str(db_path))
        self.proc = subprocess.Popen(
            [*prefix, sys.executable, "-m", "scheduler"],  # prefix: a wrapper that execs the rest
            env=_base_env(db_path, env),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: list[str] = []  # every stderr line, raw
        self.logs: list[dict[str, Any]] = []  # the lines that parse as JSON objects
        self._changed = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            with self._changed:
                self.lines.append(line.rstrip("\n"))
                try:
                    event = json.loads(line)
                except ValueError:
                    event = None
                if isinstance(event, dict):
                    self.logs.append(event)
                self._changed.notify_all()
        with self._changed:
            self._changed.notify_all()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def events(self, name: str) -> list[dict[str, Any]]:
        with self._changed:
            return [e for e in self.logs if e.get("event") == name]

    def wait_for_event(self, name: str, predicate: Callable[[dict[str, Any]], bool] | None = None,
                       timeout: float = 10) -> dict[str, Any]:
        """The first logged event ``name`` matching ``predicate``; fails after ``timeout`` s."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                for event in self.logs:
                    if event.get("event") == name and (predicate is None or predicate(event)):
                        return event
                remaining = deadline - time.monotonic()
                if remaining <= 0 or (self.proc.poll() is not None and not self._reader.is_alive()):
                    tail = "\n".join(self.lines[-20:])
                    raise AssertionError(f"no {name!r} event within {timeout}s; stderr tail:\n{tail}")
                self._changed.wait(min(remaining, 0.2))

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15) -> int:
        """Send ``sig`` and return the exit code (kill and fail if it does not exit in time)."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"daemon did not exit within {timeout}s of signal {sig}") from None
        self._reader.join(5)
        return code

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self._reader.join(5)


DaemonFactory = Callable[..., Daemon]


@pytest.fixture
def daemon(db_path: Path) -> Iterator[DaemonFactory]:
    """``daemon(env={...}, wait=True)`` starts a daemon on ``db_path``; all are killed at teardown.

    Tests get a fast write-notice poll and a short heartbeat unless they override them.
    """
    started: list[Daemon] = []

    def start(env: dict[str, str] | None = None, wait: bool = True, timeout: float = 15,
              prefix: tuple[str, ...] = ()) -> Daemon:
        # Port 9 (discard) on loopback refuses connections: no test reaches a real gateway by accident.
        merged = {"SCHEDULER_WAKE_POLL_MS": "100", "SCHEDULER_SHUTDOWN_GRACE_MS": "2000",
                  "OPENCLAW_GATEWAY_URL": "http://127.0.0.1:9", **(env or {})}
        proc = Daemon(db_path, merged, prefix)
        started.append(proc)
        if wait:
            proc.wait_for_event("daemon.started", timeout=timeout)
        return proc

    yield start
    for proc in started:
        proc.kill()
    # A daemon killed by a test (or by its teardown) cannot end its runs' processes; they carry
    # its SCHEDULER_DB, so nothing a test started outlives the test.
    for path in {Path(d.db) for d in started}:
        for pid in processes_with_environment(f"SCHEDULER_DB={path}"):
            kill_quietly(pid)


def processes_with_environment(variable: str) -> list[int]:
    """Live processes whose environment holds ``variable`` (``NAME=value``) exactly."""
    wanted = variable.encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if wanted in (entry / "environ").read_bytes().split(b"\0"):
                found.append(int(entry.name))
        except OSError:
            continue
    return found


def query(db_path: Path, sql: str, params: tuple[Any, ...] | list[Any] = ()) -> list[dict[str, Any]]:
    """Rows of ``sql`` as dicts, read straight from the database file (read-only)."""
    conn = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=10)
    try:
        conn.row_factory = sqlite3.Row
        return [dict(row) for row in conn.execute(sql, params).fetchall()]
    finally:
        conn.close()


@pytest.fixture
def db(db_path: Path) -> Callable[..., list[dict[str, Any]]]:
    """``db("SELECT ...", params)`` → list of row dicts from the test database."""

    def run(sql: str, params: tuple[Any, ...] | list[Any] = ()) -> list[dict[str, Any]]:
        return query(db_path, sql, params)

    return run


def wait_until(check: Callable[[], Any], timeout: float = 10, interval: float = 0.1,
               message: str = "condition") -> Any:
    """Poll ``check`` until it returns something truthy; return it, or fail after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{message} not met within {timeout}s (last: {value!r})")
        time.sleep(interval)


def process_alive(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def pids_with_marker(marker: str) -> list[int]:
    """Live processes whose command line contains ``marker``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if marker in cmdline and process_alive(int(entry.name)):
            found.append(int(entry.name))
    return found


def kill_quietly(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, signal.SIGKILL)


def reference_fixture() -> Path:
    """The database the Node.js reference wrote (shared/fixtures, beside the checkout).

    CI lays shared/ next to the clone; a developer machine has it at /work/shared. Missing, the
    test is skipped locally but fails under CI, where its absence would hide a regression.
    """
    candidates = [
        Path(os.environ.get("SCHEDULER_REFERENCE_DB", "")),
        Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "reference-v23.db",
        Path("/work/shared/fixtures/reference-v23.db"),
    ]
    for candidate in candidates:
        if candidate.name and candidate.is_file():
            return candidate
    if os.environ.get("CI"):
        pytest.fail("reference-v23.db not found beside the checkout (shared/fixtures)")
    pytest.skip("reference-v23.db not found (set SCHEDULER_REFERENCE_DB)")


# -- PostgreSQL (issue 12) ---------------------------------------------------------------------
# A throwaway cluster for the whole session (tests/pgcluster.py), one new database per test.
# CI sets SCHEDULER_TEST_REQUIRE_POSTGRES=1: there the tests must run, not skip.
@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[Any]:
    import pgcluster

    required = os.environ.get("SCHEDULER_TEST_REQUIRE_POSTGRES") == "1"
    bindir = pgcluster.server_binaries()
    try:
        import psycopg  # noqa: F401
    except ImportError:
        if required:
            pytest.fail("psycopg is not installed (pip install '.[postgres]')")
        pytest.skip("psycopg is not installed: the PostgreSQL tests are skipped")
    if bindir is None:
        if required:
            pytest.fail("SCHEDULER_TEST_REQUIRE_POSTGRES=1 but no PostgreSQL server binaries were found")
        pytest.skip("no PostgreSQL server binaries (initdb, pg_ctl): the PostgreSQL tests are skipped")
    cluster = pgcluster.Cluster(bindir)
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def pg_url(pg_cluster: Any) -> str:
    """The URL of a new, empty PostgreSQL database."""
    return str(pg_cluster.new_database())
