"""Dispatch events (engine/dispatch_events.py): a real SQLite store receives the post-office
message, a real HTTP server on 127.0.0.1 receives the webhook."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from scheduler.config import load_settings
from scheduler.engine.dispatch_events import DispatchEvent, Emitted, EventSinks, emit, finished_body
from scheduler.errors import ConfigError
from scheduler.gateway.webhook import check_webhook_url
from scheduler.store import open_store
from scheduler.store.api import Store


class _Hook:
    """A webhook receiver: records each POST body, answers with ``status``."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []
        self.status = 204
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("content-length", "0"))
                hook.bodies.append(json.loads(self.rfile.read(length)))
                self.send_response(hook.status)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *_: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def hook() -> Iterator[_Hook]:
    receiver = _Hook()
    yield receiver
    receiver.close()


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    opened = open_store(tmp_path / "s.db")
    yield opened
    opened.close()


class _Log:
    def __init__(self) -> None:
        self.events: list[tuple[str, str, dict[str, Any]]] = []

    def info(self, event: str, **fields: Any) -> None:
        self.events.append(("info", event, fields))

    def warning(self, event: str, **fields: Any) -> None:
        self.events.append(("warning", event, fields))


COMMIT_STYLE = ("fix(dispatch): normalize completion delivery; add watcher tests; "
                "preserve structured completion summary")


def test_finished_writes_one_result_message_with_the_normalised_text(store: Store) -> None:
    log = _Log()
    done = emit(DispatchEvent.FINISHED, "alpha", sinks=EventSinks(), store=store, log=log,
                session_key="agent:main:subagent:1", completion=COMMIT_STYLE, deliver_to="12345",
                fields={"status": "ok", "duration_ms": 61000})
    assert done.message_id is not None and done.failures == ()
    message = store.get_message(done.message_id)
    assert message is not None
    assert (message.from_agent, message.to_agent, message.kind, message.subject, message.status) \
        == ("dispatch", "main", "result", "alpha", "pending")
    assert message.body.startswith("✅ [alpha] done\n\nFinal completion updates now start with")
    assert "fix(dispatch)" not in message.body
    assert message.row["channel"] == "telegram" and message.row["delivery_to"] == "12345"
    assert log.events[0] == ("info", "dispatch.finished",
                             {"label": "alpha", "session_key": "agent:main:subagent:1",
                              "status": "ok", "duration_ms": 61000})


def test_finished_with_nothing_meaningful_writes_nothing(store: Store) -> None:
    log = _Log()
    done = emit(DispatchEvent.FINISHED, "alpha", sinks=EventSinks(), store=store, log=log,
                completion="Done.", deliver_to="12345")
    assert done.message_id is None
    assert store.inbox("main", "2999-01-01 00:00:00", 10) == []
    assert any(event == "dispatch.delivery_suppressed" for _, event, _ in log.events)
    assert finished_body("alpha", "completed (agent signal)") is None


def test_finished_without_a_target_leaves_delivery_to_the_watcher(store: Store) -> None:
    done = emit(DispatchEvent.FINISHED, "alpha", sinks=EventSinks(), store=store, log=_Log(),
                completion="The report is ready.")
    assert done.message_id is None


def test_other_events_queue_a_text_notice(store: Store) -> None:
    done = emit(DispatchEvent.STUCK, "beta", sinks=EventSinks(), store=store, log=_Log(),
                notice="[beta] has been quiet for 3 minutes")
    assert done.message_id is not None
    message = store.get_message(done.message_id)
    assert message is not None
    assert (message.from_agent, message.kind, message.subject, message.body) \
        == ("dispatch", "text", "beta", "[beta] has been quiet for 3 minutes")


def test_notify_disabled_silences_the_notices_only(store: Store) -> None:
    sinks = EventSinks.from_env({"OPENCLAW_SCHEDULER_NOTIFY_DISABLED": "1"})
    assert sinks.notify_disabled
    notice = emit(DispatchEvent.STARTED, "gamma", sinks=sinks, store=store, log=_Log(),
                  notice="[gamma] starting")
    result = emit(DispatchEvent.FINISHED, "gamma", sinks=sinks, store=store, log=_Log(),
                  completion="All three reports were regenerated.", deliver_to="42")
    assert notice.message_id is None
    assert result.message_id is not None


