"""Cron evaluation: next fire times in a job's IANA zone, validation and previews.

The grammar is croner v10's (the reference's parser), default options:

* 5 fields ``minute hour day-of-month month day-of-week``; 6 fields put seconds first; 7 fields
  add a year (1-9999) last. Nicknames ``@yearly @annually @monthly @weekly @daily @midnight
  @hourly``. ``*``, ``?`` (an alias of ``*``), values, ``a-b`` ranges, ``*/n`` and ``a-b/n`` steps
  and ``,`` lists; month and weekday names (``JAN``, ``mon``), ``0`` and ``7`` both Sunday.
* Day of month: ``L`` (last day), ``15W`` (weekday nearest the 15th, within the month), ``LW``
  (last weekday). Day of week: ``5L`` (last Friday), ``1#2`` (second Monday), ``5#L``.
* Day-of-month and day-of-week are OR'ed when both are restricted (Vixie cron); a ``+`` before
  the day-of-week field (``0 12 1 * +MON``) makes it AND for that expression.

Time zones (design §3): an expression is evaluated on the wall clock of the job's zone, and the
instants returned are aware UTC datetimes. A *fixed-time* expression (no ``*`` in the second,
minute or hour field) whose wall time falls in a spring-forward gap fires once, at the first
instant after the gap; if its wall time occurs twice (fall-back), it fires at the first
occurrence only. A *wildcard* expression follows real time: slots in a gap do not exist, slots in
a repeated hour fire in both folds.

The evaluator is written here rather than wrapped: croniter is inconsistent across DST, and cronsim
(Debian's DST rules) neither speaks croner's grammar (``+``, ``W``, seconds, years) nor handles
half-hour shifts (it skips 02:00 and 02:20 after Lord Howe falls back). It walks wall-clock
candidates field by field and maps each to instants with zoneinfo; the policy is ``_search``.
"""

from __future__ import annotations

import re
from bisect import bisect_left
from datetime import UTC, date, datetime, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from scheduler.errors import ValidationError

# A date that never exists: the reference stores it as the cron of at-jobs and chained children.
NEVER_SENTINEL = "0 0 31 2 *"

# How far ahead to look for a match: the rarest useful day rule (Feb 29 on a given weekday, AND'ed)
# recurs within 40 years; the 7-field form counts from the first year its year field allows.
SEARCH_YEARS = 50

_NICKNAMES = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
_MONTHS = {
    name: i
    for i, name in enumerate(
        ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"), start=1
    )
}
_WEEKDAYS = {name: i for i, name in enumerate(("sun", "mon", "tue", "wed", "thu", "fri", "sat"))}

# Day-of-week masks, as croner keeps them: bit n-1 = the nth such weekday of the month, bit 5 = the
# last one; a plain weekday has every bit.
_LAST = 1 << 5
_ANY = (1 << 6) - 1

_ONE_SECOND = timedelta(seconds=1)
_ONE_DAY = timedelta(days=1)


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


# --- parsing -----------------------------------------------------------------------------------


class _Bad(Exception):
    """A parse error; the text is what is wrong, without the expression."""


class _FieldRule:
    __slots__ = ("high", "low", "name", "names", "slots")

    def __init__(self, name: str, low: int, high: int, slots: int, names: dict[str, int] | None = None):
        self.name, self.low, self.high, self.names = name, low, high, names
        self.slots = slots  # croner's array size: the largest step it accepts


_SECOND = _FieldRule("second", 0, 59, 60)
_MINUTE = _FieldRule("minute", 0, 59, 60)
_HOUR = _FieldRule("hour", 0, 23, 24)
_DOM = _FieldRule("day-of-month", 1, 31, 31)
_MONTH = _FieldRule("month", 1, 12, 12, _MONTHS)
_DOW = _FieldRule("day-of-week", 0, 7, 7, _WEEKDAYS)
_YEAR = _FieldRule("year", 1, 9999, 10000)

