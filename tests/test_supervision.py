"""Supervised helper tasks and the recorder, on real SQLite files: a helper that dies is logged
and handled; a run end the database refuses is kept, split or recorded as an error, never lost."""

from __future__ import annotations

import asyncio
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from scheduler.engine import supervisor as supervision
from scheduler.engine.recorder import Recorder
from scheduler.engine.supervisor import OnFailure, Supervisor
from scheduler.models.job import new_job_row
from scheduler.models.validation import validate_job_spec
from scheduler.store import claims as claim_store
from scheduler.store import jobs as job_store
from scheduler.store.asyncdb import AsyncDatabase
from scheduler.store.finish import Finish, Finished, FinishPolicy, finish_runs
from scheduler.store.messages import Delivery
from scheduler.timeutil import to_sqlite

NOW = datetime(2026, 11, 26, 12, 0, 0, tzinfo=UTC)
NOW_TEXT = to_sqlite(NOW)


class Events:
    """Collects what the code under test logs (structlog's call shape)."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str, dict[str, Any]]] = []

    def __getattr__(self, level: str) -> Any:
        def log(event: str, **fields: Any) -> None:
            self.seen.append((level, event, fields))
        return log

    def named(self, event: str) -> list[dict[str, Any]]:
        return [fields for _, name, fields in self.seen if name == event]


@pytest.fixture(autouse=True)
def quick_restarts(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(supervision, "RESTART_BACKOFF_S", (0.01,))


async def test_a_helper_that_raises_is_logged_by_name_and_restarted() -> None:
    log, fatal = Events(), []
    attempts = 0
    recovered = asyncio.Event()

    async def flaky() -> None:
        nonlocal attempts
        attempts += 1
        if attempts == 1:
            raise RuntimeError("boom")
        recovered.set()
        await asyncio.Event().wait()

    sup = Supervisor(log, lambda name, exc: fatal.append(name))
    sup.start("flaky", flaky, OnFailure.RESTART)
    await asyncio.wait_for(recovered.wait(), 5)
    await sup.stop()
    (event,) = log.named("daemon.task_failed")
    assert event["task"] == "flaky" and "boom" in event["error"] and event["reaction"] == "restart"
    assert isinstance(event["exc_info"], RuntimeError)
    assert attempts == 2 and fatal == []


async def test_a_fatal_helper_stops_the_daemon() -> None:
    log, fatal = Events(), asyncio.Queue[str]()

    async def recorder() -> None:
        raise sqlite3.IntegrityError("FOREIGN KEY constraint failed")

    sup = Supervisor(log, lambda name, exc: fatal.put_nowait(name))
    sup.start("recorder", recorder, OnFailure.FATAL)
    assert await asyncio.wait_for(fatal.get(), 5) == "recorder"
    await sup.stop()
    (event,) = log.named("daemon.task_failed")
    assert event["reaction"] == "stop the daemon" and "IntegrityError" in event["error"]


async def test_a_helper_that_returns_counts_as_failed() -> None:
    log, fatal = Events(), asyncio.Queue[str]()

    async def returns() -> None:
        return None

    sup = Supervisor(log, lambda name, exc: fatal.put_nowait(name))
    sup.start("watch-writes", returns, OnFailure.RESTART)
    # It keeps failing at once: after MAX_QUICK_FAILURES restarts the loop is a fault, not a blip.
    assert await asyncio.wait_for(fatal.get(), 5) == "watch-writes"
    await sup.stop()
    events = log.named("daemon.task_failed")
    assert len(events) == supervision.MAX_QUICK_FAILURES
    assert events[0]["error"] == "returned unexpectedly" and events[-1]["reaction"] == "stop the daemon"


async def test_stop_ends_every_helper_within_its_bound() -> None:
    log = Events()
    released = asyncio.Event()

    async def stubborn() -> None:
        while not released.is_set():
            try:
                await asyncio.sleep(10)
            except asyncio.CancelledError:
                continue  # ignores cancellation until the test releases it

    sup = Supervisor(log, lambda name, exc: None)
    sup.start("stubborn", stubborn, OnFailure.RESTART)
    await asyncio.sleep(0.05)
    await asyncio.wait_for(sup.stop(timeout_s=0.2), 5)
    (event,) = log.named("daemon.task_stuck")
    assert "stubborn" in event["tasks"]
    assert log.named("daemon.task_failed") == []
    released.set()
    for task in asyncio.all_tasks():
        if task.get_name() == "stubborn":
            task.cancel()


# -- the recorder, on a real database --------------------------------------------------------------


def _add_job(db: Any, **overrides: Any) -> dict[str, Any]:
    spec = {"name": "job", "schedule_cron": "*/5 * * * *", "session_target": "shell",
            "payload_message": "true", "run_timeout_ms": 1000, "delivery_mode": "none",
            "origin": "system", "max_retries": 1, **overrides}
    return job_store.insert_job(db, new_job_row(validate_job_spec(spec, now=NOW), NOW))


def _policy() -> FinishPolicy:
    return FinishPolicy(now_text=NOW_TEXT, backoff_until=lambda n: NOW_TEXT, retry_at=lambda n: NOW_TEXT)


async def _claims(adb: AsyncDatabase, count: int) -> list[claim_store.Claim]:
    for i in range(count):
        await adb.run(_add_job, name=f"job {i}")
    later = to_sqlite(NOW + timedelta(hours=1))
    batch = await adb.run(claim_store.claim_due, later, 50, {"shell"}, lambda job: None)
    assert len(batch.claims) == count
    return batch.claims


@pytest.fixture
async def adb(tmp_path: Path) -> Any:
    database = AsyncDatabase(tmp_path / "s.db")
    await database.open()
    yield database
    await database.close()


async def _status(adb: AsyncDatabase, run_id: str) -> dict[str, Any]:
    row = await adb.run(lambda db: db.query_one("SELECT * FROM runs WHERE id = ?", (run_id,)))
    assert row is not None
    return row


async def test_one_unrecordable_end_does_not_stop_the_others(adb: AsyncDatabase) -> None:
    good, bad = await _claims(adb, 2)
    # A counter at the top of SQLite's range: counting one more failure cannot be stored.
    await adb.run(lambda db: db.conn.execute("UPDATE jobs SET consecutive_errors = ? WHERE id = ?",
                                             (2**63 - 1, bad.job["id"])))
    await adb.run(lambda db: db.conn.execute("UPDATE jobs SET max_retries = 0"))
    log, recorded = Events(), []
    recorder = Recorder(adb, _policy, log, lambda f, done: recorded.append(f.claim.run["id"]))
    task = asyncio.create_task(recorder.run())
    futures = [recorder.submit(Finish(c, "error", 5, {"error_message": "exit 3"})) for c in (good, bad)]
    results = await asyncio.wait_for(asyncio.gather(*futures), 10)
    assert isinstance(results[0], Finished) and results[1] is None
    assert (await _status(adb, good.run["id"]))["status"] == "error"
    unrecordable = await _status(adb, bad.run["id"])
    assert unrecordable["status"] == "error"
    assert "could not be recorded" in unrecordable["error_message"]
    assert "too large" in unrecordable["error_message"]
    (event,) = log.named("run.record_failed")
    assert event["run_id"] == bad.run["id"]
    assert recorded == [good.run["id"]]
    assert not task.done()  # the recorder lives on
    task.cancel()


async def test_a_full_disk_keeps_run_ends_pending_until_space_returns(adb: AsyncDatabase) -> None:
    (claim,) = await _claims(adb, 1)
    pages = await adb.run(lambda db: db.scalar("PRAGMA page_count"))
    # SQLite's own size cap on this connection: writes needing a page more fail with SQLITE_FULL.
    await adb.run(lambda db: db.conn.execute(f"PRAGMA max_page_count = {pages}"))
    log = Events()
    recorder = Recorder(adb, _policy, log, lambda f, done: None)
    task = asyncio.create_task(recorder.run())
    filler = "x" * 200_000  # this end needs new pages
    done = recorder.submit(Finish(claim, "ok", 5, {"shell_stdout": filler}))
    while len(log.named("run.record_pending")) < 3:
        await asyncio.sleep(0.05)
        recorder.retry_now()
    assert not done.done() and recorder.waiting == 1
    assert (await _status(adb, claim.run["id"]))["status"] == "running"
    assert "full" in log.named("run.record_pending")[0]["error"]
    await adb.run(lambda db: db.conn.execute("PRAGMA max_page_count = 1073741823"))
    recorder.retry_now()
    finished = await asyncio.wait_for(done, 10)
    assert isinstance(finished, Finished) and finished.recorded
    run = await _status(adb, claim.run["id"])
    assert run["status"] == "ok" and run["shell_stdout"] == filler
    assert recorder.waiting == 0
    task.cancel()


async def test_an_end_whose_job_was_deleted_is_not_recorded_and_breaks_nothing(adb: AsyncDatabase) -> None:
    (claim,) = await _claims(adb, 1)
    await adb.run(job_store.delete_job, claim.job["id"])
    (finished,) = await adb.run(
        finish_runs, [Finish(claim, "ok", 5, {}, delivery=Delivery("result", "telegram", "12345"))],
        _policy())
    assert not finished.recorded and finished.message is None
    assert await adb.run(lambda db: db.query("SELECT * FROM messages")) == []
