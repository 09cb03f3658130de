"""Through the REAL OpenClaw gateway: a message in an agent's inbox reaches the model in the
agent's next prompt, in the reference's format, and is marked delivered."""

from __future__ import annotations

import json
import uuid

import pytest

from conftest import query, wait_until
from openclaw_peer import OpenClawPeer, openclaw_gateway  # noqa: F401  (the fixture)

pytestmark = [pytest.mark.openclaw, pytest.mark.slow]


def test_an_inbox_message_reaches_the_agents_prompt(
    cli, daemon, db_path, openclaw_gateway: OpenClawPeer  # noqa: F811
) -> None:
    marker = f"inbox-{uuid.uuid4().hex[:8]}"
    code, out, stdout, stderr = cli("messages", "send", "--from", "planner", "--to", "main", "--kind",
                                    "task", "--subject", "rebase", "--body", f"rebase on main first {marker}")
    assert code == 0, stdout + stderr
    message_id = out["message"]["id"]
    spec = {"name": f"worker {marker}", "session_target": "isolated", "agent_id": "main",
            "payload_message": "Do the next task", "run_timeout_ms": 120000, "delivery_mode": "none",
            "delivery_opt_out_reason": "test", "origin": "system", "delete_after_run": 0}
    d = daemon(env=openclaw_gateway.daemon_env())
    code, out, stdout, stderr = cli("jobs", "add", json.dumps(spec), "--in", "1s")
    assert code == 0, stdout + stderr
    job = out["job"]
    run = wait_until(
        lambda: [r for r in query(db_path, "SELECT * FROM runs WHERE job_id = ?", (job["id"],))
                 if r["status"] != "running"],
        timeout=150, message="the agent run finished",
    )[0]
    assert run["status"] == "ok", run
    forwarded = openclaw_gateway.llm_requests(containing=marker)
    assert forwarded, "the fake model never saw the inbox message"
    text = _texts(forwarded[0])
    # The gateway may wrap or split the prompt; each line of the block arrives as the reference's.
    for line in ("--- Pending Messages ---", "From: planner | task | rebase",
                 f"[task] rebase on main first {marker}"):
        assert line in text, text
    (message,) = query(db_path, "SELECT status FROM messages WHERE id = ?", (message_id,))
    assert message["status"] == "delivered"
    assert json.loads(run["context_summary"])["messages_injected"] == 1
    assert d.stop() == 0


def _texts(value: object) -> str:
    """Every string inside the model request, joined (the prompt may be split into parts)."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict):
        return "\n".join(_texts(v) for v in value.values())
    if isinstance(value, list):
        return "\n".join(_texts(v) for v in value)
    return ""
