"""``webhook-check``: the Telegram channel's health through the gateway (features.md §15.2).

The CLI runs as a subprocess against the loopback fake gateway, whose control plane answers
``channels.status`` in the real gateway's shape (tests/fakerpc.py, ``FakeRpc.telegram``).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta
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
    code, parsed, stdout, stderr = cli("webhook-check", *args, json_mode=json_mode, env={
        "OPENCLAW_GATEWAY_URL": gateway.url, "OPENCLAW_GATEWAY_TOKEN": TOKEN, **env})
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


@pytest.mark.parametrize("args", [("--bot-token", "123:SECRET-TOKEN"), ("--repair", "drop-pending"),
                                  ("--bot-token-env", "TG"), ("--require-webhook=maybe",),
                                  ("--unknown",)])
def test_what_it_does_not_do_is_refused_in_one_line(cli: Any, gateway: FakeGateway,
                                                    args: tuple[str, ...]) -> None:
    code, report, stdout, stderr = check(cli, gateway, *args)
    assert code == 2 and report["ok"] is False
    assert "SECRET-TOKEN" not in stdout + stderr
    assert gateway.rpc.requests_for("channels.status") == []
