"""The daemon's backups uploaded to S3-compatible storage: moto's S3 server on 127.0.0.1, a
real HTTP server the daemon subprocess reaches through boto3 like any bucket."""

from __future__ import annotations

import os
import socket
import stat
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from conftest import DaemonFactory, add_job, shell_job

REQUIRED = os.environ.get("SCHEDULER_TEST_REQUIRE_S3") == "1"
try:
    import boto3
    from moto.server import ThreadedMotoServer
except ImportError:  # pragma: no cover - the dev extra installs both
    if REQUIRED:
        raise
    pytest.skip("boto3 and moto[server] are not installed (pip install -e '.[dev]')",
                allow_module_level=True)

SECRET = "s3-secret-that-must-never-be-logged"
BUCKET = "sched-test"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def s3_server() -> Iterator[str]:
    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


def _credentials() -> dict[str, str]:
    return {"AWS_ACCESS_KEY_ID": "test-key", "AWS_SECRET_ACCESS_KEY": SECRET,
            "AWS_DEFAULT_REGION": "us-east-1"}


def _client(endpoint: str) -> Any:
    return boto3.client("s3", endpoint_url=endpoint, aws_access_key_id="test-key",
                        aws_secret_access_key=SECRET, region_name="us-east-1")


def test_snapshots_and_rollups_reach_the_bucket_and_old_objects_are_pruned(
        cli: Callable[..., Any], daemon: DaemonFactory, tmp_path: Path, s3_server: str) -> None:
    add_job(cli, shell_job(name="uploaded", schedule_cron="0 3 1 1 *"))
    client = _client(s3_server)
    client.create_bucket(Bucket=BUCKET)
    old = datetime.now(UTC) - timedelta(days=2)
    stale_key = f"team/snapshots/{old:%Y-%m-%d}/{old:%H-%M}.db"
    kept_key = f"team/rollups/{old:%Y-%m-%d}/{old:%H}.db"  # 2 days: within the 7 of rollups
    other_key = "team/notes.txt"
    for key in (stale_key, kept_key, other_key):
        client.put_object(Bucket=BUCKET, Key=key, Body=b"x")
    env = {"SCHEDULER_BACKUP": "1", "SCHEDULER_BACKUP_S3": "1",
           "SCHEDULER_BACKUP_S3_ENDPOINT": s3_server, "SCHEDULER_BACKUP_BUCKET": BUCKET,
           "SCHEDULER_BACKUP_PREFIX": "team", "SCHEDULER_HOME": str(tmp_path / "home"),
           **_credentials()}
    proc = daemon(env=env)
    snapshot = proc.wait_for_event("backup.uploaded", lambda e: "/snapshots/" in e["key"],
                                   timeout=60)
    rollup = proc.wait_for_event("backup.uploaded", lambda e: "/rollups/" in e["key"], timeout=60)
    proc.wait_for_event("backup.remote_pruned", timeout=60)
    assert proc.stop() == 0
    keys = {item["Key"] for item in client.list_objects_v2(Bucket=BUCKET)["Contents"]}
    assert {snapshot["key"], rollup["key"], kept_key, other_key} <= keys
    assert stale_key not in keys
    fetched = tmp_path / "fetched.db"
    client.download_file(BUCKET, snapshot["key"], str(fetched))
    code, out, _, _ = cli("backup", "verify", str(fetched))
    assert code == 0 and out["jobs"] == 1
    local = tmp_path / "home" / "backups" / snapshot["key"].removeprefix("team/")
    assert local.read_bytes() == fetched.read_bytes()
    assert stat.S_IMODE(local.stat().st_mode) == 0o600
    assert all(SECRET not in line for line in proc.lines)


def test_a_failed_upload_keeps_the_local_snapshot_and_logs_no_secret(
        cli: Callable[..., Any], daemon: DaemonFactory, tmp_path: Path, s3_server: str) -> None:
    cli("status")
    env = {"SCHEDULER_BACKUP": "1", "SCHEDULER_BACKUP_S3": "1",
           "SCHEDULER_BACKUP_S3_ENDPOINT": s3_server, "SCHEDULER_BACKUP_BUCKET": "no-such-bucket",
           "SCHEDULER_HOME": str(tmp_path / "home"), **_credentials()}
    proc = daemon(env=env)
    snapshot = Path(proc.wait_for_event("backup.snapshot", timeout=60)["path"])
    failure = proc.wait_for_event("backup.upload_failed", timeout=60)
    assert proc.stop() == 0
    assert "no-such-bucket" in failure["error"] or "NoSuchBucket" in failure["error"]
    assert snapshot.exists()
    assert all(SECRET not in line for line in proc.lines)
