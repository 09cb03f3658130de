"""The dispatch operations: the ledger (``dispatch_labels``) plus the gateway's control plane.

Each operation validates everything it can before it writes or calls the gateway, and returns
the reference's JSON shape (camelCase keys) as a dict for the CLI to print. Warnings a person
should see (a thinking level the gateway refused, a forced ``done``) are returned in
``warnings`` lists, never printed here.
"""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final

from scheduler import logs
from scheduler.dispatching import spec
from scheduler.dispatching.gateway import GatewayAccess
from scheduler.dispatching.spec import BadArgument, Rejected, SessionView, Verdict
from scheduler.engine.dispatch_events import DispatchEvent, EventSinks, emit
from scheduler.errors import ConfigError, NotFoundError, SchedulerError, ValidationError
from scheduler.gateway.client import GatewayError
from scheduler.gateway.rpc import GatewayRpc
from scheduler.models.completion import normalize_completion
from scheduler.models.dispatch import DispatchLabel
from scheduler.models.enums import SubagentMode, SubagentStatus
from scheduler.store.api import Delivery, Store
from scheduler.timeutil import from_sqlite, to_sqlite

log = logs.get("scheduler.dispatch")

PATCH_TIMEOUT_S: Final = 10.0
MAX_LIST_LIMIT: Final = 10_000


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


def _sinks() -> EventSinks:
    try:
        return EventSinks.from_env()
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


def _gateway_failure(what: str, exc: GatewayError) -> DispatchGatewayError:
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


# -- enqueue ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class EnqueueRequest:
    label: str
    message: str
    mode: SubagentMode = SubagentMode.FRESH
    session_key: str | None = None
    agent: str = "main"
    model: str | None = None
    thinking: str | None = None
    timeout_s: int = spec.DEFAULT_TIMEOUT_S
    deliver_to: str | None = None
    deliver_channel: str | None = None
    delivery_mode: str | None = None
    origin: str | None = None
    monitor: bool = True
    monitor_cron: str = spec.DEFAULT_MONITOR_CRON
    monitor_timeout_min: int = spec.DEFAULT_MONITOR_TIMEOUT_MIN
    verify_cmd: str | None = None
    idle_threshold_s: int = spec.DEFAULT_IDLE_THRESHOLD_S
    payload_kind: str | None = None


@dataclass
class EnqueuePlan:
    request: EnqueueRequest
    session_key: str
    fresh: bool
    origin: str | None
    deliver_to: str | None
    deliver_channel: str
    prompt: str
    task: str
    brand: str
    watcher: dict[str, Any]
    watchdog: dict[str, Any] | None
    previous: DispatchLabel | None
    warnings: list[str] = field(default_factory=list)


def _targets(req: EnqueueRequest) -> tuple[str | None, str | None, str]:
    """(origin, deliver_to, channel): an explicit target names the origin; an origin of the form
    ``<channel>:<target>`` supplies a missing target (the reference's rules)."""
    origin = req.origin
    if not origin and req.deliver_to:
        origin = spec.origin_for(req.deliver_to, req.deliver_channel)
    channel, target = spec.split_origin(origin)
    deliver_to = req.deliver_to or target
    deliver_channel = req.deliver_channel or channel or spec.DEFAULT_CHANNEL
    return origin, deliver_to, deliver_channel


def _session_for(store: Store, req: EnqueueRequest) -> tuple[str, bool, DispatchLabel | None]:
    previous = store.get_dispatch(req.label)
    if previous is not None and previous.status in spec.OPEN_STATUSES:
        raise ValidationError(
            f"label {req.label!r} is still {previous.status}; wait for it to end, or run "
            f"dispatch cancel --label {req.label!r} first")
    if req.session_key:
        return req.session_key, False, previous
    if req.mode == SubagentMode.REUSE:
        if previous is None or not previous.session_key:
            raise ValidationError(f'mode=reuse: no prior session found for label "{req.label}". '
                                  "Use --mode fresh.")
        return previous.session_key, False, previous
    return spec.fresh_session_key(req.agent), True, previous


