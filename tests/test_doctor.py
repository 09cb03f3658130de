"""``doctor``: a healthy installation passes (exit 0); each broken part is named with its fix."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

from conftest import CliResult, DaemonFactory, add_job, shell_job
from fakegateway import FakeGateway

Cli = Callable[..., CliResult]
TOKEN = "doctor-test-token"


def healthy_setup(cli: Cli, db_path: Path, gateway: FakeGateway) -> dict[str, str]:
    """A database with a job, a 0600 token file, a user unit file; the env pointing at them."""
    add_job(cli, shell_job(name="nightly", schedule_cron="0 3 * * *"))
    home = db_path.parent
    token = home / "gateway-token"
    token.write_text(TOKEN + "\n")
    token.chmod(0o600)
    unit = home / ".config" / "systemd" / "user" / "openclaw-scheduler.service"
    unit.parent.mkdir(parents=True)
    unit.write_text(f"[Service]\nEnvironment=SCHEDULER_DB={db_path}\nExecStart=/bin/true\n")
    gateway.token = TOKEN
    return {"OPENCLAW_GATEWAY_URL": gateway.url, "OPENCLAW_GATEWAY_TOKEN_PATH": str(token),
            "SCHEDULER_SHELL": "/bin/sh"}


def by_name(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["name"]: c for c in report["checks"]}


def test_a_healthy_installation_passes(cli: Cli, db_path: Path, daemon: DaemonFactory,
                                       fake_gateway: FakeGateway) -> None:
    env = healthy_setup(cli, db_path, fake_gateway)
    d = daemon(env)
    code, report, stdout, stderr = cli("doctor", env=env)
    assert code == 0, stdout + stderr
    assert report["ok"] is True and report["failures"] == 0
    checks = by_name(report)
    assert {n: c["verdict"] for n, c in checks.items() if c["verdict"] != "PASS"} == {}
    assert "answers" in checks["gateway"]["detail"]
    assert f"pid {d.pid}" in checks["daemon"]["detail"]
    assert "installed" in checks["service"]["detail"]
    assert fake_gateway.requests_to("/health")  # it really asked
    code, _, stdout, _ = cli("doctor", env=env, json_mode=False)
    assert code == 0 and "all checks passed" in stdout and "FAIL" not in stdout
    assert d.stop() == 0


def test_each_broken_part_fails_with_its_fix(cli: Cli, db_path: Path, fake_gateway: FakeGateway,
                                             tmp_path: Path) -> None:
    env = healthy_setup(cli, db_path, fake_gateway)
    bad = add_job(cli, shell_job(name="croner only", schedule_cron="0 3 * * *"))
    with sqlite3.connect(db_path) as conn:  # behind the validator, as a reference database may hold it
        conn.execute("UPDATE jobs SET schedule_cron = '0 0 5L * *' WHERE id = ?", (bad["id"],))
    Path(env["OPENCLAW_GATEWAY_TOKEN_PATH"]).chmod(0o644)
    db_path.chmod(0o644)
    fake_gateway.stop()
    env["SCHEDULER_SHELL"] = str(tmp_path / "no-such-shell")

    code, report, stdout, stderr = cli("doctor", env=env)
    assert code == 1, stdout + stderr
    assert report["ok"] is False
    failed = {c["name"]: c for c in report["checks"] if c["verdict"] == "FAIL"}
    assert set(failed) == {"database permissions", "gateway token file", "gateway", "shell",
                           f"schedule of job {bad['id']}"}
    assert failed["database permissions"]["fix"] == f"chmod 600 {db_path}"
    assert failed["gateway token file"]["fix"] == f"chmod 600 {env['OPENCLAW_GATEWAY_TOKEN_PATH']}"
    assert "OPENCLAW_GATEWAY_URL" in failed["gateway"]["fix"]
    assert "SCHEDULER_SHELL" in failed["shell"]["fix"]
    schedule = failed[f"schedule of job {bad['id']}"]
    assert "5L" in schedule["detail"] and f"jobs update {bad['id']}" in schedule["fix"]

    code, _, stdout, stderr = cli("doctor", env=env, json_mode=False)
    assert code == 1 and "5 check(s) failed" in stdout
    assert stdout.count("fix: ") >= 5 and stderr == ""  # no log lines, no traceback


def test_a_missing_database_fails_without_creating_it(cli: Cli, db_path: Path) -> None:
    code, report, _, _ = cli("doctor", env={"OPENCLAW_GATEWAY_URL": "http://127.0.0.1:9"})
    assert code == 1
    assert by_name(report)["database"]["verdict"] == "FAIL"
    assert not db_path.exists()


def test_a_bad_setting_is_a_failure_not_a_traceback(cli: Cli) -> None:
    code, report, _, stderr = cli("doctor", env={"SCHEDULER_TICK_MS": "5"})
    assert code == 1 and "Traceback" not in stderr
    assert by_name(report)["settings"]["verdict"] == "FAIL"
    assert "SCHEDULER_TICK_MS" in by_name(report)["settings"]["detail"]


def test_doctor_takes_no_arguments(cli: Cli) -> None:
    code, report, _, _ = cli("doctor", "extra")
    assert code == 2 and report["ok"] is False
    assert report["error"] == "unexpected argument 'extra'; usage: openclaw-scheduler doctor [--json]"


def test_a_unit_for_another_database_is_not_this_ones_service(
        cli: Cli, db_path: Path, fake_gateway: FakeGateway) -> None:
    env = healthy_setup(cli, db_path, fake_gateway)
    unit = db_path.parent / ".config" / "systemd" / "user" / "openclaw-scheduler.service"
    unit.write_text("[Service]\nEnvironment=SCHEDULER_DB=/srv/other/scheduler.db\n"
                    "ExecStart=/bin/true\n")
    _code, report, _, _ = cli("doctor", env=env)
    service = by_name(report)["service"]
    assert service["verdict"] == "WARN" and "another database" in service["detail"]
    assert str(unit) in service["detail"]
