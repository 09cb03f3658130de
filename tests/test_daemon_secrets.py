"""The real daemon keeps its credentials to itself: its logs, its /proc files, its sys.path."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from conftest import query, wait_until
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
