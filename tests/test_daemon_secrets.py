"""The real daemon keeps its credentials to itself: its logs, its /proc files, its sys.path."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import pytest

from conftest import query, shell_job, wait_until
from fakegateway import CHAT, FakeGateway

TOKEN = "tok-7f3a9c-never-shown"
URL_PASSWORD = "hunter2-url-pass"
OTHER_SECRET = "pw-9d8c7b-db-password"
ALLOWED_VALUE = "allowed-3e2d1c-value"


def add(cli, spec: str, *options: str) -> dict[str, Any]:
    code, out, stdout, stderr = cli("jobs", "add", spec, *options)
    assert code == 0, stdout + stderr
    return out["job"]


def finished(db_path: Path, job_id: str) -> list[dict[str, Any]]:
    return [r for r in query(db_path, "SELECT * FROM runs WHERE job_id = ?", (job_id,))
            if r["status"] != "running"]


def agent_job() -> str:
    return json.dumps({"name": "digest", "session_target": "isolated", "payload_message": "hi",
                       "run_timeout_ms": 30000, "delivery_mode": "none", "origin": "system",
                       "delivery_opt_out_reason": "test", "delete_after_run": 0})


def test_every_log_line_is_json_and_no_credential_reaches_it(cli, daemon, db_path) -> None:
    with FakeGateway(token=TOKEN) as gateway:
        url = gateway.url.replace("http://", f"http://ops:{URL_PASSWORD}@")
        d = daemon(env={"OPENCLAW_GATEWAY_URL": url, "OPENCLAW_GATEWAY_TOKEN": TOKEN,
                        "SCHEDULER_DEBUG": "1"})
        job = add(cli, agent_job(), "--in", "1s")
        (run,) = wait_until(lambda: finished(db_path, job["id"]), timeout=20)
        assert d.stop() == 0
    assert len(d.lines) > 5, "the daemon logged nothing"
    for line in d.lines:
        assert isinstance(json.loads(line), dict), line
        assert URL_PASSWORD not in line and TOKEN not in line, line
    (up,) = d.events("gateway.up")
    assert up["url"] == url.replace(f"ops:{URL_PASSWORD}", "[redacted]")
    assert d.events("gateway.url_credentials_unused")
    # The token, not the URL's credentials, authenticated the turn: it took the header.
    assert run["status"] == "ok", run["error_message"]
    assert gateway.requests_to(CHAT)[0].headers["authorization"] == f"Bearer {TOKEN}"


def _reads_of_daemon_environ(out: Path) -> str:
    # Three ways a job could read its parent's environment; each writes what it saw.
    return (f"cat /proc/$PPID/environ > {out}.cat; "
            f"tr '\\0' '\\n' < /proc/$PPID/environ > {out}.tr; "
            f"echo \"allowed=$ALLOWED_TOKEN token=$OPENCLAW_GATEWAY_TOKEN other=$MY_DB_PASSWORD\"")


@pytest.mark.skipif(sys.platform != "linux", reason="/proc and prctl are Linux")
def test_a_shell_job_cannot_read_the_token_from_the_daemon(cli, daemon, db_path, tmp_path) -> None:
    out = tmp_path / "environ"
    d = daemon(env={"OPENCLAW_GATEWAY_TOKEN": TOKEN, "MY_DB_PASSWORD": OTHER_SECRET,
                    "ALLOWED_TOKEN": ALLOWED_VALUE, "SCHEDULER_SHELL_ENV_ALLOW": "ALLOWED_TOKEN",
                    "SCHEDULER_DEBUG": "1"})
    job = add(cli, shell_job(payload_message=_reads_of_daemon_environ(out), delete_after_run=0), "--in", "1s")
    (run,) = wait_until(lambda: finished(db_path, job["id"]), timeout=20)
    own_view = Path(f"/proc/{d.pid}/environ").read_bytes()
    assert d.stop() == 0

    seen = {kind: Path(f"{out}.{kind}").read_bytes() for kind in ("cat", "tr")}
    if os.geteuid() == 0:
        # root may still open the file: what it shows must no longer hold the secrets.
        assert b"SCHEDULER_DB=" in seen["cat"] and b"SCHEDULER_DB=" in seen["tr"]
    for text in (*seen.values(), own_view, run["shell_stdout"].encode(), *(s.encode() for s in d.lines)):
        assert TOKEN.encode() not in text
        assert OTHER_SECRET.encode() not in text
    # What the allow-list passes still reaches the job; the token never does.
    assert run["shell_stdout"].strip() == f"allowed={ALLOWED_VALUE} token= other="
    (hardened,) = d.events("daemon.hardened")
    assert hardened["dumpable"] is False and hardened["environ_block_wiped"] is True
    assert {"OPENCLAW_GATEWAY_TOKEN", "MY_DB_PASSWORD"} <= set(hardened["cleared_variables"])
    assert "ALLOWED_TOKEN" not in hardened["cleared_variables"]


SHADOWS = ("json", "uuid", "secrets", "sqlite3", "httpx")


def test_modules_in_the_working_directory_are_not_imported(cli, daemon, db_path, tmp_path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    workdir = tmp_path / "cwd"
    workdir.mkdir()
    marker = tmp_path / "imported"
    for name in SHADOWS:
        (workdir / f"{name}.py").write_text(f"open({str(marker)!r}, 'a').write({name!r} + '\\n')\n")
    monkeypatch.chdir(workdir)  # the daemon and the CLI inherit it

    d = daemon(env={"OPENCLAW_GATEWAY_TOKEN": TOKEN})
    job = add(cli, shell_job(payload_message="pwd", delete_after_run=0), "--in", "1s")
    (run,) = wait_until(lambda: finished(db_path, job["id"]), timeout=20)
    assert d.stop() == 0

    assert run["status"] == "ok" and run["shell_stdout"].strip() == str(workdir)
    assert not marker.exists(), f"imported from the working directory: {marker.read_text().split()}"
