"""``jobs explain <id>``: why a job ran or did not, from what the daemon recorded.

Every occurrence the daemon does not run leaves a ``skipped`` run whose message says why
(store/sqlite/claims.py); approval gates leave ``awaiting_approval`` runs and approvals. Two
states leave nothing, by design, because the work *waits* rather than being dropped: a due job
whose resource pool is full, and a due agent job while the gateway is unreachable. Those are
read from the present state (the pool's load, one ``GET /health``) and shown under "now".
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Final

from scheduler.cli.context import Context, Handler
from scheduler.errors import SchedulerError

if TYPE_CHECKING:
    from scheduler.models.records import Job

USAGE: Final = "jobs explain <id> [--limit <n>] [--json]"
DEFAULT_LIMIT: Final = 20
MAX_LIMIT: Final = 1000
NEXT_FIRES: Final = 5
AGENT_TARGETS: Final = frozenset({"main", "isolated"})

# A skipped run's message -> (decision, what it means). First match wins; the texts are those
# written by store/sqlite/claims.py, chains.py, approvals.py and the agent strategy's deferral.
_SKIP_REASONS: Final = (
    ("gateway unavailable", "gateway down"),
    ("resource pool", "pool"),
    ("misfire_grace_s", "misfire grace"),
    ("max_queued_dispatches", "backlog cap"),
    ("overlap_policy", "overlap"),
    ("job disabled", "disabled"),
    ("max_pending_approvals", "approval backlog"),
    ("approval", "approval"),
    ("rejected", "approval rejected"),
    ("already claimed", "duplicate"),
    ("chained run not started", "chain"),
)
_RAN: Final = frozenset({"ok", "error", "timeout", "crashed"})


def decision_of(run: Mapping[str, Any]) -> tuple[str, str]:
    """(decision, reason) for one recorded run."""
    status = str(run["status"])
    message = run.get("error_message") or run.get("summary") or ""
    if status in _RAN:
        return "ran", status if not message or status == "ok" else f"{status}: {message}"
    if status == "running":
        return "running", "in progress"
    if status == "awaiting_approval":
        return "awaiting approval", "held until approved: jobs approve / jobs reject"
    if status == "approved":
        return "approved", "approved; starts when it is its turn"
    if status == "cancelled":
        lowered = message.lower()
        return ("approval rejected" if "reject" in lowered or "approval" in lowered else "cancelled",
                message or "cancelled")
    for needle, decision in _SKIP_REASONS:
        if needle in message.lower():
            return decision, message
    return "skipped", message or "(no reason recorded)"


def _occurrences(store: Any, job_id: str, limit: int) -> list[dict[str, Any]]:
    out = []
    for run in store.list_runs(job_id, limit):
        decision, reason = decision_of(run)
        out.append({"run_id": run["id"], "at": run["started_at"], "status": run["status"],
                    "decision": decision, "reason": reason,
                    "source": _source_of(run)})
    return out


def _source_of(run: Mapping[str, Any]) -> str:
    if run.get("retry_of"):
        return "retry"
    if run.get("triggered_by_run"):
        return "chain"
    if run.get("dispatch_queue_id"):
        return "queue"
    return "schedule"


def _next_fires(job: Job) -> tuple[list[str], str | None]:
    """The next fire times, and why there are none (or why they will not run)."""
    from scheduler import cron
    from scheduler.timeutil import utcnow

    if job.schedule_kind != "cron" or not job.schedule_cron:
        at = job.next_run_at or job.schedule_at
        return ([at] if at else []), None if at else "one-shot job: already ran or has no time"
    try:
        fires = cron.next_fires(job.schedule_cron, job.schedule_tz, utcnow(), NEXT_FIRES)
    except SchedulerError as exc:
        return [], f"the schedule cannot be evaluated ({exc}); see openclaw-scheduler doctor"
    shown = [f.astimezone(cron.zone(job.schedule_tz)).isoformat() for f in fires]
    return shown, None if fires else "the schedule never fires"


def _pool_state(store: Any, job: Job, now: str) -> dict[str, Any] | None:
    if not job.resource_pool:
        return None
    for row in store.pool_overview(now):
        if row["name"] == job.resource_pool:
            return {"name": row["name"], "capacity": row["capacity"], "running": row["running"],
                    "waiting": row["waiting"]}
    return None


def _gateway_up() -> bool:
    from scheduler.cli.doctor import gateway_reachable
    from scheduler.config import load_settings
    from scheduler.gateway.client import resolve_token

    settings = load_settings()
    token = settings.gateway_token.get_secret_value() if settings.gateway_token else None
    return gateway_reachable(settings.gateway_url,
                             resolve_token(token, settings.gateway_token_path.expanduser()))


def _now_notes(store: Any, job: Job, facts: dict[str, Any]) -> list[str]:
    """What stands in the job's way at this moment, in the order an operator would fix it."""
    from scheduler import paths
    from scheduler.engine.lock import probe
    from scheduler.timeutil import sqlite_now

    notes: list[str] = []
    daemon = probe(paths.db_path())
    if not daemon["running"]:
        notes.append("no daemon serves this database: nothing runs (openclaw-scheduler start)")
    if not job.enabled:
        notes.append(f"the job is disabled: its schedule does not fire "
                     f"(openclaw-scheduler jobs enable {job.id})")
    due = job.enabled and job.next_run_at is not None and job.next_run_at <= sqlite_now()
    running = [r for r in facts["occurrences"] if r["status"] == "running"]
    if running:
        notes.append(f"a run is in progress ({running[0]['run_id']}); overlap_policy "
                     f"{job.overlap_policy} decides what the next fire time does")
    pool = facts["pool"]
    if pool is not None and pool["running"] >= pool["capacity"]:
        grace = "no limit" if job.misfire_grace_s is None else f"{job.misfire_grace_s}s"
        notes.append(f"resource pool {pool['name']} is full ({pool['running']}/{pool['capacity']} "
                     f"running, {pool['waiting']} waiting): due work waits for a place, for up to "
                     f"misfire_grace_s ({grace})")
    if due and not running and job.session_target in AGENT_TARGETS and daemon["running"]:
        facts["gateway_up"] = _gateway_up()
        if not facts["gateway_up"]:
            notes.append(f"due since {job.next_run_at} UTC and waiting: agent jobs wait while the "
                         "gateway is unreachable (openclaw-scheduler doctor)")
    if facts["approvals"]:
        notes.append(f"{len(facts['approvals'])} approval(s) pending "
                     f"(openclaw-scheduler jobs approve {job.id} | jobs reject {job.id})")
    if len(facts["queued"]) >= job.max_queued_dispatches:
        notes.append(f"the queue is at its cap ({len(facts['queued'])}/{job.max_queued_dispatches} "
                     "max_queued_dispatches): more manual, chained or retry runs are refused")
    placed = facts["placement"]
    if placed["placement"] and not placed["served"]:
        notes.append(f"placed on {placed['placement']} and no live instance serves it: its due "
                     "work waits, and runs when a daemon with that host name or label is up "
                     "(openclaw-scheduler status lists the fleet)")
    if facts["next_problem"]:
        notes.append(facts["next_problem"])
    return notes


