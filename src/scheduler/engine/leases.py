"""Fleet-wide recovery of expired leases: the work of an instance that is gone, taken over.

Every run a daemon claims is held under a lease of ``SCHEDULER_LEASE_S`` seconds, which the
daemon's heartbeat extends. A run whose lease expired belongs to an instance that stopped
beating: its host died, its daemon was killed, stalled or cut off from the database. Every
``max(1, SCHEDULER_LEASE_S / 5)`` seconds each daemon recovers such runs of *other* instances
exactly as start-up recovery handles a crash (at-least-once work replayed, at-most-once work
recorded ``crashed``; store/sqlite/recovery.py), and moves each run's lease generation on, so
that the old owner, should it come back, can record nothing for it (fencing, docs/multi-host.md).

A recovered run's processes normally run on the owner's host, where the owner stops them itself
when its heartbeat reports the run lost (the daemon's ``run.lease_lost``). Those found on this
host (an owner that died here, beside this daemon, leaves them behind) are killed through
``on_recovered``, as start-up recovery kills a crashed daemon's leftovers.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from scheduler.errors import SchedulerError
from scheduler.store.api import Chained, Owner, Recovery
from scheduler.store.thread import StoreThread
from scheduler.timeutil import sqlite_now


def recovery_interval_s(lease_s: int, shared: bool = True) -> float:
    """How often expired leases are looked for: on a shared database a few times per lease (at
    most once a second); alone on a file, where no other instance can hold a run, once a lease:
    a sweep that normally finds nothing should not queue behind, or ahead of, real work."""
    return max(1.0, lease_s / 5) if shared else float(lease_s)


class LeaseRecovery:
    def __init__(self, db: StoreThread, owner: Owner, lease_s: int, log: Any, *,
                 on_children: Callable[[str, Chained], None],
                 on_new_work: Callable[[], None],
                 on_recovered: Callable[[set[str]], None] = lambda run_ids: None) -> None:
        self.db = db
        self.owner = owner
        self.lease_s = lease_s
        self.log = log
        self.on_children = on_children
        self.on_new_work = on_new_work
        self.on_recovered = on_recovered

    async def run(self) -> None:
        interval = recovery_interval_s(self.lease_s, self.db.store.shared)
        while True:
            await asyncio.sleep(interval)
            await self.recover_once()

    async def recover_once(self) -> Recovery | None:
        """One pass; a database error is logged and the next pass tries again."""
        try:
            found: Recovery = await self.db.run(self.db.store.recover_expired_leases,
                                                sqlite_now(), self.owner, self.lease_s)
        except SchedulerError as exc:
            self.log.warning("lease.recovery_failed", error=str(exc))
            return None
        replayed = {row["retry_of_run_id"] for row in found.replays}
        for run in found.crashed:
            self.log.warning("run.recovered", run_id=run.id, job_id=run.job_id, owner=run.owner,
                             lease_expired_at=run.lease_expires_at, replayed=run.id in replayed,
                             by=self.owner.text)
        for run_id, chained in found.children.items():
            self.on_children(run_id, chained)
        if found.crashed:
            self.on_recovered({run.id for run in found.crashed})
            self.on_new_work()  # replays and children are due now; pools and overlap may be free
        return found
