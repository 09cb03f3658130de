"""Several real daemons on one PostgreSQL database, for the multi-host tests (issue 12).

Each daemon is a ``python -m scheduler`` process with its own SCHEDULER_HOME (its own lock file,
artifacts and instance id) and its own host name, all on the same SCHEDULER_DB URL. Jobs are
written through the store interface, as the CLI writes them, so that thousands can be added in
a second.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from conftest import SHELL_JOB, Daemon, kill_quietly, processes_with_environment, wait_until
from scheduler.models.job import new_job_row
from scheduler.models.validation import validate_job_spec
from scheduler.store import open_store
from scheduler.store.api import Store


class Fleet:
    def __init__(self, url: str, root: Path, **env: str) -> None:
        self.url = url
        self.root = root
        self.env = {"SCHEDULER_WAKE_POLL_MS": "100", "SCHEDULER_SHUTDOWN_GRACE_MS": "2000",
                    "OPENCLAW_GATEWAY_URL": "http://127.0.0.1:9", "SCHEDULER_TICK_MS": "1000",
                    **env}
        self.daemons: list[Daemon] = []
        self._store: Store | None = None

    @property
    def store(self) -> Store:
        if self._store is None:
            self._store = open_store(self.url)
        return self._store

    def start(self, name: str, wait: bool = True, **env: str) -> Daemon:
        home = self.root / name
        home.mkdir(parents=True, exist_ok=True)
        merged = {**self.env, "SCHEDULER_DB": self.url, "SCHEDULER_HOME": str(home),
                  "SCHEDULER_HOST_NAME": name, **env}
        daemon = Daemon(home / "unused.db", merged)
        daemon.name = name  # type: ignore[attr-defined]
        self.daemons.append(daemon)
        if wait:
            daemon.wait_for_event("daemon.started", timeout=60)
        return daemon

    def add_jobs(self, specs: list[dict[str, Any]]) -> list[str]:
        now = datetime.now(UTC)
        ids = []
        for spec in specs:
            job = self.store.insert_job(new_job_row(validate_job_spec({**SHELL_JOB, **spec}, now=now), now))
            ids.append(job.id)
        return ids

    def query(self, sql: str, params: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
        return self.store.db.query(sql, params)  # type: ignore[attr-defined,no-any-return]

    def close(self) -> None:
        for daemon in self.daemons:
            daemon.kill()
        for pid in processes_with_environment(f"SCHEDULER_DB={self.url}"):
            kill_quietly(pid)
        if self._store is not None:
            self._store.close()


def owners(fleet: Fleet, job_ids: list[str]) -> dict[str, int]:
    """Runs started per owning instance, over the given jobs (skipped runs have no owner)."""
    rows = fleet.query(
        "SELECT owner, COUNT(*) AS n FROM runs WHERE job_id = ANY(?) AND owner IS NOT NULL "
        "GROUP BY owner", (job_ids,))
    return {str(r["owner"]): int(r["n"]) for r in rows}


def instance_of(daemon: Daemon) -> str:
    """The daemon's instance, as runs.owner names it."""
    return str(daemon.wait_for_event("daemon.started")["instance"])


def wait_for(check: Any, timeout: float, interval: float = 0.25) -> Any:
    return wait_until(check, timeout=timeout, interval=interval, message=str(check))


def fleet_of(url: str, root: Path, **env: str) -> Iterator[Fleet]:
    fleet = Fleet(url, root, **env)
    try:
        yield fleet
    finally:
        fleet.close()
