"""``PostgresStore``: the ``Store`` interface on a PostgreSQL database shared by a fleet.

The operations are SqliteStore's, on the same SQL (store/postgres/db.py says how it runs here);
this class replaces what is about the database itself (files, WAL, integrity, change detection)
and the claim, which on a shared database must not serialize the daemons (claims.py).
"""

from __future__ import annotations

import threading
from collections.abc import Collection
from typing import TYPE_CHECKING, cast

from scheduler.store.postgres import schema
from scheduler.store.postgres.db import PgDatabase
from scheduler.store.sqlite.store import SqliteStore

if TYPE_CHECKING:
    from scheduler.store.api import ClaimBatch, NextFire, Owner
    from scheduler.store.sqlite.db import Database


class PostgresStore(SqliteStore):
    shared = True

    def __init__(self, pg: PgDatabase) -> None:
        super().__init__(cast("Database", pg))
        self.pg = pg
        self._wakeups: object | None = None
        self._wake_lock = threading.Lock()

    @classmethod
    def open_url(cls, url: str) -> PostgresStore:
        pg = PgDatabase.open(url)
        try:
            schema.migrate(pg)
        except BaseException:
            pg.close()
            raise
        return cls(pg)

    # -- the database itself -------------------------------------------------------------------
    def close(self, *, checkpoint: bool = False) -> None:
        from scheduler.store.postgres import wakeups

        wakeups.stop(self)
        self.pg.close()

    def change_token(self) -> int:
        """Grows whenever another process (a CLI, another daemon) wrote what a daemon acts on:
        counted from LISTEN/NOTIFY on a connection of its own (wakeups.py)."""
        from scheduler.store.postgres import wakeups

        return wakeups.token(self)

    def integrity_problems(self) -> list[str]:
        return []  # the server keeps its own integrity; a broken one fails every query instead

    def repair_hint(self) -> str:
        return f"restore {self.pg.where} from your PostgreSQL backups"

    def identity(self) -> tuple[int, int] | None:
        return (0, 0)  # no file that could be replaced under the daemon

    def checkpoint(self) -> None:
        return None

    def schema_current(self) -> bool:
        return schema.is_current(self.pg)

    def vacuum(self) -> None:
        self.pg.query("VACUUM")

    def file_bytes(self) -> int:
        return int(self.pg.scalar("SELECT pg_database_size(current_database())") or 0)

    # -- claiming due work ---------------------------------------------------------------------
    def claim_due(self, now: str, limit: int, targets: Collection[str], next_fire: NextFire,
                  owner: Owner) -> ClaimBatch:
        from scheduler.store.postgres import claims

        return claims.claim_due(self.pg, now, limit, targets, next_fire, owner)
