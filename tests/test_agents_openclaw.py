"""The agent registry and retrieval context through the REAL OpenClaw gateway: an agent the
gateway is not configured with is marked offline (its answer is 400 "Unknown agent"), a known one
goes busy and back to idle, and a prior run's reply reaches the next prompt the model sees."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest

from conftest import query, wait_until
from openclaw_peer import OpenClawPeer, openclaw_gateway  # noqa: F401  (the fixture)

pytestmark = [pytest.mark.openclaw, pytest.mark.slow]


def spec(marker: str, **overrides: Any) -> str:
    return json.dumps({"name": f"registry {marker}", "session_target": "isolated", "agent_id": "main",
                       "payload_message": f"status please ({marker})", "run_timeout_ms": 120000,
                       "delivery_mode": "none", "delivery_opt_out_reason": "test", "origin": "system",
                       "schedule_cron": "0 0 1 1 *", **overrides})


def finished(db_path: Any, job_id: str) -> list[dict[str, Any]]:
    return [r for r in query(db_path, "SELECT * FROM runs WHERE job_id = ? ORDER BY started_at, rowid",
                             (job_id,)) if r["status"] != "running"]


def agent_row(db_path: Any, agent_id: str) -> dict[str, Any]:
    (row,) = query(db_path, "SELECT * FROM agents WHERE id = ?", (agent_id,))
    return row


def run_and_wait(cli: Any, db_path: Any, job_id: str, count: int) -> dict[str, Any]:
    code, _, stdout, stderr = cli("jobs", "run", job_id)
    assert code == 0, stdout + stderr
    runs = wait_until(lambda: len(finished(db_path, job_id)) >= count and finished(db_path, job_id),
                      timeout=150, message="the agent run finished")
    return runs[count - 1]


def test_unknown_agents_go_offline_and_known_ones_idle(
    cli, daemon, db_path, openclaw_gateway: OpenClawPeer  # noqa: F811
) -> None:
    marker = f"reg-{uuid.uuid4().hex[:8]}"
    daemon(env=openclaw_gateway.daemon_env())
    code, out, _, _ = cli("jobs", "add", spec(marker, agent_id="ops"))
    assert code == 0
    failed = run_and_wait(cli, db_path, out["job"]["id"], 1)
    assert failed["status"] == "error" and "Unknown agent 'ops'" in failed["error_message"]
    wait_until(lambda: agent_row(db_path, "ops")["status"] == "offline", timeout=10)

    code, out, _, _ = cli("jobs", "add", spec(marker))
    assert code == 0
    ok = run_and_wait(cli, db_path, out["job"]["id"], 1)
    assert ok["status"] == "ok"
    main = wait_until(lambda: (row := agent_row(db_path, "main"))["status"] == "idle" and row,
                      timeout=10)
    assert main["session_key"] is None and main["last_seen_at"] is not None


def test_a_prior_reply_reaches_the_next_prompt_through_the_gateway(
    cli, daemon, db_path, openclaw_gateway: OpenClawPeer  # noqa: F811
) -> None:
    marker = f"ret-{uuid.uuid4().hex[:8]}"
    daemon(env=openclaw_gateway.daemon_env())
    code, out, _, _ = cli("jobs", "add", spec(marker, context_retrieval="hybrid"))
    assert code == 0
    job_id = out["job"]["id"]
    first = run_and_wait(cli, db_path, job_id, 1)
    assert first["status"] == "ok" and first["summary"] == openclaw_gateway.reply
    run_and_wait(cli, db_path, job_id, 2)
    block = (f"--- Prior Run Context ---\\n[{first['started_at']}] {openclaw_gateway.reply}\\n"
             "--- End Prior Run Context ---")
    forwarded = [json.dumps(r) for r in openclaw_gateway.llm_requests(containing=marker)]
    assert any(block in text for text in forwarded), forwarded[-1][-2000:]
