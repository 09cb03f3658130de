"""The Telegram channel health verdict of ``webhook-check`` (features.md §15.2), from what the
gateway reports. Pure: no I/O.

The reference asked the Telegram Bot API (``getWebhookInfo``) with the bot's token. The gateway
owns that bot, and its ``channels.status`` RPC (with ``probe: true``) says what we need without
the token: whether the channel is configured and running, each account connected, the transport
(``polling`` or ``webhook``, with its URL), the last error, and a live probe of the bot. With a
bot token, Telegram's ``getWebhookInfo`` adds the reference's checks (pending updates, Telegram's
own last delivery error, the URL Telegram holds). The verdict keeps the reference's shape:
``status`` ``OK`` | ``WARN`` | ``ALERT``, ``issues`` (make it ALERT), ``warnings`` (WARN), a
``recommendation``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

CHANNEL: Final = "telegram"
DEFAULT_LABEL: Final = "telegram-bot"
MAX_TEXT: Final = 300
# Keys under which a gateway may name the webhook URL of a channel or account (or ``url`` in a
# nested ``webhook`` object).
_WEBHOOK_URL_KEYS: Final = ("webhookUrl", "webhook_url")


@dataclass(frozen=True)
class HealthInputs:
    """What ``webhook-check`` gathered; ``status_error`` when ``channels.status`` failed."""

    label: str = DEFAULT_LABEL
    channels_status: Mapping[str, Any] | None = None
    status_error: str | None = None
    gateway_health: Mapping[str, Any] | None = None
    recent_failures: int | None = None
    require_webhook: bool = False
    expected_webhook_url: str = ""
    # With a bot token (``--bot-token``): Telegram's ``getWebhookInfo``, or why it failed.
    webhook_info: Mapping[str, Any] | None = None
    bot_error: str | None = None
    pending_threshold: int = 1


@dataclass
class _Verdict:
    issues: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def _text(value: Any) -> str | None:
    if value is None or value == "":
        return None
    flat = " ".join(str(value).split())
    return flat if len(flat) <= MAX_TEXT else flat[: MAX_TEXT - 3] + "..."


def _error_text(value: Any) -> str | None:
    if isinstance(value, Mapping):
        return _text(value.get("message") or value.get("error") or value.get("code"))
    return _text(value)


def _webhook_url(*sources: Mapping[str, Any]) -> str | None:
    for source in sources:
        for key in _WEBHOOK_URL_KEYS:
            value = source.get(key)
            if isinstance(value, str) and value.strip():
                return value.strip()
        webhook = source.get("webhook")
        if isinstance(webhook, Mapping) and isinstance(webhook.get("url"), str) and webhook["url"].strip():
            return str(webhook["url"]).strip()
    return None


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def channel_summary(status: Mapping[str, Any]) -> dict[str, Any] | None:
    """The Telegram channel and its accounts, as the report shows them; None when the gateway
    lists no Telegram channel."""
    channels = status.get("channels")
    channel = channels.get(CHANNEL) if isinstance(channels, Mapping) else None
    if not isinstance(channel, Mapping):
        return None
    all_accounts = status.get("channelAccounts")
    raw_accounts = all_accounts.get(CHANNEL) if isinstance(all_accounts, Mapping) else None
    accounts = [a for a in raw_accounts or [] if isinstance(a, Mapping)]
    probe = _mapping(channel.get("probe"))
    bot = _mapping(probe.get("bot"))
    return {
        "configured": channel.get("configured") is True,
        "running": channel.get("running") is True,
        "connected": bool(accounts) and all(a.get("connected") is True for a in accounts),
        "mode": _text(channel.get("mode")),
        "webhook_url": _webhook_url(channel, *accounts),
        "last_error": _error_text(channel.get("lastError")),
        "probe_ok": probe.get("ok") if isinstance(probe.get("ok"), bool) else None,
        "probe_error": _error_text(probe.get("error")),
        "bot": _text(bot.get("username")) if bot else None,
        "accounts": [_account(a) for a in accounts],
    }


def _account(account: Mapping[str, Any]) -> dict[str, Any]:
    return {"account_id": _text(account.get("accountId")),
            "connected": account.get("connected") is True,
            "running": account.get("running") if isinstance(account.get("running"), bool) else None,
            "mode": _text(account.get("mode")),
            "last_error": _error_text(account.get("lastError")),
            "last_inbound_at": account.get("lastInboundAt"),
            "last_outbound_at": account.get("lastOutboundAt")}


def evaluate(inputs: HealthInputs) -> dict[str, Any]:
    """The report: the reference's fields (label, status, issues, warnings, recommendation,
    gateway, recent_scheduler_delivery_failures) with ``channel`` in place of ``webhook``."""
    verdict = _Verdict()
    channel = None
    if inputs.status_error is not None:
        verdict.issues.append(f"gateway_error={_text(inputs.status_error)}")
    else:
        channel = channel_summary(inputs.channels_status or {})
        _judge_channel(channel, inputs, verdict)
    _judge_bot_api(inputs, verdict)
    health = inputs.gateway_health
    if health is not None and health.get("ok") is False:
        verdict.warnings.append(
            f"gateway_unreachable={health.get('error') or health.get('status') or 'unknown'}")
    if isinstance(inputs.recent_failures, int) and inputs.recent_failures > 0:
        verdict.warnings.append(f"recent_scheduler_delivery_failures={inputs.recent_failures}")
    status = "ALERT" if verdict.issues else "WARN" if verdict.warnings else "OK"
    return {"label": inputs.label, "status": status, "issues": verdict.issues,
            "warnings": verdict.warnings, "recommendation": _recommendation(status, verdict.issues),
            "channel": channel, "webhook": _webhook_view(inputs.webhook_info),
            "gateway": dict(health) if health is not None else None,
            "recent_scheduler_delivery_failures": inputs.recent_failures}


def _judge_channel(channel: Mapping[str, Any] | None, inputs: HealthInputs, verdict: _Verdict) -> None:
    if channel is None:
        verdict.issues.append("channel_missing")
        return
    if not channel["configured"]:
        verdict.issues.append("channel_not_configured")
    if not channel["running"]:
        verdict.issues.append("channel_not_running")
    verdict.issues.extend(f"account_disconnected={a['account_id'] or '?'}"
                          for a in channel["accounts"] if not a["connected"])
    if not channel["accounts"]:
        verdict.issues.append("no_account")
    if channel["probe_ok"] is False:
        verdict.issues.append(f"probe_failed={channel['probe_error'] or 'unknown'}")
    if channel["last_error"]:
        verdict.issues.append(f"last_error={channel['last_error']}")
    verdict.issues.extend(_account_errors(channel["accounts"], channel["last_error"]))
    if inputs.require_webhook and channel["mode"] != "webhook":
        verdict.issues.append(f"webhook_missing (mode={channel['mode'] or 'unknown'})")
    url = channel["webhook_url"]
    if inputs.expected_webhook_url and url and url != inputs.expected_webhook_url:
        verdict.issues.append("webhook_url_mismatch")


def _judge_bot_api(inputs: HealthInputs, verdict: _Verdict) -> None:
    """The reference's checks of ``getWebhookInfo``, when a bot token was given."""
    if inputs.bot_error is not None:
        verdict.issues.append(f"telegram_api_error={_text(inputs.bot_error)}")
        return
    info = inputs.webhook_info
    if info is None:
        return
    url = info.get("url") or ""
    if inputs.require_webhook and not url and not any(i.startswith("webhook_missing")
                                                      for i in verdict.issues):
        verdict.issues.append("webhook_missing")
    if (inputs.expected_webhook_url and url and url != inputs.expected_webhook_url
            and "webhook_url_mismatch" not in verdict.issues):
        verdict.issues.append("webhook_url_mismatch")
    pending = info.get("pending_update_count") or 0
    if isinstance(pending, int) and inputs.pending_threshold > 0 and pending >= inputs.pending_threshold:
        verdict.issues.append(f"pending_update_count={pending}")
    if info.get("last_error_message"):
        verdict.issues.append(f"last_error_message={_text(info['last_error_message'])}")
    if info.get("last_error_date"):
        verdict.warnings.append(f"last_error_date={info['last_error_date']}")


