"""``webhook-check``: the Telegram channel's health through the gateway (features.md §15.2).

The CLI runs as a subprocess against the loopback fake gateway, whose control plane answers
``channels.status`` in the real gateway's shape (tests/fakerpc.py, ``FakeRpc.telegram``).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from fakegateway import FakeGateway, fake_gateway  # noqa: F401  (the fixture)
from scheduler.store import open_store
from scheduler.store.api import Delivery, Store
from scheduler.timeutil import to_sqlite, utcnow

TOKEN = "webhook-check-token"


@pytest.fixture
def gateway(fake_gateway: FakeGateway) -> FakeGateway:  # noqa: F811
    fake_gateway.token = TOKEN
    return fake_gateway


@pytest.fixture
def store(db_path: Path) -> Iterator[Store]:
    opened = open_store(db_path)
    yield opened
    opened.close()


def check(cli: Any, gateway: FakeGateway, *args: str, json_mode: bool = True,
          **env: str) -> tuple[int, Any, str, str]:
    isolated = {"TELEGRAM_BOT_TOKEN": "", "TELEGRAM_WEBHOOK_URL": "", "TELEGRAM_API_ROOT": ""}
    code, parsed, stdout, stderr = cli("webhook-check", *args, json_mode=json_mode, env={
        **isolated, "OPENCLAW_GATEWAY_URL": gateway.url, "OPENCLAW_GATEWAY_TOKEN": TOKEN, **env})
    assert "Traceback" not in stderr, stderr
    return code, parsed, stdout, stderr


def test_a_healthy_polling_channel_is_ok_in_the_reference_format(cli: Any, gateway: FakeGateway) -> None:
    code, _, stdout, _ = check(cli, gateway, json_mode=False)
    assert code == 0, stdout
    first, _, rest = stdout.partition("\n")
    assert first == "STATUS: OK bot=telegram-bot"
    report = json.loads(rest)
    channel = report["channel"]
    assert (channel["configured"], channel["running"], channel["connected"]) == (True, True, True)
    assert (channel["mode"], channel["probe_ok"], channel["bot"]) == ("polling", True, "fake_bot")
    assert report["gateway"] == {"ok": True} and report["issues"] == [] and report["warnings"] == []
    (status,) = gateway.rpc.requests_for("channels.status")
    assert status.params == {"probe": True}


def test_require_webhook_fails_a_polling_channel(cli: Any, gateway: FakeGateway) -> None:
    code, report, _, _ = check(cli, gateway, "--require-webhook")
    assert code == 1 and report["status"] == "ALERT"
    assert report["issues"] == ["webhook_missing (mode=polling)"]
    code, report, _, _ = check(cli, gateway, "--require-webhook", "false")
    assert code == 0 and report["status"] == "OK"


def test_a_webhook_url_is_compared_with_the_expected_one(cli: Any, gateway: FakeGateway) -> None:
    gateway.rpc.telegram.update(mode="webhook", webhookUrl="https://bot.example/hook")
    code, report, _, _ = check(cli, gateway, "--require-webhook",
                               "--expected-webhook-url", "https://bot.example/hook")
    assert code == 0 and report["channel"]["webhook_url"] == "https://bot.example/hook"
    code, report, _, _ = check(cli, gateway, TELEGRAM_WEBHOOK_URL="https://other.example/hook")
    assert code == 1 and report["issues"] == ["webhook_url_mismatch"]


def test_a_disconnected_account_with_an_error_is_an_alert(cli: Any, gateway: FakeGateway) -> None:
    gateway.rpc.telegram.update(connected=False, running=False, lastError="409 Conflict: terminated",
                                probe_ok=False, probe_error="Unauthorized")
    code, _, stdout, _ = check(cli, gateway, "--label", "ops-bot", json_mode=False)
    assert code == 1
    assert stdout.startswith("STATUS: ALERT bot=ops-bot issues=channel_not_running,"
                             "account_disconnected=default,probe_failed=Unauthorized,"
                             "last_error=409 Conflict: terminated\n")


def test_an_unreachable_gateway_is_an_alert_not_a_traceback(cli: Any, gateway: FakeGateway) -> None:
    gateway.down()
    code, report, _, _ = check(cli, gateway)
    assert code == 1 and report["status"] == "ALERT"
    assert report["issues"][0].startswith("gateway_error=")
    assert report["warnings"] == ["gateway_unreachable=unknown"] and report["gateway"] == {"ok": False}


def test_recent_delivery_failures_are_a_warning(cli: Any, gateway: FakeGateway, store: Store) -> None:
    now = utcnow()
    store.record_notice(Delivery("x", "telegram", "@gone"), "s", to_sqlite(now))
    store.record_notice(Delivery("old", "telegram", "@gone"), "s", to_sqlite(now - timedelta(days=2)))
    code, report, _, _ = check(cli, gateway)
    assert code == 0 and report["status"] == "WARN"
    assert report["warnings"] == ["recent_scheduler_delivery_failures=1"]
    assert report["recent_scheduler_delivery_failures"] == 1


def test_a_missing_scheduler_db_is_not_created(cli: Any, gateway: FakeGateway, tmp_path: Path) -> None:
    missing = tmp_path / "elsewhere.db"
    code, report, _, _ = check(cli, gateway, "--scheduler-db", str(missing))
    assert code == 0 and report["recent_scheduler_delivery_failures"] is None
    assert not missing.exists()


@pytest.mark.parametrize(("args", "said"), [
    (("--repair", "drop-pending"), "--repair drop-pending needs the bot token"),
    (("--repair", "everything"), "--repair takes one of: drop-pending"),
    (("--bot-token", "1:x", "--bot-token-env", "TG"), "give --bot-token or --bot-token-env"),
    (("--pending-threshold", "-1"), "--pending-threshold must be a whole number"),
    (("--telegram-api-root", "ftp://x"), "the Telegram API root must be an http"),
    (("--require-webhook=maybe",), "--require-webhook takes true or false"),
    (("--gateway-url", ""), "--gateway-url must be an http(s) URL with a host"),
    (("--gateway-url", "file:///etc/passwd"), "--gateway-url must be an http(s) URL"),
    (("--gateway-url", "http://[::1"), "--gateway-url must be an http(s) URL"),
    (("--unknown",), "unknown option --unknown; usage: openclaw-scheduler webhook-check")])
def test_bad_arguments_are_refused_in_one_line(cli: Any, gateway: FakeGateway,
                                               args: tuple[str, ...], said: str) -> None:
    code, report, _, _ = check(cli, gateway, *args)
    assert code == 2 and report["ok"] is False, report
    assert report["error"].startswith(said), report
    assert gateway.rpc.requests_for("channels.status") == []


# -- with a bot token: Telegram's own view (a loopback fake Bot API) ---------------------------

BOT_TOKEN = "123456:SECRET-BOT-TOKEN"


class FakeBotApi:
    """``/bot<token>/<method>``: getWebhookInfo answers :attr:`info`, deleteWebhook ``true``; a
    wrong token gets 401 with a description that quotes the path (as a careless server might)."""

    def __init__(self) -> None:
        self.info: dict[str, Any] = {"url": "", "has_custom_certificate": False,
                                     "pending_update_count": 0}
        self.calls: list[tuple[str, Any]] = []
        api = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _answer(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length)) if length else None
                token, _, method = self.path.removeprefix("/bot").partition("/")
                api.calls.append((method, body))
                if token != BOT_TOKEN:
                    reply, status = {"ok": False, "description": f"Unauthorized {self.path}"}, 401
                elif method == "getWebhookInfo":
                    reply, status = {"ok": True, "result": api.info}, 200
                else:
                    reply, status = {"ok": True, "result": True}, 200
                data = json.dumps(reply).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = _answer

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def bot_api() -> Iterator[FakeBotApi]:
    api = FakeBotApi()
    yield api
    api.server.shutdown()
    api.server.server_close()


def test_with_a_bot_token_telegrams_pending_updates_and_error_are_checked(
        cli: Any, gateway: FakeGateway, bot_api: FakeBotApi) -> None:
    bot_api.info.update(pending_update_count=7, last_error_message="Wrong response from the webhook",
                        last_error_date=1796000000)
    code, report, stdout, stderr = check(cli, gateway, "--bot-token-env", "MY_BOT",
                                         "--telegram-api-root", bot_api.url,
                                         MY_BOT=BOT_TOKEN)
    assert code == 1, report
    assert report["issues"] == ["pending_update_count=7",
                                "last_error_message=Wrong response from the webhook"]
    assert report["warnings"] == ["last_error_date=1796000000"]
    assert report["webhook"]["pending_update_count"] == 7
    assert report["recommendation"].startswith("Consider refreshing the webhook")
    assert bot_api.calls == [("getWebhookInfo", None)]
    assert BOT_TOKEN not in stdout + stderr
    code, report, _, _ = check(cli, gateway, "--pending-threshold", "10", "--telegram-api-root",
                               bot_api.url, TELEGRAM_BOT_TOKEN=BOT_TOKEN)
    assert report["issues"] == ["last_error_message=Wrong response from the webhook"]


def test_a_refused_bot_token_is_an_alert_that_never_shows_the_token(
        cli: Any, gateway: FakeGateway, bot_api: FakeBotApi) -> None:
    wrong = "999:WRONG-SECRET"
    code, report, stdout, stderr = check(cli, gateway, "--bot-token", wrong,
                                         "--telegram-api-root", bot_api.url)
    assert code == 1 and report["issues"][0].startswith("telegram_api_error=")
    assert "Unauthorized" in report["issues"][0]
    assert wrong not in stdout + stderr


def test_repair_drop_pending_deletes_the_webhook_keeping_updates(
        cli: Any, gateway: FakeGateway, bot_api: FakeBotApi) -> None:
    code, report, stdout, stderr = check(cli, gateway, "--repair", "drop-pending",
                                         "--telegram-api-root", bot_api.url,
                                         TELEGRAM_BOT_TOKEN=BOT_TOKEN)
    assert code == 0, stdout + stderr
    assert (report["status"], report["action"], report["gateway_mode"]) == (
        "REPAIRED", "drop-pending", "polling")
    assert bot_api.calls == [("deleteWebhook", {"drop_pending_updates": False})]


def test_repair_is_refused_while_the_gateway_runs_a_webhook(
        cli: Any, gateway: FakeGateway, bot_api: FakeBotApi) -> None:
    gateway.rpc.telegram.update(mode="webhook", webhookUrl="https://bot.example/hook")
    code, report, _, _ = check(cli, gateway, "--repair", "drop-pending",
                               "--telegram-api-root", bot_api.url, TELEGRAM_BOT_TOKEN=BOT_TOKEN)
    assert code != 0 and "webhook mode" in report["error"]
    assert bot_api.calls == []
