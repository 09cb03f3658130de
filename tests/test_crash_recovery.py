"""SIGKILL the daemon at many points; after a restart nothing is lost or doubled beyond what the
job's ``delivery_guarantee`` allows.

Every case uses two jobs due at the same whole second T: an at-job and a cron job that fires once
a minute (``<second of T> * * * * *``), so each job has exactly one occurrence during the test.
Their shell command appends one line per execution to a file of its own, which counts executions.
A case starts a daemon, adds the jobs, kills the daemon with SIGKILL at its point, kills the shell
processes it left behind (found by a unique marker in their command line), notes how many runs the
database shows ``running`` (the kills that hit a run), restarts the daemon, waits until everything
is settled, stops it and checks the invariants.
"""

from __future__ import annotations

import random
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from conftest import kill_quietly, pids_with_marker, query, shell_job, wait_until

pytestmark = pytest.mark.slow

GUARANTEES = ("at-most-once", "at-least-once")
TERMINAL = {"ok", "error", "timeout", "skipped", "cancelled", "crashed"}
CRASH_MESSAGE_PART = "stopped while this run was in progress"


def _text(instant: datetime) -> str:
    return instant.strftime("%Y-%m-%d %H:%M:%S")


def _now_text() -> str:
    return _text(datetime.now(UTC))


@dataclass
class Tracked:
    job: dict[str, Any]
    out: Path

    @property
    def id(self) -> str:
        return str(self.job["id"])

    @property
    def is_at(self) -> bool:
        return self.job["schedule_kind"] == "at"

    def executions(self) -> int:
        return len(self.out.read_text().split()) if self.out.exists() else 0


