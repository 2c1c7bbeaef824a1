"""The jobs' counters as Prometheus metrics, read from a scheduler at each scrape."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .scheduler import JobScheduler


class JobsCollector:
    """A prometheus_client collector for a scheduler's jobs.

    Register it on the registry that /metrics serves: ``registry.register(JobsCollector(s))``.
    """

    def __init__(self, scheduler: JobScheduler) -> None:
        self.scheduler = scheduler

    def describe(self) -> list[Any]:
        return []  # collected lazily: the set of jobs can grow after registration

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        labels = ["job", "kind"]
        families: dict[str, CounterMetricFamily | GaugeMetricFamily] = {
            "runs": CounterMetricFamily(
                "worldloop_job_runs", "Finished job runs (any result)", labels=labels
            ),
            "errors": CounterMetricFamily(
                "worldloop_job_errors", "Job runs that raised or timed out", labels=labels
            ),
            "skipped": CounterMetricFamily(
                "worldloop_job_skipped_slots", "Schedule slots skipped or coalesced", labels=labels
            ),
            "timeouts": CounterMetricFamily(
                "worldloop_job_timeouts", "Job runs that went past their timeout", labels=labels
            ),
            "running": GaugeMetricFamily(
                "worldloop_job_running", "Background runs in flight", labels=labels
            ),
            "paused": GaugeMetricFamily(
                "worldloop_job_paused", "1 when the job is paused", labels=labels
            ),
        }
        for name, kind, values in self.scheduler.counters():
            for key, family in families.items():
                family.add_metric([name, kind], values[key])
        yield from families.values()
