"""Offloaded tasks as Prometheus metrics, read from the offload plug-in at each scrape."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .plugin import OffloadPlugin

EVENTS = (
    "sent",
    "resent",
    "succeeded",
    "failed",
    "timed_out",
    "retried",
    "send_errors",
    "result_retries",
)
FINAL = ("succeeded", "failed", "timed_out")


class TasksCollector:
    """``worldloop_task_events_total{event}`` and ``worldloop_tasks_in_flight`` of one world."""

    def __init__(self, plugin: OffloadPlugin, world: str) -> None:
        self.plugin = plugin
        self.world = world

    def describe(self) -> list[Any]:
        return []

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        stats = self.plugin.stats()
        events = CounterMetricFamily(
            "worldloop_task_events",
            "Offloaded tasks sent, sent again after a restart, and their outcomes",
            labels=["world", "event"],
        )
        for event in EVENTS:
            events.add_metric([self.world, event], stats["counts"].get(event, 0))
        flight = GaugeMetricFamily(
            "worldloop_tasks_in_flight", "Tasks sent and not finished", labels=["world"]
        )
        flight.add_metric([self.world], sum(1 for t in stats["tasks"] if t["state"] not in FINAL))
        yield events
        yield flight
