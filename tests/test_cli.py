"""The CLI as a real subprocess on a temp database (no daemon)."""

from __future__ import annotations

import json
import os
import re
import sqlite3
import stat
import subprocess
import sys
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from conftest import SHELL_JOB, query, run_cli, shell_job

# -- the bad-input table ------------------------------------------------------------------------
#
# Each entry: (test id, argv). "{job}" becomes the id of an existing cron job, "{run}" the id of
# an existing run. Every one must fail cleanly and write nothing.


def spec(**overrides: Any) -> str:
    return shell_job(**{"schedule_cron": "0 * * * *", **overrides})


def spec_without(*keys: str, **overrides: Any) -> str:
    data = {**SHELL_JOB, "schedule_cron": "0 * * * *", **overrides}
    for key in keys:
        data.pop(key)
    return json.dumps(data)


UNKNOWN = "00000000-0000-4000-8000-000000000000"

BAD_INPUTS: list[tuple[str, list[str]]] = [
    # JSON shape
    ("invalid-json", ["jobs", "add", "{name: 'x'}"]),
    ("truncated-json", ["jobs", "add", '{"name": "x"']),
    ("json-array", ["jobs", "add", "[1, 2]"]),
    ("json-string", ["jobs", "add", '"a job"']),
    ("json-number", ["jobs", "add", "42"]),
    ("json-null", ["jobs", "add", "null"]),
    # required fields
    ("missing-name", ["jobs", "add", spec_without("name")]),
    ("empty-name", ["jobs", "add", spec(name="")]),
    ("name-not-string", ["jobs", "add", spec(name=5)]),
    ("missing-payload", ["jobs", "add", spec_without("payload_message")]),
    ("missing-run-timeout", ["jobs", "add", spec_without("run_timeout_ms")]),
    ("run-timeout-0", ["jobs", "add", spec(run_timeout_ms=0)]),
    ("run-timeout-negative", ["jobs", "add", spec(run_timeout_ms=-1)]),
    ("run-timeout-string", ["jobs", "add", spec(run_timeout_ms="abc")]),
    ("run-timeout-float", ["jobs", "add", spec(run_timeout_ms=1.5)]),
    ("run-timeout-bool", ["jobs", "add", spec(run_timeout_ms=True)]),
    ("missing-origin", ["jobs", "add", spec_without("origin")]),
    ("missing-cron", ["jobs", "add", json.dumps(SHELL_JOB)]),
    # cron and zones
    ("cron-minute-61", ["jobs", "add", spec(schedule_cron="61 * * * *")]),
    ("cron-three-fields", ["jobs", "add", spec(schedule_cron="* * *")]),
    ("cron-garbage", ["jobs", "add", spec(schedule_cron="every monday")]),
    ("cron-sentinel-root", ["jobs", "add", spec(schedule_cron="0 0 31 2 *")]),
    ("cron-never-fires", ["jobs", "add", spec(schedule_cron="0 0 30 2 *")]),
    ("tz-invalid", ["jobs", "add", spec(schedule_tz="Mars/Olympus_Mons")]),
    ("tz-empty-ish", ["jobs", "add", spec(schedule_tz="Europe/")]),
    # enums and combinations
    ("overlap-policy", ["jobs", "add", spec(overlap_policy="sometimes")]),
    ("delivery-mode", ["jobs", "add", spec(delivery_mode="shout")]),
    ("session-target", ["jobs", "add", spec(session_target="cloud")]),
    ("payload-kind-mismatch", ["jobs", "add", spec(payload_kind="agentTurn")]),
    ("schedule-kind", ["jobs", "add", spec(schedule_kind="weekly")]),
    ("enabled-yes", ["jobs", "add", spec(enabled="yes")]),
    ("announce-without-to", ["jobs", "add", spec(delivery_mode="announce")]),
    ("at-without-schedule-at", ["jobs", "add", spec(schedule_kind="at")]),
    ("schedule-at-not-date", ["jobs", "add", spec(schedule_kind="at", schedule_at="tomorrow")]),
    # text limits
    ("name-control-char", ["jobs", "add", spec(name="bad\u0001name")]),
    ("name-escape-char", ["jobs", "add", spec(name="bad\u001b[31mname")]),
    ("name-201-chars", ["jobs", "add", spec(name="n" * 201)]),
    ("payload-100001-chars", ["jobs", "add", spec(payload_message="x" * 100001)]),
    # unknown and managed fields
    ("unknown-field-typo", ["jobs", "add", spec_without("schedule_cron", schedule_corn="0 * * * *")]),
    ("unknown-field", ["jobs", "add", spec(colour="blue")]),
    ("managed-field", ["jobs", "add", spec(created_at="2026-01-01 00:00:00")]),
    # one-shot options
    ("in-5x", ["jobs", "add", spec(), "--in", "5x"]),
    ("in-negative", ["jobs", "add", spec(), "--in", "-5m"]),
    ("in-missing-value", ["jobs", "add", spec(), "--in"]),
    ("at-not-a-date", ["jobs", "add", spec(), "--at", "not-a-date"]),
    ("at-and-in", ["jobs", "add", spec(), "--at", "2030-01-01T00:00:00Z", "--in", "5m"]),
    ("add-unknown-option", ["jobs", "add", spec(), "--frobnicate"]),
    ("add-extra-argument", ["jobs", "add", spec(), "extra"]),
    ("validate-bad", ["jobs", "validate", spec(run_timeout_ms=0)]),
    # unknown ids
    ("get-unknown", ["jobs", "get", UNKNOWN]),
    ("update-unknown", ["jobs", "update", UNKNOWN, '{"name": "x"}']),
    ("enable-unknown", ["jobs", "enable", UNKNOWN]),
    ("disable-unknown", ["jobs", "disable", UNKNOWN]),
    ("delete-unknown", ["jobs", "delete", UNKNOWN]),
    ("run-unknown", ["jobs", "run", UNKNOWN]),
    ("runs-get-unknown", ["runs", "get", UNKNOWN]),
    ("runs-output-unknown", ["runs", "output", UNKNOWN]),
    ("runs-list-unknown", ["runs", "list", UNKNOWN]),
    # bad arguments to runs
    ("runs-list-limit-abc", ["runs", "list", "{job}", "abc"]),
    ("runs-list-limit-0", ["runs", "list", "{job}", "0"]),
    ("runs-output-kind-foo", ["runs", "output", "{run}", "foo"]),
    ("runs-stale-abc", ["runs", "stale", "abc"]),
    # routing and missing arguments
    ("unknown-command", ["frobnicate"]),
    ("unknown-subcommand", ["jobs", "frobnicate"]),
    ("missing-subcommand", ["runs"]),
    ("jobs-get-missing-id", ["jobs", "get"]),
    ("jobs-add-missing-spec", ["jobs", "add"]),
    ("jobs-update-missing-spec", ["jobs", "update", "{job}"]),
    ("jobs-run-missing-id", ["jobs", "run"]),
    ("jobs-get-extra-argument", ["jobs", "get", "{job}", "extra"]),
    ("runs-get-missing-id", ["runs", "get"]),
    ("list-type-missing-value", ["jobs", "list", "--type"]),
    # cron next
    ("cron-next-missing-expr", ["cron", "next"]),
    ("cron-next-bad-expr", ["cron", "next", "61 * * * *"]),
    ("cron-next-bad-zone", ["cron", "next", "0 9 * * *", "--tz", "Nowhere/City"]),
    ("cron-next-count-0", ["cron", "next", "0 9 * * *", "--count", "0"]),
    ("cron-next-count-abc", ["cron", "next", "0 9 * * *", "--count", "abc"]),
    ("cron-next-bad-from", ["cron", "next", "0 9 * * *", "--from", "yesterday"]),
    ("cron-next-sentinel", ["cron", "next", "0 0 31 2 *"]),
    # schema
    ("schema-nope", ["schema", "nope"]),
    # updates
    ("update-empty", ["jobs", "update", "{job}", "{}"]),
    ("update-id", ["jobs", "update", "{job}", '{"id": "x"}']),
    ("update-invalid-json", ["jobs", "update", "{job}", "{oops"]),
    ("update-bad-cron", ["jobs", "update", "{job}", '{"schedule_cron": "61 * * * *"}']),
    ("update-null-name", ["jobs", "update", "{job}", '{"name": null}']),
    ("update-run-timeout-0", ["jobs", "update", "{job}", '{"run_timeout_ms": 0}']),
    ("update-queued-count", ["jobs", "update", "{job}", '{"queued_count": 3}']),
    # numbers beyond what the engine's arithmetic and SQLite's 64-bit integers hold
    ("consecutive-errors-2^63-1", ["jobs", "add", spec(consecutive_errors=2**63 - 1)]),
    ("max-retries-1000", ["jobs", "add", spec(max_retries=1000)]),
    ("run-timeout-1-year", ["jobs", "add", spec(run_timeout_ms=365 * 86400 * 1000)]),
    ("trigger-delay-2^40",
     ["jobs", "add", spec(parent_id="{job}", trigger_on="success", trigger_delay_s=2**40)]),
    ("ttl-hours-2^62", ["jobs", "add", spec(ttl_hours=2**62)]),
    ("output-bytes-2-GiB", ["jobs", "add", spec(output_store_limit_bytes=2**31)]),
    ("cost-2^64", ["jobs", "add", spec(contract_max_cost_usd=2**64)]),
    ("cost-1e300", ["jobs", "add", spec(contract_max_cost_usd=1e300)]),
    ("cost-NaN", ["jobs", "add", spec()[:-1] + ', "contract_max_cost_usd": NaN}']),
    ("cost-Infinity", ["jobs", "add", spec()[:-1] + ', "contract_max_cost_usd": Infinity}']),
    ("cost-1e400", ["jobs", "add", spec()[:-1] + ', "contract_max_cost_usd": 1e400}']),
    ("int-5000-digits", ["jobs", "add", spec()[:-1] + ', "max_retries": ' + "9" * 5000 + "}"]),
    ("int-4000-digits", ["jobs", "add", spec()[:-1] + ', "max_retries": ' + "9" * 4000 + "}"]),
    ("json-nested-20000", ["jobs", "add", "[" * 20000 + "]" * 20000]),
    ("json-nested-in-field", ["jobs", "add", spec()[:-1] + ', "name": ' + "[" * 20000 + "]" * 20000 + "}"]),
    ("blob-nested-20000", ["jobs", "add", spec(evidence="[" * 10000 + "]" * 10000)]),
    ("blob-5000-digits", ["jobs", "add", spec(evidence="9" * 5000)]),
    ("regex-repeat-too-large",
     ["jobs", "add", spec(parent_id="{job}", trigger_on="success", trigger_condition="regex:a{4294967296}")]),
    ("regex-nested-too-deep",  # 1024 characters, the field's limit
     ["jobs", "add", spec(parent_id="{job}", trigger_on="success",
                          trigger_condition="regex:" + "(" * 509 + ")" * 509)]),
    # datetimes outside what datetime and the stored text hold
    ("at-year-0-in-utc", ["jobs", "add", spec(), "--at", "0001-01-01T00:00:00+01:00"]),
    ("at-year-10000-in-utc", ["jobs", "add", spec(), "--at", "9999-12-31T23:59:59-01:00"]),
    ("in-99999999999d", ["jobs", "add", spec(), "--in", "99999999999d"]),
    ("in-9000-years", ["jobs", "add", spec(), "--in", "3300000d"]),
    ("in-5000-digits", ["jobs", "add", spec(), "--in", "9" * 5000 + "s"]),
    ("schedule-at-year-0",
     ["jobs", "add", spec(schedule_kind="at", schedule_at="0001-01-01T00:00:00+01:00")]),
    ("next-run-year-10000", ["jobs", "update", "{job}", '{"next_run_at": "9999-12-31T23:00:00-02:00"}']),
    ("cron-next-from-year-0", ["cron", "next", "0 9 * * *", "--from", "0001-01-01T00:00:00+01:00"]),
    # text that is not text: lone surrogates, bytes that are not UTF-8
    ("surrogate-in-name", ["jobs", "add", spec()[:-1] + ', "name": "\\ud800"}']),
    ("surrogate-in-payload", ["jobs", "add", spec()[:-1] + ', "payload_message": "echo \\udfff"}']),
    ("surrogate-in-blob", ["jobs", "add", spec()[:-1] + ', "evidence": "\\"\\ud800\\""}']),
    ("surrogate-in-key", ["jobs", "add", spec()[:-1] + ', "\\ud800": 1}']),
    ("surrogate-in-update", ["jobs", "update", "{job}", '{"delivery_to": "\\udbff"}']),
    ("invalid-utf8-id", ["jobs", "get", "job-\udcff\udcfe"]),
    ("invalid-utf8-json", ["jobs", "add", spec()[:-1] + ', "name": "caf\udce9"}']),
    ("invalid-utf8-option", ["jobs", "list", "--type", "\udcc3"]),
    ("invalid-utf8-alias", ["alias", "add", "a", "telegram", "\udcff"]),
    # numeric arguments
    ("runs-list-limit-2^63", ["runs", "list", "{job}", str(2**63)]),
    ("runs-list-limit-huge", ["runs", "list", "{job}", "9" * 5000]),
    ("runs-list-limit-underscore", ["runs", "list", "{job}", "1_0"]),
    ("runs-list-limit-arabic-digit", ["runs", "list", "{job}", "\u0663"]),
    ("runs-stale-2^63", ["runs", "stale", str(2**63)]),
    ("runs-stale-0", ["runs", "stale", "0"]),
    ("cron-next-count-2^63", ["cron", "next", "0 9 * * *", "--count", str(2**63)]),
    ("cron-next-count-1001", ["cron", "next", "0 9 * * *", "--count", "1001"]),
    ("cron-next-expr-5000-digits", ["cron", "next", "9" * 5000 + " * * * *"]),
    ("cron-next-expr-escape", ["cron", "next", "\x1b[2J * * * *"]),
    # single-line fields
    ("name-newline", ["jobs", "add", spec(name="two\nlines")]),
    ("name-carriage-return", ["jobs", "add", spec(name="hidden\rshown")]),
    ("name-tab", ["jobs", "add", spec(name="a\tb")]),
    ("name-c1-csi", ["jobs", "add", spec(name="a\u009b2Jb")]),
    ("name-c1-nel", ["jobs", "add", spec(name="a\u0085b")]),
    ("name-line-separator", ["jobs", "add", spec(name="a\u2028b")]),
    ("delivery-to-newline", ["jobs", "add", spec(delivery_mode="announce", delivery_to="1\n2")]),
    ("update-name-newline", ["jobs", "update", "{job}", json.dumps({"name": "a\nb"})]),
    ("alias-name-trailing-newline", ["alias", "add", "name\n", "telegram", "123"]),
    ("alias-target-c1", ["alias", "add", "name", "telegram", "12\u009b3"]),
    # escape sequences in what error messages quote
    ("get-escape-sequence", ["jobs", "get", "\x1b[2J\x1b[H"]),
    ("get-osc-title", ["jobs", "get", "\x1b]0;owned\x07"]),
    ("get-newline-id", ["jobs", "get", "a\nb"]),
    ("runs-get-c1", ["runs", "get", "\u009b31m"]),
    ("unknown-command-escape", ["\x1b[2J"]),
    ("unknown-subcommand-escape", ["jobs", "\x1b[2J"]),
    ("unknown-field-escape", ["jobs", "add", spec()[:-1] + ', "\\u001b[2J": 1}']),
    ("session-target-escape", ["jobs", "add", spec(session_target="\x1b[2J")]),
]


