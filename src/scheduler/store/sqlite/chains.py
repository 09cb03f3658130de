"""SQL for chains: where a child may hang (checked when a job is written), and the children a
parent's end fires (in the transaction that records that end).

A fired child is a ``chain`` row in ``job_dispatch_queue`` whose ``source_run_id`` is the
parent's run; it is claimed like any queue row (store/sqlite/claims.py, key
``chain:<parent run>:<child>``). Because the row is written with the parent's end, a crash can
neither lose the child nor fire it twice. A child that matched but is not queued (beyond the
parent's ``max_trigger_fanout``, its own backlog full, a chain too deep or looping) gets a
``skipped`` run that says why.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from scheduler.errors import ValidationError
from scheduler.models.chains import (
    DEFAULT_MAX_TRIGGER_FANOUT,
    MAX_CHAIN_DEPTH,
    ConditionUnusable,
    condition_matches,
    triggers_for,
)
from scheduler.models.enums import JobType
from scheduler.models.records import DEFAULT_MAX_QUEUED_DISPATCHES, Run
from scheduler.store.api import Chained
from scheduler.store.sqlite import queue
from scheduler.store.sqlite.db import Row
from scheduler.timeutil import from_sqlite, to_sqlite

# -- where a child may hang ----------------------------------------------------------------------


@dataclass(frozen=True)
class _Ancestry:
    """The jobs above a job, nearest first, as far as they go (or until the walk loops)."""

    ids: tuple[str, ...]
    loops: bool  # the walk came back to a job it had seen: the parents form a cycle


def _ancestry(conn: sqlite3.Connection, start: str, limit: int = MAX_CHAIN_DEPTH + 1) -> _Ancestry:
    """Walk up from ``start`` (included) through ``parent_id``; stops at a root, at a parent that
    no longer exists, at a job seen before, or after ``limit`` jobs (deeper is too deep anyway)."""
    ids: list[str] = []
    current: str | None = start
    while current and len(ids) < limit:
        if current in ids:
            return _Ancestry(tuple(ids), loops=True)
        row = conn.execute("SELECT parent_id FROM jobs WHERE id = ?", (current,)).fetchone()
        if row is None:
            break
        ids.append(current)
        current = row["parent_id"]
    return _Ancestry(tuple(ids), loops=False)


def _height(conn: sqlite3.Connection, job_id: str) -> int:
    """How many levels of descendants ``job_id`` has (0: none), counted up to just past the limit."""
    value = conn.execute(
        "WITH RECURSIVE below(id, depth) AS ("
        " SELECT id, 1 FROM jobs WHERE parent_id = ?"
        " UNION ALL SELECT j.id, below.depth + 1 FROM jobs j JOIN below ON j.parent_id = below.id"
        " WHERE below.depth <= ?"
        ") SELECT MAX(depth) AS height FROM below",
        (job_id, MAX_CHAIN_DEPTH),
    ).fetchone()["height"]
    return int(value or 0)


def check_placement(conn: sqlite3.Connection, job_id: str, parent_id: str) -> None:
    """Raise ValidationError unless ``job_id`` may become a child of ``parent_id``: the parent
    exists, the job is not (and would not become) its own ancestor, and no chain through it,
    its descendants included, gets deeper than MAX_CHAIN_DEPTH."""
    if conn.execute("SELECT 1 FROM jobs WHERE id = ?", (parent_id,)).fetchone() is None:
        raise ValidationError(f"parent job does not exist: {parent_id}")
    above = _ancestry(conn, parent_id)
    if job_id in above.ids or above.loops:
        raise ValidationError(f"Cycle detected: job {job_id} -> {parent_id} would create a loop")
    depth = len(above.ids) + _height(conn, job_id)
    if depth > MAX_CHAIN_DEPTH:
        raise ValidationError(
            f"Max chain depth ({MAX_CHAIN_DEPTH}) exceeded. Chain would be {depth} deep."
        )


# -- the children a parent's end fires -----------------------------------------------------------


@dataclass
class Fired:
    """What a parent's end did to its children."""

    queued: list[Row] = field(default_factory=list)  # chain rows, one per child queued
    skipped: list[Run] = field(default_factory=list)  # children that matched but were not queued
    unmatched: list[str] = field(default_factory=list)  # ids of children whose condition failed

    def as_chained(self) -> Chained:
        return Chained(tuple(self.queued), tuple(self.skipped), tuple(self.unmatched))