@dataclass
class Scenario:
    """The jobs of one case, the daemon currently serving them and what the kills hit."""

    cli: Callable[..., Any]
    start_daemon: Callable[..., Any]
    db_path: Path
    tmp_path: Path
    guarantee: str
    mark: str = field(default_factory=lambda: f"{random.randint(100000, 999999)}")
    tracked: list[Tracked] = field(default_factory=list)
    kills: list[dict[str, Any]] = field(default_factory=list)
    daemons: list[Any] = field(default_factory=list)

    def db(self, sql: str, params: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
        return query(self.db_path, sql, params)

    @property
    def daemon(self) -> Any:
        return self.daemons[-1]

    def start(self) -> Any:
        self.daemons.append(self.start_daemon())
        return self.daemon

    def add_pair(self, command: Callable[[Path], str], due: datetime, extra_seconds: tuple[int, ...] = ()
                 ) -> list[Tracked]:
        """An at-job and a once-a-minute cron job, both due at ``due`` (a whole second)."""
        n = len(self.tracked)
        seconds = ",".join(str(s) for s in (due.second, *extra_seconds))
        pair = []
        for kind in ("at", "cron"):
            out = self.tmp_path / f"{kind}-{n}.txt"
            fields = {"name": f"{kind} {n}", "payload_message": command(out), "run_timeout_ms": 60000,
                      "delivery_guarantee": self.guarantee, "delete_after_run": 0}
            if kind == "at":
                args = ("jobs", "add", shell_job(**fields), "--at", _text(due))
            else:
                args = ("jobs", "add", shell_job(**fields, schedule_cron=f"{seconds} * * * * *"))
            code, out_json, stdout, stderr = self.cli(*args)
            assert code == 0, stdout + stderr
            job = out_json["job"]
            assert job["next_run_at"] == _text(due), (job["next_run_at"], _text(due))
            pair.append(Tracked(job, out))
        self.tracked.extend(pair)
        return pair

    def kill(self, point: str) -> None:
        """SIGKILL the daemon, then the shell processes it left; record the runs it left running."""
        self.daemon.stop(signal.SIGKILL)
        # A child forked just before the kill may exec its shell a moment later: look twice.
        for _ in range(2):
            for pid in pids_with_marker(self.mark):
                kill_quietly(pid)
            time.sleep(0.1)
        wait_until(lambda: not pids_with_marker(self.mark), timeout=5, message="orphaned shells gone")
        running = self.db("SELECT * FROM runs WHERE status = 'running'")
        self.kills.append({"point": point, "running": [r["id"] for r in running]})
        self._check_atomic_at_kill(running)

    def _check_atomic_at_kill(self, running: list[dict[str, Any]]) -> None:
        """What the dead daemon committed is whole: a running run holds its key and has moved its
        job's schedule on (or its queue row to ``claimed``); a finished run has updated its job."""
        for run in running:
            (entry,) = self.db("SELECT status, run_id FROM idempotency_ledger WHERE key = ?",
                               (run["idempotency_key"],))
            assert entry == {"status": "claimed", "run_id": run["id"]}
            if run["dispatch_queue_id"]:
                (row,) = self.db("SELECT status FROM job_dispatch_queue WHERE id = ?",
                                 (run["dispatch_queue_id"],))
                assert row["status"] == "claimed"
        now = _now_text()
        for t in self.tracked:
            (job,) = self.db("SELECT * FROM jobs WHERE id = ?", (t.id,))
            runs = self.db("SELECT status FROM runs WHERE job_id = ?", (t.id,))
            if runs:  # its occurrence was claimed: the schedule has moved on in the same commit
                assert job["next_run_at"] is None if t.is_at else job["next_run_at"] > now, job
            if [r["status"] for r in runs] == ["ok"]:  # and its end was recorded with the job's state
                assert job["last_status"] == "ok" and job["last_run_at"] is not None, job
                assert job["enabled"] == (0 if t.is_at else 1), job

    def settled(self) -> bool:
        if self.db("SELECT 1 FROM runs WHERE status = 'running'"):
            return False
        if self.db("SELECT 1 FROM job_dispatch_queue WHERE status IN ('pending', 'claimed')"):
            return False
        now = _now_text()
        for t in self.tracked:
            (row,) = self.db("SELECT enabled, next_run_at FROM jobs WHERE id = ?", (t.id,))
            if t.is_at and row["enabled"]:
                return False  # its occurrence has not run (or finished) yet
            if not t.is_at and not (row["next_run_at"] and row["next_run_at"] > now):
                return False  # the missed fire time has not been claimed yet
        return True

    def restart_and_settle(self) -> None:
        self.start()
        wait_until(self.settled, timeout=10, interval=0.05, message="work after the restart settled")
        before = self.db("SELECT COUNT(*) AS n FROM runs")[0]["n"]
        time.sleep(0.4)  # room for a (wrong) second firing
        assert self.db("SELECT COUNT(*) AS n FROM runs")[0]["n"] == before

    def finish(self) -> None:
        assert self.daemon.stop() == 0
        self.check()

    # -- the invariants ----------------------------------------------------------------------

    def check(self) -> None:
        db = self.db
        context = f"{self.guarantee}, kills: {self.kills}"
        runs = db("SELECT * FROM runs ORDER BY started_at, rowid")
        assert all(r["status"] in TERMINAL for r in runs), [(r["status"], r["id"]) for r in runs]
        assert not [r for r in runs if r["status"] == "skipped"], context
        assert db("SELECT id, status FROM job_dispatch_queue WHERE status IN ('pending', 'claimed')") == []

        # Exactly the runs a kill left running were marked crashed, each once, with its key released.
        hit = [run_id for kill in self.kills for run_id in kill["running"]]
        assert len(hit) == len(set(hit))
        crashed = [r for r in runs if r["status"] == "crashed"]
        assert sorted(r["id"] for r in crashed) == sorted(hit), context
        crash_events = [e for d in self.daemons for e in d.events("run.crashed")]
        assert sorted(e["run_id"] for e in crash_events) == sorted(hit)
        for run in crashed:
            assert run["finished_at"] is not None
            assert CRASH_MESSAGE_PART in run["error_message"]
            if run["idempotency_key"]:
                (entry,) = db("SELECT status, run_id FROM idempotency_ledger WHERE key = ?",
                              (run["idempotency_key"],))
                assert entry == {"status": "released", "run_id": run["id"]}
        for run in runs:
            if run["status"] == "ok":  # a finished shell run keeps its key claimed
                (entry,) = db("SELECT status, run_id FROM idempotency_ledger WHERE key = ?",
                              (run["idempotency_key"],))
                assert entry == {"status": "claimed", "run_id": run["id"]}

        # Keys of runs that started: never one occurrence twice.
        started = [r for r in runs if r["status"] != "skipped"]
        keys = [r["idempotency_key"] for r in started]
        assert None not in keys and len(keys) == len(set(keys)), context

        for t in self.tracked:
            self._check_job(t, [r for r in runs if r["job_id"] == t.id], context)

    def _check_job(self, t: Tracked, runs: list[dict[str, Any]], context: str) -> None:
        label = f"{t.job['name']} ({context}): statuses {[r['status'] for r in runs]}"
        executions = t.executions()
        crashed = [r for r in runs if r["status"] == "crashed"]
        replays = [r for r in runs if r["replay_of"] is not None]
        assert runs, label
        assert executions <= len(runs), f"{label}: {executions} executions"  # a run executes once
        if self.guarantee == "at-most-once":
            assert executions <= 1, f"{label}: {executions} executions of one occurrence"
            assert replays == [] and len(runs) == 1, label
            if crashed:
                assert all(r["retry_of"] is None for r in runs), label
            else:
                assert runs[0]["status"] == "ok" and executions == 1, label
        else:
            assert executions >= 1, f"{label}: the occurrence never executed"
            assert len(crashed) <= 1, label
            assert len(replays) == len(crashed), label
            for dead in crashed:
                (replay,) = [r for r in replays if r["replay_of"] == dead["id"]]
                assert replay["retry_of"] == dead["id"], label
                assert replay["status"] == "ok", label
                (row,) = self.db("SELECT dispatch_kind, status FROM job_dispatch_queue WHERE id = ?",
                                 (replay["dispatch_queue_id"],))
                assert row == {"dispatch_kind": "retry", "status": "done"}, label
            assert [r["status"] for r in runs].count("ok") == 1, label
            assert executions <= 1 + len(crashed), f"{label}: {executions} executions"
        (job,) = self.db("SELECT * FROM jobs WHERE id = ?", (t.id,))
        if t.is_at:
            assert job["enabled"] == 0, label  # its one occurrence is over (run, or lost by crash)
            if crashed and self.guarantee == "at-most-once":
                assert job["last_status"] == "crashed", label
        else:
            assert job["enabled"] == 1, label
            assert job["next_run_at"] > _now_text(), label  # the schedule goes on
            due = datetime.strptime(job["next_run_at"], "%Y-%m-%d %H:%M:%S").replace(tzinfo=UTC)
            assert due - datetime.now(UTC) > timedelta(seconds=30), label  # next minute's slot


def _next_whole_second(lead_s: float) -> datetime:
    """The first whole second at least ``lead_s`` from now."""
    instant = datetime.now(UTC) + timedelta(seconds=lead_s)
    return instant.replace(microsecond=0) + timedelta(seconds=1)


def _sleep_until(instant: datetime) -> None:
    delay = (instant - datetime.now(UTC)).total_seconds()
    if delay > 0:
        time.sleep(delay)


@pytest.fixture(params=GUARANTEES)
def scenario(request, cli, daemon, db_path, tmp_path) -> Scenario:
    return Scenario(cli=cli, start_daemon=daemon, db_path=db_path, tmp_path=tmp_path,
                    guarantee=request.param)


def test_kill_in_the_middle_of_a_run(scenario: Scenario) -> None:
    s = scenario
    stop = s.tmp_path / "stop"  # once it exists, executions no longer sleep
    d = s.start()
    pair = s.add_pair(lambda out: f"echo $$ >> {out}; [ -e {stop} ] || sleep 5.{s.mark}",
                      _next_whole_second(1.0))
    for t in pair:
        d.wait_for_event("run.started", lambda e, t=t: e["job_id"] == t.id, timeout=5)
    wait_until(lambda: all(t.executions() == 1 for t in pair), timeout=5, message="both wrote")
    wait_until(lambda: len(pids_with_marker(f"sleep 5.{s.mark}")) >= 2, timeout=5, message="both asleep")
    stop.touch()
    s.kill("mid-run")
    assert len(s.kills[0]["running"]) == 2
    s.restart_and_settle()
    s.finish()
    expected = 1 if s.guarantee == "at-most-once" else 2
    assert [t.executions() for t in pair] == [expected, expected]


def test_kill_between_claim_and_process_start(scenario: Scenario) -> None:
    s = scenario
    s.start()
    pair = s.add_pair(lambda out: f"sleep 0.3{s.mark}; echo $$ >> {out}", _next_whole_second(1.0))
    ids = tuple(t.id for t in pair)
    deadline = time.monotonic() + 5
    while not s.db("SELECT 1 FROM runs WHERE status = 'running' AND job_id IN (?, ?)", ids):
        assert time.monotonic() < deadline, "no run was claimed"
        time.sleep(0.002)
    s.kill("after-claim")
    assert s.kills[0]["running"], "the kill came after the runs ended"
    s.restart_and_settle()
    s.finish()


def test_kill_around_finalize(scenario: Scenario) -> None:
    """Jobs that exit at once; the kill lands a random 0-50 ms after the due second (before the
    claim, during the run, during or after the recording of its end), or right after a
    ``run.finished`` event."""
    s = scenario
    rng = random.Random()
    s.start()
    for attempt, when in enumerate(("after-finished", "random", "random", "random")):
        due = _next_whole_second(1.0)
        pair = s.add_pair(lambda out: f": {s.mark}; echo $$ >> {out}", due)
        if when == "after-finished":
            s.daemon.wait_for_event("run.finished", lambda e, p=pair: e["job_id"] in {t.id for t in p},
                                    timeout=5)
            point = "after run.finished"
        else:
            delay = rng.uniform(0, 0.05)
            _sleep_until(due + timedelta(seconds=delay))
            point = f"{delay * 1000:.0f} ms after due"
        s.kill(f"#{attempt}: {point}")
        s.restart_and_settle()
    s.finish()


def test_kill_while_idle_coalesces_missed_fire_times(scenario: Scenario) -> None:
    """Killed 0.5 s before T, restarted after T and T+1 (both cron fire times) have passed: each job
    runs its missed occurrence(s) exactly once on restart."""
    s = scenario
    s.start()
    due = _next_whole_second(1.5)
    following = (due + timedelta(seconds=1)).second
    pair = s.add_pair(lambda out: f": {s.mark}; echo $$ >> {out}", due, extra_seconds=(following,))
    _sleep_until(due - timedelta(seconds=0.5))
    s.kill("idle")
    assert s.kills[0]["running"] == []
    assert s.db("SELECT COUNT(*) AS n FROM runs")[0]["n"] == 0
    _sleep_until(due + timedelta(seconds=1.3))
    s.restart_and_settle()
    s.finish()
    assert [t.executions() for t in pair] == [1, 1]
    for t in pair:
        (run,) = s.db("SELECT status FROM runs WHERE job_id = ?", (t.id,))
        assert run["status"] == "ok"
