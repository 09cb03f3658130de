"""``migrate`` from the database of the REAL OpenClaw gateway (2026.9.6), while it runs.

Jobs are added with the real ``openclaw cron add``; the gateway stores them in
``<state>/state/openclaw.sqlite`` (table ``cron_jobs``). The import finds that database itself,
reads it read-only under the live gateway, and keeps the ids.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from openclaw_peer import OpenClawPeer, openclaw_gateway  # noqa: F401  (the fixture)

pytestmark = [pytest.mark.openclaw, pytest.mark.slow]


def openclaw_cli(peer: OpenClawPeer, *args: str) -> dict[str, Any]:
    """Run the real ``openclaw`` CLI against the peer; its JSON answer."""
    node = Path(peer.info["node"])
    openclaw = node.parents[4] / "gw" / "node_modules" / "openclaw" / "openclaw.mjs"
    home = peer.state_dir / "home"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENCLAW_", "CLAWHUB_"))}
    tmp = peer.state_dir / "tmp"
    tmp.mkdir(exist_ok=True)
    env.update(PATH=f"{node.parent}{os.pathsep}{env.get('PATH', '')}", HOME=str(home),
               OPENCLAW_HOME=str(home),
               OPENCLAW_STATE_DIR=str(home / ".openclaw"), OPENCLAW_CONFIG_PATH=peer.info["config"],
               OPENCLAW_NO_AUTO_UPDATE="1", OPENCLAW_OFFLINE="1", DO_NOT_TRACK="1", TMPDIR=str(tmp),
               OPENCLAW_GATEWAY_URL=peer.url.replace("http://", "ws://"), OPENCLAW_GATEWAY_TOKEN=peer.token)
    done = subprocess.run([str(node), str(openclaw), *args, "--json"], env=env, capture_output=True,
                          text=True, timeout=180, stdin=subprocess.DEVNULL, cwd=tmp)
    assert done.returncode == 0, done.stdout + done.stderr
    answer: dict[str, Any] = json.loads(done.stdout[done.stdout.index("{"):])
    return answer


def test_jobs_the_real_gateway_stored_are_imported_while_it_runs(
    cli, openclaw_gateway: OpenClawPeer  # noqa: F811
) -> None:
    brief = openclaw_cli(openclaw_gateway, "cron", "add", "--name", "Migrate brief", "--cron", "0 7 * * *",
                         "--tz", "Europe/Berlin", "--message", "Summarize.", "--announce",
                         "--channel", "telegram", "--to", "987654321")
    probe = openclaw_cli(openclaw_gateway, "cron", "add", "--name", "Migrate probe", "--every", "15m",
                         "--command-argv", '["printf","%s","it\'s here"]', "--no-deliver")
    state = openclaw_gateway.state_dir / "home" / ".openclaw"
    code, report, stdout, stderr = cli("migrate", env={"OPENCLAW_STATE_DIR": str(state)})
    assert report is not None, stdout + stderr
    assert report["source"] == {"kind": "database", "path": str(state / "state" / "openclaw.sqlite")}
    status = {job["id"]: job["status"] for job in report["jobs"]}
    assert status[brief["id"]] == "ok" and status[probe["id"]] == "ok", report
    # The gateway's own jobs (heartbeat, memory dreaming, skill review) are left behind.
    skipped = [job for job in report["jobs"] if job["status"] == "skip"]
    assert skipped and all("gateway" in job["reason"] for job in skipped)

    code, job, stdout, stderr = cli("jobs", "get", brief["id"])
    assert code == 0, stdout + stderr
    assert (job["schedule_cron"], job["schedule_tz"], job["delivery_mode"], job["delivery_to"]) == (
        "0 7 * * *", "Europe/Berlin", "announce-always", "987654321")
    code, job, stdout, stderr = cli("jobs", "get", probe["id"])
    assert (job["session_target"], job["schedule_cron"], job["payload_message"]) == (
        "shell", "*/15 * * * *", "printf %s 'it'\"'\"'s here'")
    assert f"openclaw cron disable {brief['id']}" in report["disable_commands"]

    code, again, _, _ = cli("migrate", env={"OPENCLAW_STATE_DIR": str(state)})
    assert again["totals"]["imported"] == 0