def _checked_job(job: dict[str, Any], now: datetime) -> dict[str, Any]:
    from scheduler.models.validation import validate_job_spec

    validate_job_spec(dict(job), None, "create", now=now)
    return job


def plan_enqueue(store: Store, req: EnqueueRequest, now: datetime) -> EnqueuePlan:
    """Everything enqueue will do, checked; nothing written, the gateway not called."""
    origin, deliver_to, channel = _targets(req)
    agent_turn = req.payload_kind in (None, "agentTurn")
    if agent_turn and not deliver_to and req.monitor:
        raise BadArgument(
            "REJECTED: --deliver-to is required for dispatch jobs. Pass --deliver-to <chat_id> "
            "(from the inbound message's chat_id), or --origin <channel>:<chat_id>; pass "
            "--no-monitor only to skip delivery deliberately.")
    session_key, fresh, previous = _session_for(store, req)
    prompt = spec.with_origin_chat(req.message, deliver_to)
    brand = spec.brand_for(req.agent)
    now_text = to_sqlite(now)
    watcher = _checked_job(spec.watcher_job(
        req.label, brand=brand, deliver_to=deliver_to, channel=channel,
        delivery_mode=spec.watcher_delivery_mode(req.delivery_mode, deliver_to),
        timeout_s=req.timeout_s, now_text=now_text), now)
    watchdog = None
    if req.monitor and deliver_to:
        watchdog = _checked_job(spec.watchdog_job(
            req.label, cron=req.monitor_cron, timeout_min=req.monitor_timeout_min,
            channel=channel, target=deliver_to, origin=origin or "system", now_text=now_text), now)
    return EnqueuePlan(req, session_key, fresh, origin, deliver_to, channel, prompt,
                       spec.task_message(prompt, req.label, origin), brand, watcher, watchdog,
                       previous)


async def _patch_session(rpc: GatewayRpc, plan: EnqueuePlan) -> None:
    """Model and thinking on a fresh session (never ``spawnDepth``: the gateway refuses it)."""
    req = plan.request
    if req.model:
        try:
            await rpc.call("sessions.patch", {"key": plan.session_key, "model": req.model},
                           timeout_s=PATCH_TIMEOUT_S)
        except GatewayError as exc:
            raise _gateway_failure("sessions.patch (model)", exc) from None
    if req.thinking:
        level = None if req.thinking == "off" else req.thinking
        try:
            await rpc.call("sessions.patch", {"key": plan.session_key, "thinkingLevel": level},
                           timeout_s=PATCH_TIMEOUT_S)
        except GatewayError as exc:
            plan.warnings.append(f"sessions.patch (thinking) warning: {exc}")


async def _start(rpc: GatewayRpc, plan: EnqueuePlan, idempotency_key: str) -> str:
    if plan.fresh:
        await _patch_session(rpc, plan)
    try:
        run_id, _ = await rpc.start_agent_turn(
            plan.task, plan.session_key, label=plan.request.label,
            timeout_s=plan.request.timeout_s, lane="subagent", idempotency_key=idempotency_key)
    except GatewayError as exc:
        raise _gateway_failure("gateway agent call", exc) from None
    return run_id


def _ledger_entry(plan: EnqueuePlan, run_id: str, now_text: str) -> DispatchLabel:
    req = plan.request
    return DispatchLabel(
        label=req.label, session_key=plan.session_key, status=SubagentStatus.RUNNING,
        agent_id=req.agent, mode=SubagentMode.FRESH if plan.fresh else SubagentMode.REUSE,
        gateway_run_id=run_id, model=req.model, thinking=req.thinking, origin=plan.origin,
        deliver_to=plan.deliver_to, deliver_channel=plan.deliver_channel,
        delivery_mode=req.delivery_mode or "announce", verify_cmd=req.verify_cmd,
        task_prompt=plan.prompt[:spec.KEPT_PROMPT_CHARS], timeout_s=req.timeout_s,
        idle_threshold_s=req.idle_threshold_s, spawned_at=now_text,
        created_at=plan.previous.created_at if plan.previous else "")