def fire_children(
    conn: sqlite3.Connection, parent: Mapping[str, Any], run_id: str, status: str,
    content: str | None, now_text: str,
) -> Fired:
    """Queue the children that the end of ``run_id`` (a run of ``parent``) with ``status`` and
    output ``content`` triggers, in the caller's transaction. Call only for the end of the
    parent's work: not for a failure that will be retried."""
    fired = Fired()
    triggers = triggers_for(status)
    if not triggers or parent.get("job_type") == JobType.WATCHDOG:
        return fired  # watchdog checks are not work a chain follows (as the reference)
    candidates = conn.execute(
        "SELECT * FROM jobs WHERE parent_id = ? AND enabled = 1 AND trigger_on IN (?, ?) "
        "ORDER BY name, id",
        (parent["id"], *triggers),
    ).fetchall()
    matching: list[Row] = []
    for child in candidates:
        if _condition_holds(conn, child, parent, content, run_id, now_text, fired):
            matching.append(child)
    if not matching:
        return fired
    refusal = _chain_refusal(conn, parent)
    fanout = parent.get("max_trigger_fanout") or DEFAULT_MAX_TRIGGER_FANOUT
    for index, child in enumerate(matching):
        reason = refusal(child["id"])
        if reason is None and index >= fanout:
            reason = (f"{len(matching)} children matched, beyond the parent's max_trigger_fanout "
                      f"{fanout} (children are taken by name)")
        if reason is None:
            reason = _queue_child(conn, child, run_id, now_text, fired)
        if reason is not None:
            fired.skipped.append(_skip(conn, child, parent, run_id, now_text, reason))
    return fired


def _condition_holds(conn: sqlite3.Connection, child: Row, parent: Mapping[str, Any],
                     content: str | None, run_id: str, now_text: str, fired: Fired) -> bool:
    """Whether the child's condition holds; a child it does not hold for is noted in ``fired``
    (unmatched, or skipped when the condition cannot be evaluated)."""
    condition = child["trigger_condition"]
    try:
        if condition_matches(condition, content):
            return True
    except ConditionUnusable as exc:
        # A condition another program stored: never run the child on it, but say why.
        fired.skipped.append(
            _skip(conn, child, parent, run_id, now_text, f"its trigger_condition cannot be evaluated: {exc}")
        )
        return False
    fired.unmatched.append(child["id"])
    return False


def _chain_refusal(conn: sqlite3.Connection, parent: Mapping[str, Any]) -> Callable[[str], str | None]:
    """A check, per child, of the chain above it (§17 #26: at fire time, not only when written):
    too deep, or looping (the child is its own ancestor). Returns the reason, or None."""
    above = _ancestry(conn, str(parent["id"]))

    def refusal(child_id: str) -> str | None:
        if above.loops or child_id in above.ids:
            return "its parent_id chain loops back to itself (a cycle another program wrote)"
        if len(above.ids) > MAX_CHAIN_DEPTH:  # the parent and its ancestors: the child's depth
            return f"the chain would be deeper than {MAX_CHAIN_DEPTH} jobs (max chain depth)"
        return None

    return refusal


def _queue_child(conn: sqlite3.Connection, child: Row, run_id: str, now_text: str,
                 fired: Fired) -> str | None:
    cap = child["max_queued_dispatches"] or DEFAULT_MAX_QUEUED_DISPATCHES
    if queue.live_backlog(conn, child["id"]) >= cap:
        return f"{cap} queued runs already wait (max_queued_dispatches)"
    delay = child["trigger_delay_s"] or 0
    due = now_text if delay <= 0 else to_sqlite(from_sqlite(now_text) + timedelta(seconds=delay))
    fired.queued.append(queue.insert(conn, child["id"], "chain", due, source_run_id=run_id))
    return None


def _skip(conn: sqlite3.Connection, child: Row, parent: Mapping[str, Any], run_id: str,
          now_text: str, reason: str) -> Run:
    from scheduler.store.sqlite.claims import record_skipped_run

    name = parent.get("name")
    by = f"{name} ({parent['id']})" if name else str(parent["id"])
    message = f"chained run not started: {reason}; triggered by run {run_id} of {by}"
    return record_skipped_run(conn, child, now_text, message, triggered_by=run_id)
