"""Image attachments through the REAL OpenClaw gateway: a shell job's ``[IMAGE:/path]`` marker
reaches the (fake) Telegram chat as a photo upload after the text (docs/messaging.md)."""

from __future__ import annotations

import json
import uuid

import pytest

from conftest import query, wait_until
from openclaw_peer import OpenClawPeer, openclaw_gateway  # noqa: F401  (the fixture)
from test_images import png_bytes

pytestmark = [pytest.mark.openclaw, pytest.mark.slow]

CHAT_ID = "987654321"


def test_a_shell_marker_reaches_telegram_as_a_photo(
    cli, daemon, db_path, tmp_path, openclaw_gateway: OpenClawPeer  # noqa: F811
) -> None:
    marker = f"img-{uuid.uuid4().hex[:8]}"
    image = tmp_path / f"{marker}.png"
    image.write_bytes(png_bytes(5))
    spec = {
        "name": f"chart {marker}", "session_target": "shell",
        "payload_message": f"echo '{marker}'; echo '[IMAGE:{image}]'",
        "run_timeout_ms": 30000, "delivery_mode": "announce-always",
        "delivery_channel": "telegram", "delivery_to": CHAT_ID, "origin": "system",
        "delete_after_run": 0,
    }
    d = daemon(env=openclaw_gateway.daemon_env())
    code, out, stdout, stderr = cli("jobs", "add", json.dumps(spec), "--in", "1s")
    assert code == 0, stdout + stderr
    job = out["job"]

    message = wait_until(
        lambda: [m for m in query(db_path, "SELECT * FROM messages WHERE job_id = ?", (job["id"],))
                 if m["status"] != "pending"],
        timeout=90, message="the delivery ended",
    )[0]
    assert message["status"] == "delivered", message
    texts = [m for m in openclaw_gateway.telegram_messages() if marker in str(m.get("text"))]
    sent = [(c["method"], c["params"]) for c in openclaw_gateway.telegram_calls()
            if c["method"].startswith("send")]
    assert len(texts) == 1 and "[IMAGE:" not in texts[0]["text"], sent
    photos = [call["params"] for call in openclaw_gateway.telegram_calls("sendPhoto")
              if str(call["params"].get("chat_id")) == CHAT_ID
              and f"<file {image.name} ({len(png_bytes(5))} bytes)>" in call["params"].values()]
    assert len(photos) == 1, openclaw_gateway.telegram_calls("sendPhoto")
    # The text went first, the photo after it.
    ours = [c["method"] for c in openclaw_gateway.telegram_calls()
            if c["method"] in ("sendMessage", "sendPhoto")
            and (marker in str(c["params"].get("text")) or f"<file {image.name} " in json.dumps(c["params"]))]
    assert ours == ["sendMessage", "sendPhoto"]
    assert d.stop() == 0