def _webhook_view(info: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """``getWebhookInfo`` as the reference's report shows it."""
    if info is None:
        return None
    return {"url": info.get("url") or "",
            "has_custom_certificate": bool(info.get("has_custom_certificate")),
            "pending_update_count": info.get("pending_update_count") or 0,
            "last_error_date": info.get("last_error_date") or None,
            "last_error_message": _text(info.get("last_error_message")),
            "max_connections": info.get("max_connections"),
            "ip_address": info.get("ip_address") or None}


def _account_errors(accounts: Sequence[Mapping[str, Any]], channel_error: str | None) -> list[str]:
    return [f"last_error[{a['account_id'] or '?'}]={a['last_error']}" for a in accounts
            if a["last_error"] and a["last_error"] != channel_error]


def _recommendation(status: str, issues: Sequence[str]) -> str:
    if status == "OK":
        return "No action required."
    if any(i.startswith(("pending_update_count=", "last_error_message=")) for i in issues):
        return ("Consider refreshing the webhook with drop_pending_updates=true if the queue "
                "appears stuck.")
    if any(i.startswith(("channel_not_running", "account_disconnected", "probe_failed"))
           for i in issues):
        return ("Check the gateway's Telegram channel (openclaw channels status --probe; its "
                "logs) and the bot token it uses.")
    return "Inspect current webhook and gateway state before taking action."


def status_line(report: Mapping[str, Any]) -> str:
    """The reference's first line: ``STATUS: <status> bot=<label> [issues=..] [warnings=..]``."""
    issues = f" issues={','.join(report['issues'])}" if report.get("issues") else ""
    warnings = f" warnings={','.join(report['warnings'])}" if report.get("warnings") else ""
    return f"STATUS: {report['status']} bot={report['label']}{issues}{warnings}"
