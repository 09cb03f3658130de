"""The companion tools of features.md §15.2 as commands: ``runs stuck`` (the stuck-run detector)
and ``webhook-check`` (the Telegram channel's health, through the gateway).

Both speak to the gateway's WebSocket control plane (gateway/rpc.py) with the daemon's URL and
token (``OPENCLAW_GATEWAY_URL``, ``OPENCLAW_GATEWAY_TOKEN`` or its file), and print the
reference's text, or JSON with ``--json``. The exit status says whether something needs a person:
1 for a stuck run or an unhealthy channel, 0 otherwise, 2 for bad arguments.
"""

from __future__ import annotations

import asyncio
import os
import sys
from typing import TYPE_CHECKING, Any, Final

from scheduler.cli.commands import _positive_int
from scheduler.cli.context import Context, Handler, UsageError
from scheduler.cli.output import dumps, printable_lines

if TYPE_CHECKING:
    from scheduler.engine.stuck_runs import StuckReport
    from scheduler.store.api import Store

STUCK_USAGE: Final = "runs stuck [--threshold-min 45] [--limit 20]"
CHECK_USAGE: Final = ("webhook-check [--label <name>] [--gateway-url <url>] [--scheduler-db <path>] "
                      "[--require-webhook [true|false]] [--expected-webhook-url <url> | "
                      "--expected-webhook-url-env <VAR>] [--bot-token-env <VAR> | --bot-token <t>] "
                      "[--pending-threshold <n>] [--telegram-api-root <url>] [--repair drop-pending]")
MAX_THRESHOLD_MIN: Final = 7 * 24 * 60
MAX_LIMIT: Final = 1000
FAILURE_WINDOW_S: Final = 24 * 3600
STATUS_TIMEOUT_S: Final = 30.0
MAX_PENDING_THRESHOLD: Final = 1_000_000
REPAIRS: Final = ("drop-pending",)


def _gateway() -> tuple[str, str | None]:
    """The gateway URL and token the daemon would use."""
    from scheduler.config import load_settings
    from scheduler.gateway.client import resolve_token

    settings = load_settings()
    token = settings.gateway_token.get_secret_value() if settings.gateway_token else None
    return settings.gateway_url, resolve_token(token, settings.gateway_token_path.expanduser())


def _quiet_logs(token: str | None) -> None:
    """Warnings on stderr, never the token; no debug chatter in a command's output."""
    from scheduler import logs

    logs.configure(debug=False, secrets=[token] if token else [])


# -- runs stuck ---------------------------------------------------------------------------------


def runs_stuck(ctx: Context) -> int:
    from scheduler.engine.stuck_runs import DEFAULT_LIMIT, DEFAULT_THRESHOLD_MIN

    threshold = ctx.option("--threshold-min")
    limit = ctx.option("--limit")
    ctx.no_extra(0, STUCK_USAGE)
    threshold_min = (DEFAULT_THRESHOLD_MIN if threshold is None
                     else _positive_int(threshold, "--threshold-min", maximum=MAX_THRESHOLD_MIN))
    page = DEFAULT_LIMIT if limit is None else _positive_int(limit, "--limit", maximum=MAX_LIMIT)
    url, token = _gateway()
    _quiet_logs(token)
    report = asyncio.run(_detect(ctx.store, url, token, threshold_min * 60, page))
    ctx.out.emit(report.as_dict(), lambda: _print_lines(report.lines()))
    return report.exit_code


async def _detect(store: Store, url: str, token: str | None, threshold_s: int,
                  limit: int) -> StuckReport:
    from scheduler import logs
    from scheduler.engine.stuck_runs import detect_stuck_runs, rpc_opener
    from scheduler.timeutil import utcnow

    async def call(fn: Any, *args: Any) -> Any:
        return fn(*args)

    return await detect_stuck_runs(call, store, rpc_opener(url, token), threshold_s=threshold_s,
                                   limit=limit, now=utcnow(), log=logs.get("scheduler.stuck_runs"))