def test_the_webhook_receives_the_event_as_json(hook: _Hook, store: Store) -> None:
    sinks = EventSinks.from_env({"DISPATCH_WEBHOOK_URL": hook.url, "DISPATCH_HOST": "box-1"})
    done = emit(DispatchEvent.STARTED, "delta", sinks=sinks, store=store, log=_Log(),
                session_key="agent:main:subagent:9", fields={"agent": "main", "mode": "fresh"})
    assert done.webhook_status == 204
    assert len(hook.bodies) == 1
    body = hook.bodies[0]
    assert isinstance(body.pop("ts"), int)
    assert body == {"event": "dispatch.started", "host": "box-1", "label": "delta",
                    "session_key": "agent:main:subagent:9", "agent": "main", "mode": "fresh"}


def test_a_failing_webhook_is_logged_and_swallowed(hook: _Hook, store: Store) -> None:
    hook.status = 500
    log = _Log()
    secret_url = hook.url.replace("http://", "http://user:hunter2@")
    done = emit(DispatchEvent.FINISHED, "eps", sinks=EventSinks(webhook_url=secret_url), store=store,
                log=log, completion="The migration finished.", deliver_to="7")
    assert isinstance(done, Emitted)
    assert done.webhook_status is None and done.failures == ("webhook: HTTP 500",)
    assert done.message_id is not None  # the other sinks still worked
    warnings = [fields for level, _, fields in log.events if level == "warning"]
    assert warnings and "hunter2" not in repr(log.events)


def test_an_unreachable_webhook_is_swallowed(tmp_path: Path) -> None:
    import socket

    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    sinks = EventSinks(webhook_url=f"http://127.0.0.1:{port}/")
    done = emit(DispatchEvent.CANCELLED, "zeta", sinks=sinks, log=_Log())
    assert done.webhook_status is None and done.failures == ("webhook: ConnectError",)


def test_a_broken_store_never_raises_into_the_caller(tmp_path: Path) -> None:
    broken = open_store(tmp_path / "b.db")
    broken.close()
    done = emit(DispatchEvent.STUCK, "eta", sinks=EventSinks(), store=broken, log=_Log(),
                notice="stuck")
    assert done.message_id is None and done.failures[0].startswith("post-office: ")


@pytest.mark.parametrize("value", ["ftp://example.com/x", "example.com/hook", "http://",
                                   "http://h:99999/", "https://" + "a" * 3000 + ".com/"])
def test_a_bad_webhook_url_is_refused(value: str) -> None:
    with pytest.raises(ValueError):
        check_webhook_url(value)
    with pytest.raises(ValueError, match=r"^DISPATCH_WEBHOOK_URL: "):
        EventSinks.from_env({"DISPATCH_WEBHOOK_URL": value})
    with pytest.raises(ConfigError, match=r"^DISPATCH_WEBHOOK_URL: "):
        load_settings({"DISPATCH_WEBHOOK_URL": value})


def test_the_daemon_settings_never_echo_webhook_credentials() -> None:
    with pytest.raises(ConfigError) as info:
        load_settings({"DISPATCH_WEBHOOK_URL": "https://user:hunter2@host:99999/x"})
    assert "hunter2" not in str(info.value)
    settings = load_settings({"DISPATCH_WEBHOOK_URL": "https://user:hunter2@hooks.example/x"})
    assert settings.dispatch_webhook_url is not None
    assert "hunter2" not in repr(settings)
    assert settings.dispatch_webhook_url.get_secret_value() == "https://user:hunter2@hooks.example/x"


def test_the_real_logger_takes_every_field(store: Store, capsys: pytest.CaptureFixture[str]) -> None:
    done = emit(DispatchEvent.FINISHED, "theta", sinks=EventSinks(webhook_url="http://127.0.0.1:1/"),
                store=store, completion="Done.", deliver_to="1",
                fields={"status": "error", "error": "boom", "agent": "main"})
    assert done.logged
    assert done.failures == ("webhook: ConnectError",)
    assert "dispatch.finished" in capsys.readouterr().out