def explain_job(ctx: Context) -> int:
    from scheduler.cli.commands import _positive_int
    from scheduler.cli.fleet import placement_facts
    from scheduler.timeutil import sqlite_now

    limit_text = ctx.option("--limit")
    job_id = ctx.positional(0, USAGE)
    ctx.no_extra(1, USAGE)
    limit = _positive_int(limit_text, "--limit", maximum=MAX_LIMIT) if limit_text else DEFAULT_LIMIT
    store = ctx.store
    job = store.require_job(job_id)
    now = sqlite_now()
    fires, problem = _next_fires(job)
    facts: dict[str, Any] = {
        "occurrences": _occurrences(store, job.id, limit),
        "next_fires": fires,
        "next_problem": problem,
        "queued": [{"id": q["id"], "kind": q["dispatch_kind"], "status": q["status"],
                    "scheduled_for": q["scheduled_for"]} for q in store.live_dispatches(job.id)],
        "approvals": [{"id": a["id"], "run_id": a["run_id"], "requested_at": a["requested_at"],
                       "timeout_at": a["timeout_at"]}
                      for a in store.pending_approvals(now) if a["job_id"] == job.id],
        "pool": _pool_state(store, job, now),
        "placement": placement_facts(store, job.placement),
    }
    notes = _now_notes(store, job, facts)
    data = {"ok": True, "job": {"id": job.id, "name": job.name, "enabled": job.enabled,
                                "schedule": job.schedule_cron or job.schedule_at,
                                "tz": job.schedule_tz, "next_run_at": job.next_run_at,
                                "overlap_policy": job.overlap_policy,
                                "resource_pool": job.resource_pool,
                                "placement": job.placement,
                                "misfire_grace_s": job.misfire_grace_s},
            "now": notes, **facts}
    ctx.out.emit(data, lambda: _print(data))
    return 0


def _print(data: dict[str, Any]) -> None:
    from scheduler.cli.output import printable_lines

    job = data["job"]
    lines = [f"Job {job['id']} ({job['name']}): {'enabled' if job['enabled'] else 'DISABLED'}, "
             f"schedule {job['schedule']} {job['tz']}, next_run_at {job['next_run_at'] or '-'} UTC",
             "", "Now:"]
    lines += [f"  - {note}" for note in data["now"]] or ["  nothing stands in its way"]
    lines += ["", _placement_line(data["placement"])]
    lines += ["", f"Next {NEXT_FIRES} fire times:"]
    lines += [f"  {fire}" for fire in data["next_fires"]] or [f"  none: {data['next_problem']}"]
    lines += ["", "Queued now:"]
    lines += [f"  {q['scheduled_for']} UTC  {q['kind']:6} {q['status']:17} {q['id']}"
              for q in data["queued"]] or ["  nothing"]
    if data["approvals"]:
        lines += ["", "Pending approvals:"]
        lines += [f"  requested {a['requested_at']} UTC, times out {a['timeout_at']} UTC  {a['id']}"
                  for a in data["approvals"]]
    lines += ["", "Recent occurrences (newest first; times UTC):"]
    lines += [f"  {o['at']}  {o['decision']:17} {o['reason']}  [{o['source']}, run {o['run_id']}]"
              for o in data["occurrences"]] or ["  none recorded"]
    sys.stdout.write(printable_lines("\n".join(lines)) + "\n")


def _placement_line(placed: dict[str, Any]) -> str:
    where = placed["placement"] or "any instance (no placement)"
    if placed["served"]:
        return f"Placement: {where}; served now by {', '.join(placed['served_by'])}"
    return f"Placement: {where}; no live instance serves it now"


COMMANDS: dict[tuple[str, str | None], Handler] = {
    ("jobs", "explain"): explain_job,
}
