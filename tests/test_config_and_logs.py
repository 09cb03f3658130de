"""Configuration from the environment, and log redaction."""

from __future__ import annotations

import io
import json
import logging
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog

from scheduler import logs
from scheduler.config import load_settings
from scheduler.errors import ConfigError


@pytest.fixture(autouse=True)
def stdlib_logging() -> Iterator[None]:
    """Put the logging module back as it was after a test that configures our logs."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    library_levels = {name: logging.getLogger(name).level for name in ("httpx", "httpcore")}
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    for name, value in library_levels.items():
        logging.getLogger(name).setLevel(value)
    logging.captureWarnings(False)
    structlog.reset_defaults()


def test_defaults_match_the_reference(tmp_path: Path) -> None:
    settings = load_settings({"HOME": str(tmp_path)})
    assert settings.tick_ms == 10000
    assert settings.stale_threshold_s == 90
    assert settings.gateway_url == "http://127.0.0.1:18789"
    assert settings.max_concurrency == 64
    assert settings.shell in ("/bin/bash", "/bin/zsh")
    assert settings.sqlite_synchronous == "FULL"


def test_paths_follow_scheduler_db_and_home(tmp_path: Path) -> None:
    settings = load_settings({"SCHEDULER_DB": str(tmp_path / "x.db")})
    assert settings.db_path == tmp_path / "x.db"
    assert settings.artifacts_path == tmp_path / "artifacts"
    settings = load_settings({"SCHEDULER_HOME": str(tmp_path / "home")})
    assert settings.db_path == tmp_path / "home" / "scheduler.db"
    settings = load_settings({"SCHEDULER_DB": str(tmp_path / "x.db"), "SCHEDULER_ARTIFACTS_DIR": "/srv/a"})
    assert settings.artifacts_path == Path("/srv/a")


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("SCHEDULER_TICK_MS", "abc"),
        ("SCHEDULER_TICK_MS", "999"),
        ("SCHEDULER_STALE_THRESHOLD_S", "5"),
        ("SCHEDULER_HEARTBEAT_CHECK_MS", "-1"),
        ("SCHEDULER_PRUNE_MS", "1.5"),
        ("SCHEDULER_MAX_CONCURRENCY", "0"),
        ("SCHEDULER_SHUTDOWN_GRACE_MS", "soon"),
        ("SCHEDULER_SQLITE_SYNCHRONOUS", "sometimes"),
    ],
)
def test_invalid_value_names_the_variable(name: str, value: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings({name: value})
    message = str(info.value)
    assert message.startswith(f"{name}: ")
    assert "\n" not in message


def test_token_value_is_never_echoed_in_config_errors() -> None:
    settings = load_settings({"OPENCLAW_GATEWAY_TOKEN": "tok-123456"})
    assert settings.gateway_token is not None
    assert "tok-123456" not in repr(settings)


def test_debug_and_allow_list_parsing() -> None:
    assert load_settings({"SCHEDULER_DEBUG": "1"}).debug is True
    assert load_settings({"SCHEDULER_DEBUG": "false"}).debug is False
    allow = load_settings({"SCHEDULER_SHELL_ENV_ALLOW": " GITHUB_TOKEN, ,AWS_PROFILE"}).shell_env_allow
    assert allow == ("GITHUB_TOKEN", "AWS_PROFILE")


def test_daemon_refuses_to_start_on_a_bad_variable(tmp_path: Path) -> None:
    env = {"PATH": "/usr/bin:/bin", "SCHEDULER_DB": str(tmp_path / "s.db"), "SCHEDULER_TICK_MS": "NaN"}
    result = subprocess.run([sys.executable, "-m", "scheduler"], env=env, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "SCHEDULER_TICK_MS" in lines[0]
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "s.db").exists()


def _capture(secrets: list[str]) -> tuple[io.StringIO, object]:
    stream = io.StringIO()
    logs.configure(secrets=secrets, json_lines=True)
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(file=stream),
                        cache_logger_on_first_use=False)
    return stream, structlog.get_logger("t")


def test_logs_redact_secret_fields_and_values() -> None:
    stream, log = _capture(["tok-abcdef"])
    log.info("event", token="x", authorization="Bearer tok-abcdef",
             error="request failed with header Bearer tok-abcdef", nested={"detail": "tok-abcdef!"})
    record = json.loads(stream.getvalue().strip())
    assert "tok-abcdef" not in stream.getvalue()
    assert record["token"] == logs.REDACTED
    assert record["error"] == f"request failed with header Bearer {logs.REDACTED}"
    assert record["nested"] == {"detail": f"{logs.REDACTED}!"}
    structlog.reset_defaults()


def test_logs_redact_credentials_in_any_url() -> None:
    stream, log = _capture([])
    log.info("event", url="https://ops:pa55@gw.example:8443/v1", note="see http://t0ken@host/x and http://plain/")
    text = stream.getvalue()
    assert "pa55" not in text and "t0ken" not in text
    record = json.loads(text)
    assert record["url"] == "https://[redacted]@gw.example:8443/v1"
    assert record["note"] == "see http://[redacted]@host/x and http://plain/"
    structlog.reset_defaults()


def test_redact_url() -> None:
    assert logs.redact_url("http://u:p@127.0.0.1:1/x?y=a@b") == "http://[redacted]@127.0.0.1:1/x?y=a@b"
    assert logs.redact_url("http://127.0.0.1:1/a@b") == "http://127.0.0.1:1/a@b"
    assert logs.redact_url("mail a@b.c") == "mail a@b.c"


def test_stdlib_records_become_our_json_events_and_httpx_info_is_silent() -> None:
    stream = io.StringIO()
    logs.configure(secrets=["tok-abcdef"], json_lines=True, stream=stream)
    logging.getLogger("httpx").info("HTTP Request: GET http://u:pw@127.0.0.1:1/health")
    logging.getLogger("asyncio").warning("Task %s was slow, token tok-abcdef", "t1")
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        logging.getLogger("scheduler.strategies.shell").exception("shell run heartbeat failed")
    logs.get("t").info("ours", field=1)

    lines = stream.getvalue().splitlines()
    records = [json.loads(line) for line in lines]  # every line is one JSON object
    assert [r["event"] for r in records][:2] == ["Task t1 was slow, token [redacted]",
                                                 "shell run heartbeat failed"]
    assert records[0]["level"] == "warning" and records[0]["logger"] == "asyncio"
    assert "RuntimeError: boom" in records[1]["exception"]
    assert records[2]["event"] == "ours" and records[2]["field"] == 1
    assert len(records) == 3  # httpx's per-request line is not there
    assert not any("HTTP Request" in line for line in lines)


def test_daemon_reports_an_unwritable_database_directory_in_one_line(tmp_path: Path) -> None:
    locked_dir = tmp_path / "ro"
    locked_dir.mkdir()
    (locked_dir / "file").write_text("x")
    # A path whose parent is a regular file cannot be created, even by root.
    env = {"PATH": "/usr/bin:/bin", "SCHEDULER_DB": str(locked_dir / "file" / "s.db")}
    result = subprocess.run([sys.executable, "-m", "scheduler"], env=env, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "cannot create the daemon lock" in lines[0], result.stderr


def test_the_daemon_redacts_the_whole_dispatch_webhook_url(tmp_path: Path) -> None:
    from scheduler.engine.entry import _secrets_to_redact

    hook = "https://chat.example.test/hooks/T0/B0/Zx9secretpath"
    settings = load_settings({"HOME": str(tmp_path), "DISPATCH_WEBHOOK_URL": hook})
    assert hook in _secrets_to_redact(settings)
    assert hook not in _secrets_to_redact(load_settings({"HOME": str(tmp_path)}))
