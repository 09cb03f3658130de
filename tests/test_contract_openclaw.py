"""contract_max_cost_usd through the REAL OpenClaw gateway 2026.9.6: its chat-completions reply
reports tokens but no cost, so the cap is recorded as not checked (never as passed)."""

from __future__ import annotations

import json
import uuid

import pytest

from conftest import query, wait_until
from openclaw_peer import OpenClawPeer, openclaw_gateway  # noqa: F401  (the fixture)

pytestmark = [pytest.mark.openclaw, pytest.mark.slow]


def test_the_real_gateway_reports_no_cost_so_the_cap_is_not_checked(
    cli, daemon, db_path, openclaw_gateway: OpenClawPeer  # noqa: F811
) -> None:
    marker = f"cost-{uuid.uuid4().hex[:8]}"
    spec = {"name": f"capped {marker}", "session_target": "isolated", "agent_id": "main",
            "payload_message": f"Answer briefly ({marker})", "run_timeout_ms": 120000,
            "delivery_mode": "none", "delivery_opt_out_reason": "test", "origin": "system",
            "contract_max_cost_usd": 0.01, "delete_after_run": 0}
    d = daemon(env=openclaw_gateway.daemon_env())
    code, out, stdout, stderr = cli("jobs", "add", json.dumps(spec), "--in", "1s")
    assert code == 0, stdout + stderr
    job_id = out["job"]["id"]
    run = wait_until(
        lambda: [r for r in query(db_path, "SELECT * FROM runs WHERE job_id = ?", (job_id,))
                 if r["status"] != "running"],
        timeout=150, message="the agent run finished",
    )[0]
    assert run["status"] == "ok", run
    assert run["summary"] == openclaw_gateway.reply
    assert run["cost_usd"] is None
    note = json.loads(run["context_summary"])["cost_cap"]
    assert note["checked"] is False and note["max_usd"] == 0.01
    d.wait_for_event("agent.cost_unchecked", lambda e: e["run_id"] == run["id"], timeout=10)