def _print_lines(lines: list[str]) -> None:
    sys.stdout.write(printable_lines("\n".join(lines)) + "\n")


# -- webhook-check ------------------------------------------------------------------------------


def _gateway_url(value: str | None) -> str | None:
    """``--gateway-url`` as given, if it names a gateway: an http(s) URL with a host."""
    from urllib.parse import urlsplit

    if value is None:
        return None
    try:
        parts = urlsplit(value)
        usable = parts.scheme in ("http", "https") and bool(parts.hostname)
    except ValueError:  # a bad port or bracketed host
        usable = False
    if not usable or len(value) > 2048:
        raise UsageError("--gateway-url must be an http(s) URL with a host, "
                         "e.g. http://127.0.0.1:18789")
    return value


def webhook_check(ctx: Context) -> int:
    from scheduler.models.webhook_health import DEFAULT_LABEL, HealthInputs, evaluate, status_line

    label = ctx.option("--label") or DEFAULT_LABEL
    gateway_url = _gateway_url(ctx.option("--gateway-url"))
    db_path = ctx.option("--scheduler-db")
    expected = _expected_webhook_url(ctx)
    require = _require_webhook(ctx)
    bot = _bot_api(ctx)
    ctx.no_extra(0, CHECK_USAGE)
    url, token = _gateway()
    url = gateway_url or url
    _quiet_logs(token)
    status, error = asyncio.run(_channels_status(url, token))
    if bot.repair is not None:
        return _repair(ctx, bot, label, status)
    info, bot_error = bot.webhook_info()
    inputs = HealthInputs(label=label, channels_status=status, status_error=error,
                          gateway_health=_health(url, token),
                          recent_failures=_recent_failures(ctx, db_path),
                          require_webhook=require, expected_webhook_url=expected,
                          webhook_info=info, bot_error=bot_error,
                          pending_threshold=bot.pending_threshold)
    report = evaluate(inputs)
    ctx.out.emit(report, lambda: _print_lines([status_line(report), dumps(report)]))
    return 1 if report["status"] == "ALERT" else 0


class _BotApi:
    """The optional Bot API side: a token (never printed), where the API is, what to do."""

    def __init__(self, token: str | None, api_root: str, pending_threshold: int,
                 repair: str | None) -> None:
        self.token, self.api_root = token, api_root
        self.pending_threshold, self.repair = pending_threshold, repair

    def webhook_info(self) -> tuple[dict[str, Any] | None, str | None]:
        if not self.token:
            return None, None
        from scheduler.gateway.telegram import TelegramApiError, bot_call

        try:
            info = bot_call(self.api_root, self.token, "getWebhookInfo")
        except TelegramApiError as exc:
            return None, str(exc)
        return (info if isinstance(info, dict) else {}), None


def _bot_api(ctx: Context) -> _BotApi:
    from scheduler.gateway.telegram import DEFAULT_API_ROOT, check_api_root

    direct = ctx.option("--bot-token")
    variable = ctx.option("--bot-token-env")
    if direct is not None and variable is not None:
        raise UsageError("give --bot-token or --bot-token-env, not both")
    token = direct if direct is not None else os.environ.get(variable or "TELEGRAM_BOT_TOKEN")
    root_text = (ctx.option("--telegram-api-root") or os.environ.get("TELEGRAM_API_ROOT")
                 or DEFAULT_API_ROOT)
    try:
        root = check_api_root(root_text)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    threshold_text = ctx.option("--pending-threshold")
    threshold = 1 if threshold_text is None else _positive_int(
        threshold_text, "--pending-threshold", maximum=MAX_PENDING_THRESHOLD, minimum=0)
    repair = ctx.option("--repair")
    if repair is not None and repair not in REPAIRS:
        raise UsageError(f"--repair takes one of: {', '.join(REPAIRS)}")
    token = (token or "").strip() or None
    if repair is not None and token is None:
        raise UsageError("--repair drop-pending needs the bot token: --bot-token-env <VAR> "
                         "(or --bot-token, or TELEGRAM_BOT_TOKEN)")
    return _BotApi(token, root, threshold, repair)


