"""The wall clock stepped back: noticed, due times brought back, jobs keep their cadence.

The end-to-end test runs the real daemon under libfaketime (Debian's ``faketime`` package), whose
offset is read from a file on every call: writing ``-1h`` into it steps the daemon's wall clock
back an hour at once, while its monotonic clock runs on, as NTP stepping a wrong clock does.
"""

from __future__ import annotations

import glob
import os
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from conftest import shell_job, wait_until
from scheduler.engine.clock import ClockWatch
from scheduler.models.job import new_job_row
from scheduler.models.validation import validate_job_spec
from scheduler.store import claims as claim_store
from scheduler.store import jobs as job_store
from scheduler.store import queue, recovery
from scheduler.store.db import Database
from scheduler.store.migrations import migrate
from scheduler.timeutil import from_sqlite, to_sqlite


class FakeClocks:
    def __init__(self) -> None:
        self.wall = 1_800_000_000.0
        self.mono = 100.0

    def advance(self, seconds: float) -> None:
        self.wall += seconds
        self.mono += seconds


def test_clock_watch_tells_steps_from_slewing() -> None:
    clocks = FakeClocks()
    watch = ClockWatch(wall=lambda: clocks.wall, monotonic=lambda: clocks.mono)
    clocks.advance(1)
    assert watch.step() is None
    clocks.advance(1)
    clocks.wall += 0.0005  # NTP slewing: half a millisecond a second
    assert watch.step() is None
    clocks.advance(1)
    clocks.wall -= 3600
    assert watch.step() == pytest.approx(-3600)
    clocks.advance(1)
    assert watch.step() is None  # measured from the new offset
    clocks.wall += 90
    assert watch.step() == pytest.approx(90)


# -- the store's part -----------------------------------------------------------------------------

NOW = datetime(2026, 11, 26, 12, 0, 0, tzinfo=UTC)


def _at(delta_s: float) -> str:
    return to_sqlite(NOW + timedelta(seconds=delta_s))


def _next_minute_after(job: dict[str, Any], after: str) -> str:
    moment = from_sqlite(after).replace(second=0) + timedelta(minutes=1)
    return to_sqlite(moment)


@pytest.fixture
def store(tmp_path: Path) -> Any:
    db = Database.open(tmp_path / "s.db")
    migrate(db)
    yield db
    db.close()


def _add(db: Database, **overrides: Any) -> dict[str, Any]:
    spec = {"name": "minutely", "schedule_cron": "* * * * *", "session_target": "shell",
            "payload_message": "true", "run_timeout_ms": 1000, "delivery_mode": "none",
            "origin": "system", **overrides}
    return job_store.insert_job(db, new_job_row(validate_job_spec(spec, now=NOW), NOW))


def test_a_step_back_brings_due_times_back_and_frees_the_repeated_stretch(store: Database) -> None:
    job = _add(store)
    # Under the old clock (an hour ahead) the job fired at 13:00 and was next due at 13:01.
    store.conn.execute("UPDATE jobs SET next_run_at = ? WHERE id = ?", (_at(3600), job["id"]))
    batch = claim_store.claim_due(store, _at(3600), 10, {"shell"}, lambda j: _at(3660))
    (claim,) = batch.claims
    store.conn.execute("UPDATE runs SET status = 'ok' WHERE id = ?", (claim.run["id"],))
    retry = queue.enqueue_dispatch(store, job["id"], "retry", _at(3630))
    assert retry is not None
    # The clock is corrected: it is 12:00:30 now.
    moved = recovery.shift_back_after_clock_step(store, 3600, _at(30), _next_minute_after)
    assert moved == 3  # the job, the retry row, the ledger key
    (after,) = store.query("SELECT next_run_at FROM jobs WHERE id = ?", (job["id"],))
    assert after["next_run_at"] == _at(60)
    (row,) = store.query("SELECT scheduled_for FROM job_dispatch_queue WHERE id = ?", (retry["id"],))
    assert row["scheduled_for"] == _at(30)
    store.conn.execute("UPDATE job_dispatch_queue SET status = 'cancelled' WHERE id = ?", (retry["id"],))
    # 13:00 comes round again an hour later: a new occurrence, not "already claimed".
    store.conn.execute("UPDATE jobs SET next_run_at = ? WHERE id = ?", (_at(3600), job["id"]))
    again = claim_store.claim_due(store, _at(3600), 10, {"shell"}, lambda j: _at(3660))
    assert [c.source for c in again.claims] == ["cron"]
    assert not [r for r in again.skipped if "already claimed" in (r["error_message"] or "")]


