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
                      "--expected-webhook-url-env <VAR>]")
MAX_THRESHOLD_MIN: Final = 7 * 24 * 60
MAX_LIMIT: Final = 1000
FAILURE_WINDOW_S: Final = 24 * 3600
STATUS_TIMEOUT_S: Final = 30.0
# Accepted for the reference's callers, and refused with a reason (docs/differences.md).
BOT_API_OPTIONS: Final = ("--bot-token", "--bot-token-env", "--repair", "--pending-threshold")


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


def webhook_check(ctx: Context) -> int:
    from scheduler.models.webhook_health import DEFAULT_LABEL, HealthInputs, evaluate, status_line

    _refuse_bot_api(ctx)
    label = ctx.option("--label") or DEFAULT_LABEL
    gateway_url = ctx.option("--gateway-url")
    db_path = ctx.option("--scheduler-db")
    expected = _expected_webhook_url(ctx)
    require = _require_webhook(ctx)
    ctx.no_extra(0, CHECK_USAGE)
    url, token = _gateway()
    url = gateway_url or url
    _quiet_logs(token)
    status, error = asyncio.run(_channels_status(url, token))
    inputs = HealthInputs(label=label, channels_status=status, status_error=error,
                          gateway_health=_health(url, token),
                          recent_failures=_recent_failures(ctx, db_path),
                          require_webhook=require, expected_webhook_url=expected)
    report = evaluate(inputs)
    ctx.out.emit(report, lambda: _print_lines([status_line(report), dumps(report)]))
    return 1 if report["status"] == "ALERT" else 0


def _refuse_bot_api(ctx: Context) -> None:
    for option in BOT_API_OPTIONS:
        if any(arg == option or arg.startswith(option + "=") for arg in ctx.args):
            raise UsageError(
                f"{option} is not supported: webhook-check asks the gateway, which owns the bot "
                "(channels.status), and never handles a bot token; to drop or re-register the "
                "webhook, use the Bot API directly (docs/differences.md, Companion tools)")


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
