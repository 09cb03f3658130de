"""``dispatch enqueue`` → the sub-agent runs on the REAL OpenClaw gateway → ``dispatch result``
returns its reply; ``dispatch done`` then closes the label. The gateway accepts the model and
thinking patches of a fresh session (and would refuse ``spawnDepth``, which is never sent)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from conftest import _base_env
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
