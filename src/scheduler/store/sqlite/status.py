"""Aggregate reads for ``openclaw-scheduler status``."""

from __future__ import annotations

from typing import Any

from scheduler.store.sqlite import pools
from scheduler.store.sqlite.claims import AT_ALREADY_RAN
from scheduler.store.sqlite.db import Database, Row


def overview(db: Database, stale_threshold_s: int, now_text: str) -> dict[str, Any]:
    counts = db.query_one(
        "SELECT COUNT(*) AS jobs_total, "
        "COALESCE(SUM(CASE WHEN enabled = 1 THEN 1 ELSE 0 END), 0) AS jobs_enabled, "
        "(SELECT COUNT(*) FROM runs WHERE status = 'running') AS running_runs, "
        "(SELECT COUNT(*) FROM runs WHERE status = 'running' "
        " AND last_heartbeat < datetime(?, ?)) AS stale_runs FROM jobs",
        (now_text, f"-{int(stale_threshold_s)} seconds"),
    ) or {}
    budgets = db.query_one(
        "SELECT "
        "(SELECT COUNT(*) FROM job_dispatch_queue WHERE status = 'pending') AS pending_dispatches, "
        "(SELECT COUNT(*) FROM job_dispatch_queue WHERE status = 'awaiting_approval') "
        " AS approval_blocked_dispatches, "
        "(SELECT COALESCE(SUM(queued_count), 0) FROM jobs) AS overlap_queued_dispatches, "
        "(SELECT COUNT(*) FROM approvals WHERE status = 'pending') AS pending_approvals, "
        "(SELECT COALESCE(SUM(shell_stdout_bytes + shell_stderr_bytes), 0) FROM runs) "
        " AS shell_output_bytes, "
        "(SELECT COUNT(*) FROM runs WHERE shell_stdout_path IS NOT NULL "
        " OR shell_stderr_path IS NOT NULL) AS offloaded_shell_runs"
    )
    hotspots = db.query(
        "SELECT j.id, j.name, j.queued_count, j.max_queued_dispatches, j.max_pending_approvals, "
        "(SELECT COUNT(*) FROM approvals a WHERE a.job_id = j.id AND a.status = 'pending') "
        " AS pending_approval_count, "
        "(SELECT COUNT(*) FROM job_dispatch_queue q WHERE q.job_id = j.id "
        " AND q.status IN ('pending', 'claimed', 'awaiting_approval')) AS dispatch_backlog "
        "FROM jobs j WHERE j.queued_count >= j.max_queued_dispatches "
        "OR (SELECT COUNT(*) FROM approvals a WHERE a.job_id = j.id AND a.status = 'pending') "
        "  >= j.max_pending_approvals ORDER BY j.name LIMIT 10"
    )
    from scheduler.store.sqlite.inbox import unread_count

    # Unread as `msg unread` counts it: broadcasts included, each agent's own copy.
    agents = [{**agent, "unread": unread_count(db, agent["id"], now_text)}
              for agent in db.query("SELECT id, status FROM agents ORDER BY id")]
    next_job: Row | None = db.query_one(
        "SELECT id, name, next_run_at FROM jobs WHERE enabled = 1 AND next_run_at IS NOT NULL "
        "ORDER BY next_run_at LIMIT 1"
    )
    return {
        "jobs_total": counts.get("jobs_total", 0),
        "jobs_enabled": counts.get("jobs_enabled", 0),
        "running_runs": counts.get("running_runs", 0),
        "stale_runs": counts.get("stale_runs", 0),
        "budgets": budgets or {},
        "budget_hotspots": hotspots,
        "agents": agents,
        "next_job": next_job,
        "pools": pool_overview(db, now_text, busy_only=True),
    }


def pool_overview(db: Database, now_text: str, *, busy_only: bool = False) -> list[Row]:
    """Every pool a job names or a capacity configures: its capacity, how many jobs name it, its
    running runs, and its ``waiting`` work (due, not started: occurrences and queue rows).
    ``busy_only`` keeps the pools with something running or waiting."""
    rows = db.query(
        "WITH named AS (SELECT resource_pool AS name FROM jobs WHERE NULLIF(resource_pool, '') "
        "  IS NOT NULL UNION SELECT name FROM resource_pools), "
        "members AS (SELECT resource_pool AS name, COUNT(*) AS n FROM jobs GROUP BY resource_pool), "
        "running AS (SELECT j.resource_pool AS name, COUNT(*) AS n FROM runs r "
        "  JOIN jobs j ON j.id = r.job_id WHERE r.status = 'running' GROUP BY j.resource_pool), "
        "due_occurrences AS (SELECT j.resource_pool AS name, COUNT(*) AS n FROM jobs j "
        "  WHERE j.enabled = 1 AND j.parent_id IS NULL AND j.next_run_at <= :now "
        f"  AND {AT_ALREADY_RAN} GROUP BY j.resource_pool), "
        "due_rows AS (SELECT j.resource_pool AS name, COUNT(*) AS n FROM job_dispatch_queue q "
        "  JOIN jobs j ON j.id = q.job_id WHERE q.status = 'pending' AND q.scheduled_for <= :now "
        "  GROUP BY j.resource_pool) "
        "SELECT named.name AS name, COALESCE(p.capacity, :default) AS capacity, "
        "p.name IS NOT NULL AS configured, COALESCE(members.n, 0) AS jobs, "
        "COALESCE(running.n, 0) AS running, "
        "COALESCE(due_occurrences.n, 0) + COALESCE(due_rows.n, 0) AS waiting "
        "FROM named LEFT JOIN resource_pools p ON p.name = named.name "
        "LEFT JOIN members ON members.name = named.name "
        "LEFT JOIN running ON running.name = named.name "
        "LEFT JOIN due_occurrences ON due_occurrences.name = named.name "
        "LEFT JOIN due_rows ON due_rows.name = named.name ORDER BY named.name",
        {"now": now_text, "default": pools.DEFAULT_CAPACITY},
    )
    for row in rows:
        row["configured"] = bool(row["configured"])
    if busy_only:
        return [row for row in rows if row["running"] or row["waiting"]]
    return rows


def schema_version(db: Database) -> int | None:
    value = db.scalar("SELECT MAX(version) FROM schema_migrations")
    return None if value is None else int(value)