def _create_job(store: Store, job: dict[str, Any], now: datetime, plan: EnqueuePlan,
                what: str) -> str | None:
    from scheduler import service

    try:
        return service.create_job(store, dict(job), now).id
    except SchedulerError as exc:
        plan.warnings.append(f"{what} registration FAILED: {exc}")
        log.warning("dispatch.job_failed", label=plan.request.label, job=what, error=str(exc))
        return None


def _register_jobs(store: Store, plan: EnqueuePlan, now: datetime) -> tuple[str | None, str | None]:
    if plan.previous is not None:  # what an ended run of the label left behind
        disarm_watchdog(store, plan.previous)
        disarm_watcher(store, plan.previous)
    watcher_id = _create_job(store, plan.watcher, now, plan, "scheduler watcher")
    watchdog_id = None
    if plan.watchdog is not None:
        watchdog_id = _create_job(store, plan.watchdog, now, plan, "watchdog")
    changes = {"watcher_job_id": watcher_id, "watchdog_job_id": watchdog_id}
    store.update_dispatch(plan.request.label, changes, to_sqlite(now))
    return watcher_id, watchdog_id


def _queue_starting_notice(store: Store, plan: EnqueuePlan, now_text: str) -> None:
    if not plan.deliver_to:
        return
    text = f"\U0001f336\ufe0f *{plan.brand}* [{plan.request.label}] starting..."
    try:
        store.queue_dispatch_notice(Delivery(text, plan.deliver_channel, plan.deliver_to),
                                    plan.request.label, now_text)
    except SchedulerError as exc:
        plan.warnings.append(f"starting notification failed: {exc}")


def enqueue(store: Store, gateway: GatewayAccess, req: EnqueueRequest,
            now: datetime) -> dict[str, Any]:
    """Start the sub-agent's turn, then record it: ledger row, jobs, event, notice."""
    sinks = _sinks()
    plan = plan_enqueue(store, req, now)
    run_id = gateway.run(lambda rpc: _start(rpc, plan, str(uuid.uuid4())))
    now_text = to_sqlite(now)
    store.save_dispatch(_ledger_entry(plan, run_id, now_text), now_text)
    watcher_id, watchdog_id = _register_jobs(store, plan, now)
    emit(DispatchEvent.STARTED, req.label, sinks=sinks, store=store, session_key=plan.session_key,
         fields={"agent": req.agent, "mode": "fresh" if plan.fresh else "reuse", "run_id": run_id},
         log=log)
    _queue_starting_notice(store, plan, now_text)
    return _enqueue_answer(plan, run_id, watcher_id, watchdog_id)


def _enqueue_answer(plan: EnqueuePlan, run_id: str, watcher_id: str | None,
                    watchdog_id: str | None) -> dict[str, Any]:
    req = plan.request
    delivering = plan.deliver_to is not None and plan.watcher["delivery_mode"] != "none"
    if delivering and watcher_id:
        message = "Session spawned. Durable delivery watcher registered."
    elif delivering:
        message = ("Session spawned, but durable delivery watcher registration failed. Final "
                   "delivery may require manual follow-up.")
    else:
        message = "Session spawned. Agent is running."
    return {
        "ok": True, "label": req.label, "sessionKey": plan.session_key, "runId": run_id,
        "mode": "fresh" if plan.fresh else "reuse", "agent": req.agent, "status": "accepted",
        "delivery": {"scheduler": watcher_id is not None, "gateway": False,
                     "target": plan.deliver_to, "channel": plan.deliver_channel,
                     "watcherJobId": watcher_id} if plan.deliver_to else None,
        "watchdog": {"enabled": watchdog_id is not None, "jobId": watchdog_id,
                     "interval": req.monitor_cron, "timeout": req.monitor_timeout_min}
        if plan.watchdog is not None else None,
        "message": message, "warnings": plan.warnings,
    }


