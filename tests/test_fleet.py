"""Several daemons sharing one PostgreSQL database (issue 12, "Done means").

Real daemons (``python -m scheduler`` processes, each its own instance and host name) on a real
PostgreSQL cluster (tests/pgcluster.py). Outcomes only: nothing here measures speed.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from fleet import Fleet, fleet_of, instance_of, owners, wait_for
from scheduler.store.sqlite.idempotency import occurrence_key
from scheduler.timeutil import to_sqlite


@pytest.fixture
def fleet(pg_url: str, tmp_path: Path) -> Iterator[Fleet]:
    yield from fleet_of(pg_url, tmp_path)


def _iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def test_2000_one_shot_jobs_due_at_once_run_exactly_once_spread_over_3_daemons(fleet: Fleet) -> None:
    for name in ("a", "b", "c"):
        fleet.start(name, SCHEDULER_MAX_CONCURRENCY="32")
    due = datetime.now(UTC) + timedelta(seconds=5)
    ids = fleet.add_jobs([{"name": f"once-{i}", "schedule_kind": "at", "schedule_at": _iso(due),
                           "delete_after_run": False, "payload_message": "true"}
                          for i in range(2000)])

    def finished() -> bool:
        rows = fleet.query("SELECT COUNT(*) AS n FROM runs WHERE status NOT IN ('running')")
        return int(rows[0]["n"]) >= 2000

    wait_for(finished, timeout=300, interval=1)
    time.sleep(2)  # anything that would run twice has had its chance
    per_job = fleet.query("SELECT job_id, COUNT(*) AS n, MIN(status) AS status FROM runs GROUP BY job_id")
    assert len(per_job) == 2000
    assert {int(r["n"]) for r in per_job} == {1}
    assert {r["status"] for r in per_job} == {"ok"}
    spread = owners(fleet, ids)
    assert sorted(owner.rsplit("@", 1)[1] for owner in spread) == ["a", "b", "c"], spread
    assert min(spread.values()) >= 100, spread  # each daemon took a real share


def test_50_cron_jobs_every_second_across_3_daemons_run_each_occurrence_once(fleet: Fleet) -> None:
    seconds = int(os.environ.get("SCHEDULER_TEST_FLEET_CRON_S", "120"))
    for name in ("a", "b", "c"):
        fleet.start(name)
    ids = fleet.add_jobs([{"name": f"every-second-{i}", "schedule_cron": "* * * * * *",
                           "overlap_policy": "allow", "payload_message": "true"}
                          for i in range(50)])
    start = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=3)
    time.sleep(seconds + 3)
    end = datetime.now(UTC).replace(microsecond=0) - timedelta(seconds=3)
    for daemon in fleet.daemons:
        assert daemon.stop() == 0
    window = [to_sqlite(start + timedelta(seconds=s)) for s in range(int((end - start).total_seconds()))]
    assert len(window) >= seconds - 6
    keys = fleet.query("SELECT l.key, l.job_id, r.status FROM idempotency_ledger l "
                       "JOIN runs r ON r.id = l.run_id")
    runs_per_key: dict[str, int] = {}
    for row in keys:
        runs_per_key[row["key"]] = runs_per_key.get(row["key"], 0) + 1
    assert max(runs_per_key.values()) == 1  # no occurrence recorded twice
    runs_with_key = fleet.query(
        "SELECT idempotency_key, COUNT(*) AS n FROM runs WHERE idempotency_key IS NOT NULL "
        "GROUP BY idempotency_key HAVING COUNT(*) > 1")
    assert runs_with_key == []
    missing = [(job, instant) for job in ids for instant in window
               if occurrence_key(job, instant) not in runs_per_key]
    by_instant: dict[str, int] = {}
    for _, instant in missing:
        by_instant[instant] = by_instant.get(instant, 0) + 1
    warnings = [e for d in fleet.daemons for e in d.logs if e.get("level") in ("warning", "error")]
    assert missing == [], (by_instant, warnings[:10])  # none lost
    skipped = fleet.query("SELECT COUNT(*) AS n FROM runs WHERE status = 'skipped'")
    assert int(skipped[0]["n"]) == 0
    assert len(owners(fleet, ids)) == 3


def _runs(fleet: Fleet, job_id: str) -> list[dict[str, object]]:
    return fleet.query("SELECT * FROM runs WHERE job_id = ? ORDER BY started_at, rowid", (job_id,))


def test_a_killed_daemons_runs_are_recovered_by_another_within_the_lease(fleet: Fleet) -> None:
    lease = {"SCHEDULER_LEASE_S": "5", "SCHEDULER_RUN_HEARTBEAT_MS": "1000"}
    doomed = fleet.start("doomed", **lease)
    soon = _iso(datetime.now(UTC) + timedelta(seconds=2))
    replayed, crashed = fleet.add_jobs([
        {"name": "replayed", "schedule_kind": "at", "schedule_at": soon, "delete_after_run": False,
         "delivery_guarantee": "at-least-once", "payload_message": "sleep 600", "run_timeout_ms": 900000},
        {"name": "crashed", "schedule_kind": "at", "schedule_at": soon, "delete_after_run": False,
         "delivery_guarantee": "at-most-once", "payload_message": "sleep 600", "run_timeout_ms": 900000},
    ])
    wait_for(lambda: all(_runs(fleet, j) and _runs(fleet, j)[0]["status"] == "running"
                         for j in (replayed, crashed)), timeout=30)
    survivor = fleet.start("survivor", **lease)
    doomed.proc.kill()
    killed_at = time.monotonic()
    wait_for(lambda: _runs(fleet, crashed)[0]["status"] == "crashed", timeout=30)
    wait_for(lambda: len(_runs(fleet, replayed)) == 2, timeout=30)
    assert time.monotonic() - killed_at < 5 + 15  # the lease plus a few seconds (generous)
    first, replay = _runs(fleet, replayed)
    assert first["status"] == "crashed" and replay["replay_of"] == first["id"]
    assert replay["owner"] == instance_of(survivor)
    assert len(_runs(fleet, crashed)) == 1  # at-most-once: never run again
    survivor.wait_for_event("run.recovered", timeout=5)


def test_a_stopped_daemon_that_comes_back_is_fenced_off(fleet: Fleet, fake_gateway) -> None:  # type: ignore[no-untyped-def]
    env = {"SCHEDULER_LEASE_S": "5", "SCHEDULER_RUN_HEARTBEAT_MS": "1000",
           "SCHEDULER_MESSAGE_DELIVERY_MS": "5000", "OPENCLAW_GATEWAY_URL": fake_gateway.url}
    paused = fleet.start("paused", **env)
    soon = _iso(datetime.now(UTC) + timedelta(seconds=2))
    (job,) = fleet.add_jobs([{
        "name": "fenced", "schedule_kind": "at", "schedule_at": soon, "delete_after_run": False,
        "delivery_guarantee": "at-least-once", "payload_message": "sleep 8; echo finished",
        "delivery_mode": "announce-always", "delivery_channel": "telegram", "delivery_to": "42",
        "run_timeout_ms": 120000}])
    wait_for(lambda: _runs(fleet, job) and _runs(fleet, job)[0]["status"] == "running", timeout=30)
    paused.proc.send_signal(signal.SIGSTOP)
    try:
        other = fleet.start("other", **env)
        wait_for(lambda: len(_runs(fleet, job)) == 2, timeout=30)  # recovered and replayed
        time.sleep(8)  # the stopped daemon's own command has ended meanwhile
    finally:
        paused.proc.send_signal(signal.SIGCONT)
    wait_for(lambda: any(r["status"] == "ok" for r in _runs(fleet, job)), timeout=60)
    paused.wait_for_event("run.fenced", timeout=30) if not paused.events("run.lease_lost") else None

    def deliveries() -> list[object]:
        return [r for r in fake_gateway.requests if r.path == "/tools/invoke"
                and (r.body or {}).get("tool") == "message"]

    wait_for(deliveries, timeout=60)  # the outbound loop delivers within its interval
    time.sleep(8)  # room for a second delivery, were one coming
    runs = _runs(fleet, job)
    assert [r["status"] for r in runs] == ["crashed", "ok"]
    assert runs[1]["owner"] == instance_of(other)
    assert len(deliveries()) == 1, deliveries()
    assert not paused.events("run.finished") or all(
        e.get("run_id") != runs[0]["id"] for e in paused.events("run.finished"))
    other.wait_for_event("run.finished", lambda e: e.get("run_id") == runs[1]["id"], timeout=5)


def test_a_pool_of_one_shared_by_two_daemons_never_runs_two_at_once(fleet: Fleet, tmp_path: Path) -> None:
    log = tmp_path / "intervals.log"
    daemons = [fleet.start(name) for name in ("left", "right")]
    fleet.store.set_pool_capacity("gpu", 1, to_sqlite(datetime.now(UTC)))
    command = (f"echo start $(date +%s.%N) >> {log}; sleep 0.3; echo end $(date +%s.%N) >> {log}")
    ids = fleet.add_jobs([{"name": f"pooled-{i}", "schedule_cron": "* * * * * *",
                           "resource_pool": "gpu", "payload_message": command}
                          for i in range(6)])
    time.sleep(8)  # both daemons contend for the one slot
    # A saturated pool may well stay with the daemon that keeps releasing it (nothing promises
    # fairness), so the busier one is stopped mid-stream: its last run drains within the grace,
    # and the other must take the slot over without ever overlapping it.
    ran = owners(fleet, ids)
    assert ran, "no pooled run started in 8 s"
    busier = max(daemons, key=lambda d: ran.get(instance_of(d), 0))
    other = next(d for d in daemons if d is not busier)
    busier.stop()
    before = ran.get(instance_of(other), 0)
    wait_for(lambda: owners(fleet, ids).get(instance_of(other), 0) >= before + 3, timeout=30)
    other.stop()
    events = [line.split() for line in log.read_text().splitlines()]
    assert len(events) >= 10
    depth = 0
    for kind, _ in sorted(events, key=lambda e: float(e[1])):
        depth += 1 if kind == "start" else -1
        assert depth <= 1  # never two runs of the pool at once
    assert len(owners(fleet, ids)) == 2  # both daemons ran some


