"""Retries with the real daemon: the ladder, timeouts, recovery, disabling, and the ``idem`` CLI.

``SCHEDULER_RETRY_BASE_MS=1000`` makes the ladder 1 s, 2 s, 4 s, … so a whole ladder fits a test.
"""

from __future__ import annotations

import itertools
import sqlite3
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from conftest import shell_job, wait_until

NEVER_SOON = "0 0 1 1 *"  # a valid cron that will not fire during a test
FAST_RETRIES = {"SCHEDULER_RETRY_BASE_MS": "1000"}


def add(cli, *options: str, **fields: Any) -> dict[str, Any]:
    """``jobs add`` a shell job; return the stored row."""
    code, out, stdout, stderr = cli("jobs", "add", shell_job(**fields), *options)
    assert code == 0, stdout + stderr
    return out["job"]


def runs_of(db, job_id: str) -> list[dict[str, Any]]:
    return db("SELECT * FROM runs WHERE job_id = ? ORDER BY started_at, rowid", (job_id,))


def stamps(path: Path) -> list[float]:
    """Timestamps a job wrote with ``date +%s.%N >> path``."""
    return [float(line) for line in path.read_text().split()] if path.exists() else []


def settled(db, job_id: str, count: int) -> list[dict[str, Any]] | None:
    """The job's runs once there are ``count`` of them, none running and no retry still queued."""
    runs = runs_of(db, job_id)
    live = db("SELECT 1 FROM job_dispatch_queue WHERE job_id = ? AND status IN ('pending', 'claimed')",
              (job_id,))
    if len(runs) >= count and not live and all(r["status"] != "running" for r in runs):
        return runs
    return None


@pytest.mark.slow
def test_failing_job_walks_the_retry_ladder(cli, daemon, db, tmp_path) -> None:
    out = tmp_path / "attempts.txt"
    d = daemon(FAST_RETRIES)
    job = add(cli, name="always fails", schedule_cron=NEVER_SOON, run_now=True, max_retries=2,
              payload_message=f"date +%s.%N >> {out}; exit 1")
    runs = wait_until(lambda: settled(db, job["id"], 3), timeout=15, message="three runs")
    assert d.stop() == 0

    assert [r["status"] for r in runs] == ["error", "error", "error"]
    first, second, third = runs
    assert (first["retry_of"], second["retry_of"], third["retry_of"]) == (None, first["id"], second["id"])
    assert [r["retry_count"] for r in runs] == [1, 2, 2]
    assert all(r["replay_of"] is None for r in runs)
    # Each retry came from its own queue row, closed once it ran.
    dispatches = db("SELECT * FROM job_dispatch_queue WHERE job_id = ? ORDER BY created_at, rowid",
                    (job["id"],))
    assert [(q["dispatch_kind"], q["status"], q["retry_of_run_id"]) for q in dispatches] == [
        ("retry", "done", first["id"]), ("retry", "done", second["id"])
    ]
    assert [second["dispatch_queue_id"], third["dispatch_queue_id"]] == [q["id"] for q in dispatches]

    fired = stamps(out)
    assert len(fired) == 3, fired
    gaps = [b - a for a, b in itertools.pairwise(fired)]
    assert gaps[0] >= 0.8 and gaps[1] >= 1.6, f"retries came early: gaps {gaps}"
    assert all(gap < 5 for gap in gaps), gaps

    row = db("SELECT consecutive_errors, last_status, enabled FROM jobs WHERE id = ?", (job["id"],))[0]
    assert row == {"consecutive_errors": 1, "last_status": "error", "enabled": 1}
    finished = [e for e in d.events("run.finished") if e["job_id"] == job["id"]]
    assert [e["retry_at"] is not None for e in finished] == [True, True, False]


@pytest.mark.slow
def test_timed_out_job_is_retried(cli, daemon, db) -> None:
    d = daemon(FAST_RETRIES)
    job = add(cli, name="too slow", schedule_cron=NEVER_SOON, run_now=True, max_retries=1,
              run_timeout_ms=500, payload_message="sleep 5")
    runs = wait_until(lambda: settled(db, job["id"], 2), timeout=15, message="two runs")
    assert d.stop() == 0
    assert [r["status"] for r in runs] == ["timeout", "timeout"]
    assert [r["shell_timed_out"] for r in runs] == [1, 1]
    assert runs[1]["retry_of"] == runs[0]["id"]
    assert [r["retry_count"] for r in runs] == [1, 1]
    assert all(r["duration_ms"] < 4000 for r in runs), [r["duration_ms"] for r in runs]
    row = db("SELECT consecutive_errors, last_status FROM jobs WHERE id = ?", (job["id"],))[0]
    assert row == {"consecutive_errors": 1, "last_status": "timeout"}


