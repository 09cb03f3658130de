"""The daemon's periodic backups (``SCHEDULER_BACKUP=1``): a snapshot every
``SCHEDULER_BACKUP_MS``, the first at start; the first snapshot of each UTC hour is kept as that
hour's rollup; then retention (24 h of snapshots, 7 days of rollups by default).

Each snapshot is an online backup on a connection of its own, on a worker thread: the store
thread keeps serving the scheduling loop while it is written. A failed snapshot is logged and
the next interval tries again.
"""

from __future__ import annotations

import asyncio
import os
import shutil
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from scheduler.errors import SchedulerError
from scheduler.ops.backup import prune, rollup_path, snapshot_path, take
from scheduler.timeutil import utcnow

if TYPE_CHECKING:
    from scheduler.ops.s3 import S3Uploader


class PeriodicBackup:
    def __init__(self, database: Path, directory: Path, log: Any, *, interval_s: float,
                 snapshot_hours: int, rollup_days: int, upload: S3Uploader | None = None) -> None:
        self.database = database
        self.directory = directory
        self.log = log
        self.interval_s = interval_s
        self.snapshot_hours = snapshot_hours
        self.rollup_days = rollup_days
        self.upload = upload

    async def run(self) -> None:
        while True:
            await self.once()
            await asyncio.sleep(self.interval_s)

    async def once(self) -> None:
        try:
            await asyncio.to_thread(self._back_up, utcnow())
        except (SchedulerError, OSError) as exc:
            self.log.warning("backup.failed", error=str(exc))

    def _back_up(self, now: datetime) -> None:
        snapshot = snapshot_path(self.directory, now)
        if snapshot.exists():
            return  # a restart within the same minute already took (and sent) it
        found = take(self.database, snapshot)
        self.log.info("backup.snapshot", path=str(snapshot), size_bytes=found["size_bytes"],
                      jobs=found["jobs"], runs=found["runs"])
        rollup = rollup_path(self.directory, now)
        made = [snapshot]
        if not rollup.exists():
            _keep_as(snapshot, rollup)
            made.append(rollup)
            self.log.info("backup.rollup", path=str(rollup))
        removed = prune(self.directory, now, snapshot_hours=self.snapshot_hours,
                        rollup_days=self.rollup_days)
        if removed:
            self.log.info("backup.pruned", count=len(removed))
        if self.upload is not None:
            try:
                self._upload(made, now)
            except SchedulerError as exc:  # the local copies stand; the next interval tries again
                self.log.warning("backup.upload_failed", error=str(exc))


    def _upload(self, made: list[Path], now: datetime) -> None:
        """Send the new files; the bucket is pruned only after they all arrived (as the
        reference does), so a broken upload never leaves the bucket emptier."""
        assert self.upload is not None
        for path in made:
            key = self.upload.upload(path, path.relative_to(self.directory).parts)
            self.log.info("backup.uploaded", bucket=self.upload.bucket, key=key)
        gone = self.upload.prune(now, snapshot_hours=self.snapshot_hours,
                                 rollup_days=self.rollup_days)
        if gone:
            self.log.info("backup.remote_pruned", bucket=self.upload.bucket, count=len(gone))


def _keep_as(snapshot: Path, rollup: Path) -> None:
    """The rollup is the hour's first snapshot: a hard link (no second copy on disk), or a
    copy where the file system has no links; pruning one name leaves the other."""
    rollup.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        os.link(snapshot, rollup)
    except OSError:
        shutil.copyfile(snapshot, rollup)
        os.chmod(rollup, 0o600)
