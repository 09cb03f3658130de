"""Resource pools on real SQLite files: work whose pool is full waits for it, first due first
served, bounded by misfire grace; capacities; two processes never exceed a pool's capacity."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from conftest import query, shell_job, wait_until
from scheduler.errors import ValidationError
from scheduler.models.job import new_job_row
from scheduler.models.validation import validate_job_spec
from scheduler.store import claims as claim_store
from scheduler.store import jobs as job_store
from scheduler.store import pools, queue, recovery
from scheduler.store.db import Database
from scheduler.store.finish import Finish, FinishPolicy, finish_runs
from scheduler.store.migrations import migrate
from scheduler.store.status import overview, pool_overview
from scheduler.timeutil import to_sqlite
from test_claim_race import _claimants

NOW = datetime(2026, 11, 26, 12, 0, 0, tzinfo=UTC)
NOW_TEXT = to_sqlite(NOW)
LATER = to_sqlite(NOW + timedelta(hours=1))


def at(seconds: float) -> str:
    return to_sqlite(NOW + timedelta(seconds=seconds))


@pytest.fixture
def db(tmp_path: Path) -> Any:
    database = Database.open(tmp_path / "s.db")
    migrate(database)
    yield database
    database.close()


def add_job(db: Database, due: str | None = NOW_TEXT, **overrides: Any) -> dict[str, Any]:
    """A cron shell job due at ``due`` (its next fire after that is LATER)."""
    spec = {
        "name": "job", "schedule_cron": "0 0 1 1 *", "session_target": "shell",
        "payload_message": "true", "run_timeout_ms": 1000, "delivery_mode": "none",
        "origin": "system", "resource_pool": "gpu", **overrides,
    }
    job = job_store.insert_job(db, new_job_row(validate_job_spec(spec, now=NOW), NOW))
    if due is not None and job["schedule_kind"] == "cron":
        job = job_store.update_job(db, job["id"], {"next_run_at": due}, NOW_TEXT)
    return job


def claim(db: Database, now_text: str = NOW_TEXT, limit: int = 50) -> claim_store.ClaimBatch:
    return claim_store.claim_due(db, now_text, limit, {"shell"}, lambda job: LATER)


def finish(db: Database, c: claim_store.Claim, now_text: str = NOW_TEXT, status: str = "ok") -> None:
    policy = FinishPolicy(now_text=now_text, backoff_until=lambda n: LATER, retry_at=lambda n: LATER)
    finish_runs(db, [Finish(c, status, 10, {})], policy)


def claimed_names(batch: claim_store.ClaimBatch) -> list[str]:
    return [c.job["name"] for c in batch.claims]


def skipped_runs(db: Database) -> list[str]:
    return [r["error_message"] for r in db.query("SELECT error_message FROM runs WHERE status = 'skipped'")]


# -- waiting, in order ---------------------------------------------------------------------------


def test_fire_times_in_a_full_pool_wait_and_take_turns_first_due_first(db: Database) -> None:
    for name, due in (("second", at(-1)), ("first", at(-2)), ("third", NOW_TEXT)):
        add_job(db, due, name=name)
    batch = claim(db)
    assert claimed_names(batch) == ["first"] and batch.skipped == []
    # The waiters keep their fire times: nothing was written for them.
    waiting = db.query("SELECT name, next_run_at FROM jobs WHERE name != 'first' ORDER BY name")
    assert waiting == [{"name": "second", "next_run_at": at(-1)}, {"name": "third", "next_run_at": NOW_TEXT}]
    assert claim(db, at(5)).claims == []  # still busy: they go on waiting

    order = ["first"]
    current = batch.claims[0]
    for step in (1, 2):
        finish(db, current, at(10 * step))
        (current,) = claim(db, at(10 * step)).claims
        order.append(current.job["name"])
    assert order == ["first", "second", "third"]
    assert skipped_runs(db) == []


def test_queue_rows_and_fire_times_share_one_line_by_due_time(db: Database) -> None:
    add_job(db, at(-10), name="holder")
    (held,) = claim(db).claims
    manual_job = add_job(db, None, name="manual", enabled=False)
    retry_job = add_job(db, None, name="retry", enabled=True)
    chained_job = add_job(db, None, name="chained")
    add_job(db, at(2), name="fire time")
    manual = queue.enqueue_dispatch(db, manual_job["id"], "manual", at(1))
    retry = queue.enqueue_dispatch(db, retry_job["id"], "retry", at(3), retry_of_run_id=held.run["id"])
    chain = queue.enqueue_dispatch(db, chained_job["id"], "chain", at(4), source_run_id=held.run["id"])
    assert manual is not None and retry is not None and chain is not None
    assert claim(db, at(5)).claims == []
    # A waiting row keeps its due time (it is not pushed back and so loses no place).
    assert db.scalar("SELECT scheduled_for FROM job_dispatch_queue WHERE id = ?", (manual["id"],)) == at(1)

    order, current = [], held
    for step in (1, 2, 3, 4):
        finish(db, current, at(5 + step))
        (current,) = claim(db, at(5 + step)).claims
        order.append((current.job["name"], current.source))
    assert order == [("manual", "manual"), ("fire time", "cron"), ("retry", "retry"), ("chained", "chain")]
    assert skipped_runs(db) == []


def test_capacity_two_runs_two_and_the_third_waits(db: Database) -> None:
    pools.set_capacity(db, "gpu", 2, NOW_TEXT)
    for n in range(3):
        add_job(db, at(n - 3), name=f"job {n}")
    batch = claim(db)
    assert claimed_names(batch) == ["job 0", "job 1"] and batch.skipped == []
    assert claim(db).claims == []
    finish(db, batch.claims[1], at(1))
    assert claimed_names(claim(db, at(1))) == ["job 2"]
    assert skipped_runs(db) == []


def test_a_claim_in_progress_counts_its_own_runs_against_the_pool(db: Database) -> None:
    pools.set_capacity(db, "gpu", 2, NOW_TEXT)
    for n in range(5):
        add_job(db, at(-1), name=f"job {n}")
    batch = claim(db)
    assert len(batch.claims) == 2 and batch.waiting == 3 and batch.skipped == []


def test_lowering_the_capacity_lets_running_work_finish_and_holds_new_work(db: Database) -> None:
    pools.set_capacity(db, "gpu", 2, NOW_TEXT)
    for n in range(3):
        add_job(db, at(n - 3), name=f"job {n}")
    first, second = claim(db).claims
    pools.set_capacity(db, "gpu", 1, NOW_TEXT)
    finish(db, first, at(1))
    assert claim(db, at(1)).claims == []  # one still runs: the pool is full at capacity 1
    finish(db, second, at(2))
    assert claimed_names(claim(db, at(2))) == ["job 2"]


def test_other_work_is_not_held_up_behind_a_full_pool(db: Database) -> None:
    for n in range(4):
        add_job(db, at(-5 + n), name=f"pooled {n}")
    add_job(db, NOW_TEXT, name="free", resource_pool=None)
    # One free slot per pass: the waiters, although due first, do not take it.
    assert claimed_names(claim(db, limit=1)) == ["pooled 0"]
    assert claimed_names(claim(db, limit=1)) == ["free"]


# -- bounds: misfire grace, overlap --------------------------------------------------------------


def test_a_waiter_past_its_misfire_grace_is_skipped_with_the_reason(db: Database) -> None:
    add_job(db, at(-1), name="holder")
    claim(db)
    waiter = add_job(db, NOW_TEXT, name="waiter", misfire_grace_s=1)
    assert claim(db, at(1)).claims == [] and skipped_runs(db) == []  # 1 s late: within its grace
    batch = claim(db, at(2))
    assert batch.claims == []
    (message,) = [r["error_message"] for r in batch.skipped]
    assert message == (f"missed: fire time {NOW_TEXT} UTC was 2s ago, beyond misfire_grace_s 1, "
                       "waiting for resource pool 'gpu' (1 of 1 running)")
    assert job_store.require_job(db, waiter["id"])["next_run_at"] == LATER  # on to its next fire time


def test_a_queued_run_past_its_misfire_grace_is_cancelled_with_the_reason(db: Database) -> None:
    add_job(db, at(-1), name="holder")
    claim(db)
    job = add_job(db, None, name="manual", misfire_grace_s=5)
    row = queue.enqueue_dispatch(db, job["id"], "manual", NOW_TEXT)
    assert row is not None
    assert claim(db, at(5)).claims == [] and skipped_runs(db) == []
    assert claim(db, at(6)).claims == []
    assert skipped_runs(db) == [f"missed: queued manual run due {NOW_TEXT} UTC waited 6s for resource "
                                "pool 'gpu' (1 of 1 running), beyond misfire_grace_s 5"]
    assert db.scalar("SELECT status FROM job_dispatch_queue WHERE id = ?", (row["id"],)) == "cancelled"


def test_overlap_skip_still_decides_when_the_jobs_own_run_holds_the_pool(db: Database) -> None:
    job = add_job(db, at(-1), name="own")
    (own,) = claim(db).claims
    job_store.update_job(db, job["id"], {"next_run_at": NOW_TEXT}, NOW_TEXT)
    manual = queue.enqueue_dispatch(db, job["id"], "manual", NOW_TEXT)
    assert manual is not None
    batch = claim(db)
    assert batch.claims == []
    assert sorted(r["error_message"] for r in batch.skipped) == [
        "previous run still active (overlap_policy skip)",
        "previous run still active (overlap_policy skip); queued manual run cancelled",
    ]
    assert own.job["id"] == job["id"]


def test_overlap_queue_counts_the_fire_time_and_its_rows_wait_in_place(db: Database) -> None:
    job = add_job(db, at(-1), name="own", overlap_policy="queue")
    (own,) = claim(db).claims
    job_store.update_job(db, job["id"], {"next_run_at": NOW_TEXT}, NOW_TEXT)
    manual = queue.enqueue_dispatch(db, job["id"], "manual", NOW_TEXT)
    assert manual is not None
    batch = claim(db)
    assert batch.claims == []
    assert [r["error_message"] for r in batch.skipped] == [
        "previous run still active; this fire time runs right after it (overlap_policy queue)"
    ]
    assert job_store.require_job(db, job["id"])["queued_count"] == 1
    assert db.scalar("SELECT scheduled_for FROM job_dispatch_queue WHERE id = ?", (manual["id"],)) == NOW_TEXT
    finish(db, own, at(1))
    assert [c.source for c in claim(db, at(1)).claims] == ["manual"]  # due first: the row


def test_overlap_allow_waits_for_the_pool_its_own_run_fills(db: Database) -> None:
    job = add_job(db, at(-1), name="own", overlap_policy="allow")
    (own,) = claim(db).claims
    job_store.update_job(db, job["id"], {"next_run_at": NOW_TEXT}, NOW_TEXT)
    assert claim(db).claims == [] and skipped_runs(db) == []
    finish(db, own, at(1))
    assert len(claim(db, at(1)).claims) == 1


# -- the loop does not spin on waiters -----------------------------------------------------------


def test_a_waiter_is_not_due_for_the_loop_until_its_grace_runs_out(db: Database) -> None:
    add_job(db, at(-1), name="holder")
    (held,) = claim(db).claims
    add_job(db, NOW_TEXT, name="no grace")
    waiter = add_job(db, None, name="manual")
    assert queue.enqueue_dispatch(db, waiter["id"], "manual", NOW_TEXT) is not None
    # Only the holder's own next fire time is ahead: the waiters wake nobody.
    assert claim_store.next_due_at(db, {"shell"}) == LATER
    add_job(db, at(1), name="grace", misfire_grace_s=10)
    assert claim_store.next_due_at(db, {"shell"}) == at(12)  # the first second past its grace
    finish(db, held, at(2))
    assert claim_store.next_due_at(db, {"shell"}) == NOW_TEXT  # the pool is free: due at once


def test_a_manual_run_waiting_for_its_own_run_under_queue_is_not_due(db: Database) -> None:
    job = add_job(db, at(-1), name="own", overlap_policy="queue", resource_pool=None)
    (own,) = claim(db).claims
    assert queue.enqueue_dispatch(db, job["id"], "manual", NOW_TEXT) is not None
    assert claim_store.next_due_at(db, {"shell"}) == LATER
    finish(db, own, at(1))
    assert claim_store.next_due_at(db, {"shell"}) == NOW_TEXT


# -- a waiter's job changes, the daemon restarts, the gateway defers -------------------------------


def test_a_waiter_whose_job_is_disabled_or_deleted_stops_waiting(db: Database) -> None:
    add_job(db, at(-3), name="holder")
    disabled = add_job(db, at(-2), name="disabled")
    deleted = add_job(db, at(-1), name="deleted")
    add_job(db, NOW_TEXT, name="last")
    (held,) = claim(db).claims
    job_store.update_job(db, disabled["id"], {"enabled": 0}, NOW_TEXT)
    job_store.delete_job(db, deleted["id"])
    finish(db, held, at(1))
    assert claimed_names(claim(db, at(1))) == ["last"]
    assert skipped_runs(db) == []


def test_a_waiting_at_job_runs_once_after_a_restart(db: Database) -> None:
    holder = add_job(db, name="holder", schedule_kind="at", schedule_at=at(-1), schedule_cron=None)
    waiter = add_job(db, name="waiter", schedule_kind="at", schedule_at=NOW_TEXT, schedule_cron=None)
    assert claimed_names(claim(db)) == ["holder"]
    # The daemon dies; the next start finds the holder's run and ends it as crashed.
    found = recovery.recover_orphans(db, at(5))
    assert [r["job_id"] for r in found.crashed] == [holder["id"]]
    (c,) = claim(db, at(6)).claims
    assert c.job["id"] == waiter["id"] and c.source == "at"
    finish(db, c, at(7))
    assert claim(db, at(8)).claims == [] and claim(db, at(60)).claims == []
    runs = db.query("SELECT status FROM runs WHERE job_id = ?", (waiter["id"],))
    assert runs == [{"status": "ok"}]


def test_a_deferred_queue_row_keeps_its_place(db: Database) -> None:
    job = add_job(db, None, name="manual", resource_pool=None)
    row = queue.enqueue_dispatch(db, job["id"], "manual", at(-30))
    assert row is not None
    (c,) = claim(db).claims
    claim_store.defer_claim(db, c, NOW_TEXT, "gateway down")
    after = db.query_one("SELECT status, scheduled_for FROM job_dispatch_queue WHERE id = ?", (row["id"],))
    assert after == {"status": "pending", "scheduled_for": at(-30)}


# -- capacities and status -------------------------------------------------------------------------


def test_capacity_is_one_by_default_and_set_and_removed(db: Database) -> None:
    add_job(db, None, name="a")
    assert pool_overview(db, NOW_TEXT) == [
        {"name": "gpu", "capacity": 1, "configured": False, "jobs": 1, "running": 0, "waiting": 0}
    ]
    pools.set_capacity(db, "gpu", 3, NOW_TEXT)
    pools.set_capacity(db, "spare", 2, NOW_TEXT)
    assert [(p["name"], p["capacity"], p["configured"]) for p in pool_overview(db, NOW_TEXT)] == [
        ("gpu", 3, True), ("spare", 2, True)
    ]
    assert pools.remove(db, "gpu") is True and pools.remove(db, "gpu") is False
    assert pools.get_capacity(db, "gpu") is None
    assert pool_overview(db, NOW_TEXT)[0]["capacity"] == 1


@pytest.mark.parametrize("capacity", [0, -1, pools.MAX_CAPACITY + 1, 2**63])
def test_capacity_out_of_bounds_is_refused(db: Database, capacity: int) -> None:
    with pytest.raises(ValidationError, match="pool capacity must be a whole number from 1 to"):
        pools.set_capacity(db, "gpu", capacity, NOW_TEXT)
    assert db.query("SELECT * FROM resource_pools") == []


@pytest.mark.parametrize("name", ["", "   ", "a\nb", "\x1b[2J", "x" * 129, "bad\x85"])
def test_bad_pool_names_are_refused(db: Database, name: str) -> None:
    with pytest.raises(ValidationError, match="pool name must be"):
        pools.set_capacity(db, name, 2, NOW_TEXT)


def test_status_shows_busy_pools_with_running_and_waiting(db: Database) -> None:
    add_job(db, at(-2), name="holder")
    add_job(db, at(-1), name="waiter")
    idle = add_job(db, None, name="elsewhere", resource_pool="cpu")
    manual = queue.enqueue_dispatch(db, idle["id"], "manual", at(60))  # not due yet
    assert manual is not None
    claim(db)
    assert overview(db, 90, NOW_TEXT)["pools"] == [
        {"name": "gpu", "capacity": 1, "configured": False, "jobs": 2, "running": 1, "waiting": 1}
    ]


# -- two processes ---------------------------------------------------------------------------------


def test_two_processes_never_exceed_a_pools_capacity(tmp_path: Path) -> None:
    db_path = tmp_path / "scheduler.db"
    db = Database.open(db_path)
    migrate(db)
    now = datetime.now(UTC)
    due = to_sqlite(now - timedelta(seconds=5))
    pools.set_capacity(db, "gpu", 2, due)
    for n in range(6):
        spec = {"name": f"gpu {n}", "schedule_cron": "0 0 1 1 *", "session_target": "shell",
                "payload_message": "true", "run_timeout_ms": 1000, "delivery_mode": "none",
                "origin": "system", "resource_pool": "gpu" if n < 4 else "cpu", "run_now": True,
                "overlap_policy": "allow"}
        job = job_store.insert_job(db, new_job_row(validate_job_spec(spec, now=now), now))
        assert queue.enqueue_dispatch(db, job["id"], "manual", due) is not None
    db.close()

    results = _claimants(tmp_path, db_path, 2, "drain")

    claimed = [c for r in results for c in r["claimed"]]
    assert [r["skipped"] for r in results] == [[], []]  # nobody was dropped: the rest wait
    running = query(db_path, "SELECT j.resource_pool AS pool FROM runs r JOIN jobs j ON j.id = r.job_id "
                             "WHERE r.status = 'running'")
    assert Counter(r["pool"] for r in running) == {"gpu": 2, "cpu": 1}
    assert len(claimed) == 3
    waiting = query(db_path, "SELECT COUNT(*) AS n FROM job_dispatch_queue WHERE status = 'pending'")
    assert waiting[0]["n"] + sum(1 for c in claimed if c["dispatch_id"]) == 6


# -- the CLI ---------------------------------------------------------------------------------------


def test_pools_commands_set_list_and_remove(cli) -> None:
    code, _, _, err = cli("jobs", "add", shell_job(name="a", resource_pool="gpu", schedule_cron="0 0 1 1 *"))
    assert code == 0, err
    assert cli("pools", "list")[1] == {"ok": True, "pools": [
        {"name": "gpu", "capacity": 1, "configured": False, "jobs": 1, "running": 0, "waiting": 0}
    ]}
    code, out, _, _ = cli("pools", "set", "gpu", "2")
    assert (code, out) == (0, {"ok": True, "pool": "gpu", "capacity": 2, "previous_capacity": 1})
    assert cli("pools", "set", "gpu", "3")[1]["previous_capacity"] == 2
    code, _, stdout, _ = cli("pools", "list", json_mode=False)
    assert code == 0 and stdout.split("\n")[2].split() == ["gpu", "3", "True", "1", "0", "0"]
    code, out, _, _ = cli("pools", "remove", "gpu")
    assert (code, out) == (0, {"ok": True, "pool": "gpu", "removed": True, "capacity": 1})
    assert cli("pools", "list")[1]["pools"][0]["capacity"] == 1


@pytest.mark.parametrize(("args", "says"), [
    (("pools", "set", "gpu", "0"), "capacity must be >= 1"),
    (("pools", "set", "gpu", "two"), "capacity must be a whole number"),
    (("pools", "set", "gpu", "10001"), "capacity must be <= 10000"),
    (("pools", "set", "gpu", "9" * 5000), "capacity must be <= 10000"),
    (("pools", "set", "\x1b[2J", "2"), "pool name must be 1-128 printable characters"),
    (("pools", "set", "gpu"), "usage: openclaw-scheduler pools set <name> <capacity>"),
    (("pools", "set", "gpu", "2", "3"), "unexpected argument '3'"),
    (("pools", "remove", "gpu"), "No capacity is set for pool 'gpu'; it already has the default, 1"),
    (("pools",), "missing subcommand for pools"),
])
def test_pools_bad_input_is_one_clear_line(cli, args: tuple[str, ...], says: str) -> None:
    code, _, stdout, stderr = cli(*args, json_mode=False)
    assert code != 0 and stdout == ""
    assert stderr.count("\n") == 1 and says in stderr, stderr
    assert "\x1b" not in stderr and "Traceback" not in stderr
    assert cli("pools", "list")[1] == {"ok": True, "pools": []}  # nothing written


# -- the daemon ------------------------------------------------------------------------------------


def add(cli, *options: str, **fields: Any) -> dict[str, Any]:
    """``jobs add`` a shell job that keeps its runs (an at-job is disabled, not deleted, after)."""
    code, out, stdout, stderr = cli("jobs", "add", shell_job(**{"delete_after_run": 0, **fields}), *options)
    assert code == 0, stdout + stderr
    job: dict[str, Any] = out["job"]
    return job


def soon(seconds: int) -> str:
    """A whole-second UTC instant ``seconds`` from now, for ``--at``."""
    return (datetime.now(UTC) + timedelta(seconds=seconds)).replace(microsecond=0).isoformat()


def turn_taker(name: str, work: Path) -> str:
    """A run that notes how many runs of the pool are inside at once, then holds its place until
    the test opens the gate."""
    inside, gate = work / "inside", work / "gate"
    return (f"mkdir -p {inside}; touch {inside}/{name}; echo {name} $(ls {inside} | wc -l) >> {work}/log; "
            f"while [ ! -e {gate} ]; do sleep 0.05; done; rm {inside}/{name}")


def entries(work: Path) -> list[tuple[str, int]]:
    lines = (work / "log").read_text().split("\n") if (work / "log").exists() else []
    return [(line.split()[0], int(line.split()[1])) for line in lines if line.strip()]


def run_counts(db_path: Path) -> dict[str, int]:
    rows = query(db_path, "SELECT status, COUNT(*) AS n FROM runs GROUP BY status")
    return {row["status"]: row["n"] for row in rows}


def test_at_jobs_due_together_in_a_pool_run_one_after_another(cli, daemon, db_path, tmp_path) -> None:
    d = daemon()
    when = soon(3)
    names = [f"turn-{n}" for n in range(3)]
    for name in names:
        add(cli, "--at", when, name=name, resource_pool="gpu", payload_message=turn_taker(name, tmp_path))
    manual = add(cli, name="manual", resource_pool="gpu", schedule_cron="0 0 1 1 *",
                 payload_message=turn_taker("manual", tmp_path))
    wait_until(lambda: run_counts(db_path) == {"running": 1}, timeout=20, message="one run holds the pool")
    code, _, _, err = cli("jobs", "run", manual["id"])
    assert code == 0, err
    status = wait_until(lambda: [p for p in cli("status")[1]["pools"] if p["waiting"] == 3],
                        timeout=10, message="three waiting in status")
    assert status == [{"name": "gpu", "capacity": 1, "configured": False, "jobs": 4, "running": 1,
                       "waiting": 3}]
    assert "Pool:     'gpu' 1/1 running, 3 waiting" in cli("status", json_mode=False)[2]
    assert run_counts(db_path) == {"running": 1}  # the others wait: not started, not skipped

    (tmp_path / "gate").touch()
    wait_until(lambda: run_counts(db_path) == {"ok": 4}, timeout=30, message="all four ran")
    assert d.stop() == 0
    ran = entries(tmp_path)
    assert sorted(name for name, _ in ran) == sorted([*names, "manual"])
    assert [inside for _, inside in ran] == [1, 1, 1, 1]  # never two at once
    assert ran[-1][0] == "manual"  # queued last, served last


def test_capacity_two_overlaps_two_and_the_third_waits(cli, daemon, db_path, tmp_path) -> None:
    assert cli("pools", "set", "gpu", "2")[0] == 0
    d = daemon()
    when = soon(3)
    for n in range(3):
        add(cli, "--at", when, name=f"pair-{n}", resource_pool="gpu",
            payload_message=turn_taker(f"pair-{n}", tmp_path))
    wait_until(lambda: run_counts(db_path) == {"running": 2}, timeout=20, message="two runs in the pool")
    pools_now = wait_until(lambda: cli("status")[1]["pools"], timeout=10, message="busy pool in status")
    assert pools_now == [{"name": "gpu", "capacity": 2, "configured": True, "jobs": 3, "running": 2,
                          "waiting": 1}]
    both = wait_until(lambda: entries(tmp_path) if len(entries(tmp_path)) == 2 else None, timeout=10,
                      message="both runs inside")
    assert max(inside for _, inside in both) == 2  # the two overlap

    (tmp_path / "gate").touch()
    wait_until(lambda: run_counts(db_path) == {"ok": 3}, timeout=30, message="all three ran")
    assert d.stop() == 0
    assert max(inside for _, inside in entries(tmp_path)) == 2


def test_a_waiter_past_its_misfire_grace_is_skipped_with_the_reason_by_the_daemon(
    cli, daemon, db_path, tmp_path
) -> None:
    d = daemon()
    holder = add(cli, "--at", soon(3), name="holder", resource_pool="gpu", payload_message="sleep 5")
    waiter = add(cli, "--at", soon(4), name="waiter", resource_pool="gpu", misfire_grace_s=1,
                 payload_message=f"echo ran >> {tmp_path}/waiter")
    skipped = d.wait_for_event("run.skipped", lambda e: e["job_id"] == waiter["id"], timeout=20)
    assert "beyond misfire_grace_s 1, waiting for resource pool 'gpu' (1 of 1 running)" in skipped["reason"]
    d.wait_for_event("run.finished", lambda e: e["job_id"] == holder["id"], timeout=20)
    assert d.stop() == 0
    waiter_runs = query(db_path, "SELECT status FROM runs WHERE job_id = ?", (waiter["id"],))
    assert [r["status"] for r in waiter_runs] == ["skipped"]
    assert not (tmp_path / "waiter").exists()


def test_a_waiting_at_job_still_runs_once_after_the_daemon_is_killed(cli, daemon, db_path, tmp_path) -> None:
    d = daemon()
    holder = add(cli, "--at", soon(3), name="holder", resource_pool="gpu",
                 payload_message=turn_taker("holder", tmp_path))
    waiter = add(cli, "--at", soon(4), name="waiter", resource_pool="gpu",
                 payload_message=f"echo ran >> {tmp_path}/waiter")
    wait_until(lambda: run_counts(db_path) == {"running": 1}, timeout=20, message="the holder runs")
    wait_until(lambda: cli("status")[1]["pools"][0]["waiting"] == 1, timeout=10, message="waiter due")
    d.kill()

    again = daemon()
    again.wait_for_event("run.finished", lambda e: e["job_id"] == waiter["id"], timeout=20)
    (tmp_path / "gate").touch()  # in case the holder's process outlived its daemon
    assert again.stop() == 0
    runs = {r["job_id"]: r["status"] for r in query(db_path, "SELECT job_id, status FROM runs")}
    assert runs == {holder["id"]: "crashed", waiter["id"]: "ok"}
    assert (tmp_path / "waiter").read_text() == "ran\n"
