"""Cron evaluation: next fire times in a job's IANA zone, validation and previews.

Semantics follow Vixie cron as the reference's parser does: five fields, day-of-month and
day-of-week OR'ed when both are restricted, nicknames (``@daily``), ``L`` and ``#``; a six-field
expression carries seconds first. Instants in and out are aware UTC datetimes; the zone is used
only inside this module.
"""

from __future__ import annotations

from datetime import UTC, datetime
from functools import lru_cache
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from scheduler.errors import ValidationError

if TYPE_CHECKING:
    from croniter import croniter

# croniter is imported where it is used: a CLI call that never evaluates a cron (an at-job,
# a list) should not pay for it.

# A date that never exists: the reference stores it as the cron of at-jobs and chained children.
NEVER_SENTINEL = "0 0 31 2 *"


@lru_cache(maxsize=512)
def zone(name: str) -> ZoneInfo:
    """Return the IANA zone ``name`` or raise ``ValidationError``."""
    if not name or name != name.strip() or name.startswith(("/", ".")) or ".." in name:
        raise ValidationError(f'schedule_tz "{name}" is not a valid IANA timezone')
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise ValidationError(
            f'schedule_tz "{name}" is not a valid IANA timezone (e.g. UTC, Europe/Berlin, America/New_York)'
        ) from None


def _iterator(expr: str, tz: str, start: datetime) -> croniter:
    from croniter import croniter
    from croniter.croniter import CroniterError

    fields = expr.split()
    seconds_first = len(fields) == 6
    if len(fields) not in (5, 6) and not expr.strip().startswith("@"):
        raise ValidationError(
            f'Invalid cron expression "{expr}": expected 5 fields (minute hour day month weekday)'
        )
    try:
        return croniter(
            expr,
            start.astimezone(zone(tz)),
            second_at_beginning=seconds_first,
            max_years_between_matches=50,
        )
    except (CroniterError, ValueError, KeyError, IndexError) as exc:
        raise ValidationError(f'Invalid cron expression "{expr}": {exc}') from None


def next_fire(expr: str, tz: str, after: datetime) -> datetime | None:
    """The first fire instant strictly after ``after`` (UTC), or None for the never-sentinel."""
    if expr.strip() == NEVER_SENTINEL:
        return None
    fires = next_fires(expr, tz, after, 1)
    return fires[0] if fires else None


def next_fires(expr: str, tz: str, after: datetime, count: int) -> list[datetime]:
    """Up to ``count`` fire instants after ``after``; an expression that never fires gives []."""
    from croniter.croniter import CroniterBadDateError

    iterator = _iterator(expr, tz, after)
    out: list[datetime] = []
    try:
        for _ in range(count):
            fire = iterator.get_next(datetime)
            out.append(fire.astimezone(UTC))
    except CroniterBadDateError:
        pass
    return out


def validate(expr: str, tz: str, now: datetime) -> None:
    """Raise ``ValidationError`` unless ``expr`` parses in ``tz`` and fires at least once.

    The never-sentinel is accepted here; callers decide where it is allowed.
    """
    zone(tz)
    if expr.strip() == NEVER_SENTINEL:
        return
    if not next_fires(expr, tz, now, 1):
        raise ValidationError(
            f'cron expression "{expr}" never fires (no matching date within 50 years)'
        )


def preview(expr: str, tz: str, after: datetime, count: int) -> list[str]:
    """ISO 8601 instants with the zone's offset, as a person in ``tz`` reads them."""
    validate(expr, tz, after)
    return [fire.astimezone(zone(tz)).isoformat() for fire in next_fires(expr, tz, after, count)]
