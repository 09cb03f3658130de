"""``service install | uninstall | status``: the generated systemd unit (checked by the real
``systemd-analyze verify``) and launchd plist (parsed by plistlib), dry runs that touch nothing,
and the refusal of a second scheduler on one database.

No systemd manager runs in a test container, so the install/uninstall round trip puts a small
``systemctl`` stand-in first on PATH that records its arguments: the only mock here, for the one
part that cannot be real.
"""

from __future__ import annotations

import os
import plistlib
import shutil
import stat
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from conftest import CliResult, DaemonFactory

TOKEN = "test-token-5f1c9a7e2b"
REQUIRE_ANALYZE = os.environ.get("SCHEDULER_TEST_REQUIRE_SYSTEMD_ANALYZE") == "1"

Cli = Callable[..., CliResult]


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return {"XDG_CONFIG_HOME": str(tmp_path / "config"), "OPENCLAW_GATEWAY_TOKEN": TOKEN,
            "SCHEDULER_TICK_MS": "5000"}


@pytest.fixture
def fake_systemctl(tmp_path: Path) -> Path:
    """A ``systemctl`` that logs each call and answers is-enabled/is-active like an enabled unit."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "systemctl.log"
    script = bin_dir / "systemctl"
    script.write_text(
        "#!/bin/sh\n"
        f'echo "$*" >> {log}\n'
        'case "$*" in *is-enabled*) echo enabled;; *is-active*) echo active;;\n'
        '  *MainPID*) echo "${FAKE_MAIN_PID:-0}";; esac\n'
    )
    script.chmod(0o755)
    return log


def _path_with(log: Path) -> str:
    return f"{log.parent / 'bin'}:{os.environ['PATH']}"


def _dry_run(cli: Cli, env: dict[str, str], *options: str) -> dict[str, Any]:
    code, out, stdout, stderr = cli("service", "install", "--dry-run", *options, env=env)
    assert code == 0, stdout + stderr
    assert out["dry_run"] is True
    return dict(out)


def _file(plan: dict[str, Any], suffix: str) -> dict[str, Any]:
    found = [f for f in plan["files"] if f["path"].endswith(suffix)]
    assert found, plan["files"]
    return dict(found[0])


def _systemd_analyze() -> str:
    tool = shutil.which("systemd-analyze")
    if tool is None:
        if REQUIRE_ANALYZE:
            pytest.fail("systemd-analyze is required here (SCHEDULER_TEST_REQUIRE_SYSTEMD_ANALYZE=1)")
        pytest.skip("systemd-analyze is not installed (Debian package systemd)")
    return tool


@pytest.mark.parametrize("scope", [(), ("--system",)], ids=["user", "system"])
def test_the_unit_passes_systemd_analyze_verify(cli: Cli, env: dict[str, str], tmp_path: Path,
                                                scope: tuple[str, ...]) -> None:
    tool = _systemd_analyze()
    unit = _file(_dry_run(cli, env, *scope), ".service")
    path = tmp_path / "openclaw-scheduler.service"
    path.write_text(unit["content"])
    done = subprocess.run([tool, "verify", str(path)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "openclaw-scheduler.service" not in done.stderr, done.stderr  # no warning about it


def test_the_unit_is_notify_with_watchdog_restart_and_no_token(cli: Cli, env: dict[str, str],
                                                                db_path: Path) -> None:
    plan = _dry_run(cli, env)
    unit = _file(plan, ".service")["content"]
    lines = set(unit.splitlines())
    for wanted in ("Type=notify", "Restart=on-failure", "NoNewPrivileges=yes",
                   "StandardOutput=journal", "StandardError=journal", "KillMode=mixed",
                   f"Environment=SCHEDULER_DB={db_path}", "WantedBy=default.target"):
        assert wanted in lines, (wanted, unit)
    assert any(line.startswith("WatchdogSec=") for line in lines)
    assert any(line.startswith("EnvironmentFile=") for line in lines)
    assert any(line.startswith("ExecStart=") and line.endswith(" -P -m scheduler") for line in lines)
    assert TOKEN not in str(plan)  # neither in the unit nor in the printed environment file
    assert plan["commands"] == ["systemctl --user daemon-reload",
                                "systemctl --user enable --now openclaw-scheduler.service"]


def test_a_system_unit_runs_as_the_installing_user(cli: Cli, env: dict[str, str]) -> None:
    plan = _dry_run(cli, env, "--system")
    unit = _file(plan, ".service")
    assert unit["path"] == "/etc/systemd/system/openclaw-scheduler.service"
    import pwd

    assert f"User={pwd.getpwuid(os.getuid()).pw_name}" in unit["content"].splitlines()
    assert "WantedBy=multi-user.target" in unit["content"].splitlines()
    assert plan["commands"][0] == "systemctl daemon-reload"


def test_the_launchd_plist_parses(cli: Cli, env: dict[str, str], db_path: Path) -> None:
    plan = _dry_run(cli, env, "--manager", "launchd")
    plist = _file(plan, ".plist")
    assert plist["path"].endswith("Library/LaunchAgents/ai.openclaw.scheduler.plist")
    document = plistlib.loads(plist["content"].encode())
    assert document["Label"] == "ai.openclaw.scheduler"
    assert document["ProgramArguments"][1:] == ["-P", "-m", "scheduler"]
    assert document["RunAtLoad"] is True
    assert document["KeepAlive"] == {"SuccessfulExit": False}
    variables = document["EnvironmentVariables"]
    assert variables["SCHEDULER_DB"] == str(db_path)
    assert variables["SCHEDULER_TICK_MS"] == "5000"  # the installing environment's settings
    assert "OPENCLAW_GATEWAY_TOKEN" not in variables  # a 0600 token file instead
    assert _file(plan, "gateway-token")["mode"] == "0600"
    assert TOKEN not in str(plan)


def test_a_dry_run_touches_nothing(cli: Cli, env: dict[str, str], tmp_path: Path) -> None:
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    code, _, stdout, stderr = cli("service", "install", "--dry-run", env=env, json_mode=False)
    assert code == 0, stderr
    assert "systemctl --user enable --now openclaw-scheduler.service" in stdout
    assert "OPENCLAW_GATEWAY_TOKEN=<redacted>" in stdout
    assert TOKEN not in stdout
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before


def test_install_status_uninstall_round_trip(cli: Cli, env: dict[str, str], tmp_path: Path,
                                             fake_systemctl: Path) -> None:
    env = {**env, "PATH": _path_with(fake_systemctl)}
    code, _, stdout, stderr = cli("service", "install", env=env)
    assert code == 0, stdout + stderr
    unit = tmp_path / "config/systemd/user/openclaw-scheduler.service"
    env_file = tmp_path / "config/openclaw-scheduler/scheduler.env"
    assert stat.S_IMODE(env_file.stat().st_mode) == 0o600
    assert f"OPENCLAW_GATEWAY_TOKEN='{TOKEN}'" in env_file.read_text().splitlines()
    assert TOKEN not in unit.read_text()
    assert fake_systemctl.read_text().splitlines() == [
        "--user daemon-reload", "--user enable --now openclaw-scheduler.service"]

    code, status, stdout, stderr = cli("service", "status", env=env)
    assert code == 0, stdout + stderr
    assert (status["installed"], status["enabled"], status["running"]) == (True, True, True)
    assert status["daemon"]["running"] is False

    code, _out, stdout, stderr = cli("service", "uninstall", env=env)
    assert code == 0, stdout + stderr
    assert not unit.exists() and not env_file.exists()
    assert fake_systemctl.read_text().splitlines()[4:] == [
        "--user disable --now openclaw-scheduler.service", "--user daemon-reload"]
    code, status, _, _ = cli("service", "status", env=env)
    assert status["installed"] is False


def test_install_refuses_a_database_a_daemon_already_serves(cli: Cli, env: dict[str, str],
                                                            daemon: DaemonFactory,
                                                            tmp_path: Path) -> None:
    daemon()
    code, out, _stdout, _ = cli("service", "install", "--dry-run", env=env)
    assert code == 3
    assert out["ok"] is False and "already serves" in out["error"]
    assert not (tmp_path / "config").exists()


def test_install_refuses_a_database_another_unit_runs(cli: Cli, env: dict[str, str],
                                                      db_path: Path, tmp_path: Path,
                                                      fake_systemctl: Path) -> None:
    other = tmp_path / "config/systemd/user/openclaw-scheduler-old.service"
    other.parent.mkdir(parents=True)
    other.write_text(f'[Service]\nEnvironment="SCHEDULER_DB={db_path}"\nExecStart=/bin/true\n')
    env = {**env, "PATH": _path_with(fake_systemctl)}
    code, out, _, _ = cli("service", "install", env=env)
    assert code == 3
    assert str(other) in out["error"]
    assert not (tmp_path / "config/systemd/user/openclaw-scheduler.service").exists()
    assert not fake_systemctl.exists()  # nothing was run


def test_a_failing_systemctl_is_one_line_and_non_zero(cli: Cli, env: dict[str, str],
                                                      tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "systemctl").write_text("#!/bin/sh\necho 'Failed to connect to bus' >&2\nexit 1\n")
    (bin_dir / "systemctl").chmod(0o755)
    code, _, _stdout, stderr = cli("service", "install", json_mode=False,
                                  env={**env, "PATH": f"{bin_dir}:{os.environ['PATH']}"})
    assert code != 0
    assert stderr.strip().splitlines() == [
        "error: `systemctl --user daemon-reload` failed (exit 1): Failed to connect to bus"]


def test_an_unknown_manager_is_refused(cli: Cli, env: dict[str, str]) -> None:
    code, out, _, _ = cli("service", "install", "--dry-run", "--manager", "upstart", env=env)
    assert code != 0 and "unknown service manager" in out["error"]


def test_reinstalling_over_the_running_service_restarts_it(cli: Cli, env: dict[str, str],
                                                           daemon: DaemonFactory, tmp_path: Path,
                                                           fake_systemctl: Path) -> None:
    env = {**env, "PATH": _path_with(fake_systemctl)}
    assert cli("service", "install", env=env)[0] == 0
    running = daemon()  # as if systemd had started it
    stranger = {**env, "FAKE_MAIN_PID": str(running.pid + 1)}
    code, out, _, _ = cli("service", "install", env=stranger)
    assert code == 3 and "already serves" in out["error"]
    code, out, stdout, stderr = cli("service", "install", env={**env, "FAKE_MAIN_PID": str(running.pid)})
    assert code == 0, stdout + stderr
    assert out["commands"][-1] == "systemctl --user restart openclaw-scheduler.service"
    assert fake_systemctl.read_text().splitlines()[-1] == "--user restart openclaw-scheduler.service"


def test_a_database_path_with_a_space_and_a_percent_sign(env: dict[str, str], tmp_path: Path,
                                                         fake_systemctl: Path) -> None:
    """Unit files resolve %-specifiers and split words: the path must survive both, for systemd
    and for the check that finds another unit on the same database."""
    from conftest import run_cli

    odd = tmp_path / "my dir%h" / "scheduler.db"
    code, out, stdout, stderr = run_cli(odd, "service", "install", "--dry-run", env=env)
    assert code == 0, stdout + stderr
    path = tmp_path / "openclaw-scheduler.service"
    path.write_text(_file(out, ".service")["content"])
    done = subprocess.run([_systemd_analyze(), "verify", str(path)], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0 and "openclaw-scheduler.service" not in done.stderr, done.stderr
    env = {**env, "PATH": _path_with(fake_systemctl)}
    assert run_cli(odd, "service", "install", env=env)[0] == 0
    other = tmp_path / "config/systemd/user/openclaw-scheduler.service"
    other.rename(other.with_name("openclaw-scheduler-copy.service"))
    code, out, _, _ = run_cli(odd, "service", "install", env=env)
    assert code == 3 and "openclaw-scheduler-copy.service" in out["error"], out

