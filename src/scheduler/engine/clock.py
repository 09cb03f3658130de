"""Noticing steps of the wall clock.

The daemon stores and compares wall-clock instants (UTC), but it sleeps on the monotonic clock.
When the wall clock is stepped (NTP correcting a wrong clock, an operator's ``date -s``), the
difference between the two changes at once; a slewing clock changes it by at most half a
millisecond a second. A change beyond the tolerance is a step: backward steps leave computed fire
times too far ahead, so the daemon brings them back (``store.recovery.shift_back_after_clock_step``).
"""

from __future__ import annotations

import time
from collections.abc import Callable

# Smaller changes of (wall − monotonic) between two checks are slewing or noise.
STEP_TOLERANCE_S = 2.0


class ClockWatch:
    def __init__(self, *, tolerance_s: float = STEP_TOLERANCE_S,
                 wall: Callable[[], float] = time.time,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.tolerance_s = tolerance_s
        self._wall = wall
        self._monotonic = monotonic
        self._offset = self._read()

    def _read(self) -> float:
        return self._wall() - self._monotonic()

    def step(self) -> float | None:
        """Seconds the wall clock jumped since the last call (negative: back), or None."""
        offset = self._read()
        jump, self._offset = offset - self._offset, offset
        return jump if abs(jump) >= self.tolerance_s else None