def test_job_that_recovers_on_retry_ends_ok(cli, daemon, db, tmp_path) -> None:
    counter = tmp_path / "count"
    d = daemon(FAST_RETRIES)
    command = f"n=$(( $(cat {counter} 2>/dev/null || echo 0) + 1 )); echo $n > {counter}; [ $n -ge 2 ]"
    job = add(cli, name="flaky", schedule_cron=NEVER_SOON, run_now=True, max_retries=3,
              payload_message=command)
    runs = wait_until(lambda: settled(db, job["id"], 2), timeout=10, message="two runs")
    assert d.stop() == 0
    assert [r["status"] for r in runs] == ["error", "ok"]
    assert runs[1]["retry_of"] == runs[0]["id"]
    assert counter.read_text().strip() == "2"
    row = db("SELECT consecutive_errors, last_status, enabled FROM jobs WHERE id = ?", (job["id"],))[0]
    assert row == {"consecutive_errors": 0, "last_status": "ok", "enabled": 1}


def test_disabling_a_job_cancels_its_pending_retry(cli, daemon, db, tmp_path) -> None:
    out = tmp_path / "attempts.txt"
    d = daemon({"SCHEDULER_RETRY_BASE_MS": "3000"})
    job = add(cli, name="fails then disabled", schedule_cron=NEVER_SOON, run_now=True, max_retries=3,
              payload_message=f"echo x >> {out}; exit 1")
    first = d.wait_for_event("run.finished", lambda e: e["job_id"] == job["id"], timeout=10)
    assert first["retry_at"] is not None
    code, _, stdout, stderr = cli("jobs", "disable", job["id"])
    assert code == 0, stdout + stderr
    # Cancelled by the disable itself, before the retry falls due, with a record.
    (cancelled,) = db("SELECT * FROM job_dispatch_queue WHERE job_id = ?", (job["id"],))
    assert cancelled["status"] == "cancelled" and cancelled["dispatch_kind"] == "retry"
    runs = runs_of(db, job["id"])
    assert [r["status"] for r in runs] == ["error", "skipped"]
    skipped = runs[1]
    assert skipped["error_message"] == "job disabled; queued retry run cancelled"
    assert skipped["dispatch_queue_id"] == cancelled["id"]

    # The retry's turn comes and goes: nothing runs.
    due = datetime.strptime(first["retry_at"], "%Y-%m-%d %H:%M:%S").replace(tzinfo=UTC).timestamp()
    time.sleep(max(0.0, due - time.time()) + 1.0)
    assert d.stop() == 0
    assert [r["status"] for r in runs_of(db, job["id"])] == ["error", "skipped"]
    assert out.read_text() == "x\n"  # the retry never executed
    assert db("SELECT enabled FROM jobs WHERE id = ?", (job["id"],)) == [{"enabled": 0}]


def test_idem_cli(cli, daemon, db, db_path) -> None:
    d = daemon()
    job = add(cli, name="keyed", schedule_cron=NEVER_SOON, run_now=True)
    d.wait_for_event("run.finished", lambda e: e["job_id"] == job["id"], timeout=10)
    assert d.stop() == 0
    (run,) = runs_of(db, job["id"])
    key = run["idempotency_key"]
    assert key and len(key) == 32

    code, entries, _, err = cli("idem", "status", job["id"])
    assert code == 0, err
    assert [(e["key"], e["run_id"], e["status"]) for e in entries] == [(key, run["id"], "claimed")]

    code, entry, _, err = cli("idem", "check", key)
    assert code == 0, err
    assert (entry["key"], entry["job_id"], entry["status"]) == (key, job["id"], "claimed")
    code, missing, _, err = cli("idem", "check", "0" * 32)
    assert code == 0, err
    assert missing == {"found": False, "key": "0" * 32}

    code, released, _, err = cli("idem", "release", key)
    assert code == 0, err
    assert released == {"ok": True, "key": key, "released": True}
    code, again, _, err = cli("idem", "release", key)
    assert code == 0, err
    assert again == {"ok": True, "key": key, "already_released": True}
    (entry,) = db("SELECT status, released_at FROM idempotency_ledger WHERE key = ?", (key,))
    assert entry["status"] == "released" and entry["released_at"] is not None
    code, _, stdout, stderr = cli("idem", "release", "f" * 32)
    assert code != 0
    assert "not found" in (stdout + stderr).lower()

    code, _, _, err = cli("idem", "status", "no-such-job")
    assert code != 0

    # prune removes expired entries only.
    with sqlite3.connect(db_path) as conn:
        conn.execute(
            "INSERT INTO idempotency_ledger (key, job_id, run_id, status, claimed_at, expires_at) "
            "VALUES ('expired-key', ?, ?, 'released', '2020-01-01 00:00:00', '2020-01-08 00:00:00')",
            (job["id"], run["id"]),
        )
    conn.close()
    code, pruned, _, err = cli("idem", "prune")
    assert code == 0, err
    assert pruned == {"ok": True, "pruned": 1}
    assert [r["key"] for r in db("SELECT key FROM idempotency_ledger")] == [key]
    code, pruned, _, err = cli("idem", "prune")
    assert pruned == {"ok": True, "pruned": 0}
