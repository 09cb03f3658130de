"""Instances and placement (issue 12): instances, their host names and labels, job placement, and what
``status`` and ``jobs explain`` say about them. Real daemons on one SQLite file, in turn."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from conftest import CliResult, DaemonFactory, add_job, runs_of, shell_job, wait_until
from scheduler.errors import ValidationError
from scheduler.models.job import new_job_row
from scheduler.models.placement import check_host_name, parse_labels
from scheduler.models.validation import validate_job_spec
from scheduler.store import open_store
from scheduler.store.api import Owner

Cli = Callable[..., CliResult]
Query = Callable[..., list[dict[str, Any]]]


# -- the placement field ------------------------------------------------------------------------


def job_spec(**overrides: Any) -> str:
    """A shell job that fires once a year (``run_now`` makes it due at once)."""
    return shell_job(schedule_cron="0 0 1 1 *", **overrides)


def spec(**overrides: Any) -> dict[str, Any]:
    return dict(json.loads(job_spec(**overrides)))


@pytest.mark.parametrize("placement", ["host:build-01", "label:gpu", "host:a.example.org",
                                       "label:eu_west.2"])
def test_the_two_forms_of_placement_are_accepted(placement: str) -> None:
    row = new_job_row(validate_job_spec(spec(placement=placement)), datetime.now(UTC))
    assert row["placement"] == placement


@pytest.mark.parametrize("placement", ["build-01", "host:", "label:", "hosts:a", "host:a b",
                                       "label:gpu,eu", "host:a:b", "label:" + "x" * 65, "any"])
def test_anything_else_is_refused_in_one_line(placement: str) -> None:
    with pytest.raises(ValidationError, match=r'^placement must be "host:<name>" or "label:<label>"'):
        validate_job_spec(spec(placement=placement))


def test_blank_or_null_placement_means_any_instance() -> None:
    for value in ("", "  ", None):
        assert validate_job_spec(spec(placement=value))["placement"] is None


def test_labels_and_host_names_are_checked() -> None:
    assert parse_labels(" gpu, eu ,gpu,,") == ("gpu", "eu")
    with pytest.raises(ValueError, match="label 'a b'"):
        parse_labels("ok,a b")
    with pytest.raises(ValueError, match="at most 32 labels"):
        parse_labels(",".join(f"l{i}" for i in range(33)))
    assert check_host_name(" build-01 ") == "build-01"
    with pytest.raises(ValueError, match="host name"):
        check_host_name("a/b")


def test_jobs_add_and_update_take_a_placement_and_refuse_a_bad_one(cli: Cli, db: Query) -> None:
    job = add_job(cli, job_spec(placement="host:build-01"))
    assert job["placement"] == "host:build-01"
    code, out, _, _ = cli("jobs", "get", job["id"])
    assert code == 0 and out["placement"] == "host:build-01"
    code, out, _, _ = cli("jobs", "list")
    assert [j["placement"] for j in out] == ["host:build-01"]

    code, out, stdout, stderr = cli("jobs", "update", job["id"], '{"placement": "gpu"}')
    assert code != 0 and out["ok"] is False and "placement must be" in out["error"]
    code, _, stdout, stderr = cli("jobs", "add", job_spec(name="bad", placement="label:a b"),
                                  json_mode=False)
    assert code != 0 and stdout == "" and len(stderr.strip().splitlines()) == 1
    assert "placement must be" in stderr and "Traceback" not in stderr
    assert [r["name"] for r in db("SELECT name FROM jobs")] == ["test job"]  # nothing written
    assert db("SELECT placement FROM jobs")[0]["placement"] == "host:build-01"

    code, _, _, _ = cli("jobs", "update", job["id"], '{"placement": "label:gpu"}')
    assert code == 0 and db("SELECT placement FROM jobs")[0]["placement"] == "label:gpu"
    code, _, _, _ = cli("jobs", "update", job["id"], '{"placement": null}')
    assert code == 0 and db("SELECT placement FROM jobs")[0]["placement"] is None


# -- status and explain without a daemon ---------------------------------------------------------


def test_status_lists_a_placed_job_no_instance_serves(cli: Cli) -> None:
    placed = add_job(cli, job_spec(name="pinned", placement="host:build-01"))
    add_job(cli, job_spec(name="free"))
    code, out, _, _ = cli("status")
    assert code == 0
    for key in ("db_path", "daemon", "jobs_total", "running_runs", "budgets", "agents", "pools"):
        assert key in out  # the keys status had before stay
    assert out["instances"] == []
    (waiting,) = out["unplaceable"]
    assert waiting["id"] == placed["id"] and waiting["placement"] == "host:build-01"
    assert waiting["reason"] == "waiting for host:build-01 (no live instance)"
    code, _, stdout, _ = cli("status", json_mode=False)
    assert code == 0 and "Fleet:    0 instance(s), 0 live" in stdout
    assert f"Unplaceable: pinned ({placed['id']}): waiting for host:build-01 (no live instance)" in stdout
    code, _, stdout, _ = cli("jobs", "explain", placed["id"], json_mode=False)
    assert code == 0 and "Placement: host:build-01; no live instance serves it now" in stdout
    assert "placed on host:build-01 and no live instance serves it" in stdout


def test_a_bad_lease_setting_is_one_line(cli: Cli) -> None:
    code, _, _stdout, stderr = cli("status", json_mode=False, env={"SCHEDULER_LEASE_S": "soon"})
    assert code != 0 and "SCHEDULER_LEASE_S" in stderr and "Traceback" not in stderr


def test_db_prune_removes_instances_gone_for_a_week(cli: Cli, db_path: Path) -> None:
    store = open_store(db_path)
    try:
        store.register_instance(Owner("old", "a"), "0.1", 1, "2020-01-01 00:00:00")
        store.stop_instance(Owner("old", "a"), "2020-01-01 01:00:00")
    finally:
        store.close()
    code, out, _, _ = cli("db", "prune", "--dry-run")
    assert code == 0 and out["instances"] == 1
    code, out, _, _ = cli("db", "prune")
    assert code == 0 and out["instances"] == 1
    code, out, _, _ = cli("status")
    assert out["instances"] == []


# -- real daemons --------------------------------------------------------------------------------


def _status(cli: Cli) -> dict[str, Any]:
    code, out, stdout, stderr = cli("status")
    assert code == 0, stdout + stderr
    return dict(out)


def _explain(cli: Cli, job_id: str) -> dict[str, Any]:
    code, out, stdout, stderr = cli("jobs", "explain", job_id)
    assert code == 0, stdout + stderr
    return dict(out)


def _ok_runs(db: Query, job_id: str) -> list[dict[str, Any]]:
    return [r for r in runs_of(db, job_id) if r["status"] == "ok"]


def test_a_job_placed_on_a_host_that_is_down_waits_and_runs_when_it_returns(
    cli: Cli, daemon: DaemonFactory, db: Query
) -> None:
    placed = add_job(cli, job_spec(name="on-b", placement="host:b", run_now=True))
    marker = add_job(cli, job_spec(name="anywhere", run_now=True))

    first = daemon({"SCHEDULER_HOST_NAME": "a", "SCHEDULER_INSTANCE_LABELS": "build",
                    "SCHEDULER_DEBUG": "1"})
    wait_until(lambda: _ok_runs(db, marker["id"]), timeout=30, message="the free job ran on a")
    # A whole round after that run, and the loop goes to sleep: not woken by B's due job.
    finished = first.wait_for_event("run.finished", timeout=30)
    sleep = first.wait_for_event("scheduler.sleep",
                                 lambda e: e["timestamp"] > finished["timestamp"], timeout=30)
    assert sleep["next_due"] is None or sleep["next_due"] > placed["next_run_at"]
    assert runs_of(db, placed["id"]) == []  # due, untouched: nothing skipped
    assert db("SELECT next_run_at FROM jobs WHERE id = ?", (placed["id"],))[0]["next_run_at"]

    seen = _status(cli)
    (a,) = seen["instances"]
    assert a["host"] == "a" and a["labels"] == ["build"] and a["live"] is True
    assert a["pid"] == first.pid and a["running_runs"] == 0
    assert [(j["id"], j["reason"]) for j in seen["unplaceable"]] == [
        (placed["id"], "waiting for host:b (no live instance)")]
    report = _explain(cli, placed["id"])
    assert report["job"]["placement"] == "host:b"
    assert report["placement"] == {"placement": "host:b", "served": False, "served_by": []}
    assert any("no live instance serves it" in note for note in report["now"])
    free = _explain(cli, marker["id"])["placement"]
    assert free["served"] is True and free["served_by"] == [f"{a['id']}@a"]

    assert first.stop() == 0
    (a_after,) = _status(cli)["instances"]
    assert a_after["live"] is False and a_after["stopped_at"] is not None
    assert runs_of(db, placed["id"]) == []

    second = daemon({"SCHEDULER_HOST_NAME": "b"})
    wait_until(lambda: _ok_runs(db, placed["id"]), timeout=30, message="the placed job ran on b")
    (run,) = runs_of(db, placed["id"])
    seen = _status(cli)
    b = next(i for i in seen["instances"] if i["live"])
    assert b["host"] == "b" and run["owner"] == f"{b['id']}@b"
    assert seen["unplaceable"] == []
    assert _explain(cli, placed["id"])["placement"]["served_by"] == [f"{b['id']}@b"]
    _code, _, stdout, _ = cli("status", json_mode=False)
    assert f"  {b['id']} on b" in stdout and "live" in stdout
    assert second.stop() == 0


def test_the_instance_heartbeat_moves_last_seen(daemon: DaemonFactory, db: Query) -> None:
    d = daemon({"SCHEDULER_LEASE_S": "5", "SCHEDULER_RUN_HEARTBEAT_MS": "1000"})  # a beat a second
    (row,) = db("SELECT * FROM instances")
    assert row["stopped_at"] is None and row["pid"] == d.pid
    wait_until(lambda: db("SELECT last_seen FROM instances")[0]["last_seen"] > row["started_at"],
               timeout=30, message="a heartbeat")
    assert d.stop() == 0
    assert db("SELECT stopped_at FROM instances")[0]["stopped_at"] is not None


@pytest.mark.parametrize(("variable", "value"), [("SCHEDULER_INSTANCE_LABELS", "gpu,a b"),
                                                 ("SCHEDULER_HOST_NAME", "a/b")])
def test_the_daemon_refuses_a_bad_label_or_host_name_in_one_line(
    daemon: DaemonFactory, variable: str, value: str
) -> None:
    d = daemon({variable: value}, wait=False)
    assert d.proc.wait(30) != 0
    d.kill()
    errors = [line for line in d.lines if variable in line]
    assert errors and not any("Traceback" in line for line in d.lines)


# -- on PostgreSQL: several daemons at once ------------------------------------------------------


def test_on_postgresql_daemons_at_once_each_run_only_what_is_placed_on_them(
    pg_url: str, daemon: DaemonFactory, tmp_path: Path
) -> None:
    from conftest import run_cli

    def pcli(*args: str) -> Any:
        code, out, stdout, stderr = run_cli(tmp_path / "unused.db", *args,
                                            env={"SCHEDULER_DB": pg_url})
        assert code == 0, stdout + stderr
        return out

    def ok_runs(job_id: str) -> list[dict[str, Any]]:
        return [r for r in pcli("runs", "list", job_id) if r["status"] == "ok"]

    def start(host: str, labels: str = "") -> Any:
        home = tmp_path / f"home-{host}-{len(list(tmp_path.iterdir()))}"
        home.mkdir()
        return daemon({"SCHEDULER_DB": pg_url, "SCHEDULER_HOME": str(home),
                       "SCHEDULER_HOST_NAME": host, "SCHEDULER_INSTANCE_LABELS": labels})

    on = {name: pcli("jobs", "add", job_spec(name=name, placement=placement, run_now=True))["job"]
          for name, placement in (("on-a", "host:a"), ("on-b", "host:b"), ("on-gpu", "label:gpu"))}
    a, b = start("a"), start("b", "gpu")
    for job in on.values():
        wait_until(lambda j=job: ok_runs(j["id"]), timeout=60, message=f"{job['name']} ran")
    live = {i["host"]: i for i in pcli("status")["instances"] if i["live"]}
    assert set(live) == {"a", "b"} and live["b"]["labels"] == ["gpu"]
    owners = {name: [r["owner"] for r in pcli("runs", "list", job["id"])] for name, job in on.items()}
    assert owners == {"on-a": [f"{live['a']['id']}@a"], "on-b": [f"{live['b']['id']}@b"],
                      "on-gpu": [f"{live['b']['id']}@b"]}

    assert b.stop() == 0
    later = pcli("jobs", "add", job_spec(name="later-on-b", placement="host:b", run_now=True))["job"]
    waiting = {j["id"]: j["reason"] for j in pcli("status")["unplaceable"]}
    assert waiting == {later["id"]: "waiting for host:b (no live instance)",
                       on["on-b"]["id"]: "waiting for host:b (no live instance)",
                       on["on-gpu"]["id"]: "waiting for label:gpu (no live instance)"}
    marker = pcli("jobs", "add", job_spec(name="anywhere", run_now=True))["job"]
    wait_until(lambda: ok_runs(marker["id"]), timeout=60, message="a ran the free job")
    assert pcli("runs", "list", later["id"]) == []  # a, live all along, left it due
    start("b")
    wait_until(lambda: ok_runs(later["id"]), timeout=60, message="the job placed on b ran on b")
    (run,) = pcli("runs", "list", later["id"])
    assert run["owner"].endswith("@b") and run["owner"] != owners["on-b"][0]
    assert a.stop() == 0