_RANGE_STEP = re.compile(r"^([^-/]+)-([^-/]+)/(\d+)$")
_RANGE = re.compile(r"^([^-/]+)-([^-/]+)$")
_STEP = re.compile(r"^([^/]*)/(\d*)$")
_ALLOWED = {
    _SECOND.name: "numbers",
    _MINUTE.name: "numbers",
    _HOUR.name: "numbers",
    _DOM.name: "numbers, L, LW and nW",
    _MONTH.name: "numbers and JAN-DEC",
    _DOW.name: "numbers, SUN-SAT, nL and n#k",
    _YEAR.name: "numbers",
}


def _check_range(rule: _FieldRule, number: int) -> None:
    if not rule.low <= number <= rule.high:
        raise _Bad(f"{rule.name} field: {number} is out of range ({rule.low}-{rule.high})")


def _whole(rule: _FieldRule, text: str) -> int:
    """ASCII digits as a number; more digits than any field could hold are out of range at once
    (``int()`` refuses 4300 digits and more)."""
    digits = text.lstrip("0") or "0"
    if len(digits) > 9:
        raise _Bad(f"{rule.name} field: {text[:12]}... is out of range ({rule.low}-{rule.high})")
    return int(digits)


def _value(rule: _FieldRule, text: str, upper: bool = False, check: bool = True) -> int:
    if text.isdigit() and text.isascii():
        number = _whole(rule, text)
    elif rule.names is not None and text.lower() in rule.names:
        number = rule.names[text.lower()]
        if upper and rule is _DOW and number == 0:
            number = 7  # MON-SUN: Sunday at the top of a range is 7
    else:
        raise _Bad(
            f'{rule.name} field: "{text}" is not a value; allowed are {_ALLOWED[rule.name]}, '
            "*, ranges (a-b), steps (*/n, a-b/n) and lists (a,b)"
        )
    if check:
        _check_range(rule, number)
    return number


def _step(rule: _FieldRule, item: str, text: str) -> int:
    if not text:
        raise _Bad(f'{rule.name} field: "{item}" has no step after "/"')
    if not (text.isdigit() and text.isascii()):
        raise _Bad(f'{rule.name} field: step "{item}" must be a whole number')
    step = _whole(rule, text)
    if step == 0:
        raise _Bad(f'{rule.name} field: step "{item}" must be at least 1')
    if step > rule.slots:
        raise _Bad(f'{rule.name} field: step "{item}" is larger than the field\'s {rule.slots} values')
    return step


def _values(rule: _FieldRule, item: str) -> list[int]:
    """The values of one list item without modifiers: ``*``, ``n``, ``a-b``, ``*/n``, ``a-b/n``."""
    top = 6 if rule is _DOW else rule.high  # croner's ``*`` for weekdays is 0-6
    if item == "*":
        return list(range(rule.low, top + 1))
    if match := _RANGE_STEP.match(item):
        # As croner: only the values a stepped range produces must be in range ("0-8/3": 0,3,6).
        low, high = _value(rule, match[1], check=False), _value(rule, match[2], upper=True, check=False)
        step = _step(rule, item, match[3])
        if low <= high:
            values = list(range(low, high + 1, step))
            for value in values:
                _check_range(rule, value)
            return values
    elif match := _RANGE.match(item):
        low, high, step = _value(rule, match[1]), _value(rule, match[2], upper=True), 1
    elif match := _STEP.match(item):
        if not match[2]:
            raise _Bad(f'{rule.name} field: "{item}" has no step after "/"')
        if match[1] != "*":
            example = f'"*/{match[2]}"' if not match[1] else f'"{match[1]}-{rule.high}/{match[2]}"'
            raise _Bad(f'{rule.name} field: step "{item}" needs * or a range before "/", e.g. {example}')
        if rule is _YEAR:
            raise _Bad(f'year field: "{item}" needs a range before "/", e.g. "2026-2100/{match[2]}"')
        return list(range(rule.low, top + 1, _step(rule, item, match[2])))
    else:
        return [_value(rule, item)]
    if low > high:
        raise _Bad(f'{rule.name} field: range "{item}" runs backwards; write the smaller value first')
    return list(range(low, high + 1, step))


