"""Reading a label's state: status, result, list, heartbeat, stuck and sync, from the ledger and the
gateway's session list and transcripts, with the reference's auto-resolve rule."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Final

from scheduler.dispatching import spec
from scheduler.dispatching.gateway import GatewayAccess
from scheduler.dispatching.ledger import (
    DispatchGatewayError,
    disarm_watchdog,
    entry_json,
    event_sinks,
    iso,
    log,
    require_entry,
)
from scheduler.dispatching.spec import SessionView, Verdict
from scheduler.engine.dispatch_events import DispatchEvent, emit
from scheduler.gateway.client import GatewayError
from scheduler.gateway.rpc import GatewayRpc
from scheduler.models.dispatch import DispatchLabel
from scheduler.models.enums import SubagentStatus
from scheduler.store.api import Store
from scheduler.timeutil import to_sqlite

MAX_LIST_LIMIT: Final = 10_000


def _view(record: Any) -> SessionView:
    return SessionView(record.key, record.status, record.updated_at, record.total_tokens)


def session_views(gateway: GatewayAccess) -> tuple[dict[str, SessionView] | None, str | None]:
    """The gateway's sessions by key, or (None, why) when it cannot be asked."""

    async def listing(rpc: GatewayRpc) -> list[Any]:
        return await rpc.list_sessions(spec.SESSIONS_ACTIVE_MINUTES)

    try:
        records = gateway.run(listing)
    except GatewayError as exc:
        return None, f"gateway unreachable: {exc}"
    return {record.key: _view(record) for record in records}, None


def _liveness(entry: DispatchLabel, sessions: Mapping[str, SessionView] | None,
              problem: str | None, now: datetime) -> dict[str, Any] | None:
    if not entry.session_key:
        return None
    if sessions is None:
        return {"error": problem}
    view = sessions.get(entry.session_key)
    if view is None:
        return {"error": "session not found in the gateway's session list"}
    quiet = spec.silence_s(view, now)
    return {"updatedAt": view.updated_at_ms, "ageMs": None if quiet is None else round(quiet * 1000),
            "status": view.status, "tokens": view.total_tokens}


# -- auto-resolve -----------------------------------------------------------------------------
def verdict_for(entry: DispatchLabel, sessions: Mapping[str, SessionView] | None,
                now: datetime, threshold_s: float | None = None) -> Verdict | None:
    """Whether a running label should close as interrupted; None when it must not be judged
    (not running, in its grace, watcher alive, gateway unreachable)."""
    if entry.status != SubagentStatus.RUNNING or sessions is None:
        return None
    threshold = spec.auto_resolve_threshold(entry, now) if threshold_s is None else threshold_s
    if threshold is None:
        return None
    age = spec.elapsed_s(entry.spawned_at, now) or 0.0
    return spec.session_verdict(sessions.get(entry.session_key), age_s=age,
                                threshold_s=threshold, now=now)


def resolve_interrupted(store: Store, entry: DispatchLabel, reason: str, now: datetime) -> bool:
    """Close a running label as interrupted (guarded: a concurrent ``done`` wins)."""
    now_text = to_sqlite(now)
    changed = store.update_dispatch(
        entry.label, {"status": SubagentStatus.INTERRUPTED.value, "finished_at": now_text,
                      "summary": spec.INTERRUPTED_SUMMARY.format(reason=reason)},
        now_text, only_if_status={SubagentStatus.RUNNING.value})
    if changed is None:
        return False
    disarm_watchdog(store, changed)
    log.info("dispatch.auto_resolved", label=entry.label, reason=reason)
    return True


# -- status / result / list / heartbeat ---------------------------------------------------------
def status(store: Store, gateway: GatewayAccess, label: str, now: datetime) -> dict[str, Any]:
    entry = require_entry(store, label)
    sessions, problem = session_views(gateway) if entry.session_key else (None, None)
    sync_action = None
    verdict = verdict_for(entry, sessions, now)
    if verdict is not None and verdict.resolve and resolve_interrupted(store, entry, verdict.reason, now):
        sync_action = f"auto-resolved as interrupted: {verdict.reason}"
    current = store.get_dispatch(label) or entry
    answer: dict[str, Any] = {
        "ok": True, "label": label, "sessionKey": current.session_key,
        "runId": current.gateway_run_id, "agent": current.agent_id, "mode": str(current.mode),
        "status": str(current.status), "spawnedAt": iso(current.spawned_at),
        "updatedAt": iso(current.updated_at), "summary": current.summary,
        "completion": current.completion, "error": current.error,
        "liveness": _liveness(current, sessions, problem, now),
    }
    if sync_action:
        answer["syncAction"] = sync_action
    return answer


