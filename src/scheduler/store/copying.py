"""Copy every row of user data from one store into another (``db copy``), through the ``Store``
interface only: it works between any two backends.

The target is written in ONE transaction (``Store.bulk_load``), so a copy that fails at any
point, a clashing key, a full disk, a failed count check, leaves the target as it was. The
source is read inside one snapshot (``Store.read_snapshot``), page by page: memory holds one
page of rows, whatever the tables' sizes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from scheduler.errors import StoreError, StoreValueError
from scheduler.store.api import BulkWriter, CopyTable, Row, Store

BATCH_ROWS = 500


class CopyMismatchError(StoreError):
    """The target's counts after the copy do not add up: the copy was rolled back."""


@dataclass
class CopyReport:
    tables: dict[str, int]  # rows written, per table (parents first)
    pinned: int = 0  # jobs given the placement ``pin``
    # Registry rows (agents, aliases, pools) the target already had under the same key, kept
    # as they were instead of the source's (only when copying into a database holding data).
    kept: dict[str, int] = field(default_factory=dict)


def copy_store(source: Store, target: Store, *, pin: str | None, into_existing: bool,
               batch_rows: int = BATCH_ROWS) -> CopyReport:
    """Copy ``source`` into ``target``; jobs without a placement get ``pin`` (None: left as
    they are). ``into_existing``: the target may hold data already; a registry row whose key it
    has is kept, any other clashing key fails the copy. Raises (the target untouched) when a
    table or column of the source is missing in the target, or the counts do not add up."""
    tables = source.copy_tables()
    _require_tables(tables, target.copy_tables())
    with source.read_snapshot():
        expected = source.row_counts()
        with target.bulk_load() as writer:
            before = writer.counts()
            report = CopyReport(tables={})
            for table in tables:
                _copy_table(source, writer, table, pin, into_existing, batch_rows, report)
            updated = {table.name: _fill_deferred(source, writer, table, batch_rows)
                       for table in tables if table.deferred}
            _verify(tables, expected, before, writer.counts(), report)
            _verify_deferred(updated)
    return report


def _require_tables(tables: Sequence[CopyTable], present: Sequence[CopyTable]) -> None:
    names = {table.name for table in present}
    for table in tables:
        if table.name not in names:
            raise StoreValueError(f"the target has no table {table.name}; bring it to this "
                                  "version's schema first")


def _copy_table(source: Store, writer: BulkWriter, table: CopyTable, pin: str | None,
                into_existing: bool, batch_rows: int, report: CopyReport) -> None:
    keep = into_existing and table.registry
    written = 0
    for batch in source.read_rows(table.name, batch_rows):
        rows = [_without_deferred(row, table.deferred) for row in batch]
        if pin is not None and table.name == "jobs":
            report.pinned += _pin(rows, pin)
        written += writer.insert(table, rows, keep_existing=keep)
    report.tables[table.name] = written


def _without_deferred(row: Row, deferred: Sequence[str]) -> Row:
    return {name: (None if name in deferred else value) for name, value in row.items()}


def _pin(jobs: list[Row], pin: str) -> int:
    pinned = 0
    for job in jobs:
        if job.get("placement") is None:
            job["placement"] = pin
            pinned += 1
    return pinned


def _fill_deferred(source: Store, writer: BulkWriter, table: CopyTable,
                   batch_rows: int) -> tuple[int, int]:
    """Set the deferred columns now that every row they point at is in: (rows to set, set)."""
    wanted = changed = 0
    for batch in source.read_rows(table.name, batch_rows, columns=(*table.key, *table.deferred)):
        rows = [row for row in batch if any(row[name] is not None for name in table.deferred)]
        wanted += len(rows)
        changed += writer.update(table, rows)
    return wanted, changed


def _verify(tables: Sequence[CopyTable], expected: Mapping[str, int], before: Mapping[str, int],
            after: Mapping[str, int], report: CopyReport) -> None:
    """Per table: the target gained exactly the rows written, and those are the source's rows,
    less only registry rows the target already had."""
    for table in tables:
        name = table.name
        written = report.tables[name]
        gained = after.get(name, 0) - before.get(name, 0)
        if gained != written:
            raise CopyMismatchError(f"{name}: the target gained {gained} rows, {written} were "
                                    "written; nothing was copied")
        kept = expected[name] - written
        if kept and not table.registry:
            raise CopyMismatchError(f"{name}: the source has {expected[name]} rows, {written} "
                                    "were written; nothing was copied")
        if kept:
            report.kept[name] = kept


def _verify_deferred(updated: Mapping[str, tuple[int, int]]) -> None:
    for name, (wanted, changed) in updated.items():
        if wanted != changed:
            raise CopyMismatchError(f"{name}: {wanted} rows' links to set, {changed} were set; "
                                    "nothing was copied")