@pytest.fixture(scope="module")
def seeded(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A database holding one cron job and one finished run of it."""
    path = tmp_path_factory.mktemp("cli") / "scheduler.db"
    code, out, _, err = run_cli(path, "jobs", "add", spec(name="seed"))
    assert code == 0, err
    job_id = out["job"]["id"]
    run_id = str(uuid.uuid4())
    with sqlite3.connect(path) as conn:
        conn.execute(
            "INSERT INTO runs (id, job_id, status, finished_at, shell_exit_code, shell_stdout, shell_stderr) "
            "VALUES (?, ?, 'ok', datetime('now'), 0, 'hello out', 'hello err')",
            (run_id, job_id),
        )
    conn.close()
    return {"path": path, "job": job_id, "run": run_id}


def snapshot(path: Path) -> dict[str, Any]:
    return {
        table: query(path, f"SELECT * FROM {table} ORDER BY rowid")
        for table in ("jobs", "runs", "job_dispatch_queue")
    }


# What may never reach a terminal raw: C0 controls but the line feed, DEL, C1, U+2028/U+2029.
RAW_CONTROL = re.compile(r"[\x00-\x09\x0b-\x1f\x7f-\x9f\u2028\u2029]")
# A stream that refuses what is not UTF-8 (a C.UTF-8 locale would let lone surrogates through).
STRICT_UTF8 = {"PYTHONIOENCODING": "utf-8:strict"}


@pytest.mark.parametrize(("argv",), [pytest.param(a, id=i) for i, a in BAD_INPUTS])
def test_bad_input_fails_cleanly_and_writes_nothing(seeded: dict[str, Any], argv: list[str]) -> None:
    path = seeded["path"]
    args = [a.replace("{job}", seeded["job"]).replace("{run}", seeded["run"]) for a in argv]
    before = snapshot(path)

    code, out, stdout, stderr = run_cli(path, *args, env=STRICT_UTF8)
    assert code != 0, stdout
    assert code != 70, stdout  # 70 is "internal error": a crash caught at the top
    assert isinstance(out, dict), f"stdout is not JSON: {stdout!r}"
    assert out.get("ok") is False
    assert isinstance(out.get("error"), str) and out["error"].strip()
    assert "internal error" not in out["error"]
    assert "Traceback" not in stdout + stderr
    assert stderr == ""
    assert not RAW_CONTROL.search(stdout), stdout

    code, _, stdout, stderr = run_cli(path, *args, json_mode=False, env=STRICT_UTF8)
    assert code not in (0, 70)
    assert "Traceback" not in stdout + stderr
    assert stdout == ""
    lines = stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), f"stderr should be one line, got {stderr!r}"
    assert not RAW_CONTROL.search(stderr), stderr

    assert snapshot(path) == before


def test_error_messages_name_the_problem(seeded: dict[str, Any]) -> None:
    path = seeded["path"]
    cases = {
        "run_timeout_ms": ["jobs", "add", spec_without("run_timeout_ms")],
        "origin": ["jobs", "add", spec_without("origin")],
        "schedule_cron": ["jobs", "add", spec_without("schedule_cron", schedule_corn="0 * * * *")],
        "delivery_to": ["jobs", "add", spec(delivery_mode="announce")],
        "Mars/Olympus_Mons": ["jobs", "add", spec(schedule_tz="Mars/Olympus_Mons")],
        "5x": ["jobs", "add", spec(), "--in", "5x"],
        UNKNOWN: ["jobs", "get", UNKNOWN],
        '--tz "Nowhere/City"': ["cron", "next", "0 9 * * *", "--tz", "Nowhere/City"],
    }
    for needle, argv in cases.items():
        _, out, _, _ = run_cli(path, *argv)
        assert needle in out["error"], (needle, out["error"])
    _, out, _, _ = run_cli(path, "jobs", "add", spec_without("schedule_cron", schedule_corn="0 * * * *"))
    assert "did you mean" in out["error"]


# -- positive paths ------------------------------------------------------------------------------


def test_add_get_list_shapes(cli, db) -> None:
    code, out, _, err = cli("jobs", "add", spec(name="hourly"))
    assert code == 0, err
    assert out["ok"] is True
    job = out["job"]
    for column in ("id", "name", "enabled", "schedule_kind", "schedule_cron", "schedule_tz",
                   "session_target", "payload_kind", "payload_message", "run_timeout_ms",
                   "overlap_policy", "delivery_mode", "origin", "next_run_at", "last_run_at",
                   "last_status", "consecutive_errors", "created_at", "updated_at", "queued_count"):
        assert column in job, column
    assert job["name"] == "hourly"
    assert job["schedule_kind"] == "cron"
    assert job["payload_kind"] == "shellCommand"
    assert job["enabled"] == 1
    assert job["next_run_at"] is not None

    code, got, _, _ = cli("jobs", "get", job["id"])
    assert code == 0
    assert got == job

    code, listed, _, _ = cli("jobs", "list")
    assert code == 0
    assert isinstance(listed, list)
    assert [j["id"] for j in listed] == [job["id"]]
    assert db("SELECT name FROM jobs") == [{"name": "hourly"}]


def test_human_output_is_not_json(cli) -> None:
    code, out, stdout, stderr = cli("jobs", "add", spec(name="human"), json_mode=False)
    assert code == 0 and out is None and stderr == ""
    assert "Created job" in stdout and "human" in stdout
    code, _, stdout, _ = cli("jobs", "list", json_mode=False)
    assert code == 0 and "human" in stdout


def test_update_changes_fields_and_schedule(cli) -> None:
    _, out, _, _ = cli("jobs", "add", spec(name="before"))
    job_id = out["job"]["id"]
    code, out, _, err = cli("jobs", "update", job_id, '{"name": "after", "schedule_cron": "15 4 * * *"}')
    assert code == 0, err
    assert out["ok"] is True
    assert out["job"]["name"] == "after"
    assert out["job"]["schedule_cron"] == "15 4 * * *"
    assert out["job"]["next_run_at"].endswith("04:15:00")
    _, got, _, _ = cli("jobs", "get", job_id)
    assert got["name"] == "after"


def test_enable_disable_shapes_and_recompute(cli, db) -> None:
    # An hourly job whose stored next run is long past: re-enabling must not fire that stale run.
    _, out, _, _ = cli("jobs", "add", spec(name="stale", next_run_at="2020-01-01 00:00:00"))
    job_id = out["job"]["id"]
    assert out["job"]["next_run_at"] == "2020-01-01 00:00:00"

    code, out, _, _ = cli("jobs", "disable", job_id)
    assert code == 0
    assert out == {"ok": True, "job_id": job_id, "enabled": False}
    assert db("SELECT enabled FROM jobs")[0]["enabled"] == 0

    before = datetime.now(UTC)
    code, out, _, _ = cli("jobs", "enable", job_id)
    after = datetime.now(UTC)
    assert code == 0
    assert out == {"ok": True, "job_id": job_id, "enabled": True}
    row = db("SELECT enabled, next_run_at FROM jobs")[0]
    assert row["enabled"] == 1

    def next_hour(t: datetime) -> str:
        top = t.replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
        return top.strftime("%Y-%m-%d %H:%M:%S")

    assert row["next_run_at"] in {next_hour(before), next_hour(after)}


def test_delete(cli, db) -> None:
    _, out, _, _ = cli("jobs", "add", spec(name="doomed"))
    job_id = out["job"]["id"]
    code, out, _, _ = cli("jobs", "delete", job_id)
    assert code == 0
    assert out["ok"] is True and out["job_id"] == job_id
    assert db("SELECT COUNT(*) AS n FROM jobs")[0]["n"] == 0
    code, _, _, _ = cli("jobs", "get", job_id)
    assert code != 0


def test_run_queues_a_manual_dispatch(cli, db) -> None:
    _, out, _, _ = cli("jobs", "add", spec(name="manual", enabled=False))
    job_id = out["job"]["id"]
    next_run = out["job"]["next_run_at"]
    code, out, _, err = cli("jobs", "run", job_id)
    assert code == 0, err
    assert set(out) == {"ok", "job_id", "name", "dispatch_id", "dispatch_kind"}
    assert out["ok"] is True and out["job_id"] == job_id and out["name"] == "manual"
    assert out["dispatch_kind"] == "manual"
    rows = db("SELECT id, job_id, dispatch_kind, status FROM job_dispatch_queue")
    assert rows == [
        {"id": out["dispatch_id"], "job_id": job_id, "dispatch_kind": "manual", "status": "pending"}
    ]
    job = db("SELECT enabled, next_run_at FROM jobs")[0]
    assert job == {"enabled": 0, "next_run_at": next_run}


def test_one_shot_in_sets_an_at_job(cli) -> None:
    before = datetime.now(UTC).replace(microsecond=0)
    code, out, _, err = cli("jobs", "add", json.dumps(SHELL_JOB), "--in", "90m")
    assert code == 0, err
    job = out["job"]
    assert job["schedule_kind"] == "at"
    assert job["delete_after_run"] == 1
    at = datetime.strptime(job["schedule_at"], "%Y-%m-%d %H:%M:%S").replace(tzinfo=UTC)
    assert timedelta(minutes=89) < at - before < timedelta(minutes=91)
    assert job["next_run_at"] == job["schedule_at"]

    code, out, _, err = cli("jobs", "add", json.dumps(SHELL_JOB), "--at", "2030-06-01T12:00:00+02:00")
    assert code == 0, err
    assert out["job"]["schedule_at"] == "2030-06-01 10:00:00"


def test_dry_run_writes_nothing(cli, db_path) -> None:
    cli("jobs", "list")  # creates the database
    code, out, _, err = cli("jobs", "add", spec(name="dry"), "--dry-run")
    assert code == 0, err
    assert out["ok"] is True and out["dry_run"] is True
    assert query(db_path, "SELECT COUNT(*) AS n FROM jobs")[0]["n"] == 0

    _, out, _, _ = cli("jobs", "add", spec(name="real"))
    job_id = out["job"]["id"]
    code, out, _, _ = cli("jobs", "update", job_id, '{"name": "renamed"}', "--dry-run")
    assert code == 0 and out["dry_run"] is True
    assert query(db_path, "SELECT name FROM jobs") == [{"name": "real"}]

    code, out, _, _ = cli("jobs", "add", spec(run_timeout_ms=0), "--dry-run")
    assert code != 0 and out["ok"] is False


def test_runs_commands_on_an_existing_run(seeded: dict[str, Any]) -> None:
    path = seeded["path"]
    code, runs, _, _ = run_cli(path, "runs", "list", seeded["job"])
    assert code == 0
    assert [r["id"] for r in runs] == [seeded["run"]]
    code, run, _, _ = run_cli(path, "runs", "get", seeded["run"])
    assert code == 0 and run["status"] == "ok"
    code, out, _, _ = run_cli(path, "runs", "output", seeded["run"], "stderr")
    assert code == 0 and out["content"] == "hello err"
    code, _, stdout, _ = run_cli(path, "runs", "output", seeded["run"], json_mode=False)
    assert code == 0 and stdout == "hello out\n"
    code, running, _, _ = run_cli(path, "runs", "running")
    assert code == 0 and running == []


def test_cron_next_across_dst(cli) -> None:
    code, out, _, err = cli("cron", "next", "30 2 * * *", "--from", "2026-03-28T00:00:00Z",
                            "--tz", "Europe/Berlin", "--count", "3")
    assert code == 0, err
    assert out["ok"] is True and out["tz"] == "Europe/Berlin"
    times = out["next"]
    assert len(times) == 3
    parsed = [datetime.fromisoformat(t) for t in times]
    assert times[0] == "2026-03-28T02:30:00+01:00"
    # 29 March: 02:30 does not exist in Berlin; whatever instant is chosen is on that day, in CEST.
    assert parsed[1].date().isoformat() == "2026-03-29" and times[1].endswith("+02:00")
    assert times[2] == "2026-03-30T02:30:00+02:00"
    assert parsed == sorted(parsed) and len(set(parsed)) == 3


def test_cron_next_default_count_and_seconds_field(cli) -> None:
    code, out, _, _ = cli("cron", "next", "*/2 * * * * *", "--from", "2026-01-01T00:00:00Z")
    assert code == 0
    assert out["next"] == [f"2026-01-01T00:00:{s:02d}+00:00" for s in (2, 4, 6, 8, 10)]


def test_version(cli) -> None:
    code, out, _, _ = cli("version")
    assert code == 0
    assert out["ok"] is True and out["name"] == "openclaw-scheduler"
    assert isinstance(out["version"], str) and out["version"]
    assert out["schema_version"] == 23


def test_schema_jobs(cli) -> None:
    code, out, _, _ = cli("schema", "jobs")
    assert code == 0
    assert "name" in out["required"] and "run_timeout_ms" in out["required"]
    fields = out["fields"]
    assert fields["overlap_policy"]["enum"] == ["skip", "allow", "queue"]
    assert fields["name"]["maxLength"] == 200
    code, everything, _, _ = cli("schema")
    assert code == 0 and set(everything) == {"jobs", "runs", "dispatches", "messages"}


def test_schema_shows_every_bound(cli) -> None:
    code, out, _, _ = cli("schema", "jobs")
    assert code == 0
    fields = out["fields"]
    numeric = [name for name, field in fields.items() if field["type"] in ("integer", "number")]
    assert numeric and all("max" in fields[name] for name in numeric)
    assert fields["max_retries"]["max"] == 20 and fields["run_timeout_ms"]["max"] == 604800000
    assert fields["contract_max_cost_usd"]["max"] == 1000000000
    assert fields["name"]["singleLine"] is True and "singleLine" not in fields["payload_message"]


CONTROL_NAME = "evil\rname\x1b[2J\x1b]0;owned\x07\u009b31m\u2028end"


def test_human_output_escapes_control_characters_the_database_holds(cli, db_path) -> None:
    # A reference database may hold names our validator refuses: they must still print safely.
    _, out, _, _ = cli("jobs", "add", spec(name="plain"))
    job_id = out["job"]["id"]
    with sqlite3.connect(db_path) as conn:
        conn.execute("UPDATE jobs SET name = ?, schedule_tz = ? WHERE id = ?",
                     (CONTROL_NAME, "UTC\nX", job_id))
    conn.close()
    for argv in (["jobs", "list"], ["status"], ["jobs", "disable", job_id], ["jobs", "run", job_id],
                 ["jobs", "delete", job_id]):
        code, _, stdout, stderr = cli(*argv, json_mode=False, env=STRICT_UTF8)
        assert code == 0, stderr
        assert not RAW_CONTROL.search(stdout + stderr), (argv, stdout)
        if argv[:2] == ["jobs", "list"]:
            assert "evil\\rname\\x1b[2J" in stdout and len(stdout.splitlines()) == 3


def test_json_output_escapes_what_the_encoder_leaves_raw(cli, db_path) -> None:
    _, out, _, _ = cli("jobs", "add", spec(name="plain"))
    job_id = out["job"]["id"]
    with sqlite3.connect(db_path) as conn:
        conn.execute("UPDATE jobs SET name = ? WHERE id = ?", (CONTROL_NAME, job_id))
    conn.close()
    for argv in (["jobs", "get", job_id], ["jobs", "list"]):
        code, out, stdout, _ = cli(*argv, env=STRICT_UTF8)
        assert code == 0
        assert not RAW_CONTROL.search(stdout), stdout
        job = out if isinstance(out, dict) else out[0]
        assert job["name"] == CONTROL_NAME  # the same value, only written with escapes


def test_error_lines_escape_what_they_quote(cli) -> None:
    code, out, _, _ = cli("jobs", "get", "\x1b[2J\nx")
    assert code == 1 and out["error"] == "Job not found: \\x1b[2J\\nx"
    code, _, _, stderr = cli("jobs", "get", "\x1b[2J\u009b", json_mode=False)
    assert code == 1 and stderr == "error: Job not found: \\x1b[2J\\x9b\n"


def test_invalid_utf8_argument_is_named(cli) -> None:
    code, out, _, _ = cli("jobs", "get", "caf\udce9", env=STRICT_UTF8)
    assert code == 2
    assert out["error"] == 'argument 3 is not valid UTF-8: "caf\\udce9"'


def test_status_keys(cli, db_path) -> None:
    cli("jobs", "add", spec(name="next one"))
    code, out, _, err = cli("status")
    assert code == 0, err
    for key in ("db_path", "jobs_total", "jobs_enabled", "running_runs", "stale_runs", "budgets",
                "budget_hotspots", "agents", "next_job", "daemon"):
        assert key in out, key
    assert out["db_path"] == str(db_path)
    assert out["jobs_total"] == 1 and out["jobs_enabled"] == 1
    assert out["next_job"]["name"] == "next one"
    assert out["daemon"]["running"] is False and out["daemon"]["pid"] is None


def test_database_file_is_private(cli, db_path) -> None:
    code, _, _, _ = cli("jobs", "list")
    assert code == 0
    assert stat.S_IMODE(db_path.stat().st_mode) == 0o600


def test_help_and_json_anywhere(cli) -> None:
    code, _, stdout, _ = cli("help", json_mode=False)
    assert code == 0 and "Usage:" in stdout
    code, out, _, _ = cli("--json", "jobs", "list", json_mode=False)
    assert code == 0 and out == []


# -- hostile arguments in every position ----------------------------------------------------------
#
# Each template names a command with one slot, "{h}"; every hostile string goes into every slot.
# The cases run in forked children of one process (tests/cli_sweep.py): thousands of them would
# take minutes as interpreter starts. Whatever the outcome, no traceback, no exit 70, one error
# line, nothing raw for the terminal, and a failed command writes nothing.

VALID = spec(name="sweep")
SWEEP_TEMPLATES: list[list[str]] = [
    ["{h}"],
    ["jobs", "{h}"],
    ["jobs", "get", "{h}"],
    ["jobs", "list", "--type", "{h}"],
    ["jobs", "add", "{h}"],
    ["jobs", "add", VALID, "--dry-run", "--at", "{h}"],
    ["jobs", "add", VALID, "--dry-run", "--in", "{h}"],
    ["jobs", "add", VALID, "--dry-run", "--profile", "{h}"],
    ["jobs", "add", VALID, "--dry-run", "{h}"],
    ["jobs", "validate", "{h}"],
    ["jobs", "update", "{h}", '{"name": "renamed"}'],
    ["jobs", "update", "{job}", "{h}"],
    ["jobs", "update", "{job}", '{"name": "renamed"}', "--dry-run", "--profile", "{h}"],
    ["jobs", "enable", "{h}"],
    ["jobs", "disable", "{h}"],
    ["jobs", "delete", "{h}"],
    ["jobs", "run", "{h}"],
    ["runs", "list", "{h}"],
    ["runs", "list", "{job}", "{h}"],
    ["runs", "get", "{h}"],
    ["runs", "output", "{h}"],
    ["runs", "output", "{run}", "{h}"],
    ["runs", "running", "{h}"],
    ["runs", "stale", "{h}"],
    ["idem", "status", "{h}"],
    ["idem", "check", "{h}"],
    ["idem", "release", "{h}"],
    ["idem", "prune", "{h}"],
    ["alias", "add", "{h}", "telegram", "123"],
    ["alias", "add", "sweep", "{h}", "123"],
    ["alias", "add", "sweep", "telegram", "{h}"],
    ["alias", "add", "sweep", "telegram", "123", "{h}"],
    ["alias", "remove", "{h}"],
    ["agents", "list", "{h}"],
    ["agents", "get", "{h}"],
    ["agents", "register", "{h}"],
    ["agents", "register", "sweep", "{h}"],
    ["agents", "register", "sweep", "Sweep", "--capabilities", "{h}"],
    ["status", "{h}"],
    ["version", "{h}"],
    ["schema", "{h}"],
    ["cron", "next", "{h}"],
    ["cron", "next", "0 9 * * *", "--tz", "{h}"],
    ["cron", "next", "0 9 * * *", "--from", "{h}"],
    ["cron", "next", "0 9 * * *", "--count", "{h}"],
    # service (dry runs and status only: nothing is installed by the sweep)
    ["service", "install", "--dry-run", "--manager", "{h}"],
    ["service", "install", "--dry-run", "{h}"],
    ["service", "uninstall", "--dry-run", "{h}"],
    ["service", "status", "{h}"],
]
HOSTILE: list[str] = [
    "", " ", "-", "--x", "-1", "0", "+5", "1_000", "\u0663", "9223372036854775808", "9" * 5000,
    "1e309", "NaN", "\x1b[2J", "\x1b]0;owned\x07", "a\nb", "a\r\nb", "\t", "\x7f", "\u0085",
    "\u009b31m", "\u2028", "\u202e", "caf\udce9", "😀", "x" * 100000, "{}", "null", '{"a":',
    "[" * 20000, '{"name": "\\ud800"}', '{"name": "\\u001b[2J"}', "'; DROP TABLE jobs; --",
    "../../../../etc/passwd", "@sweep", "0 0 31 2 *", "*/0 * * * *", "0001-01-01T00:00:00+01:00",
    "9999-12-31T23:59:59-01:00", "99999999999d",
]
# Valid arguments there do write.
ALLOWED_WRITERS = {("alias", "add"), ("alias", "remove"), ("agents", "register")}



def sweep_cases(seeded: dict[str, Any]) -> list[list[str]]:
    def fill(arg: str, hostile: str) -> str:
        arg = arg.replace("{job}", seeded["job"]).replace("{run}", seeded["run"])
        return hostile if arg == "{h}" else arg

    return [[fill(a, h) for a in template] for template in SWEEP_TEMPLATES for h in HOSTILE]


def run_sweep(path: Path, cases: list[list[str]]) -> list[dict[str, Any]]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SCHEDULER_", "OPENCLAW_"))}
    env.update(STRICT_UTF8, SCHEDULER_DB=str(path), HOME=str(path.parent))
    proc = subprocess.run(
        [sys.executable, str(Path(__file__).with_name("cli_sweep.py"))],
        input=json.dumps(cases), capture_output=True, text=True, env=env, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    results: list[dict[str, Any]] = json.loads(proc.stdout)
    return results


def sweep_problems(result: dict[str, Any]) -> list[str]:
    """What is wrong with one case's outcome (nothing, for a clean success or a clean error)."""
    code, stdout, stderr = result["code"], result["stdout"], result["stderr"]
    problems = []
    if code in (70, 99) or code < 0:
        problems.append(f"exit {code}")
    if "Traceback" in stdout + stderr or "internal error" in stdout + stderr:
        problems.append("crash")
    if RAW_CONTROL.search(stdout + stderr):
        problems.append("raw control character")
    if code != 0 and result["changed"]:
        problems.append("failed but wrote")
    if result["changed"] and tuple(result["argv"][:2]) not in ALLOWED_WRITERS:
        problems.append("wrote")
    if result["json_mode"]:
        try:
            out = json.loads(stdout)
        except ValueError:
            return [*problems, "stdout is not JSON"]
        if stderr or (code != 0 and not (isinstance(out, dict) and out.get("ok") is False)):
            problems.append("not a JSON error")
    elif code != 0 and (stdout or len(stderr.splitlines()) != 1 or not stderr.startswith("error: ")):
        problems.append("not one error line")
    return problems


def test_hostile_arguments_in_every_position(seeded: dict[str, Any]) -> None:
    cases = sweep_cases(seeded)
    assert len(cases) > 1000
    before = snapshot(seeded["path"])
    results = run_sweep(seeded["path"], cases)
    assert len(results) == 2 * len(cases)
    failures = [
        (problems, repr(result["argv"])[:160], result["code"], (result["stdout"] + result["stderr"])[-300:])
        for result in results
        if (problems := sweep_problems(result))
    ]
    assert not failures, f"{len(failures)} bad outcomes, e.g. {failures[:5]}"
    assert snapshot(seeded["path"]) == before  # aliases may come and go; jobs and runs may not
