"""The daemon's Prometheus metrics: counters kept as things happen, gauges read on a scrape.

Counters and the lateness histogram are in-process (they start at zero with each daemon, as
Prometheus expects of counters). Gauges that live in the database (backlog, approvals, outbound)
are read only when ``/metrics`` is scraped, through the store thread, and kept a few seconds so
that several scrapers do not multiply the reads; nothing here runs on the scheduling path except
a counter increment. Its own registry: nothing global, so two daemons in one test process (and
the library's default collectors) never collide.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from scheduler import __version__
from scheduler.store.api import StoreGauges

# Start lateness, in seconds: from sub-second (a woken loop) to an hour (after downtime).
LATENESS_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0)
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# A skipped run's recorded reason (free text, store/sqlite/claims.py and chains.py) as a label
# with few values: the first pattern found names it.
_SKIP_REASONS: tuple[tuple[str, str], ...] = (
    ("already claimed", "already_claimed"),
    ("resource pool", "pool"),
    ("missed:", "misfire"),
    ("overlap queue is full", "queue_full"),
    ("max_queued_dispatches", "queue_full"),
    ("overlap_policy queue", "overlap_queued"),
    ("overlap_policy skip", "overlap"),
    ("job disabled", "disabled"),
    ("approval", "approval"),
    ("rejected", "approval"),
)


def skip_reason(message: str | None) -> str:
    text = (message or "").lower()
    for pattern, reason in _SKIP_REASONS:
        if pattern in text:
            return reason
    return "other"


@dataclass(frozen=True)
class Readings:
    """The daemon's live state at a scrape (what is not a counter)."""

    running: Mapping[str, int]  # runs in progress, by target
    gateway_up: bool
    last_tick_at: float  # wall-clock time of the scheduling loop's last round (Unix seconds)
    store: StoreGauges | None  # None: the database could not be read for this scrape
    oldest_outbound_age_s: float


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.runs_started = Counter(
            "scheduler_runs_started", "Runs started, by target and by what started them.",
            ["target", "source"], registry=self.registry)
        self.runs_finished = Counter(
            "scheduler_runs_finished", "Runs ended and recorded, by target and status.",
            ["target", "status"], registry=self.registry)
        self.start_lateness = Histogram(
            "scheduler_start_lateness_seconds",
            "How long after its scheduled instant a cron or at occurrence started.",
            ["source"], buckets=LATENESS_BUCKETS, registry=self.registry)
        self.skipped = Counter(
            "scheduler_occurrences_skipped", "Work not started, recorded as a skipped run, by reason.",
            ["reason"], registry=self.registry)
        self._live = _LiveCollector()
        self.registry.register(self._live)

    def run_started(self, target: str, source: str, lateness_s: float | None) -> None:
        self.runs_started.labels(target=target, source=source).inc()
        if lateness_s is not None:
            self.start_lateness.labels(source=source).observe(max(0.0, lateness_s))

    def run_finished(self, target: str, status: str) -> None:
        self.runs_finished.labels(target=target, status=status).inc()

    def runs_skipped(self, messages: Iterable[str | None]) -> None:
        for message in messages:
            self.skipped.labels(reason=skip_reason(message)).inc()

    def exposition(self, readings: Readings) -> bytes:
        self._live.readings = readings
        return generate_latest(self.registry)


class _LiveCollector(Collector):
    """Gauges from the readings of the current scrape."""

    def __init__(self) -> None:
        self.readings: Readings | None = None

    def collect(self) -> Iterable[Metric]:
        readings = self.readings
        if readings is None:
            return
        info = GaugeMetricFamily("scheduler_info", "The daemon's version.", labels=["version"])
        info.add_metric([__version__], 1)
        yield info
        running = GaugeMetricFamily("scheduler_runs_running", "Runs in progress in this daemon, by target.",
                                    labels=["target"])
        for target, count in sorted(readings.running.items()):
            running.add_metric([target], count)
        yield running
        yield GaugeMetricFamily("scheduler_gateway_up", "1 when the gateway's /health answered at the last "
                                "check, else 0.", value=1 if readings.gateway_up else 0)
        yield GaugeMetricFamily("scheduler_loop_last_tick_timestamp_seconds",
                                "When the scheduling loop last went round (Unix time).",
                                value=readings.last_tick_at)
        yield GaugeMetricFamily("scheduler_store_read_ok", "1 when this scrape read the database gauges.",
                                value=0 if readings.store is None else 1)
        if readings.store is not None:
            yield from _store_gauges(readings.store, readings.oldest_outbound_age_s)


def _store_gauges(store: StoreGauges, oldest_age_s: float) -> Iterable[Metric]:
    backlog = GaugeMetricFamily(
        "scheduler_dispatch_backlog",
        "Work not started: due now (occurrences and queue rows), queued for later, held for approval.",
        labels=["state"])
    backlog.add_metric(["due"], store.backlog_due)
    backlog.add_metric(["later"], store.backlog_later)
    backlog.add_metric(["awaiting_approval"], store.backlog_awaiting_approval)
    yield backlog
    yield GaugeMetricFamily("scheduler_approvals_pending", "Approvals waiting for an operator.",
                            value=store.approvals_pending)
    yield GaugeMetricFamily("scheduler_outbound_pending", "Chat deliveries not yet sent.",
                            value=store.outbound_pending)
    yield GaugeMetricFamily("scheduler_outbound_oldest_age_seconds",
                            "Age of the oldest chat delivery not yet sent (0: none).", value=oldest_age_s)
