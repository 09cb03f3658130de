"""``PostgresStore``: the ``Store`` interface on a PostgreSQL database shared by a fleet.

The operations are SqliteStore's, on the same SQL (store/postgres/db.py says how it runs here);
this class replaces what is about the database itself (files, WAL, integrity, change detection)
and the claim, which on a shared database must not serialize the daemons (claims.py).
"""

from __future__ import annotations

from collections.abc import Collection, Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import TYPE_CHECKING, cast

from scheduler.store import DEFAULT_LEASE_S
from scheduler.store.postgres import schema
from scheduler.store.postgres.db import PgDatabase
from scheduler.store.sqlite.store import SqliteStore

if TYPE_CHECKING:
    from scheduler.store.api import ClaimBatch, NextFire, Owner
    from scheduler.store.postgres.wakeups import Listener
    from scheduler.store.sqlite.db import Database


class PostgresStore(SqliteStore):
    @property
    def shared(self) -> bool:
        """Several daemons, on several hosts, work on this database at once."""
        return True

    def __init__(self, pg: PgDatabase) -> None:
        super().__init__(cast("Database", pg))
        self.pg = pg
        self._listener: Listener | None = None

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
        if self._listener is not None:
            self._listener.stop()
            self._listener = None
        self.pg.close()

    def change_token(self) -> int:
        """Grows whenever another process (a CLI, another daemon) wrote what a daemon acts on:
        counted from LISTEN/NOTIFY on a connection of its own (wakeups.py)."""
        if self._listener is None:
            from scheduler.store.postgres import wakeups

            self._listener = wakeups.start(self.pg.url, self.pg.backend_pids)
        return self._listener.token()

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

    def read_snapshot(self) -> AbstractContextManager[None]:
        """db copy's source: one REPEATABLE READ transaction, so that every page of every table
        is read as of one instant while the fleet keeps writing."""
        return _repeatable_read(self.pg)

    # -- claiming due work ---------------------------------------------------------------------
    def claim_due(self, now: str, limit: int, targets: Collection[str], next_fire: NextFire,
                  owner: Owner, lease_s: int = DEFAULT_LEASE_S) -> ClaimBatch:
        from scheduler.store.postgres import claims

        return claims.claim_due(self.pg, now, limit, targets, next_fire, owner, lease_s)


@contextmanager
def _repeatable_read(pg: PgDatabase) -> Iterator[None]:
    with pg.transaction(write_lock=False) as conn:
        conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        yield
