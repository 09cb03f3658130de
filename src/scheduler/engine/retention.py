"""One pass of retention: runs, approvals, messages, ledger entries, expired jobs and long-gone
daemon instances in the database, then the artifact files (``<artifacts>/runs/<run id>/``) of
the runs that went and of runs long gone.

The daemon runs it on ``SCHEDULER_PRUNE_MS`` and ``db prune`` on demand; ``--dry-run`` (and
``db check``) count the same things and change nothing. Files go after their rows are committed:
a crash between the two leaves an orphaned directory, which a later pass removes, never a row
whose file is missing.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from scheduler.models.placement import INSTANCE_KEEP_DAYS
from scheduler.models.retention import ORPHAN_GRACE_S, RetentionPolicy
from scheduler.store.api import Store
from scheduler.timeutil import from_sqlite, to_sqlite


@dataclass
class FileSweep:
    """Run directories removed (or, in a dry run, that would be), and what they held."""

    run_dirs: int = 0
    orphan_dirs: int = 0
    files: int = 0
    bytes: int = 0


@dataclass
class PruneReport:
    dry_run: bool
    runs: dict[str, int]
    approvals: int
    messages: dict[str, int]
    ledger_entries: int
    jobs: dict[str, int] = field(default_factory=dict)
    instances: int = 0  # daemon instances stopped or silent past INSTANCE_KEEP_DAYS
    files: FileSweep = field(default_factory=FileSweep)

    def as_dict(self) -> dict[str, Any]:
        return {"dry_run": self.dry_run, "runs": self.runs, "approvals": self.approvals,
                "messages": self.messages, "ledger_entries": self.ledger_entries,
                "jobs": dict(self.jobs), "instances": self.instances,
                "files": vars(self.files).copy()}

    @property
    def total_rows(self) -> int:
        return (sum(self.runs.values()) + self.approvals + sum(self.messages.values())
                + self.ledger_entries + sum(self.jobs.values()) + self.instances)


def prune(store: Store, policy: RetentionPolicy, artifacts: Path, now: str, *,
          dry_run: bool = False, clock: Callable[[], float] = time.time) -> PruneReport:
    """Apply ``policy`` at ``now``; with ``dry_run``, only say what would go."""
    runs = store.prune_runs(now, policy.runs_keep_per_job, policy.runs_keep_days, dry_run=dry_run)
    report = PruneReport(
        dry_run=dry_run,
        runs=runs.by_rule,
        approvals=store.prune_approvals(now, policy.approvals_keep_days, dry_run=dry_run),
        messages=store.prune_messages(now, dry_run=dry_run),
        ledger_entries=store.prune_ledger(now, dry_run=dry_run),
        jobs=store.prune_expired_jobs(now, dry_run=dry_run),
        instances=store.prune_instances(_days_before(now, INSTANCE_KEEP_DAYS), dry_run=dry_run),
    )
    report.files = sweep_run_files(store, artifacts / "runs", runs.run_ids, dry_run=dry_run,
                                   older_than=clock() - ORPHAN_GRACE_S)
    return report


def _days_before(now: str, days: int) -> str:
    return to_sqlite(from_sqlite(now) - timedelta(days=days))


def sweep_run_files(store: Store, root: Path, pruned: Iterable[str], *, dry_run: bool,
                    older_than: float) -> FileSweep:
    """Remove the directories of the ``pruned`` runs, and those of runs the table no longer
    has (older than ``older_than``, a wall-clock time)."""
    sweep = FileSweep()
    gone = {run_id for run_id in pruned if _plain_name(run_id)}
    for run_id in gone:
        if _remove(root / run_id, sweep, dry_run):
            sweep.run_dirs += 1
    for directory in _orphans(store, root, gone, older_than):
        if _remove(directory, sweep, dry_run):
            sweep.orphan_dirs += 1
    return sweep


def _plain_name(run_id: str) -> bool:
    """A run id used as a directory name must stay one (no separators, no dot names)."""
    return bool(run_id) and Path(run_id).name == run_id and run_id not in (".", "..")


def _orphans(store: Store, root: Path, skip: set[str], older_than: float) -> list[Path]:
    try:
        entries = [e for e in root.iterdir()
                   if e.name not in skip and e.is_dir() and not e.is_symlink()]
    except OSError:
        return []  # no artifacts yet
    present = store.run_ids_present([e.name for e in entries])
    return [e for e in entries if e.name not in present and _mtime(e) < older_than]


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return float("inf")  # vanished meanwhile: nothing to remove


def _remove(directory: Path, sweep: FileSweep, dry_run: bool) -> bool:
    if not directory.is_dir() or directory.is_symlink():
        return False
    try:
        for item in directory.rglob("*"):
            if item.is_file():
                sweep.files += 1
                sweep.bytes += item.stat().st_size
    except OSError:
        pass  # a file went meanwhile; the counts are a report, the removal is what matters
    if not dry_run:
        shutil.rmtree(directory, ignore_errors=True)
    return True