def _repair(ctx: Context, bot: _BotApi, label: str, status: dict[str, Any] | None) -> int:
    """The reference's repair: ``deleteWebhook`` keeping pending updates, so a polling bot that a
    stale webhook blocks can drain them. Refused when the gateway runs the bot on a webhook:
    deleting it would cut the gateway off its updates."""
    from scheduler.errors import SchedulerError
    from scheduler.gateway.telegram import bot_call
    from scheduler.models.webhook_health import channel_summary, status_line

    channel = channel_summary(status) if status is not None else None
    mode = channel["mode"] if channel is not None else None
    if mode == "webhook":
        raise SchedulerError("refused: the gateway runs the Telegram channel in webhook mode, and "
                             "deleting the webhook would stop its updates; re-register it instead")
    assert bot.token is not None  # _bot_api refused a repair without one
    result = bot_call(bot.api_root, bot.token, "deleteWebhook", {"drop_pending_updates": False})
    report = {"label": label, "status": "REPAIRED", "issues": [], "warnings": [],
              "action": "drop-pending", "gateway_mode": mode, "telegram_response": result}
    ctx.out.emit(report, lambda: _print_lines([status_line(report), dumps(report)]))
    return 0


def _expected_webhook_url(ctx: Context) -> str:
    direct = ctx.option("--expected-webhook-url")
    variable = ctx.option("--expected-webhook-url-env")
    if direct is not None and variable is not None:
        raise UsageError("give --expected-webhook-url or --expected-webhook-url-env, not both")
    if direct is not None:
        return direct.strip()
    if variable is not None:
        return (os.environ.get(variable) or "").strip()
    return (os.environ.get("TELEGRAM_WEBHOOK_URL") or "").strip()


def _require_webhook(ctx: Context) -> bool:
    """``--require-webhook`` alone, or followed by ``true``/``false`` (the reference's forms)."""
    for index, arg in enumerate(ctx.args):
        if arg == "--require-webhook":
            value = ctx.args[index + 1] if index + 1 < len(ctx.args) else None
            if value in ("true", "false"):
                del ctx.args[index: index + 2]
                return value == "true"
            del ctx.args[index]
            return True
        if arg.startswith("--require-webhook="):
            value = arg.split("=", 1)[1]
            if value not in ("true", "false"):
                raise UsageError(f"--require-webhook takes true or false, got {value!r}")
            del ctx.args[index]
            return value == "true"
    return False


async def _channels_status(url: str, token: str | None) -> tuple[dict[str, Any] | None, str | None]:
    """The gateway's ``channels.status`` with a live probe, or the reason it could not be had."""
    from scheduler.errors import SchedulerError
    from scheduler.gateway.rpc import GatewayRpc

    try:
        async with GatewayRpc(url, token) as rpc:
            return await rpc.call("channels.status", {"probe": True}, timeout_s=STATUS_TIMEOUT_S), None
    except SchedulerError as exc:
        return None, str(exc)


def _health(url: str, token: str | None) -> dict[str, Any]:
    from scheduler.cli.doctor import gateway_reachable

    return {"ok": gateway_reachable(url, token)}


def _recent_failures(ctx: Context, db_path: str | None) -> int | None:
    """Messages with a delivery error in the last 24 h, in the named database or ours; None when
    that database does not exist (it is not created for a health check)."""
    from pathlib import Path

    from scheduler import paths
    from scheduler.timeutil import sqlite_now

    path = Path(db_path).expanduser() if db_path else paths.db_path()
    if not path.is_file():
        return None
    since = sqlite_now(-FAILURE_WINDOW_S)
    if db_path is None:
        return ctx.store.delivery_failures_since(since)
    from scheduler.store import open_store

    store = open_store(path)
    try:
        return store.delivery_failures_since(since)
    finally:
        store.close()


COMMANDS: dict[tuple[str, str | None], Handler] = {
    ("runs", "stuck"): runs_stuck,
    ("webhook-check", None): webhook_check,
}