# -- reading the gateway ------------------------------------------------------------------------
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
    sinks = _sinks()
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


# -- done ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class DoneRequest:
    label: str
    summary: str | None
    checklist: str | None
    sha: str | None = None
    force_done: bool = False
    reason: str | None = None
    skip_activity_check: bool = False


def _verify_commit(sha: str) -> None:
    try:
        found = subprocess.run(["git", "cat-file", "-e", f"{sha}^{{commit}}"],
                               capture_output=True, timeout=10, check=False).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        found = False
    if not found:
        raise Rejected(f"REJECTED: SHA {sha} not found in the local git repository. Push your "
                       "commits (and run done from the repository) before signalling done.")


def _activity_guard(gateway: GatewayAccess, entry: DispatchLabel, warnings: list[str]) -> None:
    """Refuse a session that barely spoke; fails open when the gateway cannot say."""

    async def count(rpc: GatewayRpc) -> int:
        return len(await rpc.chat_history(entry.session_key))

    try:
        messages = gateway.run(count)
    except GatewayError as exc:
        warnings.append(f"session activity check unavailable for label={entry.label}: {exc} "
                        "-- skipping check")
        return
    spec.check_activity(messages)


def _guard_done(gateway: GatewayAccess, entry: DispatchLabel, req: DoneRequest, now: datetime,
                warnings: list[str]) -> str | None:
    forced_after = spec.check_runtime(entry, now, req.reason, req.force_done)
    if forced_after is not None:
        warnings.append(f"force-done used for label={entry.label} after {round(forced_after)}s, "
                        f"reason={req.reason}")
    if entry.task_prompt is None:
        warnings.append(f"taskPrompt not stored for label={entry.label}, skipping git-SHA check")
    else:
        spec.check_sha_needed(entry, req.sha)
    sha = spec.check_sha_format(req.sha) if req.sha is not None else None
    if sha is not None:
        _verify_commit(sha)
    if entry.session_key and not req.skip_activity_check and not req.force_done:
        _activity_guard(gateway, entry, warnings)
    return sha


def done(store: Store, gateway: GatewayAccess, req: DoneRequest, now: datetime) -> dict[str, Any]:
    """The sub-agent's completion signal, through the reference's guards."""
    spec.parse_checklist(req.checklist)
    sinks = _sinks()
    entry = require_entry(store, req.label)
    if entry.status == SubagentStatus.CANCELLED:
        raise Rejected(f"REJECTED: label {req.label!r} was cancelled")
    summary = (req.summary or "completed (agent signal)")[:spec.MAX_SUMMARY_LENGTH]
    completion = normalize_completion(summary) or None
    if entry.status == SubagentStatus.DONE:
        return _already_done(entry)
    warnings: list[str] = []
    sha = _guard_done(gateway, entry, req, now, warnings)
    now_text = to_sqlite(now)
    changes: dict[str, Any] = {"status": SubagentStatus.DONE.value, "summary": summary,
                               "completion": completion, "finished_at": now_text}
    if sha is not None:
        changes["sha"] = sha
    finished = store.update_dispatch(req.label, changes, now_text,
                                     only_if_status={s.value for s in spec.DONE_FROM})
    if finished is None:  # another writer ended the label meanwhile
        current = require_entry(store, req.label)
        if current.status == SubagentStatus.DONE:
            return _already_done(current)
        raise Rejected(f"REJECTED: label {req.label!r} is {current.status} now; not marked done")
    disarm_watchdog(store, finished)
    _announce_finished(store, sinks, finished, completion, now)
    return {"ok": True, "label": req.label, "status": "done", "summary": summary,
            "completion": completion, "message": "Label marked done via agent signal.",
            "warnings": warnings}


def _already_done(entry: DispatchLabel) -> dict[str, Any]:
    return {"ok": True, "label": entry.label, "status": "done", "summary": entry.summary,
            "completion": entry.completion, "message": "Label already done.", "warnings": []}


