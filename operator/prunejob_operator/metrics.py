"""Prometheus metrics, one `Metrics` per operator on its own registry."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from prunejob_operator.models import PHASES
from prunejob_operator.records import seconds_between


class _PhaseCollector(Collector):
    """`prunejob_prunejobs{phase}` from the phases the operator last saw."""

    def __init__(self, phases: dict[tuple[str, str], str]) -> None:
        self._phases = phases

    def collect(self) -> Iterator[GaugeMetricFamily]:
        counts = dict.fromkeys((*PHASES, "Unknown"), 0)
        for phase in self._phases.copy().values():
            counts[phase if phase in counts else "Unknown"] += 1
        family = GaugeMetricFamily(
            "prunejob_prunejobs", "PruneJobs by status phase.", labels=["phase"]
        )
        for phase, count in counts.items():
            family.add_metric([phase], count)
        yield family


WatchCounts = Callable[[], Iterable[tuple[str, Mapping[str, int]]]]


class _WatchCollector(Collector):
    """`prunejob_watch_lists_total{resource}` and `prunejob_watch_restarts_total{resource,
    reason}` from the reflectors' own counts."""

    REASONS = ("gone", "throttled", "error", "dropped", "ended")

    def __init__(self, counts: WatchCounts) -> None:
        self._counts = counts

    def collect(self) -> Iterator[CounterMetricFamily]:
        lists = CounterMetricFamily(
            "prunejob_watch_lists", "Lists by the reflectors (start-up and relists).",
            labels=["resource"],
        )  # fmt: skip
        restarts = CounterMetricFamily(
            "prunejob_watch_restarts",
            "Watch requests that ended, by why: gone (410: relist), throttled (429), "
            "error (other HTTP errors), dropped (connection lost or silent), ended (timeout).",
            labels=["resource", "reason"],
        )
        for resource, counts in self._counts():
            lists.add_metric([resource], counts.get("lists", 0))
            for reason in self.REASONS:
                restarts.add_metric([resource, reason], counts.get(reason, 0))
        yield lists
        yield restarts


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.run_duration = Histogram(
            "prunejob_run_duration_seconds",
            "Wall time of finished PruneJob runs (Job start to completion), by outcome.",
            ["phase"],
            buckets=(10, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200, 14400, float("inf")),
            registry=self.registry,
        )
        self.filters_removed = Counter(
            "prunejob_filters_removed_total",
            "Filters removed by succeeded PruneJobs.",
            registry=self.registry,
        )
        self.reconcile_errors = Counter(
            "prunejob_reconcile_errors_total",
            "Reconciliations that failed and will be retried, by step.",
            ["step"],
            registry=self.registry,
        )
        self.jobs_created = Counter(
            "prunejob_jobs_created_total", "Worker Jobs created.", registry=self.registry
        )
        self.leader = Gauge(
            "prunejob_leader",
            "1 while this replica holds the leader Lease and reconciles, else 0.",
            registry=self.registry,
        )
        # (namespace, name) -> phase; written on the event loop, read by the scrape thread.
        self._phases: dict[tuple[str, str], str] = {}
        self.registry.register(_PhaseCollector(self._phases))

    def watch_counts(self, counts: WatchCounts) -> None:
        """Export the reflectors' counts (`counts()` is read at every scrape)."""
        self.registry.register(_WatchCollector(counts))

    def set_phase(self, key: tuple[str, str], phase: str | None) -> None:
        self._phases[key] = phase or "Unknown"

    def forget(self, key: tuple[str, str]) -> None:
        self._phases.pop(key, None)

    def record_finished(
        self, phase: str, start: str | None, end: str | None, filters: tuple[int, int] | None
    ) -> None:
        """Called once per generation, when the status first turns terminal."""
        seconds = seconds_between(start, end)
        if seconds is not None:
            self.run_duration.labels(phase=phase).observe(max(0.0, seconds))
        if phase == "Succeeded" and filters is not None:
            self.filters_removed.inc(max(0, filters[0] - filters[1]))

    def serve(self, port: int) -> None:
        start_http_server(port, registry=self.registry)
