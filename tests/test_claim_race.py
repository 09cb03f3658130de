"""Two processes, one database: every piece of due work is claimed by exactly one of them.

The claimants are separate OS processes (``python worker.py …``) calling
``scheduler.store.sqlite.claims.claim_due`` in a loop; each writes what it claimed to a JSON file.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from conftest import query, wait_until
from scheduler.models.job import new_job_row
from scheduler.models.validation import validate_job_spec
from scheduler.store.sqlite import jobs as job_store
from scheduler.store.sqlite import queue
from scheduler.store.sqlite.db import Database
from scheduler.store.sqlite.migrations import migrate
from scheduler.timeutil import to_sqlite

NEVER_SOON = "0 0 1 1 *"

# A claimant. argv: db, result file, ready file, go file, mode, seconds, seed
#   mode "drain": claim with a fixed "now" until nothing is left (20 empty batches in a row);
#                 cron jobs are advanced to a fixed far-future instant.
#   mode "live":  claim with the real clock for `seconds` (longer if it has won nothing yet),
#                 advancing cron jobs with the same cron.next_fire the daemon uses.
WORKER = r'''
import json, random, sys, time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from scheduler import cron
from scheduler.store.sqlite import claims
from scheduler.store.sqlite.db import Database
from scheduler.timeutil import to_sqlite

db_path, result, ready, go, mode, seconds, seed = sys.argv[1:8]
rng = random.Random(int(seed))
db = Database.open(Path(db_path), create=False)
Path(ready).touch()
while not Path(go).exists():
    time.sleep(0.001)

far = to_sqlite(datetime.now(UTC) + timedelta(days=30))

def next_fire(job):
    if mode == "drain":
        return far
    fire = cron.next_fire(job.schedule_cron, job.schedule_tz, datetime.now(UTC))
    return None if fire is None else to_sqlite(fire)

claimed, skipped, batches = [], [], 0
now_drain = to_sqlite(datetime.now(UTC) + timedelta(seconds=1))
deadline = time.monotonic() + float(seconds)
empty = 0
def going():
    if mode == "drain":
        return empty < 20
    # Live: race for `seconds`, and on (for at most 5 s more) until something was won.
    return time.monotonic() < deadline or (not claimed and time.monotonic() < deadline + 5)

while going():
    now_text = now_drain if mode == "drain" else to_sqlite(datetime.now(UTC))
    batch = claims.claim_due(db, now_text, rng.randint(1, 8), {"shell"}, next_fire)
    batches += 1
    empty = 0 if (batch.claims or batch.skipped or batch.waiting) else empty + 1
    for c in batch.claims:
        claimed.append({"run_id": c.run.id, "job_id": c.job.id, "source": c.source,
                        "dispatch_id": c.dispatch_id, "key": c.run.idempotency_key})
    skipped.extend(r.id for r in batch.skipped)
    time.sleep(rng.uniform(0, 0.002))
Path(result).write_text(json.dumps({"claimed": claimed, "skipped": skipped, "batches": batches}))
'''


def _open(path: Path) -> Database:
    db = Database.open(path)
    migrate(db)
    return db


def _add_job(db: Database, now: datetime, **overrides: Any) -> dict[str, Any]:
    spec = {
        "name": "race",
        "schedule_cron": NEVER_SOON,
        "session_target": "shell",
        "payload_message": "true",
        "run_timeout_ms": 10000,
        "delivery_mode": "none",
        "origin": "system",
        "overlap_policy": "allow",
        **overrides,
    }
    return job_store.insert_job(db, new_job_row(validate_job_spec(spec, now=now), now)).as_row()


def _claimants(tmp_path: Path, db_path: Path, count: int, mode: str, seconds: float = 0
               ) -> list[dict[str, Any]]:
    """Start ``count`` claimant processes, release them at once, return their results."""
    script = tmp_path / "claimant.py"
    script.write_text(WORKER)
    go = tmp_path / f"go-{mode}"
    procs, results, readies = [], [], []
    for i in range(count):
        result, ready = tmp_path / f"result-{mode}-{i}.json", tmp_path / f"ready-{mode}-{i}"
        procs.append(subprocess.Popen(
            [sys.executable, str(script), str(db_path), str(result), str(ready), str(go), mode,
             str(seconds), str(i * 7919 + int(time.time()))],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        ))
        results.append(result)
        readies.append(ready)
    try:
        wait_until(lambda: all(r.exists() for r in readies), timeout=30, message="claimants ready")
        go.touch()
        for proc in procs:
            _, err = proc.communicate(timeout=60)
            assert proc.returncode == 0, err
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    return [json.loads(r.read_text()) for r in results]


def test_two_processes_claim_each_row_and_occurrence_once(tmp_path: Path) -> None:
    db_path = tmp_path / "scheduler.db"
    db = _open(db_path)
    now = datetime.now(UTC)
    due = to_sqlite(now - timedelta(seconds=5))
    dispatch_ids: set[str] = set()
    for j in range(20):
        job = _add_job(db, now, name=f"queued {j}")
        for _ in range(10):
            row = queue.enqueue_dispatch(db, job["id"], "manual", due)
            assert row is not None
            dispatch_ids.add(row["id"])
    cron_ids = {_add_job(db, now, name=f"cron {j}", run_now=True)["id"] for j in range(100)}
    db.close()
    assert len(dispatch_ids) == 200

    results = _claimants(tmp_path, db_path, 2, "drain")

    claims = [c for r in results for c in r["claimed"]]
    assert all(r["claimed"] for r in results), [len(r["claimed"]) for r in results]  # both took part
    assert [r["skipped"] for r in results] == [[], []]
    by_dispatch = Counter(c["dispatch_id"] for c in claims if c["dispatch_id"])
    assert set(by_dispatch) == dispatch_ids
    assert max(by_dispatch.values()) == 1, [d for d, n in by_dispatch.items() if n > 1]
    by_cron_job = Counter(c["job_id"] for c in claims if c["source"] == "cron")
    assert set(by_cron_job) == cron_ids
    assert max(by_cron_job.values()) == 1
    assert len(claims) == 300
    assert len({c["key"] for c in claims}) == 300

    # The database agrees with what the claimants report.
    runs = query(db_path, "SELECT id, status, idempotency_key, dispatch_queue_id FROM runs")
    assert sorted(r["id"] for r in runs) == sorted(c["run_id"] for c in claims)
    assert {r["status"] for r in runs} == {"running"}
    keys = [r["idempotency_key"] for r in runs]
    assert None not in keys and len(set(keys)) == 300
    assert Counter(r["dispatch_queue_id"] for r in runs if r["dispatch_queue_id"]) == dict.fromkeys(
        dispatch_ids, 1
    )
    statuses = Counter(r["status"] for r in query(db_path, "SELECT status FROM job_dispatch_queue"))
    assert statuses == {"claimed": 200}  # claimed, and their runs are running: none left pending
    ledger = query(db_path, "SELECT key, run_id, status FROM idempotency_ledger")
    assert sorted((e["key"], e["run_id"]) for e in ledger) == sorted(
        (r["idempotency_key"], r["id"]) for r in runs
    )
    assert {e["status"] for e in ledger} == {"claimed"}
    due_again = query(db_path, "SELECT COUNT(*) AS n FROM jobs WHERE next_run_at <= ?", (to_sqlite(now),))
    assert due_again == [{"n": 0}]


@pytest.mark.slow
def test_a_second_claimant_beside_the_daemon_never_takes_what_the_daemon_ran(
    daemon, db_path, tmp_path
) -> None:
    out = tmp_path / "executions.txt"
    d = daemon()
    db = Database.open(db_path, create=False)
    now = datetime.now(UTC)
    every_second = [
        _add_job(db, now, name=f"every second {j}", schedule_cron="* * * * * *",
                 payload_message=f"echo $$ >> {out}")["id"]
        for j in range(15)
    ]
    # Manual rows that fall due together a little later, for both to race for.
    soon = to_sqlite(now.replace(microsecond=0) + timedelta(seconds=2))
    dispatch_ids = set()
    for j in range(5):
        job = _add_job(db, now, name=f"queued {j}", payload_message=f"echo $$ >> {out}")
        for _ in range(10):
            row = queue.enqueue_dispatch(db, job["id"], "manual", soon)
            assert row is not None
            dispatch_ids.add(row["id"])
    db.close()

    (intruder,) = _claimants(tmp_path, db_path, 1, "live", seconds=3.5)
    assert d.stop() == 0

    runs = query(db_path, "SELECT * FROM runs")
    started = [r for r in runs if r["status"] != "skipped"]
    daemon_ids = {e["run_id"] for e in d.events("run.started")}
    intruder_ids = {c["run_id"] for c in intruder["claimed"]}
    assert intruder_ids, "the intruder claimed nothing: no race took place"
    assert daemon_ids, "the daemon ran nothing"
    assert not daemon_ids & intruder_ids
    assert {r["id"] for r in started} == daemon_ids | intruder_ids
    # One run per occurrence: every started run carries its own key (a re-claimed key would have
    # been taken off the earlier run).
    keys = [r["idempotency_key"] for r in started]
    assert None not in keys and len(keys) == len(set(keys))
    # Every manual row ran exactly once, by one of the two.
    assert Counter(r["dispatch_queue_id"] for r in started if r["dispatch_queue_id"]) == dict.fromkeys(
        dispatch_ids, 1
    )
    # What the daemon claimed it executed and finished; what the intruder claimed nobody executed.
    assert all(r["status"] == "ok" for r in started if r["id"] in daemon_ids), Counter(
        r["status"] for r in started if r["id"] in daemon_ids
    )
    assert all(r["status"] == "running" for r in started if r["id"] in intruder_ids)
    assert len(out.read_text().split()) == len(daemon_ids)
    assert {r["job_id"] for r in started if r["dispatch_queue_id"] is None} <= set(every_second)
    skipped = [r for r in runs if r["status"] == "skipped"]
    assert not skipped, [r["error_message"] for r in skipped]
