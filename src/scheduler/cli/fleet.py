"""The fleet as ``status`` and ``jobs explain`` show it: the daemon instances that serve this
database, and the placed jobs no live instance serves (they wait, due; nothing is skipped)."""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING, Any, Final

from scheduler.models.placement import lease_s_from_env, live_servers
from scheduler.timeutil import to_sqlite, utcnow

if TYPE_CHECKING:
    from scheduler.store.api import Row, Store

# Instances listed in the text of ``status`` (the JSON has them all): live ones come first.
MAX_SHOWN: Final = 20


def live_since() -> str:
    """The cut for "live": now minus SCHEDULER_LEASE_S, as stored text."""
    return to_sqlite(utcnow() - timedelta(seconds=lease_s_from_env()))


def waiting_reason(placement: str) -> str:
    return f"waiting for {placement} (no live instance)"


def unplaceable(placed: list[Row], instances: list[Row]) -> list[Row]:
    """The placed jobs (``Store.placed_jobs``) that no live instance serves, each with why."""
    return [{**job, "reason": waiting_reason(str(job["placement"]))}
            for job in placed if not live_servers(job["placement"], instances)]


def fleet(store: Store) -> tuple[list[Row], list[Row]]:
    """(instances, unplaceable jobs) as of now."""
    instances = store.list_instances(live_since())
    return instances, unplaceable(store.placed_jobs(), instances)


def _instance_line(instance: Row) -> str:
    labels = f" [{','.join(instance['labels'])}]" if instance["labels"] else ""
    version = f" v{instance['version']}" if instance.get("version") else ""
    if instance["live"]:
        state = "live"
    elif instance.get("stopped_at"):
        state = f"stopped {instance['stopped_at']} UTC"
    else:
        state = "NOT live (no heartbeat within the lease)"
    return (f"  {instance['id']} on {instance['host']}{labels}{version}: {state}, "
            f"last seen {instance['last_seen']} UTC, {instance['running_runs']} running")


def status_lines(instances: list[Row], waiting: list[Row]) -> list[str]:
    live = sum(1 for i in instances if i["live"])
    lines = [f"Fleet:    {len(instances)} instance(s), {live} live"]
    lines += [_instance_line(i) for i in instances[:MAX_SHOWN]]
    if len(instances) > MAX_SHOWN:
        lines.append(f"  ... and {len(instances) - MAX_SHOWN} more (--json lists them all)")
    for job in waiting:
        lines.append(f"Unplaceable: {job['name']} ({job['id']}): {job['reason']}")
    return lines


def placement_facts(store: Store, placement: str | None) -> dict[str, Any]:
    """What ``jobs explain`` says about a job's placement: the live instances that serve it."""
    instances = store.list_instances(live_since())
    servers = live_servers(placement, instances)
    return {"placement": placement, "served": bool(servers),
            "served_by": [f"{s['id']}@{s['host']}" for s in servers]}
