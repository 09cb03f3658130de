"""UTC instants and the reference's text format.

Rows store UTC as ``YYYY-MM-DD HH:MM:SS`` (no ``T``, no zone, no fraction), so string order is time
order. Everything in memory is an aware ``datetime`` in UTC; zones appear only in cron evaluation
and in previews a person reads.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from scheduler.text import quoted

SQLITE_FORMAT = "%Y-%m-%d %H:%M:%S"
_SQLITE_RE = re.compile(r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}$")
_IN_DURATION_RE = re.compile(r"^(\d+(?:\.\d+)?)(s|m|h|d)$", re.IGNORECASE)
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
# Well inside timedelta's range (999999999 days); "now + duration" is then checked by the caller.
_MAX_DURATION_S = 1000 * 366 * 86400


def utcnow() -> datetime:
    return datetime.now(UTC)


def to_sqlite(instant: datetime) -> str:
    """Format an aware instant as the stored UTC text (sub-second part dropped).

    ``isoformat`` rather than ``strftime``: glibc's ``%Y`` does not pad years before 1000, and
    the stored text must keep four digits for its string order to be time order.
    """
    if instant.tzinfo is None:
        raise ValueError("naive datetime passed where a UTC instant is required")
    return instant.astimezone(UTC).replace(tzinfo=None, microsecond=0).isoformat(sep=" ")


def sqlite_now(offset_s: float = 0.0) -> str:
    return to_sqlite(utcnow() + timedelta(seconds=offset_s))


def from_sqlite(text: str) -> datetime:
    """Parse stored UTC text; also accepts ISO 8601 forms older rows may hold."""
    value = text.strip()
    if _SQLITE_RE.match(value):
        return datetime.strptime(value, SQLITE_FORMAT).replace(tzinfo=UTC)
    parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


def parse_user_datetime(text: str) -> datetime:
    """Parse a datetime a person typed (``--at``, ``schedule_at``).

    Accepts the stored format (taken as UTC), ISO 8601 with ``T`` or a space, with ``Z`` or an
    offset; a value with no offset is taken as UTC. Raises ``ValueError`` with a usable message.
    """
    value = text.strip()
    if not value:
        raise ValueError("datetime cannot be empty")
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise ValueError(
            f"{quoted(text)} is not a datetime; use ISO 8601, e.g. 2026-12-01T09:00:00+01:00"
        ) from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    try:
        return parsed.astimezone(UTC)
    except OverflowError:  # 0001-01-01T00:00+01:00 is in year 0 in UTC
        raise ValueError(f"{quoted(text)} is outside the years 1-9999 in UTC") from None


def parse_in_duration(text: str) -> timedelta:
    """Parse ``--in`` durations: a number and one of s, m, h, d (``30s``, ``1.5d``)."""
    match = _IN_DURATION_RE.match(text.strip())
    if not match:
        raise ValueError(f"Invalid --in duration: {quoted(text)}. Use e.g. 15m, 2h, 30s, 1d")
    amount, unit = match.groups()
    seconds = float(amount) * _UNIT_SECONDS[unit.lower()]
    if seconds > _MAX_DURATION_S:
        raise ValueError(f"--in duration {quoted(text)} is too long (at most 1000 years)")
    return timedelta(seconds=seconds)
