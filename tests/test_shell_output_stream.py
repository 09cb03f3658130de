"""Shell output streamed to the artifact file: bounded memory, the whole stream on disk (or up to
the configured cap, noted), the reference's columns for small outputs, and a full disk."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from conftest import _base_env, shell_job
from scheduler.strategies.shell import DEFAULT_CAPTURE_LIMIT, ArtifactSpec, run_shell_command
from scheduler.strategies.shell_job import head_limit
from scheduler.strategies.shell_output import (
    TRUNCATION_SUFFIX,
    OutputLimits,
    ShellRunFields,
    normalize_shell_result,
)

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX shells")

SHELL = "/bin/bash" if os.path.exists("/bin/bash") else "/bin/sh"
ENV = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C"}
NEVER_SOON = "0 0 1 1 *"


def _content(path: str | None) -> bytes:
    assert path is not None, "no artifact file"
    return Path(path).read_bytes()


def _peak_rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM in /proc/<pid>/status")


async def _run(command: str, spec: ArtifactSpec | None, limits: OutputLimits, run_id: str, tmp_path: Path):
    """Run and normalize; streamed (``spec``) with the strategy's head, or all in memory."""
    capture = head_limit(limits) if spec is not None else DEFAULT_CAPTURE_LIMIT
    result = await run_shell_command(command, shell=SHELL, timeout_s=60, env=ENV, run_id=run_id,
                                     capture_limit_bytes=capture, artifacts=spec)
    fields = normalize_shell_result(result, limits=limits, run_id=run_id,
                                    artifacts_dir=tmp_path / "artifacts", timeout_ms=60000)
    return result, fields


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads VmHWM from /proc")
def test_200_mb_of_output_goes_to_disk_not_to_memory(cli, daemon, db, db_path, tmp_path) -> None:
    size = 200_000_000
    d = daemon()
    code, out, stdout, stderr = cli("jobs", "add", shell_job(
        name="chatty", schedule_cron=NEVER_SOON, run_now=True, run_timeout_ms=120000,
        payload_message=f"yes 0123456789abcdef | head -c {size}"))
    assert code == 0, stdout + stderr
    job_id = out["job"]["id"]
    d.wait_for_event("run.finished", lambda e: e["job_id"] == job_id, timeout=120)
    (run,) = db("SELECT * FROM runs WHERE job_id = ?", (job_id,))
    artifact = Path(run["shell_stdout_path"])
    try:
        assert _peak_rss_bytes(d.pid) < 150 * 1024 * 1024
        assert run["status"] == "ok"
        assert run["shell_stdout_bytes"] == size
        assert artifact.stat().st_size == size
        assert len(run["shell_stdout"].encode()) <= 2000  # offloaded: the column keeps an excerpt
        assert "capture limit" not in run["summary"]
        printed = tmp_path / "printed.txt"
        with printed.open("wb") as sink:
            subprocess.run([sys.executable, "-m", "scheduler", "runs", "output", run["id"]],
                           env=_base_env(db_path),
                           stdout=sink, stdin=subprocess.DEVNULL, check=True, timeout=120)
        with artifact.open("rb") as original, printed.open("rb") as copy:
            assert original.read(1 << 20) == copy.read(1 << 20)
        assert printed.stat().st_size in (size, size + 1)  # the CLI may end it with a newline
        printed.unlink()
    finally:
        artifact.unlink(missing_ok=True)
    assert d.stop() == 0


def test_the_daemon_caps_the_artifact_at_the_configured_size(cli, daemon, db) -> None:
    d = daemon({"SCHEDULER_MAX_OUTPUT_BYTES": "100000"})
    code, out, stdout, stderr = cli("jobs", "add", shell_job(
        name="capped", schedule_cron=NEVER_SOON, run_now=True,
        payload_message="yes abcdefghi | head -c 300000"))
    assert code == 0, stdout + stderr
    job_id = out["job"]["id"]
    d.wait_for_event("run.finished", lambda e: e["job_id"] == job_id, timeout=30)
    (run,) = db("SELECT * FROM runs WHERE job_id = ?", (job_id,))
    note = "[stdout capture limit reached: kept 100000 of 300000 bytes]"
    content = Path(run["shell_stdout_path"]).read_bytes()
    assert content == b"abcdefghi\n" * 10000 + f"\n{note}\n".encode()
    assert run["shell_stdout_bytes"] == 300000
    assert run["shell_stdout"].endswith(note) and note in run["summary"]
    assert json.loads(run["context_summary"])["shell_result"]["stdout_truncated"] is True
    assert d.stop() == 0


async def test_artifact_cap_keeps_the_head_and_notes_the_cut(tmp_path: Path) -> None:
    limits = OutputLimits()
    spec = ArtifactSpec(tmp_path / "artifacts", "capped", limits.offload_threshold, max_bytes=100_000)
    result, fields = await _run("yes 0123456789 | head -c 250000; yes e | head -c 70000 >&2",
                                spec, limits, "capped", tmp_path)
    assert result.stdout_total_bytes == 250_000 and result.stderr_total_bytes == 70_000
    assert len(result.stdout) <= head_limit(limits)  # memory held only the head
    out_note = "[stdout capture limit reached: kept 100000 of 250000 bytes]"
    kept = b"0123456789\n" * 9090 + b"0123456789"  # the first 100000 bytes
    assert _content(fields.shell_stdout_path) == kept + f"\n{out_note}\n".encode()
    assert fields.shell_stdout.endswith(out_note) and out_note in fields.delivery_text
    # stderr stayed under the cap: all of it, no note.
    assert _content(fields.shell_stderr_path) == b"e\n" * 35000
    assert "capture limit" not in fields.shell_stderr
    assert fields.error_message is None and fields.status == "ok"


