"""Shell strategy: real subprocesses, process-group cleanup, env scrubbing, output normalisation."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import stat
import sys
import time
from pathlib import Path

import pytest

from scheduler.strategies.shell import (
    SECRET_NAME_PARTS,
    ShellProcessResult,
    default_shell,
    run_shell_command,
    scrubbed_environment,
)
from scheduler.strategies.shell_output import (
    TRUNCATION_SUFFIX,
    OutputLimits,
    normalize_shell_result,
    truncate_utf8,
)

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX process groups")

SHELL = "/bin/bash" if os.path.exists("/bin/bash") else "/bin/sh"
ENV = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C"}


def _alive(pid: int) -> bool:
    """True while ``pid`` is a live process (a zombie counts as dead: init may be slow to reap)."""
    stat_path = Path(f"/proc/{pid}/stat")
    if Path("/proc/self/stat").exists():
        try:
            text = stat_path.read_text()
        except (FileNotFoundError, ProcessLookupError):
            return False
        state = text.rsplit(")", 1)[1].split()[0]
        return state not in ("Z", "X")
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


async def _gone(pid: int, within_s: float = 5.0) -> bool:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        if not _alive(pid):
            return True
        await asyncio.sleep(0.05)
    return not _alive(pid)


def _pid_in(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except FileNotFoundError:
        return None
    return int(text) if text else None


async def _read_pid(path: Path, within_s: float = 5.0) -> int:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        pid = _pid_in(path)
        if pid is not None:
            return pid
        await asyncio.sleep(0.02)
    raise AssertionError(f"{path} was never written")


def _mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def _read(path: str) -> str:
    with open(path, encoding="utf-8") as handle:
        return handle.read()


def _result(**overrides: object) -> ShellProcessResult:
    values: dict[str, object] = {
        "exit_code": 0,
        "signal": None,
        "timed_out": False,
        "cancelled": False,
        "stdout": b"",
        "stderr": b"",
        "stdout_total_bytes": 0,
        "stderr_total_bytes": 0,
        "pid": 1234,
        "spawn_error": None,
        "started_monotonic": 0.0,
        "finished_monotonic": 1.0,
    }
    values.update(overrides)
    if "stdout" in overrides and "stdout_total_bytes" not in overrides:
        values["stdout_total_bytes"] = len(overrides["stdout"])  # type: ignore[arg-type]
    if "stderr" in overrides and "stderr_total_bytes" not in overrides:
        values["stderr_total_bytes"] = len(overrides["stderr"])  # type: ignore[arg-type]
    return ShellProcessResult(**values)  # type: ignore[arg-type]


# --- helpers -------------------------------------------------------------------------------------


def test_default_shell() -> None:
    expected = "/bin/zsh" if sys.platform == "darwin" else "/bin/bash"
    assert default_shell() == expected


def test_scrubbed_environment_rules() -> None:
    environ = {
        "PATH": "/bin",
        "HOME": "/root",
        "OPENCLAW_GATEWAY_TOKEN": "t",
        "FOO_API_KEY": "k",
        "db_password": "p",
        "AWS_SECRET_ACCESS_KEY": "s",
        "GITHUB_TOKEN": "g",
        "MY_TOKEN": "allowed",
    }
    env = scrubbed_environment(environ, allow=["MY_TOKEN"])
    assert env == {"PATH": "/bin", "HOME": "/root", "MY_TOKEN": "allowed"}
    # No allow-list passes the gateway token on.
    env = scrubbed_environment(environ, allow=["MY_TOKEN", "OPENCLAW_GATEWAY_TOKEN"])
    assert "OPENCLAW_GATEWAY_TOKEN" not in env and env["MY_TOKEN"] == "allowed"
    # The rule only ever widens: the original four parts still count.
    assert {"TOKEN", "SECRET", "PASSWORD", "KEY"} <= set(SECRET_NAME_PARTS)


def test_output_limits_from_job() -> None:
    assert OutputLimits.from_job({}) == OutputLimits(65536, 2000, 5000, 65536)
    limits = OutputLimits.from_job(
        {
            "output_store_limit_bytes": 100,
            "output_excerpt_limit_bytes": None,
            "output_summary_limit_bytes": "300",
            "output_offload_threshold_bytes": 400,
        }
    )
    assert limits == OutputLimits(store=100, excerpt=2000, summary=300, offload_threshold=400)


@pytest.mark.parametrize("limit", range(0, 40))
def test_truncate_utf8_never_splits_a_character(limit: int) -> None:
    text = "aé€😀" * 10  # 1-, 2-, 3- and 4-byte characters
    out, truncated = truncate_utf8(text, limit)
    encoded = out.encode("utf-8")
    encoded.decode("utf-8", "strict")
    assert "\ufffd" not in out
    assert truncated == (len(text.encode()) > limit)
    if truncated:
        assert out.endswith(TRUNCATION_SUFFIX)
        assert len(encoded) <= max(limit, len(TRUNCATION_SUFFIX))
        assert text.startswith(out[: -len(TRUNCATION_SUFFIX)])


# --- real processes ------------------------------------------------------------------------------


async def test_ok_exit_with_stdout(tmp_path: Path) -> None:
    spawned: list[int] = []
    result = await run_shell_command(
        "echo hello; printf 'x%.0s' 1 2 3", shell=SHELL, timeout_s=10, env=ENV, on_spawn=spawned.append
    )
    assert result.exit_code == 0 and result.signal is None and not result.timed_out
    assert result.stdout == b"hello\nxxx"
    assert result.stdout_total_bytes == 9
    assert result.spawn_error is None
    assert spawned == [result.pid] and result.pid > 0
    assert result.finished_monotonic >= result.started_monotonic

    fields = normalize_shell_result(
        result, limits=OutputLimits(), run_id="r1", artifacts_dir=tmp_path, timeout_ms=10000
    )
    assert fields.status == "ok"
    assert fields.error_message is None
    assert fields.shell_exit_code is None  # as in the reference: NULL on success
    assert fields.shell_timed_out == 0
    assert fields.shell_stdout == "hello\nxxx"
    assert fields.delivery_text == "stdout:\nhello\nxxx"
    assert fields.summary == fields.delivery_text
    shell_result = json.loads(fields.context_summary)["shell_result"]
    assert set(shell_result) == {
        "exit_code",
        "signal",
        "timed_out",
        "error_message",
        "stdout_excerpt",
        "stderr_excerpt",
        "stdout_truncated",
        "stderr_truncated",
        "stdout_path",
        "stderr_path",
        "stdout_bytes",
        "stderr_bytes",
    }
    columns = fields.as_run_columns()
    assert "status" not in columns and "delivery_text" not in columns
    assert columns["shell_stdout_bytes"] == 9


async def test_nonzero_exit_with_stderr(tmp_path: Path) -> None:
    result = await run_shell_command("echo out; echo oops >&2; exit 7", shell=SHELL, timeout_s=10, env=ENV)
    assert result.exit_code == 7 and result.signal is None
    assert result.stderr == b"oops\n"
    fields = normalize_shell_result(
        result, limits=OutputLimits(), run_id="r2", artifacts_dir=tmp_path, timeout_ms=10000
    )
    assert fields.status == "error"
    assert fields.error_message == "Shell exited with code 7"
    assert fields.shell_exit_code == 7
    assert fields.shell_stderr == "oops"
    assert fields.delivery_text == "stdout:\nout\n\nstderr:\noops"


async def test_killed_by_signal(tmp_path: Path) -> None:
    result = await run_shell_command("kill -TERM $$; sleep 5", shell=SHELL, timeout_s=10, env=ENV)
    assert result.exit_code is None
    assert result.signal == "SIGTERM"
    assert not result.timed_out
    fields = normalize_shell_result(
        result, limits=OutputLimits(), run_id="r3", artifacts_dir=tmp_path, timeout_ms=10000
    )
    assert fields.status == "error"
    assert fields.error_message == "Shell terminated by signal SIGTERM"
    assert fields.shell_signal == "SIGTERM"
    assert fields.delivery_text == "Shell terminated by signal SIGTERM"


async def test_timeout_kills_grandchild(tmp_path: Path) -> None:
    pidfile = tmp_path / "grandchild.pid"
    started = time.monotonic()
    result = await run_shell_command(
        f"sleep 30 & echo $! > {pidfile}; wait", shell=SHELL, timeout_s=1, env=ENV, kill_grace_s=1
    )
    assert time.monotonic() - started < 10
    assert result.timed_out
    grandchild = await _read_pid(pidfile)
    assert await _gone(grandchild)
    assert await _gone(result.pid)
    fields = normalize_shell_result(
        result, limits=OutputLimits(), run_id="r4", artifacts_dir=tmp_path, timeout_ms=1000
    )
    assert fields.status == "timeout"
    assert fields.error_message == "Shell command timed out after 1000ms"
    assert fields.shell_timed_out == 1


async def test_timeout_escalates_to_sigkill_when_term_is_ignored(tmp_path: Path) -> None:
    pidfile = tmp_path / "grandchild.pid"
    started = time.monotonic()
    result = await run_shell_command(
        f"trap '' TERM; sleep 30 & echo $! > {pidfile}; wait; sleep 30",
        shell=SHELL,
        timeout_s=1,
        env=ENV,
        kill_grace_s=0.5,
    )
    assert time.monotonic() - started < 10
    assert result.timed_out
    assert result.signal == "SIGKILL"
    assert await _gone(await _read_pid(pidfile))


async def test_background_job_does_not_survive_normal_exit(tmp_path: Path) -> None:
    pidfile = tmp_path / "bg.pid"
    started = time.monotonic()
    # The background sleep keeps stdout open; the run must still end when the shell does.
    result = await run_shell_command(
        f"sleep 30 & echo $! > {pidfile}; echo done", shell=SHELL, timeout_s=20, env=ENV
    )
    assert time.monotonic() - started < 10
    assert result.exit_code == 0 and not result.timed_out
    assert result.stdout == b"done\n"
    assert await _gone(await _read_pid(pidfile))


@pytest.mark.skipif(shutil.which("setsid") is None, reason="needs setsid(1)")
async def test_escaped_process_holding_pipes_does_not_hang(tmp_path: Path) -> None:
    pidfile = tmp_path / "escaped.pid"
    started = time.monotonic()
    result = await run_shell_command(
        f"setsid sleep 30 & echo $! > {pidfile}; echo done",
        shell=SHELL,
        timeout_s=20,
        env=ENV,
        kill_grace_s=0.2,
    )
    try:
        assert time.monotonic() - started < 10
        assert result.exit_code == 0
        assert result.stdout.startswith(b"done")
    finally:
        pid = await _read_pid(pidfile)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, 9)


async def test_cancellation_kills_group_and_reraises(tmp_path: Path) -> None:
    pidfile = tmp_path / "grandchild.pid"
    spawned: list[int] = []
    task = asyncio.create_task(
        run_shell_command(
            f"trap '' TERM; sleep 30 & echo $! > {pidfile}; wait; sleep 30",
            shell=SHELL,
            timeout_s=60,
            env=ENV,
            kill_grace_s=0.5,
            on_spawn=spawned.append,
        )
    )
    grandchild = await _read_pid(pidfile)
    started = time.monotonic()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert time.monotonic() - started < 10
    assert spawned and spawned[0] > 0
    assert await _gone(grandchild)
    assert await _gone(spawned[0])


async def test_cancelled_result_is_recorded_as_cancelled(tmp_path: Path) -> None:
    fields = normalize_shell_result(
        _result(cancelled=True, exit_code=None, signal="SIGTERM", stdout=b"partial\n"),
        limits=OutputLimits(),
        run_id="r5",
        artifacts_dir=tmp_path,
        timeout_ms=1000,
    )
    assert fields.status == "cancelled"
    assert fields.error_message == "Cancelled: daemon shutdown"
    assert fields.shell_stdout == "partial"


async def test_environment_is_scrubbed_in_the_child() -> None:
    environ = dict(ENV)
    environ.update(
        OPENCLAW_GATEWAY_TOKEN="gw-secret",
        FOO_API_KEY="api-secret",
        DB_PASSWORD="db-secret",
        DEPLOY_TOKEN="allowed-value",
    )
    env = scrubbed_environment(environ, allow=["DEPLOY_TOKEN"])
    result = await run_shell_command("env", shell=SHELL, timeout_s=10, env=env)
    output = result.stdout.decode()
    assert result.exit_code == 0
    for secret in ("OPENCLAW_GATEWAY_TOKEN", "FOO_API_KEY", "DB_PASSWORD", "gw-secret", "db-secret"):
        assert secret not in output
    assert f"PATH={ENV['PATH']}" in output.splitlines()
    assert "DEPLOY_TOKEN=allowed-value" in output.splitlines()


async def test_large_output_is_offloaded(tmp_path: Path) -> None:
    result = await run_shell_command("yes abcdefghi | head -c 200000", shell=SHELL, timeout_s=20, env=ENV)
    assert result.exit_code == 0
    assert result.stdout_total_bytes == 200000
    artifacts = tmp_path / "artifacts"
    fields = normalize_shell_result(
        result, limits=OutputLimits(), run_id="big-run", artifacts_dir=artifacts, timeout_ms=20000
    )
    assert fields.status == "ok"
    assert fields.shell_stdout_path is not None
    path = Path(fields.shell_stdout_path)
    assert path == (artifacts / "runs" / "big-run" / "stdout.txt").absolute()
    assert _mode(path) == 0o600
    assert _mode(path.parent) == 0o700
    assert _mode(artifacts / "runs") == 0o700
    assert len(_read(str(path))) == 200000
    assert fields.shell_stdout_bytes == 200000
    # Offloaded: the column keeps only min(store, excerpt) bytes.
    assert fields.shell_stdout.endswith(TRUNCATION_SUFFIX)
    assert len(fields.shell_stdout.encode()) <= 2000
    assert fields.shell_stderr_path is None
    assert f"[stdout offloaded: {path} (200000 bytes)]" in fields.delivery_text
    assert len(fields.summary.encode()) <= 5000
    shell_result = json.loads(fields.context_summary)["shell_result"]
    assert shell_result["stdout_truncated"] is True
    assert shell_result["stdout_path"] == str(path)


async def test_multibyte_output_truncation(tmp_path: Path) -> None:
    # 3-byte characters; limits chosen so a naive byte cut would split one.
    result = await run_shell_command(
        "for i in $(seq 1 400); do printf '€é'; done",
        shell=SHELL,
        timeout_s=10,
        env={**ENV, "LC_ALL": "C.UTF-8"},
    )
    assert result.exit_code == 0
    fields = normalize_shell_result(
        result,
        limits=OutputLimits(store=1001, excerpt=500, summary=301, offload_threshold=1_000_000),
        run_id="mb",
        artifacts_dir=tmp_path,
        timeout_ms=10000,
    )
    for text, limit in ((fields.shell_stdout, 1001), (fields.summary, 301)):
        encoded = text.encode("utf-8")
        encoded.decode("utf-8", "strict")
        assert "\ufffd" not in text
        assert text.endswith(TRUNCATION_SUFFIX)
        assert len(encoded) <= limit
    excerpt = json.loads(fields.context_summary)["shell_result"]["stdout_excerpt"]
    assert len(excerpt.encode()) <= 500 and "\ufffd" not in excerpt


async def test_missing_shell_binary_gives_spawn_error(tmp_path: Path) -> None:
    result = await run_shell_command("echo hi", shell=str(tmp_path / "no-such-shell"), timeout_s=10, env=ENV)
    assert result.spawn_error is not None and "no-such-shell" in result.spawn_error
    assert result.exit_code is None and result.signal is None
    fields = normalize_shell_result(
        result, limits=OutputLimits(), run_id="r6", artifacts_dir=tmp_path, timeout_ms=10000
    )
    assert fields.status == "error"
    assert fields.error_message == result.spawn_error
    assert fields.delivery_text == result.spawn_error


async def test_missing_cwd_gives_spawn_error(tmp_path: Path) -> None:
    result = await run_shell_command("true", shell=SHELL, timeout_s=10, env=ENV, cwd=str(tmp_path / "nope"))
    assert result.spawn_error is not None


async def test_output_beyond_capture_limit_does_not_deadlock(tmp_path: Path) -> None:
    started = time.monotonic()
    result = await run_shell_command(
        "yes 0123456789 | head -c 3000000; yes e | head -c 1000000 >&2",
        shell=SHELL,
        timeout_s=30,
        env=ENV,
        capture_limit_bytes=4096,
    )
    assert time.monotonic() - started < 20
    assert result.exit_code == 0 and not result.timed_out
    assert len(result.stdout) == 4096 and result.stdout_total_bytes == 3_000_000
    assert len(result.stderr) == 4096 and result.stderr_total_bytes == 1_000_000
    fields = normalize_shell_result(
        result, limits=OutputLimits(), run_id="cap", artifacts_dir=tmp_path, timeout_ms=30000
    )
    assert "capture limit reached: kept 4096 of 3000000 bytes" in fields.shell_stdout
    assert "capture limit reached: kept 4096 of 1000000 bytes" in fields.shell_stderr
    assert fields.shell_stdout_bytes == 3_000_000
    assert fields.shell_stdout_path is not None
    assert "capture limit reached" in _read(fields.shell_stdout_path)
    assert len(fields.shell_stdout.encode()) <= 2000


def test_capture_cut_is_noted_even_below_store_limit(tmp_path: Path) -> None:
    fields = normalize_shell_result(
        _result(stdout=b"abc", stdout_total_bytes=10),
        limits=OutputLimits(),
        run_id="r7",
        artifacts_dir=tmp_path,
        timeout_ms=1000,
    )
    assert fields.shell_stdout == "abc\n[stdout capture limit reached: kept 3 of 10 bytes]"
    assert json.loads(fields.context_summary)["shell_result"]["stdout_truncated"] is True


def test_offload_failure_keeps_the_run_data(tmp_path: Path) -> None:
    blocker = tmp_path / "artifacts"
    blocker.write_text("not a directory")
    big = b"x" * 100_000
    fields = normalize_shell_result(
        _result(stdout=big), limits=OutputLimits(), run_id="r8", artifacts_dir=blocker, timeout_ms=1000
    )
    assert fields.status == "ok"
    assert fields.shell_stdout_path is None
    assert fields.error_message is not None and fields.error_message.startswith("stdout offload failed:")
    # Not offloaded, so the column keeps the store limit.
    assert fields.shell_stdout.endswith(TRUNCATION_SUFFIX)
    assert 60000 < len(fields.shell_stdout.encode()) <= 65536
    assert fields.shell_stdout_bytes == 100_000


def test_offload_failure_is_appended_to_an_existing_error(tmp_path: Path) -> None:
    blocker = tmp_path / "artifacts"
    blocker.write_text("")
    fields = normalize_shell_result(
        _result(exit_code=2, stderr=b"e" * 70_000),
        limits=OutputLimits(),
        run_id="r9",
        artifacts_dir=blocker,
        timeout_ms=1000,
    )
    assert fields.status == "error"
    assert fields.error_message is not None
    assert fields.error_message.startswith("Shell exited with code 2; stderr offload failed:")


def test_unsafe_run_id_is_not_used_as_a_path(tmp_path: Path) -> None:
    fields = normalize_shell_result(
        _result(stdout=b"y" * 70_000),
        limits=OutputLimits(),
        run_id="../../etc",
        artifacts_dir=tmp_path / "a",
        timeout_ms=1000,
    )
    assert fields.shell_stdout_path is None
    assert fields.error_message is not None and "offload failed" in fields.error_message
    assert not (tmp_path / "etc").exists()


def test_no_output_preview() -> None:
    fields = normalize_shell_result(
        _result(), limits=OutputLimits(), run_id="r10", artifacts_dir=Path("/nonexistent"), timeout_ms=1
    )
    assert fields.delivery_text == "(no output)"
    assert fields.summary == "(no output)"


async def test_heartbeat_is_called_and_its_errors_swallowed(caplog: pytest.LogCaptureFixture) -> None:
    calls = 0

    async def beat() -> None:
        nonlocal calls
        calls += 1
        raise RuntimeError("heartbeat store is down")

    result = await run_shell_command(
        "sleep 0.6", shell=SHELL, timeout_s=10, env=ENV, heartbeat=beat, heartbeat_interval_s=0.1
    )
    assert result.exit_code == 0
    assert calls >= 2
    assert "heartbeat" in caplog.text


async def test_many_runs_leave_no_tasks_behind() -> None:
    before = len(asyncio.all_tasks())
    results = await asyncio.gather(
        *(run_shell_command(f"echo {i}", shell=SHELL, timeout_s=10, env=ENV) for i in range(50))
    )
    assert [r.stdout for r in results] == [f"{i}\n".encode() for i in range(50)]
    assert len(asyncio.all_tasks()) == before
