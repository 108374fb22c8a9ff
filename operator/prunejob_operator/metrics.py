"""Prometheus metrics, one `Metrics` per operator on its own registry."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime

from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from prunejob_operator.models import PHASES


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


def _seconds_between(start: str | None, end: str | None) -> float | None:
    if not start or not end:
        return None
    try:
        begin = datetime.fromisoformat(start.replace("Z", "+00:00"))
        finish = datetime.fromisoformat(end.replace("Z", "+00:00"))
    except ValueError:
        return None
    return max(0.0, (finish - begin).total_seconds())


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
        # (namespace, name) -> phase; written on the event loop, read by the scrape thread.
        self._phases: dict[tuple[str, str], str] = {}
        self.registry.register(_PhaseCollector(self._phases))

    def set_phase(self, key: tuple[str, str], phase: str | None) -> None:
        self._phases[key] = phase or "Unknown"

    def forget(self, key: tuple[str, str]) -> None:
        self._phases.pop(key, None)

    def record_finished(
        self, phase: str, start: str | None, end: str | None, filters: tuple[int, int] | None
    ) -> None:
        """Called once per generation, when the status first turns terminal."""
        seconds = _seconds_between(start, end)
        if seconds is not None:
            self.run_duration.labels(phase=phase).observe(seconds)
        if phase == "Succeeded" and filters is not None:
            self.filters_removed.inc(max(0, filters[0] - filters[1]))

    def serve(self, port: int) -> None:
        start_http_server(port, registry=self.registry)
