"""``migrate``: importing OpenClaw's built-in cron jobs.

The job objects come from tests/fixtures/openclaw-2026.9.6-cron_jobs.json: the ``job_json`` of
every row that the real gateway (openclaw 2026.9.6) wrote for jobs made with ``openclaw cron add``,
plus the three it made for itself (memory dreaming, heartbeat, skill review). The gateway's own
database is rebuilt from them with the table definition it uses; test_migrate_openclaw.py imports
from a live gateway's database.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import subprocess
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from conftest import CliResult, add_job, shell_job
from scheduler.ops.cron_import import convert, cron_for_interval, host_timezone, shell_command

FIXTURE = Path(__file__).parent / "fixtures" / "openclaw-2026.9.6-cron_jobs.json"
ROWS: list[dict[str, Any]] = json.loads(FIXTURE.read_text())
ENTRIES: list[dict[str, Any]] = [row["job"] for row in ROWS]
BY_NAME = {entry["name"]: entry for entry in ENTRIES}
SYSTEM_IDS = {e["id"] for e in ENTRIES if e.get("declarationKey")}
WEBHOOK_ID = BY_NAME["Webhook job"]["id"]
USER_IDS = {e["id"] for e in ENTRIES} - SYSTEM_IDS - {WEBHOOK_ID}

# The table as openclaw 2026.9.6 creates it (`SELECT sql FROM sqlite_master`).
CRON_JOBS_DDL = """CREATE TABLE cron_jobs (
  store_key TEXT NOT NULL, job_id TEXT NOT NULL, declaration_key TEXT, owner_agent_id TEXT,
  name TEXT NOT NULL, description TEXT, enabled INTEGER NOT NULL, agent_id TEXT,
  payload_kind TEXT NOT NULL, job_json TEXT NOT NULL, grant_definition_revision TEXT,
  grant_definition_generation INTEGER, grant_definition_updated_at INTEGER,
  state_json TEXT NOT NULL DEFAULT '{}', runtime_updated_at_ms INTEGER, schedule_identity TEXT,
  sort_order INTEGER NOT NULL DEFAULT 0, updated_at INTEGER NOT NULL,
  PRIMARY KEY (store_key, job_id)
) STRICT"""

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


def write_gateway_db(path: Path, entries: list[dict[str, Any]], journal: str = "wal") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA journal_mode={journal}")
    conn.execute(CRON_JOBS_DDL)
    for order, entry in enumerate(entries):
        conn.execute(
            "INSERT INTO cron_jobs (store_key, job_id, declaration_key, name, enabled, agent_id, "
            "payload_kind, job_json, sort_order, updated_at) VALUES (?,?,?,?,?,?,?,?,?,?)",
            ("jobs.json", entry["id"], entry.get("declarationKey"), entry["name"],
             int(entry["enabled"]), entry.get("agentId"), entry["payload"]["kind"],
             json.dumps(entry), order, 1796171732482))
    conn.commit()
    conn.close()
    return path


def state_env(state_dir: Path) -> dict[str, str]:
    return {"OPENCLAW_STATE_DIR": str(state_dir), "TZ": "UTC"}


@pytest.fixture
def gateway_state(tmp_path: Path) -> Path:
    """An OpenClaw state dir whose database holds the fixture jobs."""
    state = tmp_path / "openclaw-state"
    write_gateway_db(state / "state" / "openclaw.sqlite", ENTRIES)
    return state


def jobs_by_id(cli: Callable[..., CliResult]) -> dict[str, dict[str, Any]]:
    code, out, stdout, stderr = cli("jobs", "list")
    assert code == 0, stdout + stderr
    return {job["id"]: job for job in out}


def statuses(report: dict[str, Any]) -> dict[str, str]:
    return {job["id"]: job["status"] for job in report["jobs"]}


# -- from the gateway's database ----------------------------------------------------------------

def test_imports_the_gateway_database_it_finds_itself(cli: Callable[..., CliResult],
                                                       gateway_state: Path) -> None:
    database = gateway_state / "state" / "openclaw.sqlite"
    before = hashlib.sha256(database.read_bytes()).hexdigest()
    code, report, stdout, stderr = cli("migrate", env=state_env(gateway_state))
    assert code == 1, stdout + stderr  # the webhook job cannot be converted
    assert report["source"] == {"kind": "database", "path": str(database)}
    assert report["totals"] == {"imported": len(USER_IDS), "skipped": len(SYSTEM_IDS), "errors": 1}
    status = statuses(report)
    assert {i for i, s in status.items() if s == "ok"} == USER_IDS
    assert {i for i, s in status.items() if s == "skip"} == SYSTEM_IDS
    assert status[WEBHOOK_ID] == "err"
    assert set(jobs_by_id(cli)) == USER_IDS  # ids preserved
    assert hashlib.sha256(database.read_bytes()).hexdigest() == before  # never written


def test_fields_follow_what_the_gateway_wrote(cli: Callable[..., CliResult], gateway_state: Path) -> None:
    cli("migrate", env=state_env(gateway_state))
    jobs = {job["name"]: job for job in jobs_by_id(cli).values()}
    brief = jobs["Morning brief"]
    assert (brief["schedule_cron"], brief["schedule_tz"]) == ("0 7 * * *", "Europe/Berlin")
    # OpenClaw's announce posts every run: ours is announce-always, not failures-only announce.
    assert (brief["delivery_mode"], brief["delivery_channel"], brief["delivery_to"]) == (
        "announce-always", "telegram", "987654321")
    assert (brief["session_target"], brief["payload_kind"], brief["agent_id"]) == (
        "isolated", "agentTurn", "main")
    once = jobs["Once"]
    assert (once["schedule_kind"], once["schedule_at"], once["delete_after_run"]) == (
        "at", "2030-01-02 03:04:05", 1)
    assert once["next_run_at"] == "2030-01-02 03:04:05"
    staggered = jobs["Staggered"]
    assert (staggered["payload_model"], staggered["payload_thinking"]) == ("fake/fake-model", "low")
    assert staggered["payload_timeout_seconds"] == 90
    assert jobs["Every ten"]["schedule_cron"] == "*/10 * * * *"
    assert jobs["Argv job"]["schedule_cron"] == "0 */2 * * *"
    probe = jobs["Disk probe"]
    assert (probe["session_target"], probe["payload_kind"], probe["payload_message"]) == (
        "shell", "shellCommand", "sh -lc 'df -h /'")
    assert probe["run_timeout_ms"] == 600_000
    main = jobs["Main event"]
    assert (main["session_target"], main["payload_kind"], main["payload_message"], main["delivery_mode"]) == (
        "main", "systemEvent", "Wake up and check mail.", "none")
    assert jobs["Disabled one"]["enabled"] == 0
    assert jobs["Hourly top"]["delivery_mode"] == "none"
    assert jobs["Hourly top"]["delivery_opt_out_reason"]


def test_a_second_run_imports_nothing_twice(cli: Callable[..., CliResult], gateway_state: Path) -> None:
    cli("migrate", env=state_env(gateway_state))
    first = jobs_by_id(cli)
    _code, report, _, _ = cli("migrate", env=state_env(gateway_state))
    assert report["totals"]["imported"] == 0
    assert all(statuses(report)[i] == "skip" for i in USER_IDS)
    assert jobs_by_id(cli) == first
    # The commands that turn the old jobs off are still printed: they may still run there.
    assert f"openclaw cron disable {BY_NAME['Morning brief']['id']}" in report["disable_commands"]


def test_dry_run_writes_nothing(cli: Callable[..., CliResult], gateway_state: Path) -> None:
    _code, report, stdout, stderr = cli("migrate", "--dry-run", env=state_env(gateway_state))
    assert report["dry_run"] is True
    assert report["totals"]["imported"] == len(USER_IDS), stdout + stderr
    assert jobs_by_id(cli) == {}


def test_include_system_imports_the_gateways_own_turns_but_not_its_heartbeat(
        cli: Callable[..., CliResult], gateway_state: Path) -> None:
    _code, report, _, _ = cli("migrate", "--include-system", env=state_env(gateway_state))
    status = statuses(report)
    heartbeat = BY_NAME["heartbeat-main"]["id"]
    assert status[heartbeat] == "err"
    assert all(status[i] == "ok" for i in SYSTEM_IDS - {heartbeat})
    assert SYSTEM_IDS - {heartbeat} <= set(jobs_by_id(cli))


def test_disable_commands_name_each_job_still_enabled_in_openclaw(
        cli: Callable[..., CliResult], gateway_state: Path) -> None:
    _code, _, stdout, stderr = cli("migrate", env=state_env(gateway_state), json_mode=False)
    assert f"openclaw cron disable {BY_NAME['Disk probe']['id']}" in stdout, stdout + stderr
    assert f"openclaw cron disable {BY_NAME['Disabled one']['id']}" not in stdout
    assert f"ERR  {WEBHOOK_ID} Webhook job: webhook delivery has no equivalent here" in stdout
    assert "Done: 10 imported, 3 skipped, 1 errors" in stdout


def test_reads_while_the_gateway_holds_a_write_transaction(cli: Callable[..., CliResult],
                                                           gateway_state: Path) -> None:
    """Read-only: a writer mid-transaction neither blocks the import nor leaks into it."""
    writer = sqlite3.connect(gateway_state / "state" / "openclaw.sqlite")
    writer.execute("BEGIN IMMEDIATE")
    writer.execute("DELETE FROM cron_jobs")
    try:
        _code, report, stdout, stderr = cli("migrate", env=state_env(gateway_state))
    finally:
        writer.rollback()
        writer.close()
    assert report is not None, stdout + stderr
    assert report["totals"]["imported"] == len(USER_IDS)


def test_a_locked_gateway_database_is_one_clear_error(cli: Callable[..., CliResult], tmp_path: Path) -> None:
    state = tmp_path / "state-dir"
    database = write_gateway_db(state / "state" / "openclaw.sqlite", ENTRIES, journal="delete")
    # Found by the discovery probe while unlocked; then locked by a "gateway" that holds it.
    locker = sqlite3.connect(database, check_same_thread=False)
    locker.execute("BEGIN EXCLUSIVE")
    try:
        code, out, stdout, stderr = cli("migrate", "--from", str(database), env=state_env(state))
    finally:
        locker.rollback()
        locker.close()
    assert code != 0
    assert out["ok"] is False and "locked" in out["error"], stdout + stderr
    assert "Traceback" not in stderr
    assert jobs_by_id(cli) == {}


def test_a_locked_database_found_by_discovery_is_reported_not_passed_over(
        cli: Callable[..., CliResult], tmp_path: Path) -> None:
    state = tmp_path / "state-dir"
    database = write_gateway_db(state / "state" / "openclaw.sqlite", ENTRIES, journal="delete")
    legacy_file(state / "cron" / "jobs.json", [BY_NAME["Morning brief"]])  # an older source beside it
    locker = sqlite3.connect(database)
    locker.execute("BEGIN EXCLUSIVE")
    try:
        code, out, stdout, stderr = cli("migrate", env=state_env(state))
    finally:
        locker.rollback()
        locker.close()
    assert code != 0 and "locked" in out["error"], stdout + stderr
    assert jobs_by_id(cli) == {}


# -- from a jobs file ------------------------------------------------------------------------------

def legacy_file(path: Path, entries: list[dict[str, Any]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"version": 1, "jobs": entries}))
    return path


def test_imports_the_legacy_jobs_file_under_the_state_dir(cli: Callable[..., CliResult],
                                                          tmp_path: Path) -> None:
    state = tmp_path / ".openclaw"
    jobs_file = legacy_file(state / "cron" / "jobs.json", ENTRIES)
    _code, report, stdout, stderr = cli("migrate", env={"TZ": "UTC"})  # HOME is tmp_path
    assert report["source"] == {"kind": "file", "path": str(jobs_file)}, stdout + stderr
    assert set(jobs_by_id(cli)) == USER_IDS


def test_openclaw_jobs_json_and_from_choose_the_source(cli: Callable[..., CliResult], tmp_path: Path,
                                                       gateway_state: Path) -> None:
    chosen = legacy_file(tmp_path / "elsewhere.json", [BY_NAME["Morning brief"]])
    env = {**state_env(gateway_state), "OPENCLAW_JOBS_JSON": str(chosen)}
    _code, report, _, _ = cli("migrate", "--dry-run", env=env)
    assert report["source"]["path"] == str(chosen) and len(report["jobs"]) == 1
    database = gateway_state / "state" / "openclaw.sqlite"
    _code, report, _, _ = cli("migrate", "--dry-run", "--from", str(database), env=env)
    assert report["source"] == {"kind": "database", "path": str(database)}


@pytest.mark.parametrize(("content", "expected"), [
    ("{not json", "not valid JSON"),
    ('{"jobs": 5}', "not an OpenClaw jobs file"),
])
def test_a_bad_jobs_file_is_one_line_and_writes_nothing(cli: Callable[..., CliResult], tmp_path: Path,
                                                        content: str, expected: str) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text(content)
    code, out, stdout, stderr = cli("migrate", "--from", str(bad))
    assert code != 0 and expected in out["error"], stdout + stderr
    code, _, stdout, stderr = cli("migrate", "--from", str(bad), json_mode=False)
    assert code != 0 and stderr.count("\n") == 1 and "Traceback" not in stderr
    assert jobs_by_id(cli) == {}


def test_a_source_that_is_not_a_regular_file_or_too_big_is_refused_unread(
        cli: Callable[..., CliResult], tmp_path: Path) -> None:
    fifo = tmp_path / "jobs.fifo"
    os.mkfifo(fifo)  # opening it for reading would block forever
    code, out, _, _ = cli("migrate", "--from", str(fifo))
    assert code != 0 and "not a regular file" in out["error"]
    huge = tmp_path / "huge.json"
    with huge.open("wb") as handle:  # sparse: no disk used
        handle.truncate(64 * 1024 * 1024 + 1)
    code, out, _, _ = cli("migrate", "--from", str(huge))
    assert code != 0 and "larger than" in out["error"]
    assert jobs_by_id(cli) == {}


def test_no_source_says_where_it_looked(cli: Callable[..., CliResult], tmp_path: Path) -> None:
    code, out, _, _ = cli("migrate", "--from", str(tmp_path / "missing.json"))
    assert code != 0 and "no such file" in out["error"]
    code, out, _, _ = cli("migrate")
    assert code != 0 and "jobs.json" in out["error"] and "--from" in out["error"]


def test_an_id_taken_here_by_another_job_is_skipped_not_overwritten(
        cli: Callable[..., CliResult], tmp_path: Path) -> None:
    mine = add_job(cli, shell_job(name="mine", schedule_cron="0 5 * * *"))
    entry = {**BY_NAME["Morning brief"], "id": mine["id"]}
    _code, report, _, _ = cli("migrate", "--from", str(legacy_file(tmp_path / "j.json", [entry])))
    assert statuses(report) == {mine["id"]: "skip"}
    assert jobs_by_id(cli)[mine["id"]]["name"] == "mine"


def test_an_invalid_job_is_an_err_line_and_the_others_still_import(
        cli: Callable[..., CliResult], tmp_path: Path) -> None:
    broken = {**BY_NAME["Every ten"], "id": "broken-1", "schedule": {"kind": "cron", "expr": "61 * * * *"}}
    good = BY_NAME["Morning brief"]
    code, report, _, _ = cli("migrate", "--from", str(legacy_file(tmp_path / "j.json", [broken, good])))
    assert code == 1
    assert statuses(report) == {"broken-1": "err", good["id"]: "ok"}
    assert set(jobs_by_id(cli)) == {good["id"]}


# -- conversion rules (pure) ----------------------------------------------------------------------

@pytest.mark.parametrize(("every_ms", "expr", "exact"), [
    (30_000, "*/30 * * * * *", True),
    (60_000, "*/1 * * * *", True),
    (600_000, "*/10 * * * *", True),
    (3_600_000, "0 */1 * * *", True),
    (21_600_000, "0 */6 * * *", True),
    (86_400_000, "0 0 * * *", True),
    (604_800_000, "0 0 * * 0", True),
    (90_000, "*/2 * * * *", False),
    (7 * 60_000, "*/6 * * * *", False),
])
def test_every_is_exact_where_cron_can_be(every_ms: int, expr: str, exact: bool) -> None:
    warnings: list[str] = []
    assert cron_for_interval(every_ms, warnings) == expr
    assert (warnings == []) is exact


def test_at_is_a_real_one_shot_and_a_past_one_is_skipped() -> None:
    future = convert(BY_NAME["Once"], include_system=False, now=NOW, host_tz="UTC")
    assert future.status == "ok" and future.spec is not None
    assert future.spec["schedule_kind"] == "at" and "schedule_cron" not in future.spec
    past = convert({**BY_NAME["Once"], "schedule": {"kind": "at", "at": "2020-01-01T00:00:00Z"}},
                   include_system=False, now=NOW, host_tz="UTC")
    assert past.status == "skip" and "passed" in past.reason


def test_a_cron_without_tz_takes_the_host_zone() -> None:
    outcome = convert(BY_NAME["Hourly top"], include_system=False, now=NOW, host_tz="America/Chicago")
    assert outcome.spec is not None and outcome.spec["schedule_tz"] == "America/Chicago"
    assert any("staggerMs 300000" in w for w in outcome.warnings)


@pytest.mark.parametrize("change", [
    {"trigger": {"script": "json({fire: true})"}},
    {"schedule": {"kind": "on-exit", "command": "./watch.sh"}},
    {"payload": {"kind": "script", "source": "x"}},
])
def test_what_has_no_equivalent_is_an_error(change: dict[str, Any]) -> None:
    outcome = convert({**BY_NAME["Every ten"], **change}, include_system=False, now=NOW, host_tz="UTC")
    assert outcome.status == "err" and "no equivalent" in outcome.reason


def test_announce_to_the_last_route_is_turned_off_with_a_reason() -> None:
    entry = {**BY_NAME["Morning brief"], "delivery": {"mode": "announce", "channel": "last"}}
    outcome = convert(entry, include_system=False, now=NOW, host_tz="UTC")
    assert outcome.spec is not None and outcome.spec["delivery_mode"] == "none"
    assert outcome.spec["delivery_opt_out_reason"] and outcome.warnings


def test_an_argv_reaches_the_program_unchanged_through_the_shell(tmp_path: Path) -> None:
    words = ["a b", "it's", "$HOME", "`id`", "*", "semi;colon", "new\nline", "", "-n"]
    command = shell_command(["printf", "<%s>", *words], cwd=str(tmp_path / "dir with space"),
                            env={"GREETING": "hi there"}, stdin_text="from 'stdin'")
    (tmp_path / "dir with space").mkdir()
    done = subprocess.run(["bash", "-c", command], capture_output=True, text=True, timeout=30)
    assert done.stdout == "".join(f"<{w}>" for w in words)
    echo = shell_command(["sh", "-c", 'printf "%s|%s|%s" "$GREETING" "$(pwd)" "$(cat)"'],
                         cwd=str(tmp_path / "dir with space"), env={"GREETING": "hi there"},
                         stdin_text="from 'stdin'")
    done = subprocess.run(["bash", "-c", echo], capture_output=True, text=True, timeout=30)
    assert done.stdout == f"hi there|{tmp_path / 'dir with space'}|from 'stdin'"


def test_the_host_zone_comes_from_tz_when_it_names_a_zone() -> None:
    assert host_timezone({"TZ": "America/Chicago"}) == "America/Chicago"
    assert host_timezone({"TZ": ":Asia/Tokyo"}) == "Asia/Tokyo"
    assert host_timezone({"TZ": "Not/AZone"}) != "Not/AZone"


def test_an_id_listed_twice_is_imported_once(cli: Callable[..., CliResult], tmp_path: Path) -> None:
    entry = BY_NAME["Morning brief"]
    code, report, _, _ = cli("migrate", "--from", str(legacy_file(tmp_path / "j.json", [entry, entry])))
    assert [job["status"] for job in report["jobs"]] == ["ok", "skip"]
    assert "duplicate" in report["jobs"][1]["reason"] and code == 0
    assert set(jobs_by_id(cli)) == {entry["id"]}
