"""``dispatch done``: the sub-agent's completion signal, through the reference's guards."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from scheduler.dispatching import spec
from scheduler.dispatching.gateway import GatewayAccess
from scheduler.dispatching.ledger import (
    disarm_watchdog,
    event_sinks,
    log,
    require_entry,
)
from scheduler.dispatching.spec import Rejected
from scheduler.engine.dispatch_events import DispatchEvent, EventSinks, emit
from scheduler.gateway.client import GatewayError
from scheduler.gateway.rpc import GatewayRpc
from scheduler.models.completion import normalize_completion
from scheduler.models.dispatch import DispatchLabel
from scheduler.models.enums import SubagentStatus
from scheduler.store.api import Store
from scheduler.timeutil import to_sqlite


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
    sinks = event_sinks()
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
