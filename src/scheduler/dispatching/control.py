"""``dispatch send``/``steer`` and ``cancel`` (ours)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from scheduler.dispatching import spec
from scheduler.dispatching.gateway import GatewayAccess
from scheduler.dispatching.ledger import (
    disarm_watchdog,
    disarm_watcher,
    event_sinks,
    gateway_failure,
    log,
    require_entry,
)
from scheduler.engine.dispatch_events import DispatchEvent, emit
from scheduler.errors import ValidationError
from scheduler.gateway.client import GatewayError
from scheduler.models.enums import SubagentStatus
from scheduler.store.api import Store
from scheduler.timeutil import to_sqlite


def send(store: Store, gateway: GatewayAccess, label: str | None, session_key: str | None,
         message: str, now: datetime) -> dict[str, Any]:
    key = session_key or require_entry(store, str(label)).session_key
    try:
        run_id = gateway.run(lambda rpc: rpc.send_to_session(key, message))
    except GatewayError as exc:
        raise gateway_failure("Failed to send message: sessions.send", exc) from None
    if label is not None and store.get_dispatch(label) is not None:
        store.update_dispatch(label, {"steered_at": to_sqlite(now)}, to_sqlite(now))
    return {"ok": True, "label": label, "sessionKey": key, "runId": run_id, "status": "sent",
            "message": "Message sent to session."}


def cancel(store: Store, gateway: GatewayAccess, label: str, reason: str | None,
           now: datetime) -> dict[str, Any]:
    """Ours: abort the session's work, close the label, disarm its jobs, announce it."""
    sinks = event_sinks()
    entry = require_entry(store, label)
    if entry.status not in spec.OPEN_STATUSES:
        raise ValidationError(f"label {label!r} already ended ({entry.status}); nothing to cancel")
    try:
        aborted = gateway.run(lambda rpc: rpc.abort_session(entry.session_key))
    except GatewayError as exc:
        raise gateway_failure("sessions.abort", exc) from None
    now_text = to_sqlite(now)
    summary = "Cancelled by an operator" + (f": {reason}" if reason else "")
    closed = store.update_dispatch(
        label, {"status": SubagentStatus.CANCELLED.value, "summary": summary,
                "finished_at": now_text}, now_text, only_if_status={s.value for s in spec.OPEN_STATUSES})
    if closed is None:
        current = require_entry(store, label)
        raise ValidationError(f"label {label!r} ended ({current.status}) while cancelling")
    watchdog_gone = disarm_watchdog(store, closed)
    watcher_gone = disarm_watcher(store, closed)
    emit(DispatchEvent.CANCELLED, label, sinks=sinks, store=store, session_key=closed.session_key,
         notice=f"\U0001f6d1 [{label}] cancelled" + (f": {reason}" if reason else ""),
         fields={"aborted_run_id": str(aborted.get("abortedRunId") or "") or None}, log=log)
    return {"ok": True, "label": label, "status": "cancelled", "sessionKey": closed.session_key,
            "abortedRunId": aborted.get("abortedRunId"), "watchdogDeleted": watchdog_gone,
            "watcherDeleted": watcher_gone, "summary": summary}
