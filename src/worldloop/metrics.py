"""Prometheus metrics for the loop, the commands, the store and the HTTP API.

Several worker processes: when ``PROMETHEUS_MULTIPROC_DIR`` is set (before start), every process
writes its samples to files there and ``/metrics`` in any worker aggregates all of them, so a
scrape sees the runner's world metrics and the HTTP metrics of every worker whichever worker
answers. Counters and histograms are summed; gauges use "live" modes so a dead worker's values
vanish (gunicorn's ``child_exit`` hook must call :func:`mark_process_dead`, see
``worldloop.gunicorn_hooks``). Without that variable, a single in-process registry is used.

The runtime is observed through an after-tick listener (:class:`LoopObserver`), never by
editing the tick. Store timings arrive through the durability's timing hooks, which
:class:`LoopObserver` is a runtime plug-in: it also times journal appends (loop thread) and
snapshot saves (writer thread).
"""

from __future__ import annotations

import os
import threading
import time
from collections import Counter as Tally
from collections import deque
from dataclasses import dataclass

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

from .clock import TickInfo
from .jobs import JobScheduler, JobsCollector
from .logs import set_loop_context
from .offload import OffloadPlugin
from .offload.collector import TasksCollector
from .plugins import RuntimePlugin
from .runtime import TickReport, WorldRuntime

MULTIPROCESS = bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))
REGISTRY = CollectorRegistry(auto_describe=True)
"""Where worldloop's metrics live in single-process mode (never the global default registry)."""

_FAST = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
_IO = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

TICKS = Counter("worldloop_ticks", "Ticks completed.", ["world"], registry=REGISTRY)
TICK_DURATION = Histogram(
    "worldloop_tick_duration_seconds",
    "Time spent computing one tick (commands, systems, journal, publish).",
    ["world"],
    buckets=_FAST,
    registry=REGISTRY,
)
TICK_LATENESS = Histogram(
    "worldloop_tick_lateness_seconds",
    "How late each scheduled tick started after its deadline.",
    ["world"],
    buckets=_FAST,
    registry=REGISTRY,
)
OVERRUNS = Counter(
    "worldloop_overruns",
    "Times the loop fell a period or more behind.",
    ["world"],
    registry=REGISTRY,
)
SKIPPED = Counter(
    "worldloop_skipped_ticks",
    "Scheduled ticks dropped by the overrun policy.",
    ["world"],
    registry=REGISTRY,
)
TICK_ERRORS = Counter(
    "worldloop_tick_errors", "Ticks that raised (contained).", ["world"], registry=REGISTRY
)
SYSTEM_ERRORS = Counter(
    "worldloop_system_errors",
    "System failures contained by the loop, by system.",
    ["world", "system"],
    registry=REGISTRY,
)
HOOK_ERRORS = Counter(
    "worldloop_hook_errors", "Tick hooks/listeners that raised.", ["world"], registry=REGISTRY
)
COMMANDS_APPLIED = Counter(
    "worldloop_commands_applied",
    "Commands applied, by type.",
    ["world", "type"],
    registry=REGISTRY,
)
COMMANDS_REJECTED = Counter(
    "worldloop_commands_rejected",
    "Commands rejected when applied, by type and reason code.",
    ["world", "type", "reason"],
    registry=REGISTRY,
)
QUEUE_DEPTH = Gauge(
    "worldloop_queue_depth",
    "Commands waiting after the last tick.",
    ["world"],
    multiprocess_mode="livesum",
    registry=REGISTRY,
)
RATE_HZ = Gauge(
    "worldloop_rate_hz",
    "Configured tick rate.",
    ["world"],
    multiprocess_mode="livemax",
    registry=REGISTRY,
)
PAUSED = Gauge(
    "worldloop_paused", "1 while paused.", ["world"], multiprocess_mode="livemax", registry=REGISTRY
)
WORLD_TICK = Gauge(
    "worldloop_world_tick",
    "The world's current tick.",
    ["world"],
    multiprocess_mode="livemax",
    registry=REGISTRY,
)
HALTED = Gauge(
    "worldloop_halted",
    "1 once the journal failed for good and the world halted (until a restart).",
    ["world"],
    multiprocess_mode="livemax",
    registry=REGISTRY,
)
JOURNAL_APPEND = Histogram(
    "worldloop_journal_append_seconds",
    "Time to durably append one tick's commands to the journal.",
    ["world"],
    buckets=_IO,
    registry=REGISTRY,
)
SNAPSHOT_SAVE = Histogram(
    "worldloop_snapshot_save_seconds",
    "Time to write one full snapshot to the store.",
    ["world"],
    buckets=_IO,
    registry=REGISTRY,
)
FRAME_BUILD = Histogram(
    "worldloop_frame_build_seconds",
    "Time to build and serialize one viewer/stream frame (once per tick per viewport).",
    ["world"],
    buckets=_FAST,
    registry=REGISTRY,
)
STREAMS_OPEN = Gauge(
    "worldloop_streams_open",
    "Open server-sent-event streams.",
    multiprocess_mode="livesum",
    registry=REGISTRY,
)
HTTP_LATENCY = Histogram(
    "worldloop_http_request_duration_seconds",
    "HTTP request latency (to the first byte for streams), by endpoint.",
    ["method", "endpoint", "status"],
    buckets=_IO,
    registry=REGISTRY,
)
RATE_LIMIT_UNCHECKED = Counter(
    "worldloop_rate_limit_unchecked",
    "Requests let through without a rate-limit check: the shared limiter's Redis was "
    "unreachable (it fails open, api/ratelimit_redis.py).",
    ["limit"],
    registry=REGISTRY,
)


