"""``dispatch enqueue``: plan (everything checked, nothing written), start the turn, then record it:
ledger entry, the two jobs, the started event and the "starting..." notice."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final

from scheduler.dispatching import spec
from scheduler.dispatching.gateway import GatewayAccess
from scheduler.dispatching.ledger import (
    disarm_watchdog,
    disarm_watcher,
    event_sinks,
    gateway_failure,
    log,
)
from scheduler.dispatching.spec import BadArgument
from scheduler.engine.dispatch_events import DispatchEvent, emit
from scheduler.errors import SchedulerError, ValidationError
from scheduler.gateway.client import GatewayError
from scheduler.gateway.rpc import GatewayRpc
from scheduler.models.dispatch import DispatchLabel
from scheduler.models.enums import SubagentMode, SubagentStatus
from scheduler.store.api import Delivery, Store
from scheduler.timeutil import to_sqlite

PATCH_TIMEOUT_S: Final = 10.0


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
            raise gateway_failure("sessions.patch (model)", exc) from None
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
        raise gateway_failure("gateway agent call", exc) from None
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
        store.record_notice(Delivery(text, plan.deliver_channel, plan.deliver_to),
                            plan.request.label, now_text, kind="text")
    except SchedulerError as exc:
        plan.warnings.append(f"starting notification failed: {exc}")


def enqueue(store: Store, gateway: GatewayAccess, req: EnqueueRequest,
            now: datetime) -> dict[str, Any]:
    """Start the sub-agent's turn, then record it: ledger row, jobs, event, notice."""
    sinks = event_sinks()
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
