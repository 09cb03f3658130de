"""Aggregate reads for ``openclaw-scheduler status``."""

from __future__ import annotations

from typing import Any

from scheduler.store.db import Database, Row


def overview(db: Database, stale_threshold_s: int, now_text: str) -> dict[str, Any]:
    counts = db.query_one(
        "SELECT COUNT(*) AS jobs_total, COALESCE(SUM(enabled = 1), 0) AS jobs_enabled, "
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
    agents = db.query(
        "SELECT a.id, a.status, (SELECT COUNT(*) FROM messages m WHERE m.to_agent = a.id "
        "AND m.status IN ('pending', 'delivered')) AS unread FROM agents a ORDER BY a.id"
    )
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
    }


def schema_version(db: Database) -> int | None:
    value = db.scalar("SELECT MAX(version) FROM schema_migrations")
    return None if value is None else int(value)