def observe_journal_append(world: str, seconds: float) -> None:
    """One journal append of ``world`` took ``seconds``."""
    JOURNAL_APPEND.labels(world).observe(seconds)


def observe_snapshot_save(world: str, seconds: float) -> None:
    """One snapshot save of ``world`` took ``seconds``."""
    SNAPSHOT_SAVE.labels(world).observe(seconds)


def render() -> tuple[bytes, str]:
    """The exposition text (aggregated across processes in multiprocess mode) and its type."""
    if MULTIPROCESS:
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST


def render_jobs(scheduler: JobScheduler) -> bytes:
    """Exposition text of a job scheduler's counters (``worldloop_job_*``), for /metrics.

    Collected at scrape time from the scheduler itself, which lives in the process that runs
    the world; /metrics appends it only there (another gunicorn worker has no job runs to
    report, and prometheus_client's multiprocess files cannot carry custom collectors).
    """
    registry = CollectorRegistry(auto_describe=False)
    registry.register(JobsCollector(scheduler))
    return generate_latest(registry)


def render_tasks(plugin: OffloadPlugin, world: str) -> bytes:
    """Exposition text of a world's offloaded tasks (``worldloop_task_*``), for /metrics; like
    the jobs, only in the process that runs the world."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(TasksCollector(plugin, world))
    return generate_latest(registry)


def mark_process_dead(pid: int) -> None:
    """Forget a dead worker's live gauges (call from gunicorn's ``child_exit``)."""
    if MULTIPROCESS:
        multiprocess.mark_process_dead(pid)  # type: ignore[no-untyped-call]


@dataclass(frozen=True, slots=True)
class LoopWindow:
    """What the recent ticks looked like, for readiness: counts over the last ``ticks`` ticks."""

    ticks: int
    overruns: int
    tick_errors: int
    system_errors: int
    hook_errors: int
    last_tick_monotonic: float | None


WORLD_SERIES = (
    TICKS,
    TICK_DURATION,
    TICK_LATENESS,
    OVERRUNS,
    SKIPPED,
    TICK_ERRORS,
    SYSTEM_ERRORS,
    HOOK_ERRORS,
    COMMANDS_APPLIED,
    COMMANDS_REJECTED,
    QUEUE_DEPTH,
    RATE_HZ,
    PAUSED,
    WORLD_TICK,
    HALTED,
    JOURNAL_APPEND,
    SNAPSHOT_SAVE,
    FRAME_BUILD,
)
"""The metrics whose first label is ``world``: one series set per hosted world."""


def forget_world(world: str) -> None:
    """Drop every series of ``world`` (a deleted world), so that creating and deleting worlds
    never grows ``/metrics``: its size is bounded by the worlds hosted at once."""
    for metric in WORLD_SERIES:
        for labels in list(metric._metrics):  # prometheus_client keeps no public index
            if labels and labels[0] == world:
                metric.remove(*labels)


class LoopObserver(RuntimePlugin):
    """Runtime plug-in: feeds the metrics and keeps a window of recent ticks for /readyz.

    Counters that live in the ticker/world (overruns, errors) are turned into deltas here, so
    the tick code stays untouched. Runs on the loop thread; it must stay cheap.
    """

    def __init__(self, runtime: WorldRuntime, window: int = 200) -> None:
        self.runtime = runtime
        self.world = runtime.name
        self._window: deque[tuple[int, int, int, int]] = deque(maxlen=window)
        self._lock = threading.Lock()
        self._last_monotonic: float | None = None
        stats = runtime.stats()
        self._overruns = stats.overruns
        self._skipped = stats.skipped
        self._errors = stats.errors
        self._hook_errors = runtime.hook_errors
        self._system_errors: Tally[str] = Tally(runtime.world.system_errors)

    def refresh(self) -> None:
        """Set the state gauges from the live runtime, in the process that runs it only.

        Ticks update them too, but a paused world does not tick: the API calls this after each
        request (pause/resume/rate arrive as requests) and before each scrape.
        """
        rt = self.runtime
        if not rt.running:
            return  # another process runs this world: its gauges are the ones that count
        stats = rt.stats()
        RATE_HZ.labels(self.world).set(stats.rate_hz)
        PAUSED.labels(self.world).set(1 if stats.paused else 0)
        QUEUE_DEPTH.labels(self.world).set(rt.queue_depth)
        HALTED.labels(self.world).set(1 if rt.degraded else 0)  # a halted world never ticks

    def attach(self) -> LoopObserver:
        self.runtime.add_plugin(self)
        return self

    def detach(self) -> None:
        self.runtime.remove_plugin(self)

    def before_tick(self, rt: WorldRuntime, info: TickInfo) -> None:
        set_loop_context(self.world, rt.world.tick + 1)

    def journal_written(self, rt: WorldRuntime, tick: int, seconds: float) -> None:
        observe_journal_append(self.world, seconds)

    def snapshot_saved(self, rt: WorldRuntime, tick: int, seconds: float) -> None:
        observe_snapshot_save(self.world, seconds)

    def after_tick(self, rt: WorldRuntime, report: TickReport) -> None:
        w = self.world
        TICKS.labels(w).inc()
        TICK_DURATION.labels(w).observe(report.duration)
        if not report.info.manual:
            TICK_LATENESS.labels(w).observe(report.info.lateness)
        QUEUE_DEPTH.labels(w).set(report.queue_depth)
        WORLD_TICK.labels(w).set(report.tick)
        stats = rt.stats()
        RATE_HZ.labels(w).set(stats.rate_hz)
        PAUSED.labels(w).set(1 if stats.paused else 0)
        overruns = _bump(OVERRUNS, w, stats.overruns - self._overruns)
        _bump(SKIPPED, w, stats.skipped - self._skipped)
        # A failed tick never reaches this listener; its error shows up at the next good tick.
        tick_errors = _bump(TICK_ERRORS, w, stats.errors - self._errors)
        hook_errors = _bump(HOOK_ERRORS, w, rt.hook_errors - self._hook_errors)
        self._overruns, self._skipped, self._errors = stats.overruns, stats.skipped, stats.errors
        self._hook_errors = rt.hook_errors
        system_errors = 0
        current = rt.world.system_errors
        for name, count in current.items():
            delta = count - self._system_errors.get(name, 0)
            if delta > 0:
                SYSTEM_ERRORS.labels(w, name).inc(delta)
                system_errors += delta
        self._system_errors = Tally(current)
        for outcome in report.outcomes:
            if outcome.ok:
                COMMANDS_APPLIED.labels(w, outcome.command.type).inc()
            else:
                reason = outcome.error_code or "rejected"
                COMMANDS_REJECTED.labels(w, outcome.command.type, reason).inc()
        with self._lock:
            self._window.append((overruns, tick_errors, system_errors, hook_errors))
            self._last_monotonic = time.monotonic()

    def window(self) -> LoopWindow:
        """Counts over the recent ticks (thread-safe copy)."""
        with self._lock:
            rows = list(self._window)
            last = self._last_monotonic
        return LoopWindow(
            ticks=len(rows),
            overruns=sum(r[0] for r in rows),
            tick_errors=sum(r[1] for r in rows),
            system_errors=sum(r[2] for r in rows),
            hook_errors=sum(r[3] for r in rows),
            last_tick_monotonic=last,
        )


def _bump(counter: Counter, world: str, delta: int) -> int:
    if delta > 0:
        counter.labels(world).inc(delta)
        return delta
    return 0
