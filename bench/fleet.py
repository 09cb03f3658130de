#!/usr/bin/env python3
"""Benchmarks of several daemons on one PostgreSQL database (issue 12), side by side with one
daemon on SQLite and one on PostgreSQL.

For each set-up — (a) 1 daemon on SQLite, (b) 1 daemon on PostgreSQL, (c) 3 daemons on
PostgreSQL, each with its own SCHEDULER_HOME and SCHEDULER_HOST_NAME on the same SCHEDULER_DB —
on a fresh database, with the real daemons as subprocesses:

1. lateness of L one-shot shell jobs due in the same second (each records its own start time);
2. claim-and-finish throughput: N one-shot `true` jobs due at the same instant, from that
   instant until every run is recorded finished; and how the runs spread over the daemons.

    python bench/fleet.py                       # full run (a few minutes on 2 busy cores)
    python bench/fleet.py --quick               # smoke test, well under a minute
    python bench/fleet.py --json out.json
    python bench/fleet.py --pg-url postgresql://user@host/db   # an existing server (CREATEDB)

Without --pg-url a throwaway PostgreSQL cluster is started in a temporary directory
(tests/pgcluster.py). See bench/README.md, "Several daemons on PostgreSQL (bench/fleet.py)".
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any, Protocol
from urllib.parse import urlsplit, urlunsplit

from run import (
    STOP_TIMEOUT_S,
    BenchError,
    Daemon,
    log,
    next_due,
    percentile,
    proc_cpu_s,
    shell_at_spec,
    timestamp_command,
    wait_for_runs,
)
from scheduler.models.job import new_job_row
from scheduler.models.validation import validate_job_spec
from scheduler.store import is_database_url, open_store, redact_db_url, scrub_db_url
from scheduler.store.api import Store
from scheduler.store.postgres.db import first_line

POLL_S = 0.05
HOST_PREFIX = "bench-host-"


@dataclass(frozen=True)
class Setup:
    key: str
    title: str
    backend: str  # "sqlite" or "postgresql"
    daemons: int


SETUPS = (
    Setup("sqlite-1", "1 daemon, SQLite", "sqlite", 1),
    Setup("postgres-1", "1 daemon, PostgreSQL", "postgresql", 1),
    Setup("postgres-3", "3 daemons, PostgreSQL", "postgresql", 3),
)


# --------------------------------------------------------------------------------------------
# PostgreSQL: a throwaway cluster, or databases made on a given server
# --------------------------------------------------------------------------------------------


def _tests_dir_on_path() -> None:
    tests_dir = str(Path(__file__).resolve().parents[1] / "tests")
    if tests_dir not in sys.path:
        sys.path.insert(0, tests_dir)


class Server:
    """Where the PostgreSQL set-ups get their fresh databases; ``close()`` removes what it made."""

    def __init__(self, pg_url: str | None) -> None:
        self._cluster: Any = None
        self._made: list[str] = []
        self.admin_url = pg_url or ""

    def start(self) -> None:
        if self.admin_url:
            return
        _tests_dir_on_path()
        import pgcluster  # type: ignore[import-not-found]  # tests/, not a package

        bindir = pgcluster.server_binaries()
        if bindir is None:
            raise BenchError("no PostgreSQL server binaries (initdb, pg_ctl) found; pass --pg-url URL")
        self._cluster = pgcluster.Cluster(bindir)
        try:
            self._cluster.start()
        except RuntimeError as exc:
            raise BenchError(f"could not start a throwaway PostgreSQL cluster: {exc}") from None
        self.admin_url = str(self._cluster.url())

    @contextlib.contextmanager
    def _admin(self) -> Iterator[Any]:
        """A connection to the server's admin database; its failures as one-line BenchErrors."""
        import psycopg

        try:
            with psycopg.connect(self.admin_url, autocommit=True, connect_timeout=10) as conn:
                yield conn
        except psycopg.Error as exc:
            raise BenchError(f"PostgreSQL at {redact_db_url(self.admin_url)}: "
                             f"{scrub_db_url(first_line(exc), self.admin_url)}") from None

    def version(self) -> str:
        with self._admin() as conn:
            row = conn.execute("SHOW server_version").fetchone()
        return str(row[0]) if row else "?"

    def cpu_s(self) -> float | None:
        """CPU seconds the throwaway cluster's processes have used so far (the postmaster, its
        live children, and the children it reaped); None for a server given by --pg-url."""
        if self._cluster is None:
            return None
        try:
            postmaster = int((Path(self._cluster.data) / "postmaster.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None
        own = proc_cpu_s(postmaster)
        if own is None:
            return None
        total = own[0] + own[1]
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue  # exited meanwhile
            if int(fields[1]) == postmaster:
                child = proc_cpu_s(int(stat.parent.name))
                total += child[0] if child else 0.0
        return total

    def new_database(self) -> str:
        name = f"fleetbench_{os.getpid()}_{len(self._made) + 1}"
        with self._admin() as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        self._made.append(name)
        return urlunsplit(urlsplit(self.admin_url)._replace(path=f"/{name}"))

    def close(self) -> None:
        if self._cluster is not None:
            cluster, self._cluster = self._cluster, None
            try:
                cluster.stop()  # removes its temporary directory too
            except RuntimeError as exc:
                log(f"  warning: stopping the PostgreSQL cluster: {exc}")
            return
        if not self._made:
            return
        import psycopg

        try:
            with self._admin() as conn:
                for name in self._made:
                    try:
                        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
                    except psycopg.Error as exc:
                        log(f"  warning: could not drop database {name}: {exc}")
        except BenchError as exc:
            log(f"  warning: could not drop the databases {', '.join(self._made)}: {exc}")
        self._made.clear()


# --------------------------------------------------------------------------------------------
# the daemons of one set-up, jobs, and watching their runs
# --------------------------------------------------------------------------------------------


@contextlib.contextmanager
def daemons_on(location: str, count: int, work: Path, label: str) -> Iterator[list[Daemon]]:
    """``count`` daemons on the database at ``location``, each with its own home and host name;
    all stopped on the way out (SIGTERM to every one first, so they stop together)."""
    daemons: list[Daemon] = []
    try:
        for i in range(1, count + 1):
            home = work / f"home-{i}"
            home.mkdir()
            env = {"SCHEDULER_DB": location, "SCHEDULER_HOME": str(home),
                   "SCHEDULER_HOST_NAME": f"{HOST_PREFIX}{i}"}
            # run.Daemon's db_path only seeds SCHEDULER_DB, which env overrides (a URL is no path).
            daemon = Daemon(work, home / "unused.db", env, f"{label}-{i}")
            daemons.append(daemon)
            daemon.start()
        yield daemons
    finally:
        for daemon in daemons:
            if daemon.proc is not None and daemon.proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    daemon.proc.send_signal(signal.SIGTERM)
        for daemon in daemons:
            # A second SIGTERM during its shutdown would kill it: let it stop on the first one;
            # stop() then only reaps it (or kills one that ignored SIGTERM for 30 s).
            if daemon.proc is not None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    daemon.proc.wait(timeout=STOP_TIMEOUT_S)
            code = daemon.stop()
            # -SIGTERM: stopped while still starting, before it handles SIGTERM (an interrupt)
            if code not in (0, None, -signal.SIGTERM):
                log(f"  warning: daemon [{daemon.label}] exited with code {code}\n{daemon.tail(8)}")


def open_location(location: str) -> Store:
    return open_store(location if is_database_url(location) else Path(location))


def insert_at_jobs(location: str, prefix: str, commands: Sequence[str], lead_s: float) -> float:
    """One-shot shell jobs named ``prefix-<i>``, all due at the same whole second, written in one
    transaction through the store (the rows ``jobs add`` builds); returns the due instant."""
    due, due_text = next_due(lead_s)
    now = datetime.now(UTC)
    rows = [
        new_job_row(validate_job_spec(shell_at_spec(f"{prefix}-{i:05d}", command, due_text), None,
                                      "create", now=now), now)
        for i, command in enumerate(commands)
    ]
    store = open_location(location)
    try:
        table = next(t for t in store.copy_tables() if t.name == "jobs")
        with store.bulk_load() as writer:
            writer.insert(table, rows)
    finally:
        store.close()
    if time.time() > due - 0.5:
        raise BenchError(f"writing {len(rows)} jobs took too long: less than 0.5 s was left before "
                         "the due instant (raise the lead)")
    return due


class Connection(Protocol):
    def execute(self, sql: str, params: Sequence[Any] = ...) -> Any: ...
    def close(self) -> None: ...


class RunWatcher:
    """A read-only look at the runs of one batch of jobs, on a connection of its own."""

    def __init__(self, location: str, prefix: str) -> None:
        self.conn: Connection
        if is_database_url(location):
            import psycopg

            self.conn = psycopg.connect(location, autocommit=True)
            self.mark = "%s"
        else:
            self.conn = sqlite3.connect(f"file:{location}?mode=ro", uri=True, timeout=5)
            self.mark = "?"
        self.pattern = f"{prefix}-%"

    def _rows(self, select: str, tail: str = "") -> list[Any]:
        sql = (f"SELECT {select} FROM runs r JOIN jobs j ON j.id = r.job_id "
               f"WHERE j.name LIKE {self.mark} {tail}")
        return list(self.conn.execute(sql, (self.pattern,)).fetchall())

    def counts(self) -> tuple[int, int]:
        """(runs created, runs recorded finished)."""
        row = self._rows("COUNT(*), COALESCE(SUM(CASE WHEN r.status <> 'running' THEN 1 ELSE 0 END), 0)")[0]
        return int(row[0]), int(row[1])

    def statuses(self) -> dict[str, int]:
        return {str(s): int(n) for s, n in self._rows("r.status, COUNT(*)", "GROUP BY r.status")}

    def owners(self) -> dict[str, int]:
        return {str(o): int(n) for o, n in self._rows("r.owner, COUNT(*)", "GROUP BY r.owner")}

    def close(self) -> None:
        self.conn.close()


def short_owner(owner: str) -> str:
    """A daemon's name in the spread: its host when it is one of ours ('<instance>@bench-host-2'
    -> 'bench-host-2'), else its instance id's first 8 characters and host (the owner's host is
    the machine's name until the daemon takes SCHEDULER_HOST_NAME)."""
    instance, _, host = owner.rpartition("@")
    return host if host.startswith(HOST_PREFIX) else f"{instance[:8]}@{host}"


def lead_for(count: int) -> float:
    """Seconds from writing the jobs to their due instant: room to build and insert the rows."""
    return 1.5 + count / 500


# --------------------------------------------------------------------------------------------
# the two measurements
# --------------------------------------------------------------------------------------------


def measure_lateness(location: str, daemons: list[Daemon], work: Path, n: int) -> dict[str, Any]:
    stamps = work / "stamps"
    stamps.mkdir()
    due = insert_at_jobs(location, "late", [timestamp_command(stamps / str(i)) for i in range(n)],
                         lead_for(n))
    watcher = RunWatcher(location, "late")
    try:
        wait_for_runs(watcher, daemons, n, timeout_s=(due - time.time()) + 60 + n * 0.5)
        statuses = watcher.statuses()
    finally:
        watcher.close()
    late_ms = []
    for i in range(n):
        try:
            late_ms.append((float((stamps / str(i)).read_text().strip()) - due) * 1000)
        except (OSError, ValueError) as exc:
            raise BenchError(f"lateness job {i} left no usable timestamp: {exc}; "
                             f"statuses {statuses}") from None
    return {
        "n": n,
        "p50_ms": round(statistics.median(late_ms), 1),
        "p99_ms": round(percentile(late_ms, 99), 1),
        "max_ms": round(max(late_ms), 1),
        "statuses": statuses,
    }


def daemons_cpu_s(daemons: list[Daemon]) -> float:
    """CPU seconds the daemon processes themselves (all their threads) have used so far."""
    return sum(cpu[0] for d in daemons if (cpu := proc_cpu_s(d.pid)) is not None)


def measure_throughput(location: str, daemons: list[Daemon], n: int, server: Server) -> dict[str, Any]:
    due = insert_at_jobs(location, "tp", ["true"] * n, lead_for(n))
    time.sleep(max(0.0, due - time.time() - 0.2))  # CPU from here: the work, not the writing
    daemons_before = daemons_cpu_s(daemons)
    server_before = server.cpu_s() if is_database_url(location) else None
    watcher = RunWatcher(location, "tp")
    try:
        waited = wait_for_runs(watcher, daemons, n, timeout_s=(due - time.time()) + 600)
        statuses = watcher.statuses()
        owners = watcher.owners()
    finally:
        watcher.close()
    daemons_cpu = daemons_cpu_s(daemons) - daemons_before
    server_after = server.cpu_s() if server_before is not None else None
    server_cpu = None if server_before is None or server_after is None else server_after - server_before
    assert waited.all_finished_at is not None  # wait_for_runs returns only once all finished
    elapsed = waited.all_finished_at - due
    return {
        "n": n,
        "runs_per_s": round(n / elapsed, 1),
        "all_finished_after_due_s": round(elapsed, 2),
        "first_run_created_after_due_s": None if waited.first_started_at is None
        else round(waited.first_started_at - due, 2),
        "all_runs_created_after_due_s": None if waited.all_started_at is None
        else round(waited.all_started_at - due, 2),
        "runs_per_daemon": {short_owner(o): c for o, c in sorted(owners.items())},
        # CPU over the same span (plus 0.2 s before the due instant): what the work cost
        "daemons_cpu_s": round(daemons_cpu, 2),
        "daemons_cpu_ms_per_run": round(daemons_cpu / n * 1000, 2),
        "postgresql_server_cpu_s": None if server_cpu is None else round(server_cpu, 2),
        "statuses": statuses,
    }


def bench_setup(
    setup: Setup, location: str, root: Path, lateness_n: int, throughput_n: int, server: Server
) -> dict[str, Any]:
    work = root / setup.key
    work.mkdir()
    with daemons_on(location, setup.daemons, work, setup.key) as daemons:
        lateness = measure_lateness(location, daemons, work, lateness_n)
        log(f"[{setup.key}] lateness of {lateness_n} jobs due in the same second: "
            f"p50={lateness['p50_ms']} ms p99={lateness['p99_ms']} ms max={lateness['max_ms']} ms; "
            f"statuses {lateness['statuses']}")
        throughput = measure_throughput(location, daemons, throughput_n, server)
        log(f"[{setup.key}] {throughput_n} `true` jobs due at once: {throughput['runs_per_s']} runs/s "
            f"(all finished {throughput['all_finished_after_due_s']} s after due); per daemon "
            f"{throughput['runs_per_daemon']}; daemon CPU {throughput['daemons_cpu_s']} s, PostgreSQL "
            f"server CPU {throughput['postgresql_server_cpu_s']} s; statuses {throughput['statuses']}")
    return {"title": setup.title, "backend": setup.backend, "daemons": setup.daemons,
            "lateness": lateness, "throughput": throughput}


# --------------------------------------------------------------------------------------------
# the table, main
# --------------------------------------------------------------------------------------------


def table(results: dict[str, dict[str, Any]]) -> str:
    keys = [s.key for s in SETUPS if s.key in results]

    def spread(figures: dict[str, Any]) -> str:
        return " / ".join(str(c) for c in figures["throughput"]["runs_per_daemon"].values())

    lines: list[tuple[str, list[str]]] = [
        ("", [results[k]["title"] for k in keys]),
        ("throughput (runs/s)", [str(results[k]["throughput"]["runs_per_s"]) for k in keys]),
        ("  all finished after due (s)", [str(results[k]["throughput"]["all_finished_after_due_s"])
                                          for k in keys]),
        ("  runs per daemon", [spread(results[k]) for k in keys]),
        ("  daemon CPU (s)", [str(results[k]["throughput"]["daemons_cpu_s"]) for k in keys]),
        ("  PostgreSQL server CPU (s)", [str(results[k]["throughput"]["postgresql_server_cpu_s"] or "-")
                                         for k in keys]),
        ("lateness p50 (ms)", [str(results[k]["lateness"]["p50_ms"]) for k in keys]),
        ("lateness p99 (ms)", [str(results[k]["lateness"]["p99_ms"]) for k in keys]),
        ("lateness max (ms)", [str(results[k]["lateness"]["max_ms"]) for k in keys]),
    ]
    first = max(len(name) for name, _ in lines)
    widths = [max(len(cells[i]) for _, cells in lines) for i in range(len(keys))]
    return "\n".join(
        f"{name:<{first}}  " + "  ".join(f"{cell:>{w}}" for cell, w in zip(cells, widths, strict=True))
        for name, cells in lines
    )


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true",
                        help="small sizes (throughput N=100, lateness 20): a smoke test")
    parser.add_argument("--throughput-n", type=int,
                        help="`true` jobs due at once (default 1000; --quick 100)")
    parser.add_argument("--lateness-n", type=int,
                        help="jobs due in the same second (default 100; --quick 20)")
    parser.add_argument("--pg-url", help="an existing PostgreSQL server (a role that may CREATE DATABASE): "
                        "each PostgreSQL set-up gets a new database there, dropped at the end")
    parser.add_argument("--json", metavar="FILE", help="also write the figures as JSON to FILE")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory (daemon logs)")
    args = parser.parse_args(argv)
    args.throughput_n = args.throughput_n or (100 if args.quick else 1000)
    args.lateness_n = args.lateness_n or (20 if args.quick else 100)
    if min(args.throughput_n, args.lateness_n) < 1:
        parser.error("sizes must be >= 1")
    if args.pg_url and not args.pg_url.startswith(("postgresql://", "postgres://")):
        parser.error("--pg-url takes a postgresql:// URL")
    if args.pg_url:
        args.pg_url = "postgresql://" + args.pg_url.split("://", 1)[1]
    return args


def _interrupt_on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt  # the same clean-up as Ctrl-C: every finally runs


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _interrupt_on_sigterm)
    root = Path(tempfile.mkdtemp(prefix="ocs-fleetbench-"))
    server = Server(args.pg_url)
    results: dict[str, Any] = {}
    meta: dict[str, Any] = {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"), "nproc": os.cpu_count(),
        "python": platform.python_version(), "sqlite": sqlite3.sqlite_version,
        "platform": platform.platform(), "quick": args.quick, "throughput_n": args.throughput_n,
        "lateness_n": args.lateness_n, "loadavg_1m": round(os.getloadavg()[0], 2),
        "postgresql_server": "given (--pg-url)" if args.pg_url else "throwaway cluster (tests/pgcluster.py)",
    }
    started = time.monotonic()
    code = 1
    try:
        server.start()
        meta["postgresql"] = server.version()
        where = meta["postgresql_server"] + (": " + redact_db_url(args.pg_url) if args.pg_url else "")
        log(f"openclaw-scheduler fleet bench: {meta['date']}, nproc={meta['nproc']}, "
            f"Python {meta['python']}, SQLite {meta['sqlite']}, PostgreSQL {meta['postgresql']} "
            f"({where}){', QUICK' if args.quick else ''}; load average {meta['loadavg_1m']}")
        for setup in SETUPS:
            location = str(root / "scheduler.db") if setup.backend == "sqlite" else server.new_database()
            results[setup.key] = bench_setup(setup, location, root, args.lateness_n, args.throughput_n,
                                             server)
        log("")
        log(table(results))
        code = 0
    except BenchError as exc:
        log(f"BENCH FAILED: {exc}")
    except KeyboardInterrupt:
        log("interrupted: stopping the daemons and the database")
        code = 130
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        meta["wall_s"] = round(time.monotonic() - started, 1)
        server.close()
        if args.json:
            Path(args.json).write_text(json.dumps({"meta": meta, "setups": results}, indent=2) + "\n")
        if args.keep:
            log(f"kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)
    if code == 0:
        log(f"done in {meta['wall_s']:.0f} s")
    return code


if __name__ == "__main__":
    sys.exit(main())
