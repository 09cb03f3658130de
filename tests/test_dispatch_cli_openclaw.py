"""``dispatch enqueue`` → the sub-agent runs on the REAL OpenClaw gateway → ``dispatch result``
returns its reply; ``dispatch done`` then closes the label. The gateway accepts the model and
thinking patches of a fresh session (and would refuse ``spawnDepth``, which is never sent).
With the daemon running, its in-process watcher follows the run and delivers the reply to the
(fake) Telegram chat through the gateway."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from conftest import _base_env, query, wait_until
from openclaw_peer import OpenClawPeer, openclaw_gateway  # noqa: F401  (the fixture)

pytestmark = [pytest.mark.openclaw, pytest.mark.slow]


def _dispatch(peer: OpenClawPeer, db_path: Path, *args: str) -> tuple[int, Any, str]:
    env = _base_env(db_path, {"OPENCLAW_GATEWAY_URL": peer.url,
                              "OPENCLAW_GATEWAY_TOKEN": peer.token or ""})
    proc = subprocess.run([sys.executable, "-m", "scheduler", "dispatch", *args, "--json"],
                          env=env, capture_output=True, text=True, timeout=120,
                          stdin=subprocess.DEVNULL)
    try:
        return proc.returncode, json.loads(proc.stdout), proc.stderr
    except ValueError:
        return proc.returncode, None, proc.stdout + proc.stderr


def test_an_enqueued_subagent_runs_and_its_reply_is_the_result(
        openclaw_gateway: OpenClawPeer, db_path: Path) -> None:  # noqa: F811
    code, out, err = _dispatch(openclaw_gateway, db_path, "enqueue", "--label", "real-gw",
                               "--message", "Say hello.", "--deliver-to", "123",
                               "--timeout", "120", "--model", "fake/fake-model",
                               "--thinking", "off")
    assert code == 0, err
    assert "warning" not in err.lower(), err  # both patches accepted (no spawnDepth sent)
    assert out["sessionKey"].startswith("agent:main:subagent:") and out["runId"]
    reply = None
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        code, result, err = _dispatch(openclaw_gateway, db_path, "result", "--label", "real-gw")
        assert code == 0, err
        reply = result["lastReply"]
        if reply:
            break
        time.sleep(1)
    assert reply == openclaw_gateway.reply
    code, listed, err = _dispatch(openclaw_gateway, db_path, "heartbeat", "--label", "real-gw")
    assert code == 0 and listed["alive"] is True, err
    code, done, err = _dispatch(openclaw_gateway, db_path, "done", "--label", "real-gw",
                                "--summary", "Said hello to the user.",
                                "--checklist", '{"work_complete":true}',
                                "--force-done", "--reason", "a one-line test task")
    assert code == 0 and done["status"] == "done", err


CHAT_ID = "555000111"


def test_enqueue_runs_the_subagent_and_the_watcher_delivers_its_reply_to_telegram(
        daemon, db_path: Path, openclaw_gateway: OpenClawPeer) -> None:  # noqa: F811
    label = f"e2e-{uuid.uuid4().hex[:8]}"
    d = daemon(env=openclaw_gateway.daemon_env(SCHEDULER_DISPATCH_POLL_MS="1000"))
    code, out, err = _dispatch(openclaw_gateway, db_path, "enqueue", "--label", label,
                               "--message", f"Say hello ({label}).", "--deliver-to", CHAT_ID,
                               "--deliver-channel", "telegram", "--timeout", "120")
    assert code == 0, err
    assert out["sessionKey"].startswith("agent:main:subagent:")

    watcher_id, watchdog_id = out["delivery"]["watcherJobId"], out["watchdog"]["jobId"]

    # The daemon's watcher (job_type dispatch, run in-process) sees the sub-agent finish and
    # records its reply as the label's completion.
    entry = wait_until(
        lambda: [e for e in query(db_path, "SELECT * FROM dispatch_labels WHERE label = ?",
                                  (label,)) if e["status"] != "running"],
        timeout=180, message="the label left running")[0]
    assert entry["status"] == "done", entry
    assert openclaw_gateway.reply in entry["completion"]
    assert openclaw_gateway.llm_requests(containing=label), "the fake model never saw the task"

    # `dispatch result` returns the sub-agent's reply.
    code, result, err = _dispatch(openclaw_gateway, db_path, "result", "--label", label)
    assert code == 0 and result["lastReply"] == openclaw_gateway.reply, err

    # The watcher's delivery reached the Telegram chat through the gateway, once, and was
    # recorded as delivered; then the one-shot watcher removed itself and disarmed the watchdog.
    sent = openclaw_gateway.wait_for(
        lambda: [m for m in openclaw_gateway.telegram_messages()
                 if str(m.get("chat_id")) == CHAT_ID
                 and openclaw_gateway.reply in str(m.get("text"))],
        timeout=90, message="the sub-agent's reply reached the Telegram chat")
    assert len(sent) == 1 and label in str(sent[0].get("text"))
    wait_until(
        lambda: [m for m in query(db_path, "SELECT * FROM messages WHERE to_agent = '@outbound' "
                                  "AND delivery_to = ? AND body LIKE ?",
                                  (CHAT_ID, f"%{openclaw_gateway.reply}%"))
                 if m["status"] == "delivered"],
        timeout=60, message="the watcher's outbound message marked delivered")
    wait_until(lambda: not query(db_path, "SELECT id FROM jobs WHERE id IN (?, ?)",
                                 (watcher_id, watchdog_id)),
               timeout=30, message="the watcher and the watchdog jobs gone")
    assert d.stop() == 0
    assert not [line for line in d.lines if openclaw_gateway.token in line]
