"""SQL for ``dispatch_labels``: the sub-agent dispatch ledger (features.md §15.1).

One row per label. ``save_dispatch`` writes a whole record (a new dispatch, or a label enqueued
again, which replaces its entry as the reference's ledger did); ``update_dispatch`` changes named
columns only, so the daemon's watcher and the CLI's ``done`` never overwrite each other's fields.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from scheduler.errors import StoreValueError
from scheduler.models.dispatch import MUTABLE_COLUMNS, DispatchLabel
from scheduler.store.sqlite.db import Database

_INSERT_COLUMNS = tuple(sorted(MUTABLE_COLUMNS | {"label", "created_at", "updated_at"}))


def _record(row: Mapping[str, Any] | None) -> DispatchLabel | None:
    return None if row is None else DispatchLabel.from_row(row)


def get_dispatch(db: Database, label: str) -> DispatchLabel | None:
    return _record(db.query_one("SELECT * FROM dispatch_labels WHERE label = ?", (label,)))


def dispatch_by_session(db: Database, session_key: str) -> DispatchLabel | None:
    """The newest label working in ``session_key`` (a reused session may carry several)."""
    row = db.query_one(
        "SELECT * FROM dispatch_labels WHERE session_key = ? ORDER BY spawned_at DESC, label "
        "LIMIT 1", (session_key,))
    return _record(row)


def list_dispatches(db: Database, statuses: Iterable[str] | None, limit: int) -> list[DispatchLabel]:
    """Labels, newest spawn first; only those in ``statuses`` when given."""
    wanted = None if statuses is None else sorted(set(statuses))
    if wanted is not None and not wanted:
        return []
    where = "" if wanted is None else f"WHERE status IN ({', '.join('?' * len(wanted))}) "
    rows = db.query(
        f"SELECT * FROM dispatch_labels {where}ORDER BY spawned_at DESC, label LIMIT ?",
        (*(wanted or ()), limit))
    return [DispatchLabel.from_row(row) for row in rows]


def _values(record: DispatchLabel, now: str) -> dict[str, Any]:
    values = record.columns()
    values["created_at"] = values.get("created_at") or now
    values["updated_at"] = now
    values["spawned_at"] = values.get("spawned_at") or now
    return {column: values.get(column) for column in _INSERT_COLUMNS}


def save_dispatch(db: Database, record: DispatchLabel, now: str) -> DispatchLabel:
    """Insert the label, or replace every field of its entry (``created_at`` is kept)."""
    values = _values(record, now)
    updates = ", ".join(f"{c} = excluded.{c}" for c in _INSERT_COLUMNS
                        if c not in ("label", "created_at"))
    with db.transaction() as conn:
        conn.execute(
            f"INSERT INTO dispatch_labels ({', '.join(_INSERT_COLUMNS)}) "
            f"VALUES ({', '.join(':' + c for c in _INSERT_COLUMNS)}) "
            f"ON CONFLICT(label) DO UPDATE SET {updates}", values)
    saved = get_dispatch(db, record.label)
    assert saved is not None
    return saved


def update_dispatch(db: Database, label: str, changes: Mapping[str, Any], now: str, *,
                    only_if_status: Iterable[str] | None = None) -> DispatchLabel | None:
    """Set the named columns of ``label``; None when there is no such label, or when
    ``only_if_status`` is given and the label's status is not one of them (nothing written)."""
    unknown = sorted(set(changes) - MUTABLE_COLUMNS)
    if unknown:
        raise StoreValueError(f"dispatch_labels has no writable column(s): {', '.join(unknown)}")
    values = dict(changes)
    assignments = [f"{column} = :{column}" for column in sorted(values)]
    assignments.append("updated_at = :updated_at")
    where = "label = :label"
    params: dict[str, Any] = {**values, "updated_at": now, "label": label}
    if only_if_status is not None:
        guard = sorted(set(only_if_status))
        where += f" AND status IN ({', '.join(f':s{i}' for i in range(len(guard)))})"
        params.update({f"s{i}": status for i, status in enumerate(guard)})
    with db.transaction() as conn:
        cursor = conn.execute(
            f"UPDATE dispatch_labels SET {', '.join(assignments)} WHERE {where}", params)
        if cursor.rowcount == 0:
            return None
    return get_dispatch(db, label)


def delete_dispatch(db: Database, label: str) -> bool:
    with db.transaction() as conn:
        return conn.execute("DELETE FROM dispatch_labels WHERE label = ?", (label,)).rowcount > 0


def import_dispatches(db: Database, records: Iterable[DispatchLabel], now: str) -> list[str]:
    """Insert the labels the ledger does not hold yet, in one transaction; the imported labels.

    A label already present is left alone, so importing the same ``labels.json`` twice imports
    nothing the second time, and never overwrites what the daemon has since recorded.
    """
    imported: list[str] = []
    with db.transaction() as conn:
        for record in records:
            values = _values(record, now)
            values["created_at"] = now
            values["updated_at"] = record.updated_at or now
            cursor = conn.execute(
                f"INSERT INTO dispatch_labels ({', '.join(_INSERT_COLUMNS)}) "
                f"VALUES ({', '.join(':' + c for c in _INSERT_COLUMNS)}) "
                "ON CONFLICT(label) DO NOTHING", values)
            if cursor.rowcount > 0:
                imported.append(record.label)
    return imported