def _announce_finished(store: Store, sinks: EventSinks, entry: DispatchLabel,
                       completion: str | None, now: datetime) -> None:
    elapsed = spec.elapsed_s(entry.spawned_at, now)
    emit(DispatchEvent.FINISHED, entry.label, sinks=sinks, store=store,
         session_key=entry.session_key, completion=completion, deliver_to=entry.deliver_to,
         channel=entry.deliver_channel,
         fields={"status": "ok", "agent": entry.agent_id, "run_id": entry.gateway_run_id,
                 "duration_ms": None if elapsed is None else round(elapsed * 1000)}, log=log)


# -- send / cancel ------------------------------------------------------------------------------
def send(store: Store, gateway: GatewayAccess, label: str | None, session_key: str | None,
         message: str, now: datetime) -> dict[str, Any]:
    key = session_key or require_entry(store, str(label)).session_key
    try:
        run_id = gateway.run(lambda rpc: rpc.send_to_session(key, message))
    except GatewayError as exc:
        raise _gateway_failure("Failed to send message: sessions.send", exc) from None
    if label is not None and store.get_dispatch(label) is not None:
        store.update_dispatch(label, {"steered_at": to_sqlite(now)}, to_sqlite(now))
    return {"ok": True, "label": label, "sessionKey": key, "runId": run_id, "status": "sent",
            "message": "Message sent to session."}


def cancel(store: Store, gateway: GatewayAccess, label: str, reason: str | None,
           now: datetime) -> dict[str, Any]:
    """Ours: abort the session's work, close the label, disarm its jobs, announce it."""
    sinks = _sinks()
    entry = require_entry(store, label)
    if entry.status not in spec.OPEN_STATUSES:
        raise ValidationError(f"label {label!r} already ended ({entry.status}); nothing to cancel")
    try:
        aborted = gateway.run(lambda rpc: rpc.abort_session(entry.session_key))
    except GatewayError as exc:
        raise _gateway_failure("sessions.abort", exc) from None
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


# -- import -------------------------------------------------------------------------------------
MAX_LEDGER_BYTES: Final = 64 * 1024 * 1024


def read_ledger_file(path: str) -> Any:
    """The JSON of a labels.json: a regular file only (a FIFO or device is refused unread),
    at most MAX_LEDGER_BYTES."""
    import json
    import os
    import stat

    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        raise ValidationError(f"cannot read {path}: {exc.strerror or type(exc).__name__}") from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise ValidationError(f"{path} is not a regular file")
    with os.fdopen(fd, "rb") as stream:
        raw = stream.read(MAX_LEDGER_BYTES + 1)
    if len(raw) > MAX_LEDGER_BYTES:
        raise ValidationError(f"{path} is larger than {MAX_LEDGER_BYTES // (1024 * 1024)} MiB")
    try:
        return json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise ValidationError(f"{path} is not a JSON ledger: {str(exc)[:200]}") from None


def import_labels(store: Store, path: str, now: datetime) -> dict[str, Any]:
    """Insert the ledger's labels not present yet; a bad entry is reported, the rest imported."""
    from scheduler.models.dispatch import LedgerImportError, from_labels_json

    ledger = read_ledger_file(path)
    if not isinstance(ledger, dict):
        raise ValidationError(f"{path} is not a labels.json ledger (a JSON object of labels)")
    now_text = to_sqlite(now)
    records: list[DispatchLabel] = []
    rejected: list[dict[str, str]] = []
    for label, item in ledger.items():
        try:
            if not isinstance(item, dict):
                raise LedgerImportError(f"label {label!r} is not a JSON object")
            records.append(from_labels_json(str(label), item, now_text))
        except LedgerImportError as exc:
            rejected.append({"label": str(label)[:200], "error": str(exc)[:300]})
    imported = store.import_dispatches(records, now_text)
    return {"ok": True, "file": path, "entries": len(ledger), "imported": len(imported),
            "alreadyPresent": len(records) - len(imported), "rejected": rejected,
            "labels": imported}
