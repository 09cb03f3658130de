"""A week of once-a-minute jobs, compressed: is the database bounded under retention?

Simulated time, real database: for every simulated hour, each job gets 60 finished runs (a
shell run's usual columns: a summary and a few hundred bytes of stdout), one of them with an
offloaded artifact file; then the daemon's hourly pass runs (``engine.retention.prune`` with the
default policy, then a PASSIVE WAL checkpoint), exactly as ``Daemon._prune`` calls it. The same
week is written a second time without the prune, for comparison. Runs are inserted in bulk with
``executemany`` (the bench's own SQL, as bench/run.py does for jobs): the daemon would take a
week to write them one by one.

    python bench/retention.py [--jobs 20] [--days 7] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from scheduler.engine import retention
from scheduler.models.job import new_job_row
from scheduler.models.retention import RetentionPolicy
from scheduler.models.validation import validate_job_spec
from scheduler.store.sqlite.store import SqliteStore
from scheduler.timeutil import to_sqlite

START = datetime(2026, 11, 1, tzinfo=UTC)
STDOUT = "line of ordinary command output\n" * 12  # ~400 bytes, under the offload threshold
RUN_COLUMNS = ("id", "job_id", "status", "started_at", "finished_at", "last_heartbeat",
               "duration_ms", "summary", "shell_exit_code", "shell_stdout", "shell_stdout_bytes")


def add_jobs(store: SqliteStore, count: int) -> list[str]:
    ids = []
    for i in range(count):
        spec = {"name": f"minutely-{i}", "schedule_cron": "* * * * *", "session_target": "shell",
                "payload_message": "uptime", "delivery_mode": "none", "origin": "system",
                "run_timeout_ms": 60000}
        ids.append(store.insert_job(new_job_row(validate_job_spec(spec, now=START), START)).id)
    return ids


def write_hour(store: SqliteStore, jobs: list[str], hour: datetime, artifacts: Path) -> None:
    rows = []
    for job_id in jobs:
        for minute in range(60):
            started = to_sqlite(hour + timedelta(minutes=minute))
            rows.append((str(uuid.uuid4()), job_id, "ok", started, started, started, 840,
                         "exit 0", 0, STDOUT, len(STDOUT)))
        folder = artifacts / "runs" / rows[-1][0]  # one offloaded run per job and hour
        folder.mkdir(parents=True)
        (folder / "stdout.txt").write_text(STDOUT * 100)
    marks = ", ".join("?" * len(RUN_COLUMNS))
    with store.db.transaction() as conn:
        conn.executemany(f"INSERT INTO runs ({', '.join(RUN_COLUMNS)}) VALUES ({marks})", rows)


def simulate(directory: Path, jobs: int, days: int, *, prune: bool) -> dict[str, Any]:
    store = SqliteStore.open(directory / "scheduler.db", synchronous="NORMAL")
    artifacts = directory / "artifacts"
    job_ids = add_jobs(store, jobs)
    daily: list[int] = []
    prune_s: list[float] = []
    for hour_index in range(days * 24):
        hour = START + timedelta(hours=hour_index)
        write_hour(store, job_ids, hour, artifacts)
        if prune:
            began = time.perf_counter()
            retention.prune(store, RetentionPolicy(), artifacts, to_sqlite(hour + timedelta(hours=1)))
            prune_s.append(time.perf_counter() - began)
        store.checkpoint()
        if hour_index % 24 == 23:
            daily.append(store.file_bytes())
    runs = int(store.db.scalar("SELECT COUNT(*) FROM runs"))
    files = sum(1 for _ in (artifacts / "runs").iterdir())
    store.close(checkpoint=True)
    return {"prune": prune, "runs_written": jobs * days * 24 * 60, "runs_kept": runs,
            "artifact_dirs_kept": files, "db_bytes_by_day": daily,
            "prune_s_max": round(max(prune_s), 4) if prune_s else None,
            "prune_s_mean": round(sum(prune_s) / len(prune_s), 4) if prune_s else None}


def report(result: dict[str, Any]) -> None:
    label = "with retention" if result["prune"] else "without retention"
    sizes = ", ".join(f"{b / 2**20:.1f}" for b in result["db_bytes_by_day"])
    print(f"{label}: {result['runs_written']} runs written, {result['runs_kept']} kept, "
          f"{result['artifact_dirs_kept']} artifact directories kept")
    print(f"  DB size at the end of each day (MiB): {sizes}")
    if result["prune"]:
        print(f"  hourly prune pass: mean {result['prune_s_mean'] * 1000:.1f} ms, "
              f"max {result['prune_s_max'] * 1000:.1f} ms")


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=20)
    parser.add_argument("--days", type=int, default=7)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    results = []
    for prune in (True, False):
        with tempfile.TemporaryDirectory(prefix="bench-retention-") as tmp:
            results.append(simulate(Path(tmp), args.jobs, args.days, prune=prune))
        report(results[-1])
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    bounded = results[0]["db_bytes_by_day"]
    return 0 if bounded[-1] <= 1.1 * bounded[0] else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
