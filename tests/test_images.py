"""Image attachments: ``[IMAGE:/path]`` markers in a shell job's stdout or an agent's reply are
sent through the gateway's ``message`` tool as files, after the text (docs/messaging.md, "Images
in deliveries"). The policy is tested on real files; delivery with the real daemon and the
loopback fake gateway."""

from __future__ import annotations

import json
import os
import struct
import zlib
from pathlib import Path
from typing import Any

import pytest

from conftest import add_job, query, shell_job, wait_until
from fakegateway import FakeGateway, Reply
from scheduler.media import MAX_ATTACHMENTS, MediaPolicy, MediaRefused, extract_markers

CHAT = "4242"


def png_bytes(seed: int = 0) -> bytes:
    """A valid 1x1 PNG whose pixel depends on ``seed`` (so two files differ)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    pixel = b"\x00" + bytes([seed % 256, 0, 0])
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(pixel)) + chunk(b"IEND", b""))


def write_png(path: Path, seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(png_bytes(seed))
    return path


# -- markers -------------------------------------------------------------------------------------


def test_marker_lines_are_taken_out_of_the_text_in_order() -> None:
    text = "Report\n[IMAGE:/tmp/a.png]\n\n\n\nsee [IMAGE:/tmp/inline.png] here\n  [IMAGE:/tmp/b.png]\r\n" \
           "[IMAGE:relative.png]\n[IMAGE:/tmp/a.png]\nend"
    extracted = extract_markers(text)
    assert extracted.paths == ("/tmp/a.png", "/tmp/b.png")  # whole lines, absolute, once each
    assert extracted.text == "Report\n\nsee [IMAGE:/tmp/inline.png] here\n[IMAGE:relative.png]\nend"
    assert extract_markers("no markers\n\n\n\nhere ").text == "no markers\n\n\n\nhere "


# -- the policy on real files --------------------------------------------------------------------


@pytest.fixture
def media_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "media"
    directory.mkdir()
    return directory


def policy_for(tmp_path: Path, media_dir: Path) -> MediaPolicy:
    return MediaPolicy.for_scheduler(media_dirs=[media_dir], artifacts_dir=tmp_path / "artifacts",
                                     db_path=media_dir / "scheduler.db",
                                     token_path=media_dir / "token.png")


def refusal(policy: MediaPolicy, path: Path | str) -> str:
    with pytest.raises(MediaRefused) as info:
        policy.read(str(path))
    return str(info.value)


def test_policy_sends_an_image_in_an_allowed_directory(tmp_path: Path, media_dir: Path) -> None:
    image = write_png(media_dir / "chart.png", seed=7)
    attachment = policy_for(tmp_path, media_dir).read(str(image))
    assert (attachment.filename, attachment.mime_type) == ("chart.png", "image/png")
    assert attachment.data == png_bytes(7)


def test_policy_refuses_what_must_not_leave(tmp_path: Path, media_dir: Path) -> None:
    policy = policy_for(tmp_path, media_dir)
    outside = write_png(tmp_path / "elsewhere" / "secret.png")
    (media_dir / "link.png").symlink_to(outside)
    write_png(media_dir / "token.png")  # the token file, even shaped like an image
    os.link(media_dir / "token.png", media_dir / "innocent.png")  # and under another name
    write_png(media_dir / "scheduler.db-wal")
    (media_dir / "notes.png").write_text("api_key=hunter2\n")  # a text file named .png
    (media_dir / "empty.png").write_bytes(b"")
    (media_dir / "big.png").write_bytes(png_bytes() + b"\0" * policy.max_bytes)
    (media_dir / "folder.png").mkdir()
    os.mkfifo(media_dir / "pipe.png")

    assert "not under an allowed directory" in refusal(policy, outside)
    assert "not under an allowed directory" in refusal(policy, media_dir / "link.png")
    assert "never sent" in refusal(policy, media_dir / "token.png")
    assert "never sent" in refusal(policy, media_dir / "innocent.png")
    assert "never sent" in refusal(policy, media_dir / "scheduler.db-wal")
    assert "not a PNG, JPEG, GIF, WebP or PDF file" in refusal(policy, media_dir / "notes.png")
    assert "empty" in refusal(policy, media_dir / "empty.png")
    assert "larger than" in refusal(policy, media_dir / "big.png")
    assert "not a regular file" in refusal(policy, media_dir / "folder.png")
    assert "not a regular file" in refusal(policy, media_dir / "pipe.png")  # and no hang
    assert "no such file" in refusal(policy, media_dir / "missing.png")
    assert "not an absolute path" in refusal(policy, "media/chart.png")
    assert "longer than" in refusal(policy, "/" + "a" * 2000)


def test_policy_notes_refusals_and_bounds_the_count(tmp_path: Path, media_dir: Path) -> None:
    images = [str(write_png(media_dir / f"{n}.png", seed=n)) for n in range(MAX_ATTACHMENTS + 2)]
    missing = str(media_dir / "gone.png")
    accepted = policy_for(tmp_path, media_dir).accept([missing, *images])
    assert accepted.paths == tuple(images[: MAX_ATTACHMENTS - 1])
    assert accepted.notes == (f"[image not sent: {missing}: no such file]",
                              "[3 more image(s) not sent: at most 10 per message]")
    assert accepted.text_with_notes("Done.") == "Done.\n\n" + "\n".join(accepted.notes)


# -- delivery through the daemon -----------------------------------------------------------------


def gateway_env(gateway: FakeGateway, **extra: str) -> dict[str, str]:
    return {"OPENCLAW_GATEWAY_URL": gateway.url, **extra}


def announcing_shell(command: str, **overrides: Any) -> str:
    spec = {"name": "chart", "payload_message": command, "delivery_mode": "announce-always",
            "delivery_channel": "telegram", "delivery_to": CHAT, "delete_after_run": 0, **overrides}
    return shell_job(**spec)


def outbound(db_path: Path, job_id: str) -> list[dict[str, Any]]:
    return query(db_path, "SELECT * FROM messages WHERE job_id = ? AND to_agent = '@outbound'",
                 (job_id,))


def delivered(db_path: Path, job_id: str) -> dict[str, Any]:
    return wait_until(lambda: [m for m in outbound(db_path, job_id) if m["status"] == "delivered"],
                      timeout=30, message="the message was delivered")[0]


def test_shell_marker_sends_the_image_after_the_text(cli, daemon, db_path, fake_gateway,
                                                    tmp_path) -> None:
    image = write_png(tmp_path / "out" / "chart.png", seed=3)
    d = daemon(env=gateway_env(fake_gateway))
    job = add_job(cli, announcing_shell(f"echo 'CPU is fine'; echo '[IMAGE:{image}]'; echo done"),
                  "--in", "1s")
    message = delivered(db_path, job["id"])
    text, media = fake_gateway.deliveries
    assert text["message"] == "stdout:\nCPU is fine\ndone" and text["media"] is None
    assert media["message"] is None and (media["channel"], media["target"]) == ("telegram", CHAT)
    assert media["media"]["data"] == png_bytes(3)
    assert (media["media"]["filename"], media["media"]["mime_type"]) == ("chart.png", "image/png")
    meta = json.loads(message["metadata"])
    assert meta["attachments"] == [str(image)] and "[IMAGE:" not in message["body"]
    (run,) = query(db_path, "SELECT * FROM runs WHERE job_id = ?", (job["id"],))
    assert run["shell_stdout"] == "CPU is fine\ndone"  # the marker is not part of the output
    assert d.stop() == 0


def test_agent_reply_marker_is_sent_and_the_summary_keeps_it(cli, daemon, db_path, fake_gateway,
                                                            tmp_path) -> None:
    image = write_png(tmp_path / "agent" / "plot.png", seed=9)
    reply = f"Here is the plot.\n[IMAGE:{image}]"
    fake_gateway.reply_content = reply
    d = daemon(env=gateway_env(fake_gateway))
    spec = {"name": "plotter", "session_target": "isolated", "payload_message": "Plot it",
            "delivery_mode": "announce-always", "delivery_channel": "telegram", "delivery_to": CHAT,
            "origin": "system", "delete_after_run": 0, "run_timeout_ms": 30000}
    job = add_job(cli, json.dumps(spec), "--in", "1s")
    delivered(db_path, job["id"])
    text, media = fake_gateway.deliveries
    assert text["message"] == "Here is the plot."
    assert media["media"]["data"] == png_bytes(9)
    (run,) = query(db_path, "SELECT * FROM runs WHERE job_id = ?", (job["id"],))
    assert run["summary"] == reply
    assert d.stop() == 0


def test_missing_and_forbidden_files_are_reported_in_the_text(cli, daemon, db_path, fake_gateway,
                                                              tmp_path) -> None:
    # The token file lies in an allowed directory and is shaped like an image: still refused.
    token_file = write_png(tmp_path / "secrets" / "token.png")
    outside = write_png(tmp_path / "elsewhere" / "x.png")
    allowed = tmp_path / "media"
    allowed.mkdir()
    missing = allowed / "not-there.png"
    d = daemon(env=gateway_env(fake_gateway, OPENCLAW_GATEWAY_TOKEN="tok",
                               OPENCLAW_GATEWAY_TOKEN_PATH=str(token_file),
                               SCHEDULER_MEDIA_DIRS=f"{allowed}{os.pathsep}{token_file.parent}"))
    command = f"echo hi; echo '[IMAGE:{missing}]'; echo '[IMAGE:{token_file}]'"
    job = add_job(cli, announcing_shell(command), "--in", "1s")
    other = add_job(cli, announcing_shell(f"echo x; echo '[IMAGE:{outside}]'"), "--in", "1s")
    message = delivered(db_path, job["id"])
    assert message["body"] == (
        f"stdout:\nhi\n\n[image not sent: {missing}: no such file]\n"
        f"[image not sent: {token_file}: the scheduler's own files (gateway token, database) are "
        "never sent]")
    delivered(db_path, other["id"])
    assert all(entry["media"] is None for entry in fake_gateway.deliveries)
    assert len(fake_gateway.deliveries) == 2
    assert "x.png: not under an allowed directory" in outbound(db_path, other["id"])[0]["body"]
    assert d.stop() == 0


def test_a_failed_image_is_retried_without_resending_what_was_accepted(
    cli, daemon, db_path, fake_gateway, tmp_path
) -> None:
    first = write_png(tmp_path / "a.png", seed=1)
    second = write_png(tmp_path / "b.png", seed=2)
    failure = {"ok": False, "error": {"type": "tool_error", "message": "tool execution failed"}}
    # The text and the first image go through; the second image fails once.
    fake_gateway.script("tool:message", lambda request: None, lambda request: None,
                        Reply(500, failure))
    d = daemon(env=gateway_env(fake_gateway))
    job = add_job(cli, announcing_shell(f"echo '[IMAGE:{first}]'; echo '[IMAGE:{second}]'; echo ok"),
                  "--in", "1s")
    pending = wait_until(lambda: [m for m in outbound(db_path, job["id"])
                                  if m["delivery_attempts"] >= 1], timeout=20)[0]
    assert pending["status"] == "pending" and "tool execution failed" in pending["last_error"]
    assert json.loads(pending["metadata"])["media_sent"] == 1  # durable: a restart resumes here
    delivered(db_path, job["id"])
    sent = [entry["media"]["data"] for entry in fake_gateway.deliveries if entry["media"]]
    assert sent == [png_bytes(1), png_bytes(2)]
    assert [entry["message"] for entry in fake_gateway.deliveries if entry["message"]] == ["stdout:\nok"]
    assert d.stop() == 0


def test_a_file_gone_before_sending_is_given_up_with_the_reason(
    cli, daemon, db_path, fake_gateway, tmp_path
) -> None:
    image = write_png(tmp_path / "soon-gone.png")
    fake_gateway.script("tool:message", lambda request: (image.unlink(), None)[1])
    d = daemon(env=gateway_env(fake_gateway))
    job = add_job(cli, announcing_shell(f"echo text; echo '[IMAGE:{image}]'"), "--in", "1s")
    message = delivered(db_path, job["id"])
    meta = json.loads(message["metadata"])
    assert meta["media_sent"] == 1
    assert meta["media_skipped"] == [f"attachment not sent: {image}: no such file"]
    assert [entry["media"] for entry in fake_gateway.deliveries] == [None]
    receipts = query(db_path, "SELECT detail FROM message_receipts WHERE message_id = ?",
                     (message["id"],))
    assert any("no such file" in r["detail"] for r in receipts)
    assert d.stop() == 0


def test_a_channel_without_media_gets_the_text_and_a_note(cli, daemon, db_path, fake_gateway,
                                                          tmp_path) -> None:
    image = write_png(tmp_path / "c.png")
    d = daemon(env=gateway_env(fake_gateway))
    job = add_job(cli, announcing_shell(f"echo hello; echo '[IMAGE:{image}]'",
                                        delivery_channel="nostr"), "--in", "1s")
    delivered(db_path, job["id"])
    (entry,) = fake_gateway.deliveries
    assert entry["message"] == ("stdout:\nhello\n\n[1 image(s) not sent: channel 'nostr' takes no "
                                "media from the scheduler]")
    assert entry["media"] is None
    assert d.stop() == 0