def _items(rule: _FieldRule, text: str) -> list[str]:
    items = text.split(",")
    if "" in items:
        raise _Bad(f'{rule.name} field "{text}" has an empty list item')
    return items


def _plain_field(rule: _FieldRule, text: str) -> tuple[int, ...]:
    values: set[int] = set()
    for item in _items(rule, text):
        values.update(_values(rule, item))
    return tuple(sorted(values))


class _Days:
    """The day rule: which days of a month match."""

    __slots__ = (
        "and_logic",
        "cache",
        "dom",
        "dom_last",
        "dom_last_weekday",
        "dom_nearest",
        "dom_star",
        "dow",
        "dow_star",
    )

    def __init__(
        self,
        dom: frozenset[int],
        dom_last: bool,
        dom_last_weekday: bool,
        dom_nearest: tuple[int, ...],
        dow: tuple[int, ...],  # mask per weekday, 0 = Sunday
        dom_star: bool,
        dow_star: bool,
        and_logic: bool,
    ) -> None:
        self.dom = dom
        self.dom_last = dom_last
        self.dom_last_weekday = dom_last_weekday
        self.dom_nearest = dom_nearest
        self.dow = dow
        self.dom_star = dom_star
        self.dow_star = dow_star
        self.and_logic = and_logic
        self.cache: dict[int, tuple[int, ...]] = {}

    def of(self, year: int, month: int) -> tuple[int, ...]:
        key = year * 16 + month
        days = self.cache.get(key)
        if days is None:
            days = self._compute(year, month)
            if len(self.cache) > 1024:
                self.cache.clear()
            self.cache[key] = days
        return days

    def _compute(self, year: int, month: int) -> tuple[int, ...]:
        length = _month_length(year, month)
        by_dom = {d for d in self.dom if d <= length}
        if self.dom_last:
            by_dom.add(length)
        if self.dom_last_weekday:
            by_dom.add(_nearest_weekday(year, month, length, length))
        for day in self.dom_nearest:
            if day <= length:
                by_dom.add(_nearest_weekday(year, month, day, length))
        if self.dow_star:
            return tuple(sorted(by_dom))
        first = (date(year, month, 1).weekday() + 1) % 7  # cron weekday of the 1st, Sunday = 0
        by_dow = set()
        for day in range(1, length + 1):
            mask = self.dow[(first + day - 1) % 7]
            if mask & (1 << ((day - 1) // 7)) or (mask & _LAST and day + 7 > length):
                by_dow.add(day)
        if self.and_logic or self.dom_star:
            return tuple(sorted(by_dom & by_dow))
        return tuple(sorted(by_dom | by_dow))


def _month_length(year: int, month: int) -> int:
    if month == 2:
        return 29 if year % 4 == 0 and (year % 100 != 0 or year % 400 == 0) else 28
    return 30 if month in (4, 6, 9, 11) else 31


def _nearest_weekday(year: int, month: int, day: int, length: int) -> int:
    weekday = date(year, month, day).weekday()  # Monday = 0
    if weekday == 5:  # Saturday: the Friday before, or Monday the 3rd when the 1st is a Saturday
        return day + 2 if day == 1 else day - 1
    if weekday == 6:  # Sunday: the Monday after, or the Friday before when it is the last day
        return day - 2 if day == length else day + 1
    return day


def _dom_field(text: str) -> tuple[frozenset[int], bool, bool, tuple[int, ...]]:
    if text.upper() == "LW":
        return frozenset(), False, True, ()
    values: set[int] = set()
    last = False
    nearest: set[int] = set()
    for item in _items(_DOM, text):
        upper = item.upper()
        if upper == "L":
            last = True
        elif upper.endswith("W"):
            if not upper[:-1].isdigit():
                raise _Bad(
                    f'day-of-month field: "{item}" - W (nearest weekday) goes after a single day, '
                    'e.g. "15W", or use "LW" alone for the last weekday'
                )
            nearest.add(_value(_DOM, upper[:-1]))
        elif "L" in upper or "W" in upper:
            raise _Bad(
                f'day-of-month field: "{item}" - L (last day) and W (nearest weekday) stand as '
                'their own list item: "L", "LW" or "15W"'
            )
        else:
            values.update(_values(_DOM, item))
    return frozenset(values), last, False, tuple(sorted(nearest))


def _dow_field(text: str) -> tuple[int, ...]:
    masks = [0] * 7
    for item in _items(_DOW, text):
        base, mask = item, _ANY
        if "#" in item:
            base, _, nth = item.partition("#")
            if nth.upper() == "L":
                mask = _LAST
            elif nth.isdigit() and 1 <= int(nth) <= 5:
                mask = 1 << (int(nth) - 1)
            else:
                raise _Bad(f'day-of-week field: "{item}" - the n in "#n" must be 1-5 or L')
        elif item.upper().endswith("L"):
            base, mask = item[:-1], _LAST
        if mask != _ANY and base in ("", "*"):
            raise _Bad(
                f'day-of-week field: "{item}" needs a weekday before the modifier, '
                'e.g. "5L" (last Friday) or "1#2" (second Monday)'
            )
        for weekday in _values(_DOW, base):
            masks[weekday % 7] |= mask
    return tuple(masks)


class _Spec:
    __slots__ = ("days", "first_month", "fixed", "hours", "minutes", "months", "seconds", "years")

    def __init__(
        self,
        seconds: tuple[int, ...],
        minutes: tuple[int, ...],
        hours: tuple[int, ...],
        months: tuple[bool, ...],  # index 1-12
        years: tuple[int, ...] | None,  # None: any year
        days: _Days,
        fixed: bool,  # no * in the second, minute or hour field: the DST policy for fixed times
    ) -> None:
        self.seconds, self.minutes, self.hours, self.months = seconds, minutes, hours, months
        self.first_month = months.index(True)
        self.years, self.days, self.fixed = years, days, fixed


def _check_characters(rule: _FieldRule, text: str) -> None:
    allowed = "0123456789*,-/"
    extra = {
        _DOM.name: "LWlw",
        _MONTH.name: "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ",
        _DOW.name: "#abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ",
    }.get(rule.name, "")
    bad = sorted({c for c in text if c not in allowed and c not in extra})
    if bad:
        shown = " ".join(f'"{c}"' for c in bad)
        raise _Bad(
            f'{rule.name} field "{text}" contains {shown}; allowed are {_ALLOWED[rule.name]}, '
            "*, ranges (a-b), steps (*/n, a-b/n) and lists (a,b)"
        )


def _parse_fields(expr: str) -> _Spec:
    text = expr.strip()
    if "@" in text:
        nickname = text.lower()
        if nickname == "@reboot":
            raise _Bad("@reboot is not supported: jobs run on a schedule, not at system start")
        if nickname not in _NICKNAMES:
            raise _Bad(
                "unknown nickname; use @yearly, @annually, @monthly, @weekly, @daily, @midnight "
                "or @hourly, or five fields (minute hour day month weekday)"
            )
        text = _NICKNAMES[nickname]
    parts = text.replace("?", "*").split()
    if len(parts) not in (5, 6, 7):
        raise _Bad("expected 5 fields (minute hour day month weekday)")
    if len(parts) == 5:
        parts.insert(0, "0")
    if len(parts) == 6:
        parts.append("*")
    second, minute, hour, dom, month, dow, year = parts
    and_logic = dow.startswith("+")
    if and_logic:
        dow = dow[1:]
        if not dow:
            raise _Bad('day-of-week field is empty after "+"')
    for rule, part in zip(
        (_SECOND, _MINUTE, _HOUR, _DOM, _MONTH, _DOW, _YEAR),
        (second, minute, hour, dom, month, dow, year),
        strict=True,
    ):
        _check_characters(rule, part)
    months = _plain_field(_MONTH, month)
    dom_values, dom_last, dom_last_weekday, dom_nearest = _dom_field(dom)
    return _Spec(
        seconds=_plain_field(_SECOND, second),
        minutes=_plain_field(_MINUTE, minute),
        hours=_plain_field(_HOUR, hour),
        months=tuple(m in months for m in range(13)),
        years=None if year == "*" else _plain_field(_YEAR, year),
        days=_Days(
            dom=dom_values,
            dom_last=dom_last,
            dom_last_weekday=dom_last_weekday,
            dom_nearest=dom_nearest,
            dow=_dow_field(dow),
            dom_star=dom == "*",
            dow_star=dow == "*",
            and_logic=and_logic,
        ),
        fixed="*" not in second + minute + hour,
    )


@lru_cache(maxsize=16384)
def _parse(expr: str) -> _Spec:
    try:
        return _parse_fields(expr)
    except _Bad as exc:
        raise ValidationError(f'Invalid cron expression "{expr}": {exc}') from None


# --- wall-clock candidates ---------------------------------------------------------------------

_Wall = tuple[int, int, int, int, int, int]  # year, month, day, hour, minute, second


def _time_from(spec: _Spec, hour: int, minute: int, second: int) -> tuple[int, int, int] | None:
    """The first (hour, minute, second) of the expression at or after the given one, in a day."""
    hours, minutes, seconds = spec.hours, spec.minutes, spec.seconds
    i = bisect_left(hours, hour)
    if i < len(hours) and hours[i] == hour:
        j = bisect_left(minutes, minute)
        if j < len(minutes) and minutes[j] == minute:
            k = bisect_left(seconds, second)
            if k < len(seconds):
                return hour, minute, seconds[k]
            j += 1
        if j < len(minutes):
            return hour, minutes[j], seconds[0]
        i += 1
    if i < len(hours):
        return hours[i], minutes[0], seconds[0]
    return None


def _next_wall(spec: _Spec, wall: _Wall, last_year: int) -> _Wall | None:
    """The first wall-clock time matching the expression at or after ``wall``, up to ``last_year``."""
    year, month, day, hour, minute, second = wall
    years, months = spec.years, spec.months
    while year <= last_year:
        if years is not None:
            i = bisect_left(years, year)
            if i == len(years):
                return None
            if years[i] != year:
                year, month, day, hour, minute, second = years[i], 1, 1, 0, 0, 0
                continue
        if month > 12 or not months[month]:
            while month <= 12 and not months[month]:
                month += 1
            if month > 12:
                year, month = year + 1, spec.first_month
            day, hour, minute, second = 1, 0, 0, 0
            continue
        days = spec.days.of(year, month)
        i = bisect_left(days, day)
        if i == len(days):
            month, day, hour, minute, second = month + 1, 1, 0, 0, 0
            continue
        if days[i] != day:
            day, hour, minute, second = days[i], 0, 0, 0
        time = _time_from(spec, hour, minute, second)
        if time is None:
            day, hour, minute, second = day + 1, 0, 0, 0
            continue
        return (year, month, day, *time)
    return None


# --- wall clock to instants: the DST policy ----------------------------------------------------


def _offset_at(tz: ZoneInfo, instant: datetime) -> timedelta:
    offset = instant.astimezone(tz).utcoffset()
    assert offset is not None
    return offset


def _transition(tz: ZoneInfo, before: datetime, after: datetime) -> datetime:
    """The instant in (before, after] where the zone's offset changes (one change assumed)."""
    low, high = int(before.timestamp()), int(after.timestamp())
    first = _offset_at(tz, before)
    while high - low > 1:
        middle = (low + high) // 2
        if _offset_at(tz, datetime.fromtimestamp(middle, UTC)) == first:
            low = middle
        else:
            high = middle
    return datetime.fromtimestamp(high, UTC)


def _last_year(spec: _Spec, year: int) -> int:
    if spec.years is not None:
        i = bisect_left(spec.years, year)
        if i < len(spec.years):
            year = spec.years[i]
    return min(9999, year + SEARCH_YEARS)


def _next_instant(spec: _Spec, tz: ZoneInfo, after: datetime) -> datetime | None:
    """The first fire instant strictly after ``after`` (aware UTC) under the DST policy."""
    try:
        return _search(spec, tz, after)
    except OverflowError:  # at the edges of datetime's range (years 1 and 9999)
        return None


def _search(spec: _Spec, tz: ZoneInfo, after: datetime) -> datetime | None:
    local = after.astimezone(tz)
    now_wall = local.replace(tzinfo=None, microsecond=0, fold=0)
    # Wall times before the local "now" lie ahead in real time only when the clock falls back
    # within the next day: then start at the first repeated wall time.
    start = now_wall
    offset = local.utcoffset()
    tomorrow = after + _ONE_DAY if after.year < 9999 else after
    offset_tomorrow = _offset_at(tz, tomorrow)
    if offset is not None and offset_tomorrow < offset:
        change = _transition(tz, after, tomorrow)
        start = min(start, (change + offset_tomorrow).replace(tzinfo=None))
    last_year = _last_year(spec, start.year)

    best: datetime | None = None  # a second occurrence, waiting for an earlier first one
    wall: _Wall = (start.year, start.month, start.day, start.hour, start.minute, start.second)
    while (found := _next_wall(spec, wall, last_year)) is not None:
        naive = datetime(*found)
        early = naive.replace(tzinfo=tz).astimezone(UTC)
        late = naive.replace(tzinfo=tz, fold=1).astimezone(UTC)
        if early == late:  # an ordinary wall time
            if early > after:
                return early if best is None else min(best, early)
        elif early < late:  # occurs twice (fall-back): fold=0 is the earlier instant
            if early > after:
                # Every second occurrence in the overlap comes later than any first one.
                return early if best is None else min(best, early)
            if not spec.fixed and late > after:
                if local.fold:  # "now" is itself a second occurrence: no first one is ahead
                    return late
                if best is None:
                    best = late  # the earliest second occurrence: wall times ascend
        elif spec.fixed:  # in a spring-forward gap: a fixed time fires when the gap ends
            end = _transition(tz, late, early)
            if end > after:
                return end if best is None else min(best, end)
        # Nothing before the local "now" can come first any more (a first occurrence before it
        # is past; a second one is later than ``best``): go on from there.
        resume = max(naive + _ONE_SECOND, now_wall)
        wall = (resume.year, resume.month, resume.day, resume.hour, resume.minute, resume.second)
    return best


# --- public API --------------------------------------------------------------------------------


def _as_utc(instant: datetime) -> datetime:
    return instant.replace(tzinfo=UTC) if instant.tzinfo is None else instant.astimezone(UTC)


def next_fire(expr: str, tz: str, after: datetime) -> datetime | None:
    """The first fire instant strictly after ``after`` (UTC), or None for the never-sentinel."""
    if expr.strip() == NEVER_SENTINEL:
        return None
    return _next_instant(_parse(expr), zone(tz), _as_utc(after))


def next_fires(expr: str, tz: str, after: datetime, count: int) -> list[datetime]:
    """Up to ``count`` fire instants after ``after``; an expression that never fires gives []."""
    spec, where = _parse(expr), zone(tz)
    out: list[datetime] = []
    current: datetime | None = _as_utc(after)
    while len(out) < count and current is not None:
        current = _next_instant(spec, where, current)
        if current is not None:
            out.append(current)
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
            f'cron expression "{expr}" never fires (no matching date within {SEARCH_YEARS} years)'
        )


def preview(expr: str, tz: str, after: datetime, count: int) -> list[str]:
    """ISO 8601 instants with the zone's offset, as a person in ``tz`` reads them."""
    validate(expr, tz, after)
    return [fire.astimezone(zone(tz)).isoformat() for fire in next_fires(expr, tz, after, count)]