def test_without_a_step_a_claimed_instant_is_still_skipped(store: Database) -> None:
    job = _add(store)
    store.conn.execute("UPDATE jobs SET next_run_at = ? WHERE id = ?", (_at(60), job["id"]))
    assert len(claim_store.claim_due(store, _at(60), 10, {"shell"}, lambda j: _at(120)).claims) == 1
    assert recovery.shift_back_after_clock_step(store, 0.0, _at(61), _next_minute_after) == 0
    store.conn.execute("UPDATE jobs SET next_run_at = ? WHERE id = ?", (_at(60), job["id"]))
    batch = claim_store.claim_due(store, _at(62), 10, {"shell"}, lambda j: _at(120))
    assert batch.claims == [] and len(batch.skipped) == 1


# -- the real daemon under libfaketime --------------------------------------------------------------


def _libfaketime() -> str | None:
    found = sorted(glob.glob("/usr/lib/*/faketime/libfaketimeMT.so.1") +
                   glob.glob("/usr/lib/faketime/libfaketimeMT.so.1"))
    return found[0] if found else None


@pytest.fixture
def faketime(tmp_path: Path) -> tuple[dict[str, str], Path]:
    library = _libfaketime()
    if library is None:
        if os.environ.get("SCHEDULER_TEST_REQUIRE_FAKETIME"):
            pytest.fail("libfaketime is not installed (Debian package faketime)")
        pytest.skip("libfaketime is not installed (Debian package faketime)")
    offset = tmp_path / "faketime"
    offset.write_text("+0\n")
    env = {"LD_PRELOAD": library, "FAKETIME_TIMESTAMP_FILE": str(offset), "FAKETIME_NO_CACHE": "1",
           "FAKETIME_DONT_FAKE_MONOTONIC": "1"}
    return env, offset


def test_a_clock_stepped_back_an_hour_does_not_stop_frequent_jobs(cli, daemon, db, faketime) -> None:
    env, offset = faketime
    code, out, stdout, stderr = cli("jobs", "add", shell_job(
        name="every 2 s", schedule_cron="*/2 * * * * *", payload_message="echo tick",
        overlap_policy="allow"), env=env)
    assert code == 0, stdout + stderr
    job = out["job"]
    d = daemon(env=env)

    def finished() -> list[dict[str, Any]]:
        return db("SELECT * FROM runs WHERE job_id = ? AND status NOT IN ('running', 'skipped') "
                  "ORDER BY rowid", (job["id"],))

    wait_until(lambda: len(finished()) >= 2, timeout=15, message="two runs before the step")
    offset.write_text("-1h\n")
    d.wait_for_event("clock.stepped_back", timeout=10)
    before = len(finished())
    stepped_at = time.monotonic()
    wait_until(lambda: len(finished()) >= before + 3, timeout=15,
               message="three runs in the hour that came round again")
    assert time.monotonic() - stepped_at < 15
    runs = finished()
    assert all(r["status"] == "ok" for r in runs), [(r["status"], r["error_message"]) for r in runs]
    assert db("SELECT * FROM runs WHERE status = 'skipped'") == []
    early, late = from_sqlite(runs[0]["started_at"]), from_sqlite(runs[-1]["started_at"])
    assert timedelta(minutes=59) < early - late < timedelta(minutes=61)
    keys = [r["idempotency_key"] for r in runs]
    assert len(keys) == len(set(keys))
    assert d.stop() == 0


def test_a_clock_stepped_back_while_the_daemon_was_down_is_noticed_at_start(
    cli, daemon, db, faketime
) -> None:
    env, offset = faketime
    code, out, stdout, stderr = cli("jobs", "add", shell_job(
        name="every 2 s", schedule_cron="*/2 * * * * *"), env=env)
    assert code == 0, stdout + stderr
    job = out["job"]
    d = daemon(env=env)
    wait_until(lambda: db("SELECT 1 FROM runs WHERE job_id = ? AND status = 'ok'", (job["id"],)),
               timeout=15, message="a run under the old clock")
    assert d.stop() == 0
    (before,) = db("SELECT next_run_at FROM jobs WHERE id = ?", (job["id"],))
    offset.write_text("-1h\n")
    d2 = daemon(env=env)
    event = d2.wait_for_event("clock.behind_database", timeout=10)
    assert 3500 < event["seconds"] < 3700
    (after,) = db("SELECT next_run_at FROM jobs WHERE id = ?", (job["id"],))
    assert from_sqlite(after["next_run_at"]) < from_sqlite(before["next_run_at"]) - timedelta(minutes=50)
    assert d2.stop() == 0