@pytest.mark.parametrize("size", [0, 10, 65536, 65537, 200_000])
async def test_streamed_and_in_memory_results_store_the_same_columns(tmp_path: Path, size: int) -> None:
    limits = OutputLimits()
    command = f"yes 'line é' | head -c {size}; echo oops >&2"
    spec = ArtifactSpec(tmp_path / "artifacts", f"s{size}", limits.offload_threshold, 1024**3)
    _, streamed = await _run(command, spec, limits, f"s{size}", tmp_path)
    _, in_memory = await _run(command, None, limits, f"m{size}", tmp_path)
    def same_file_name(fields: ShellRunFields, run_id: str) -> dict[str, object]:
        return {k: v.replace(f"/{run_id}/", "/RUN/") if isinstance(v, str) else v
                for k, v in fields.as_run_columns().items()}

    assert same_file_name(streamed, f"s{size}") == same_file_name(in_memory, f"m{size}")
    if size > limits.offload_threshold:
        assert _content(streamed.shell_stdout_path) == _content(in_memory.shell_stdout_path)
    else:
        assert streamed.shell_stdout_path is None
        assert not (tmp_path / "artifacts" / "runs" / f"s{size}").exists()


async def test_a_threshold_above_the_head_keeps_no_file_for_output_below_it(tmp_path: Path) -> None:
    limits = OutputLimits(store=1000, excerpt=500, summary=600, offload_threshold=1_000_000)
    spec = ArtifactSpec(tmp_path / "artifacts", "mid", limits.offload_threshold, 1024**3)
    result, fields = await _run("yes abc | head -c 500000", spec, limits, "mid", tmp_path)
    assert len(result.stdout) <= 1000
    assert fields.shell_stdout_path is None
    assert not (tmp_path / "artifacts" / "runs" / "mid").exists()  # spooled, then removed
    assert fields.shell_stdout.endswith(TRUNCATION_SUFFIX) and len(fields.shell_stdout.encode()) <= 1000
    assert fields.shell_stdout_bytes == 500_000
    assert "capture limit" not in fields.shell_stdout


_FULL_DISK_RUN = textwrap.dedent("""
    import asyncio, json, os, resource, sys
    from pathlib import Path
    from scheduler.strategies.shell import DEFAULT_CAPTURE_LIMIT, ArtifactSpec, run_shell_command
    from scheduler.strategies.shell_job import head_limit
    from scheduler.strategies.shell_output import OutputLimits, normalize_shell_result

    async def main():
        artifacts = Path(sys.argv[1])
        # The file-size limit stands in for a full disk: a write past it fails (EFBIG).
        resource.setrlimit(resource.RLIMIT_FSIZE, (1_000_000, resource.RLIM_INFINITY))
        limits = OutputLimits()
        spec = ArtifactSpec(artifacts, "full", limits.offload_threshold, 1024**3)
        result = await run_shell_command("yes 0123456789 | head -c 5000000", shell="/bin/sh",
                                         timeout_s=60, env={"PATH": os.environ["PATH"]},
                                         run_id="full", capture_limit_bytes=head_limit(limits),
                                         artifacts=spec)
        fields = normalize_shell_result(result, limits=limits, run_id="full",
                                        artifacts_dir=artifacts, timeout_ms=60000)
        print(json.dumps({"status": fields.status, "error": fields.error_message,
                          "path": fields.shell_stdout_path, "stdout": fields.shell_stdout,
                          "bytes": fields.shell_stdout_bytes, "exit": result.exit_code}))
    asyncio.run(main())
""")


def test_a_full_disk_keeps_the_head_and_reports_the_error(tmp_path: Path) -> None:
    artifacts = tmp_path / "artifacts"
    proc = subprocess.run([sys.executable, "-c", _FULL_DISK_RUN, str(artifacts)], capture_output=True,
                          text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stderr
    outcome = json.loads(proc.stdout)
    assert outcome["exit"] == 0 and outcome["status"] == "ok"
    assert outcome["bytes"] == 5_000_000
    assert outcome["path"] is None
    assert outcome["error"].startswith("stdout offload failed:")
    assert "File too large" in outcome["error"]
    # Not offloaded, so the column keeps the store limit, and says what was lost.
    assert outcome["stdout"].startswith("0123456789\n0123456789")
    assert "[stdout capture limit reached: kept 65536 of 5000000 bytes]" in outcome["stdout"]
    assert not (artifacts / "runs" / "full" / "stdout.txt").exists()  # no misleading partial file


async def test_a_cancelled_run_leaves_no_artifact_file(tmp_path: Path) -> None:
    limits = OutputLimits()
    spec = ArtifactSpec(tmp_path / "artifacts", "cancelled", limits.offload_threshold, 1024**3)
    file = spec.path_for("stdout")
    task = asyncio.create_task(run_shell_command(
        "yes abc | head -c 200000; sleep 30", shell=SHELL, timeout_s=60, env=ENV, run_id="cancelled",
        capture_limit_bytes=head_limit(limits), artifacts=spec, kill_grace_s=0.2))
    for _ in range(500):
        if _size_at_least(file, 200_000):
            break
        await asyncio.sleep(0.02)
    assert _size_at_least(file, 200_000), "the stream was not written while the command ran"
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert not _size_at_least(file, 0)


def _size_at_least(path: Path, size: int) -> bool:
    try:
        return path.stat().st_size >= size
    except FileNotFoundError:
        return False
