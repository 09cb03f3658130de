"""The rules of triggered children (chains): which parent endings fire which children, what a
``trigger_condition`` matches, how deep a chain may go, and the tree ``jobs tree`` shows.

Pure functions over plain values: the store applies them inside the transaction that records
the parent's end (store/sqlite/chains.py), the CLI renders the tree.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from scheduler.models.enums import RunStatus, TriggerOn

# A chain is at most this deep: a root is depth 0, its children depth 1, … (reference §6.5).
MAX_CHAIN_DEPTH: Final = 10
DEFAULT_MAX_TRIGGER_FANOUT: Final = 25
CONTAINS_PREFIX: Final = "contains:"
REGEX_PREFIX: Final = "regex:"

# Endings of a parent's work that count as failures for its children. A parent that was
# cut short (timed out, cancelled, crashed) did not succeed: its failure children are told.
FAILURE_ENDINGS: Final = frozenset(
    {RunStatus.ERROR, RunStatus.TIMEOUT, RunStatus.CANCELLED, RunStatus.CRASHED}
)


def triggers_for(status: str) -> tuple[TriggerOn, ...]:
    """The ``trigger_on`` values a parent run ending with ``status`` fires; () for an ending that
    is not the end of the parent's work (a ``skipped`` run, for one)."""
    if status == RunStatus.OK:
        return (TriggerOn.SUCCESS, TriggerOn.COMPLETE)
    if status in FAILURE_ENDINGS:
        return (TriggerOn.FAILURE, TriggerOn.COMPLETE)
    return ()


class ConditionUnusable(Exception):
    """A stored ``trigger_condition`` cannot be evaluated (written by another program: a regex
    Python's ``re`` does not compile, or an unknown prefix)."""


def condition_matches(condition: str | None, content: str | None) -> bool:
    """Whether a child's ``trigger_condition`` holds for the parent's output.

    None or blank: always. ``contains:<text>``: a case-sensitive substring. ``regex:<pattern>``:
    ``re.search`` without flags (JavaScript's ``RegExp(pattern).test``). Raises
    ConditionUnusable for a condition that cannot be evaluated.
    """
    if condition is None or not condition.strip():
        return True
    text = content or ""
    if condition.startswith(CONTAINS_PREFIX):
        return condition[len(CONTAINS_PREFIX):] in text
    if condition.startswith(REGEX_PREFIX):
        try:
            pattern = re.compile(condition[len(REGEX_PREFIX):])
        except (re.error, OverflowError, RecursionError) as exc:
            raise ConditionUnusable(f"its regex does not compile in Python: {exc}") from None
        return pattern.search(text) is not None
    raise ConditionUnusable('it starts with neither "contains:" nor "regex:"')


# -- the tree of jobs ----------------------------------------------------------------------------


@dataclass(frozen=True)
class TreeNode:
    job: Mapping[str, Any]
    children: tuple[TreeNode, ...]

    def as_json(self) -> dict[str, Any]:
        """The reference's ``jobs tree --json`` node."""
        job = self.job
        return {
            "id": job["id"],
            "name": job["name"],
            "enabled": bool(job["enabled"]),
            "agent_id": job.get("agent_id") or "main",
            "trigger_on": job.get("trigger_on") or None,
            "trigger_delay_s": job.get("trigger_delay_s") or 0,
            "children": [child.as_json() for child in self.children],
        }

    def lines(self, indent: str = "") -> list[str]:
        """The reference's text rendering: ``[on] name (agent) [on:trigger] (+Ns)``, each level
        indented by a further ``  |- ``."""
        job = self.job
        status = "[on]" if job["enabled"] else "[ ]"
        trigger = f" [on:{job['trigger_on']}]" if job.get("trigger_on") else ""
        delay = f" (+{job['trigger_delay_s']}s)" if job.get("trigger_delay_s") else ""
        out = [f"{indent}{status} {job['name']} ({job.get('agent_id') or 'main'}){trigger}{delay}"]
        for child in self.children:
            out.extend(child.lines(indent + "  |- "))
        return out


def job_tree(jobs: Iterable[Mapping[str, Any]]) -> list[TreeNode]:
    """Roots and their descendants, in the order of ``jobs`` (by name). A child whose parent no
    longer exists is shown as a root (the reference hides it); jobs caught in a cycle (possible
    only in a database another program wrote) are shown once, under the first of them met."""
    rows = list(jobs)
    ids = {row["id"] for row in rows}
    children: dict[str, list[Mapping[str, Any]]] = {}
    roots: list[Mapping[str, Any]] = []
    for row in rows:
        parent = row.get("parent_id")
        if parent and parent in ids:
            children.setdefault(parent, []).append(row)
        else:
            roots.append(row)
    placed: set[str] = set()

    def node(row: Mapping[str, Any]) -> TreeNode:
        placed.add(row["id"])
        kids = tuple(node(c) for c in children.get(row["id"], ()) if c["id"] not in placed)
        return TreeNode(row, kids)

    tree = [node(row) for row in roots]
    tree += [node(row) for row in rows if row["id"] not in placed]  # cycles: nothing is hidden
    return tree