def result(store: Store, gateway: GatewayAccess, label: str) -> dict[str, Any]:
    """The label's state and the session's last assistant reply; ``terminal`` (ours) tells a
    watchdog the label has ended. The watchdog is not disarmed here (it self-destructs on a
    terminal answer; the reference's early disarm on any reply was a defect)."""
    entry = require_entry(store, label)
    last_reply, problem = None, None
    if entry.session_key:
        try:
            last_reply = gateway.run(lambda rpc: rpc.last_assistant_text(entry.session_key))
        except GatewayError as exc:
            problem = f"gateway unreachable: {exc}"
    answer: dict[str, Any] = {
        "ok": True, "label": label, "sessionKey": entry.session_key, "status": str(entry.status),
        "terminal": entry.status in spec.ENDED_STATUSES, "spawnedAt": iso(entry.spawned_at),
        "summary": entry.summary or (last_reply[:500] if last_reply else None),
        "completion": entry.completion, "lastReply": last_reply or None, "error": entry.error,
    }
    if problem:
        answer["gatewayError"] = problem
    return answer


def list_labels(store: Store, status_filter: str | None, limit: int) -> dict[str, Any]:
    statuses = None if status_filter is None else [status_filter]
    entries = [entry_json(e) for e in store.list_dispatches(statuses, limit)]
    return {"ok": True, "count": len(entries), "labels": entries}


def heartbeat(store: Store, gateway: GatewayAccess, label: str | None, session_key: str | None,
              now: datetime) -> dict[str, Any]:
    key = session_key or require_entry(store, str(label)).session_key
    sessions, problem = session_views(gateway)
    if sessions is None:
        raise DispatchGatewayError(str(problem))
    view = sessions.get(key)
    if view is None:
        return {"ok": False, "sessionKey": key, "label": label, "alive": False,
                "message": "Session not found in the gateway's session list"}
    quiet = spec.silence_s(view, now)
    return {"ok": True, "sessionKey": key, "label": label,
            "alive": quiet is not None and quiet < spec.ALIVE_WINDOW_S,
            "ageMs": None if quiet is None else round(quiet * 1000),
            "updatedAt": None if view.updated_at_ms is None else
            datetime.fromtimestamp(view.updated_at_ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "status": view.status, "tokens": view.total_tokens}


# -- stuck / sync -------------------------------------------------------------------------------
def _watcher_running(store: Store, entry: DispatchLabel) -> bool:
    suffix = f"-deliver:{entry.label}"
    return any(run["job_id"] == entry.watcher_job_id or str(run.get("job_name") or "").endswith(suffix)
               for run in store.running_runs())


def stuck(store: Store, gateway: GatewayAccess, threshold_min: float,
          now: datetime) -> dict[str, Any]:
    running = store.list_dispatches([SubagentStatus.RUNNING.value], MAX_LIST_LIMIT)
    sessions = session_views(gateway)[0] if running else None
    found: list[dict[str, Any]] = []
    resolved: list[dict[str, Any]] = []
    skipped: list[dict[str, Any]] = []
    for entry in running:
        effective = max(entry.timeout_s, threshold_min * 60)
        age = spec.elapsed_s(entry.spawned_at, now) or 0.0
        if age < effective or age < spec.STARTUP_GRACE_S:
            continue
        if _watcher_running(store, entry):
            skipped.append({"label": entry.label, "reason": "active dispatch-deliver watcher"})
            continue
        verdict = verdict_for(entry, sessions, now, threshold_s=effective)
        if verdict is not None and verdict.resolve:
            if resolve_interrupted(store, entry, verdict.reason, now):
                resolved.append({"label": entry.label, "reason": verdict.reason})
            continue
        quiet = verdict.silence_s if verdict is not None and verdict.silence_s is not None else age
        if quiet >= effective:
            found.append({"label": entry.label, "sessionKey": entry.session_key,
                          "agent": entry.agent_id, "spawnedAt": iso(entry.spawned_at),
                          "ageMin": round(age / 60), "silenceMin": round(quiet / 60),
                          "thresholdMin": round(effective / 60)})
    if found:
        _announce_stuck(store, found)
    return {"ok": True, "stuck_count": len(found), "stuck_sessions": found,
            "auto_resolved_count": len(resolved), "auto_resolved": resolved,
            "watcher_skipped": skipped, "threshold_min": threshold_min}


def _announce_stuck(store: Store, found: list[dict[str, Any]]) -> None:
    sinks = event_sinks()
    for item in found:
        emit(DispatchEvent.STUCK, item["label"], sinks=sinks, store=None,
             session_key=item["sessionKey"],
             fields={"age_s": item["ageMin"] * 60, "silence_min": item["silenceMin"]}, log=log)


def sync(store: Store, gateway: GatewayAccess, dry_run: bool, now: datetime) -> dict[str, Any]:
    running = store.list_dispatches([SubagentStatus.RUNNING.value], MAX_LIST_LIMIT)
    sessions = session_views(gateway)[0] if running else None
    changes: list[dict[str, Any]] = []
    for entry in running:
        verdict = verdict_for(entry, sessions, now)
        if verdict is None or not verdict.resolve:
            continue
        if dry_run or resolve_interrupted(store, entry, verdict.reason, now):
            changes.append({"label": entry.label, "from": "running", "to": "interrupted",
                            "reason": verdict.reason})
    return {"ok": True, "dryRun": dry_run, "changes": len(changes), "details": changes}
