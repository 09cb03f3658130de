"""What every dispatch operation shares: the ledger entry's JSON shape, lookups, the jobs'
disarming, event sinks and gateway failures.

Each operation returns the reference's JSON shape (camelCase keys) as a dict for the CLI to
print; warnings a person should see (a thinking level the gateway refused, a forced ``done``)
travel in its ``warnings`` list and are never printed by the operation itself.
"""

from __future__ import annotations

from typing import Any

from scheduler import logs
from scheduler.engine.dispatch_events import EventSinks
from scheduler.errors import ConfigError, NotFoundError, SchedulerError
from scheduler.gateway.client import GatewayError
from scheduler.models.dispatch import DispatchLabel
from scheduler.store.api import Store
from scheduler.timeutil import from_sqlite

log = logs.get("scheduler.dispatch")


class DispatchGatewayError(SchedulerError):
    """A gateway call an operation cannot do without failed; nothing was written."""


def iso(text: str | None) -> str | None:
    """Our stored UTC text as the ISO 8601 instant the reference's ledger held."""
    if not text:
        return None
    try:
        return from_sqlite(text).strftime("%Y-%m-%dT%H:%M:%SZ")
    except ValueError:
        return text


def entry_json(entry: DispatchLabel) -> dict[str, Any]:
    """A ledger entry in the reference's labels.json shape, plus our own columns."""
    return {
        "label": entry.label, "sessionKey": entry.session_key, "runId": entry.gateway_run_id,
        "agent": entry.agent_id, "mode": str(entry.mode), "model": entry.model,
        "thinking": entry.thinking, "origin": entry.origin, "deliverTo": entry.deliver_to,
        "deliverChannel": entry.deliver_channel, "deliveryMode": entry.delivery_mode,
        "verifyCmd": entry.verify_cmd, "spawnedAt": iso(entry.spawned_at),
        "timeoutSeconds": entry.timeout_s, "idleThresholdSeconds": entry.idle_threshold_s,
        "status": str(entry.status), "summary": entry.summary, "error": entry.error,
        "completion": entry.completion, "taskPrompt": entry.task_prompt,
        "watcherJobId": entry.watcher_job_id, "watchdogJobId": entry.watchdog_job_id,
        "sha": entry.sha, "lastPing": iso(entry.last_ping), "retryCount": entry.retry_count,
        "finishedAt": iso(entry.finished_at), "updatedAt": iso(entry.updated_at),
    }


def require_entry(store: Store, label: str) -> DispatchLabel:
    entry = store.get_dispatch(label)
    if entry is None:
        raise NotFoundError(f"No session found for label {label!r}")
    return entry


def event_sinks() -> EventSinks:
    try:
        return EventSinks.from_env()
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


def gateway_failure(what: str, exc: GatewayError) -> DispatchGatewayError:
    return DispatchGatewayError(f"{what} failed: {exc}")


# -- disarming the jobs -------------------------------------------------------------------------
def disarm_watchdog(store: Store, entry: DispatchLabel) -> bool:
    """Delete the label's watchdog job (§17 #27: it lives until the label ends)."""
    if not entry.watchdog_job_id or store.get_job(entry.watchdog_job_id) is None:
        return False
    try:
        store.delete_job(entry.watchdog_job_id)
    except NotFoundError:  # removed by its own self-destruct in the meantime
        return False
    log.info("dispatch.watchdog_disarmed", label=entry.label, job_id=entry.watchdog_job_id)
    return True


def disarm_watcher(store: Store, entry: DispatchLabel) -> bool:
    """Delete the watcher job unless its run is in progress (that run sees the ledger and ends
    itself; deleting the job under it would delete the run)."""
    job_id = entry.watcher_job_id
    if not job_id or store.get_job(job_id) is None:
        return False
    if any(run["job_id"] == job_id for run in store.running_runs()):
        return False
    try:
        store.delete_job(job_id)
    except NotFoundError:
        return False
    return True
