"""What the scheduling path tells the metrics: a run started, a run ended, work skipped.

The daemon holds a :class:`Counters`: engine/metrics.py's Prometheus registry when the endpoint
is on, else :class:`NoCounters`, so that a daemon without the endpoint neither imports
prometheus-client (about 0.1 s of start-up and its memory) nor keeps counts nobody reads.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol


class Counters(Protocol):
    def run_started(self, target: str, source: str, lateness_s: float | None) -> None: ...
    def run_finished(self, target: str, status: str) -> None: ...
    def runs_skipped(self, messages: Iterable[str | None]) -> None: ...


class NoCounters:
    def run_started(self, target: str, source: str, lateness_s: float | None) -> None:
        pass

    def run_finished(self, target: str, status: str) -> None:
        pass

    def runs_skipped(self, messages: Iterable[str | None]) -> None:
        pass
