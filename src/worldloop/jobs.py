"""Scheduled jobs on the world clock: interval and cron schedules, world and background jobs.

Two kinds of job share one scheduler, which runs on the loop thread before each tick (so it only
ever runs in the process that holds the world's lease):

* **world** jobs run on the loop thread, at a tick boundary, *as commands* (``job:<name>``):
  they are journaled, deterministic and replayed. The world reaches the job function through
  ``World.command_handlers``, so journal replay calls the same code.
* **background** jobs run in a bounded worker pool with the latest snapshot and never block
  the tick. Each slot is first *claimed* by a journaled ``job:<name>`` command that records the
  slot in the world's state; the run is submitted only once that tick is durable.

Either way the last run slot of every job lives in the world state (``World.job_slots``), so a
restart or a failover never runs a slot twice (background: at most once per slot, exactly once
unless the process dies while the run is in flight).

Schedules are evaluated against injectable clocks (wall time for intervals in seconds and for
cron, the world tick for intervals in ticks), so tests drive them by hand.
"""

from __future__ import annotations

import functools
import importlib
import logging
import math
import queue
import re
import threading
import time
import traceback
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Literal, Protocol
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import CroniterError, croniter

from .commands import Command
from .errors import (
    CommandRejected,
    ConfigError,
    JobBusy,
    JobFailed,
    JobNotFound,
    WorldLoopError,
    WorldNotRunning,
)
from .plugins import RuntimePlugin

if TYPE_CHECKING:
    from .clock import TickInfo
    from .runtime import TickReport, WorldRuntime
    from .snapshot import Snapshot
    from .world import World

log = logging.getLogger("worldloop.jobs")

COMMAND_PREFIX = "job:"
"""World-job and claim commands are named ``job:<job name>``."""
MAX_COUNTED_MISSES = 10_000
"""Counting missed slots stops here (a cron job down for years must not stall a tick)."""
_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")

Basis = Literal["wall", "tick"]


# -- errors -----------------------------------------------------------------------------------


# -- schedules --------------------------------------------------------------------------------


class Schedule(Protocol):
    """When a job's slots fall, on a wall-clock (unix seconds) or a world-tick scale."""

    @property
    def basis(self) -> Basis: ...

    def next_after(self, t: float) -> float:
        """The first slot strictly after ``t``."""
        ...

    def latest_at_or_before(self, t: float) -> float:
        """The last slot at or before ``t``."""
        ...

    def describe(self) -> str: ...


@dataclass(frozen=True, slots=True)
class Every:
    """Every ``seconds`` of wall time, on slots aligned to the unix epoch (plus ``offset``).

    Alignment makes slots the same in every process, which is what exactly-once needs.
    """

    seconds: float
    offset: float = 0.0

    def __post_init__(self) -> None:
        if not (isinstance(self.seconds, int | float) and math.isfinite(self.seconds)):
            raise ConfigError("a job's interval must be a finite number of seconds")
        if self.seconds <= 0:
            raise ConfigError("a job's interval must be > 0 seconds")

    @property
    def basis(self) -> Basis:
        return "wall"

    def _at(self, k: int) -> float:
        return self.offset + k * self.seconds

    def next_after(self, t: float) -> float:
        k = math.floor((t - self.offset) / self.seconds)
        while self._at(k) <= t:
            k += 1
        return self._at(k)

    def latest_at_or_before(self, t: float) -> float:
        k = math.floor((t - self.offset) / self.seconds)
        while self._at(k) > t:
            k -= 1
        return self._at(k)

    def describe(self) -> str:
        return f"every {self.seconds:g}s"


@dataclass(frozen=True, slots=True)
class EveryTicks:
    """Every ``ticks`` world ticks: slots are the ticks ``offset + k * ticks``."""

    ticks: int
    offset: int = 0

    def __post_init__(self) -> None:
        if not isinstance(self.ticks, int) or isinstance(self.ticks, bool) or self.ticks < 1:
            raise ConfigError("a job's tick interval must be an integer >= 1")

    @property
    def basis(self) -> Basis:
        return "tick"

    def next_after(self, t: float) -> float:
        k = math.floor((t - self.offset) / self.ticks) + 1
        return float(self.offset + k * self.ticks)

    def latest_at_or_before(self, t: float) -> float:
        k = math.floor((t - self.offset) / self.ticks)
        return float(self.offset + k * self.ticks)

    def describe(self) -> str:
        return f"every {self.ticks} ticks"


@dataclass(frozen=True, slots=True)
class Cron:
    """A cron expression (5 fields, or 6 with seconds last) in an IANA time zone, via croniter."""

    expr: str
    tz: str = "UTC"

    def __post_init__(self) -> None:
        try:
            zone = ZoneInfo(self.tz)
        except (ZoneInfoNotFoundError, ValueError, TypeError) as exc:
            raise ConfigError(f"unknown time zone {self.tz!r}") from exc
        if not isinstance(self.expr, str) or not croniter.is_valid(self.expr):
            raise ConfigError(f"invalid cron expression {self.expr!r}")
        try:
            croniter(self.expr, datetime.fromtimestamp(0, zone)).get_next(float)
        except (CroniterError, ValueError) as exc:  # valid syntax that never matches
            raise ConfigError(f"cron expression {self.expr!r} has no slots: {exc}") from exc

    @property
    def basis(self) -> Basis:
        return "wall"

    def _iter(self, t: int) -> croniter:
        return croniter(self.expr, datetime.fromtimestamp(t, ZoneInfo(self.tz)))

    # Cron slots are whole seconds: working from floor(t) keeps croniter off fractions.
    def next_after(self, t: float) -> float:
        return float(self._iter(math.floor(t)).get_next(float))

    def latest_at_or_before(self, t: float) -> float:
        return float(self._iter(math.floor(t) + 1).get_prev(float))

    def describe(self) -> str:
        return f"cron {self.expr!r} {self.tz}"


# -- job definitions --------------------------------------------------------------------------


class JobKind(StrEnum):
    WORLD = "world"
    """Runs on the loop thread at a tick boundary, as a journaled, replayed command."""
    BACKGROUND = "background"
    """Runs in the worker pool with the latest snapshot; never blocks the tick."""


class Misfire(StrEnum):
    """What to do with slots that were missed (loop paused or down, job busy, too late)."""

    RUN_LATE = "run_late"
    """Run every missed slot once, late, oldest first (one per tick)."""
    SKIP = "skip"
    """Drop missed slots; run only a slot that is still within the grace time."""
    COALESCE = "coalesce"
    """Run once, late, for the newest missed slot; the older ones fold into it."""


@dataclass(frozen=True, slots=True)
class JobContext:
    """What a job run is told: its slot and tick (job code must not read wall time itself)."""

    name: str
    kind: JobKind
    slot: float | None
    """Slot time (unix seconds, or tick for tick schedules); None for a manual run."""
    tick: int
    """The tick the run belongs to (world jobs: the tick being applied)."""
    scheduled_at: float
    """Wall time the scheduler decided to run (unix seconds)."""
    missed: int = 0
    """Slots folded into (coalesce) or dropped before (skip) this run."""
    manual: bool = False
    cancelled: threading.Event = field(default_factory=threading.Event, compare=False)
    """Background jobs: set when the run times out or the world stops; check it to end early."""

    def to_payload(self) -> dict[str, Any]:
        return {
            "slot": self.slot,
            "tick": self.tick,
            "scheduled_at": self.scheduled_at,
            "missed": self.missed,
            "manual": self.manual,
        }


WorldJobFunc = Callable[["World", JobContext], Any]
BackgroundJobFunc = Callable[["Snapshot", JobContext], Any]


@dataclass(frozen=True, slots=True)
class JobSpec:
    """One registered job: what to call, when, and how to treat misses, overlaps and hangs."""

    name: str
    func: Callable[[Any, JobContext], Any]
    kind: JobKind
    schedule: Schedule
    misfire: Misfire = Misfire.COALESCE
    max_concurrent: int = 1
    timeout: float | None = None
    """Seconds; a background run past it is marked timed out and told to cancel."""
    grace: float = 1.0
    """How late (seconds, or ticks for tick schedules) a run may start and still be on time."""

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not _NAME.match(self.name):
            raise ConfigError(f"job name {self.name!r} must match {_NAME.pattern}")
        if not callable(self.func):
            raise ConfigError(f"job {self.name!r}: func must be callable")
        if self.max_concurrent < 1:
            raise ConfigError(f"job {self.name!r}: max_concurrent must be >= 1")
        if self.timeout is not None and not self.timeout > 0:
            raise ConfigError(f"job {self.name!r}: timeout must be > 0 seconds")
        if not self.grace >= 0:
            raise ConfigError(f"job {self.name!r}: grace must be >= 0")

    @property
    def command_type(self) -> str:
        return COMMAND_PREFIX + self.name


def make_spec(
    name: str,
    func: Callable[[Any, JobContext], Any],
    *,
    kind: JobKind | str = JobKind.BACKGROUND,
    every: float | None = None,
    every_ticks: int | None = None,
    cron: str | None = None,
    tz: str = "UTC",
    misfire: Misfire | str = Misfire.COALESCE,
    max_concurrent: int = 1,
    timeout: float | None = None,
    grace: float = 1.0,
) -> JobSpec:
    """Build a JobSpec from keyword options (exactly one of every, every_ticks, cron)."""
    given = [k for k, v in (("every", every), ("every_ticks", every_ticks), ("cron", cron)) if v]
    if len(given) != 1:
        raise ConfigError(f"job {name!r}: give exactly one of every, every_ticks or cron")
    schedule: Schedule
    if every is not None:
        schedule = Every(float(every))
    elif every_ticks is not None:
        schedule = EveryTicks(every_ticks)
    else:
        schedule = Cron(str(cron), tz)
    try:
        kind_, misfire_ = JobKind(kind), Misfire(misfire)
    except ValueError as exc:
        raise ConfigError(f"job {name!r}: {exc}") from exc
    return JobSpec(
        name, func, kind_, schedule, misfire_, int(max_concurrent), timeout, float(grace)
    )


_CONFIG_KEYS = {
    "name",
    "func",
    "kind",
    "every",
    "every_ticks",
    "cron",
    "tz",
    "misfire",
    "max_concurrent",
    "timeout",
    "grace",
}


def spec_from_config(entry: Mapping[str, Any]) -> JobSpec:
    """A JobSpec from one ``WORLDLOOP_JOBS`` entry; ``func`` is an import path ``mod:attr``."""
    if not isinstance(entry, Mapping):
        raise ConfigError("WORLDLOOP_JOBS must be a list of objects")
    unknown = set(entry) - _CONFIG_KEYS
    if unknown:
        raise ConfigError(f"WORLDLOOP_JOBS: unknown keys {sorted(unknown)}")
    path = entry.get("func")
    if not isinstance(path, str) or ":" not in path:
        raise ConfigError("WORLDLOOP_JOBS: 'func' must be an import path like 'pkg.mod:func'")
    module_name, _, attr = path.partition(":")
    try:
        func = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"WORLDLOOP_JOBS: cannot import {path!r}: {exc}") from exc
    opts = {k: v for k, v in entry.items() if k not in ("name", "func")}
    try:
        return make_spec(str(entry.get("name") or attr), func, **opts)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"WORLDLOOP_JOBS entry {path!r}: {exc}") from exc


# -- run-time state ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class JobResult:
    """How one run ended."""

    status: Literal["ok", "error", "timeout", "rejected"]
    slot: float | None
    finished_at: float
    duration: float
    value: Any = None
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "slot": self.slot,
            "finished_at": _iso(self.finished_at),
            "duration": round(self.duration, 6),
            "value": self.value,
            "error": self.error,
        }


@dataclass(slots=True)
class _Run:
    ctx: JobContext
    started: float
    timed_out: bool = False


@dataclass(slots=True)
class _JobState:
    """Mutable bookkeeping of one job in this process (counters are read without locks)."""

    spec: JobSpec
    paused: bool = False
    floor: float | None = None
    """Slots at or before this are not considered (set at first evaluation and on resume)."""
    pending: str | None = None
    """Command id of the scheduled claim or world run still waiting for its tick."""
    pending_ctx: JobContext | None = None
    next_run: float | None = None
    next_base: float | None = None
    runs: int = 0
    errors: int = 0
    skipped: int = 0
    timeouts: int = 0
    last_slot: float | None = None
    last_result: JobResult | None = None
    active: list[_Run] = field(default_factory=list)
    resume_requested: bool = False


# -- the scheduler ----------------------------------------------------------------------------


class JobScheduler:
    """Holds the registered jobs of one world and drives them from the world's loop thread."""

    def __init__(
        self,
        *,
        wall: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        workers: int = 4,
    ) -> None:
        self.wall = wall
        """Wall clock (unix seconds) for interval and cron schedules; tests inject their own."""
        self.monotonic = monotonic
        """Clock that background timeouts are measured on."""
        self.workers = workers
        self.runtime: WorldRuntime | None = None
        self._world: World | None = None
        self._jobs: dict[str, _JobState] = {}
        self._lock = threading.Lock()
        self._mine: set[str] = set()
        self._pool: _WorkerPool | None = None
        self._closed = False

    # -- registration ---------------------------------------------------------------------

    def add(self, spec: JobSpec) -> JobSpec:
        """Register a job; with a runtime attached its world learns the job's command at once.

        Register jobs before the world starts, so journal replay finds their handlers.
        """
        with self._lock:
            if spec.name in self._jobs:
                raise ConfigError(f"a job named {spec.name!r} is already registered")
            self._jobs[spec.name] = _JobState(spec)
        if self._world is not None:
            self._register_handler(self._world, spec)
        return spec

    def job(
        self, name: str | None = None, **options: Any
    ) -> Callable[[Callable[[Any, JobContext], Any]], Callable[[Any, JobContext], Any]]:
        """Decorator form of :meth:`add`: ``@scheduler.job(every=60, kind="background")``."""

        def decorate(func: Callable[[Any, JobContext], Any]) -> Callable[[Any, JobContext], Any]:
            self.add(make_spec(name or func.__name__, func, **options))
            return func

        return decorate

    def bind(self, world: World) -> None:
        """Teach ``world`` the jobs' commands (``job:<name>``), e.g. before a journal replay."""
        if self._world is not None and self._world is not world:
            raise ConfigError("this job scheduler already belongs to another world")
        self._world = world
        for st in list(self._jobs.values()):
            self._register_handler(world, st.spec)

    def attach(self, runtime: WorldRuntime) -> None:
        """Drive the jobs from ``runtime``'s loop (only the lease holder's loop ever runs)."""
        if self.runtime is not None:
            raise ConfigError("this job scheduler is already attached to a world")
        self.bind(runtime.world)
        self.runtime = runtime
        runtime.add_plugin(_SchedulerPlugin(self))

    def _register_handler(self, world: World, spec: JobSpec) -> None:
        world.command_handlers[spec.command_type] = _Handler(self, world, spec)

    @property
    def names(self) -> list[str]:
        return list(self._jobs)

    def _state(self, name: str) -> _JobState:
        try:
            return self._jobs[name]
        except KeyError:
            raise JobNotFound(f"no job named {name!r}", details={"job": name}) from None

    # -- admin controls (any thread) ------------------------------------------------------

    def pause(self, name: str) -> dict[str, Any]:
        """Stop scheduling ``name``; runs in flight finish. Slots due while paused are skipped."""
        st = self._state(name)
        st.paused = True
        return self.status(name)

    def resume(self, name: str) -> dict[str, Any]:
        """Schedule ``name`` again from now on (a pause is never caught up)."""
        st = self._state(name)
        if st.paused:
            st.resume_requested = True
            st.paused = False
        return self.status(name)

    def run_now(self, name: str) -> dict[str, Any]:
        """Run ``name`` once now, outside its schedule (world jobs: at the next tick)."""
        st = self._state(name)
        rt = self._require_runtime()
        ctx = JobContext(name, st.spec.kind, None, rt.world.tick, self.wall(), manual=True)
        if st.spec.kind is JobKind.WORLD:
            with self._lock:  # the handler checks _mine under this lock: no race with the loop
                ticket = rt.enqueue(st.spec.command_type, ctx.to_payload(), actor="admin")
                self._mine.add(ticket.id)
            return {"job": name, "queued": True, "command_id": ticket.id}
        with self._lock:
            if len(st.active) >= st.spec.max_concurrent:
                raise JobBusy(
                    f"job {name!r} is already running {len(st.active)} time(s)",
                    details={"max_concurrent": st.spec.max_concurrent},
                )
            self._submit(st, ctx, rt.snapshot)
        return {"job": name, "queued": True, "command_id": None}

    def _require_runtime(self) -> WorldRuntime:
        rt = self.runtime
        if rt is None or not rt.running or self._closed:
            raise WorldNotRunning("the world is not running in this process; jobs cannot run")
        return rt

    # -- observation ----------------------------------------------------------------------

    def status(self, name: str) -> dict[str, Any]:
        """JSON-able status of one job: schedule, next and last run, last result, counters."""
        return self._status(self._state(name))

    def statuses(self) -> list[dict[str, Any]]:
        """The status of every job, in registration order."""
        return [self._status(st) for st in list(self._jobs.values())]

    def _status(self, st: _JobState) -> dict[str, Any]:
        spec = st.spec
        basis = spec.schedule.basis
        return {
            "name": spec.name,
            "kind": spec.kind.value,
            "schedule": spec.schedule.describe(),
            "basis": basis,
            "misfire": spec.misfire.value,
            "max_concurrent": spec.max_concurrent,
            "timeout": spec.timeout,
            "paused": st.paused,
            "running": len(st.active),
            "next_run": None if st.paused else _slot_out(st.next_run, basis),
            "last_slot": _slot_out(st.last_slot, basis),
            "last_run": None if st.last_result is None else _iso(st.last_result.finished_at),
            "last_result": None if st.last_result is None else st.last_result.to_dict(),
            "runs": st.runs,
            "errors": st.errors,
            "skipped": st.skipped,
            "timeouts": st.timeouts,
        }

    def counters(self) -> Iterator[tuple[str, str, dict[str, float]]]:
        """(name, kind, {runs, errors, skipped, timeouts, running, paused}) per job, for metrics."""
        for st in list(self._jobs.values()):
            yield (
                st.spec.name,
                st.spec.kind.value,
                {
                    "runs": st.runs,
                    "errors": st.errors,
                    "skipped": st.skipped,
                    "timeouts": st.timeouts,
                    "running": len(st.active),
                    "paused": 1.0 if st.paused else 0.0,
                },
            )

    # -- the loop side --------------------------------------------------------------------

    def _before_tick(self, info: TickInfo) -> None:
        rt = self.runtime
        if rt is None or self._closed:
            return
        self._check_timeouts()
        now = self.wall()
        tick = rt.world.tick
        for st in list(self._jobs.values()):
            try:
                self._evaluate(rt, st, now, tick)
            except Exception:
                st.errors += 1
                log.exception("job %r: scheduling failed; it stays scheduled", st.spec.name)

    def _evaluate(self, rt: WorldRuntime, st: _JobState, now: float, tick: int) -> None:
        spec = st.spec
        t = now if spec.schedule.basis == "wall" else float(tick)
        if st.floor is None or st.resume_requested:
            # First look in this process (or after resume): nothing before now counts as missed,
            # unless the world's state says when the job last ran (restart, failover).
            st.floor = t - (1.0 if spec.schedule.basis == "tick" else 1e-3)
            if st.resume_requested:
                st.resume_requested = False
            else:
                recorded = rt.world.job_slots.get(spec.name)
                if recorded is not None:
                    st.floor = recorded
        recorded = rt.world.job_slots.get(spec.name)
        if recorded is not None:
            st.last_slot = recorded
        base = st.floor if recorded is None else max(st.floor, recorded)
        if base != st.next_base or st.next_run is None:  # cron look-ups are not free: cache
            st.next_base, st.next_run = base, spec.schedule.next_after(base)
        first = st.next_run
        if st.paused or st.pending is not None or first > t:
            return
        latest = spec.schedule.latest_at_or_before(t)
        on_time = first == latest and t - first <= spec.grace
        slot, missed = first, 0
        if not on_time:
            misses = _count_slots(spec.schedule, first, latest)
            if spec.misfire is Misfire.COALESCE:
                slot, missed = latest, misses - 1
            elif spec.misfire is Misfire.SKIP:
                if t - latest > spec.grace:
                    self._skip(st, latest, misses, "missed")
                    return
                slot, missed = latest, misses - 1
        busy = spec.kind is JobKind.BACKGROUND and len(st.active) >= spec.max_concurrent
        if busy:
            if spec.misfire is Misfire.SKIP:
                self._skip(st, slot, missed + 1, "busy")
            return  # run_late and coalesce wait for a free run
        ctx = JobContext(spec.name, spec.kind, slot, tick, now, missed)
        try:
            ticket = rt.enqueue(spec.command_type, ctx.to_payload(), actor="scheduler")
        except WorldLoopError as exc:
            log.warning("job %r: cannot queue slot %s (%s); retrying", spec.name, slot, exc)
            return
        if missed:
            st.skipped += missed
        st.pending, st.pending_ctx = ticket.id, ctx
        self._mine.add(ticket.id)

    def _skip(self, st: _JobState, slot: float, count: int, why: str) -> None:
        st.floor = slot  # in memory only: after a restart the same slots are skipped again
        st.skipped += count
        log.warning(
            "job %r: skipped %d slot(s) up to %s (%s)",
            st.spec.name,
            count,
            _slot_out(slot, st.spec.schedule.basis),
            why,
        )

    def _after_tick(self, report: TickReport) -> None:
        for outcome in report.outcomes:
            cid = outcome.command.id
            if cid not in self._mine:
                continue
            self._mine.discard(cid)
            name = outcome.command.type.removeprefix(COMMAND_PREFIX)
            st = self._jobs.get(name)
            if st is None:
                continue
            ctx = st.pending_ctx if st.pending == cid else None
            if st.pending == cid:
                st.pending, st.pending_ctx = None, None
            if st.spec.kind is JobKind.BACKGROUND and ctx is not None:
                if outcome.ok:
                    with self._lock:
                        self._submit(st, ctx, report.snapshot)
                else:  # the slot was already taken (another runner, or a replay)
                    st.last_result = JobResult(
                        "rejected", ctx.slot, self.wall(), 0.0, None, outcome.error_message
                    )

    # -- world jobs (loop thread, and journal replay) ---------------------------------------

    def _record(self, st: _JobState, result: JobResult) -> None:
        st.runs += 1
        if result.status in ("error", "timeout"):
            st.errors += 1
        if result.status == "timeout":
            st.timeouts += 1
        if result.slot is not None:
            st.last_slot = result.slot
        st.last_result = result

    # -- background jobs (worker pool) ------------------------------------------------------

    def _submit(self, st: _JobState, ctx: JobContext, snapshot: Snapshot) -> None:
        """Start a background run; the caller holds ``self._lock``."""
        if self._closed:
            return
        if self._pool is None:
            self._pool = _WorkerPool(self.workers)
        run = _Run(ctx, self.monotonic())
        st.active.append(run)
        self._pool.submit(functools.partial(self._run_background, st, run, snapshot))

    def _run_background(self, st: _JobState, run: _Run, snapshot: Snapshot) -> None:
        spec, ctx = st.spec, run.ctx
        started = time.perf_counter()
        result: JobResult
        try:
            value = spec.func(snapshot, ctx)
        except Exception as exc:
            log.exception(
                "background job %r failed (slot %s); it stays scheduled", spec.name, ctx.slot
            )
            result = JobResult(
                "error", ctx.slot, self.wall(), time.perf_counter() - started, None, _describe(exc)
            )
        else:
            result = JobResult(
                "ok", ctx.slot, self.wall(), time.perf_counter() - started, _jsonable(value)
            )
        with self._lock:
            if run in st.active:
                st.active.remove(run)
            if run.timed_out:
                log.warning(
                    "job %r: a timed-out run finished after %.3gs", spec.name, result.duration
                )
                return
            self._record(st, result)

    def _check_timeouts(self) -> None:
        now = self.monotonic()
        with self._lock:
            for st in self._jobs.values():
                limit = st.spec.timeout
                if limit is None:
                    continue
                for run in st.active:
                    if not run.timed_out and now - run.started > limit:
                        run.timed_out = True
                        run.ctx.cancelled.set()
                        log.error(
                            "job %r: run for slot %s timed out after %gs; told to cancel",
                            st.spec.name,
                            run.ctx.slot,
                            limit,
                        )
                        self._record(
                            st,
                            JobResult(
                                "timeout",
                                run.ctx.slot,
                                self.wall(),
                                now - run.started,
                                None,
                                f"timed out after {limit:g}s",
                            ),
                        )

    def _stop_with_runtime(self) -> None:
        """Stop hook: wait for running jobs at most 1 s and a quarter of the stop's bound left
        (the rest is the final snapshot's; job workers are daemons and cannot hold exit)."""
        left = self.runtime.stop_time_left() if self.runtime is not None else 1.0
        self.shutdown(wait=min(1.0, left / 4))

    def shutdown(self, wait: float = 1.0) -> None:
        """Stop scheduling, tell running background jobs to cancel, and drop queued ones."""
        with self._lock:
            self._closed = True
            pool, self._pool = self._pool, None
            for st in self._jobs.values():
                for run in st.active:
                    run.ctx.cancelled.set()
        if pool is not None:
            pool.shutdown(wait)


class _SchedulerPlugin(RuntimePlugin):
    """Drives a JobScheduler from its runtime's loop: due jobs before a tick, their outcomes
    after it, and the worker pool's end when the world stops."""

    def __init__(self, scheduler: JobScheduler) -> None:
        self.scheduler = scheduler

    def before_tick(self, rt: WorldRuntime, info: TickInfo) -> None:
        self.scheduler._before_tick(info)

    def after_tick(self, rt: WorldRuntime, report: TickReport) -> None:
        self.scheduler._after_tick(report)

    def stopping(self, rt: WorldRuntime) -> None:
        self.scheduler._stop_with_runtime()


class _WorkerPool:
    """A fixed number of daemon worker threads fed by a queue.

    Daemon threads, unlike ThreadPoolExecutor's, cannot hold the process open at exit: a hung
    background job must not break the bounded shutdown. The queue stays short because each
    job's runs are capped by its ``max_concurrent``.
    """

    def __init__(self, workers: int) -> None:
        if workers < 1:
            raise ConfigError("WORLDLOOP_JOB_WORKERS must be >= 1")
        self._queue: queue.SimpleQueue[Callable[[], None] | None] = queue.SimpleQueue()
        self._threads = [
            threading.Thread(target=self._work, name=f"worldloop-job-{i}", daemon=True)
            for i in range(workers)
        ]
        for t in self._threads:
            t.start()

    def submit(self, fn: Callable[[], None]) -> None:
        self._queue.put(fn)

    def _work(self) -> None:
        while True:
            fn = self._queue.get()
            if fn is None:
                return
            fn()  # the job wrapper catches and records everything

    def shutdown(self, wait: float) -> None:
        """Drop queued work, stop the workers, and wait up to ``wait`` s for running ones."""
        try:
            while True:
                self._queue.get_nowait()
        except queue.Empty:
            pass
        for _ in self._threads:
            self._queue.put(None)
        deadline = time.monotonic() + wait
        for t in self._threads:
            t.join(max(0.0, deadline - time.monotonic()))


class _Handler:
    """The world's handler for ``job:<name>``: records the slot, and runs a world job.

    It lives in ``World.command_handlers`` so that journal replay reaches the same code.
    """

    __slots__ = ("scheduler", "spec", "world")

    def __init__(self, scheduler: JobScheduler, world: World, spec: JobSpec) -> None:
        self.scheduler = scheduler
        self.world = world
        self.spec = spec

    def __call__(self, cmd: Command) -> Any:
        world, spec = self.world, self.spec
        p = cmd.payload
        slot = p.get("slot")
        if slot is not None:
            slot = float(slot)
            last = world.job_slots.get(spec.name)
            if last is not None and slot <= last:
                raise CommandRejected(
                    f"job {spec.name!r} already ran slot {slot:g}",
                    details={"job": spec.name, "slot": slot, "last_slot": last},
                )
            world.job_slots[spec.name] = slot
        if spec.kind is JobKind.BACKGROUND:
            return {"job": spec.name, "claimed": slot}
        ctx = JobContext(
            spec.name,
            spec.kind,
            slot,
            int(p.get("tick", world.tick)),
            float(p.get("scheduled_at", 0.0)),
            int(p.get("missed", 0)),
            bool(p.get("manual", False)),
        )
        # Counters and logs belong to the live run; a journal replay re-applies silently.
        with self.scheduler._lock:
            mine = cmd.id in self.scheduler._mine
        st = self.scheduler._jobs.get(spec.name) if mine else None
        started = time.perf_counter()
        try:
            value = spec.func(world, ctx)
        except Exception as exc:
            if st is not None:
                log.exception(
                    "world job %r failed at tick %d; it stays scheduled", spec.name, world.tick
                )
                self.scheduler._record(
                    st,
                    JobResult(
                        "error",
                        slot,
                        self.scheduler.wall(),
                        time.perf_counter() - started,
                        None,
                        _describe(exc),
                    ),
                )
            raise JobFailed(
                f"job {spec.name!r} failed: {_describe(exc)}", details={"job": spec.name}
            ) from None
        duration = time.perf_counter() - started
        if st is not None:
            status: Literal["ok", "timeout"] = "ok"
            if spec.timeout is not None and duration > spec.timeout:
                status = "timeout"
                log.error(
                    "world job %r took %.3gs (timeout %gs)", spec.name, duration, spec.timeout
                )
            self.scheduler._record(
                st, JobResult(status, slot, self.scheduler.wall(), duration, _jsonable(value))
            )
        return value


# -- helpers ----------------------------------------------------------------------------------


def _count_slots(schedule: Schedule, first: float, latest: float) -> int:
    n, s = 1, first
    while s < latest and n < MAX_COUNTED_MISSES:
        s = schedule.next_after(s)
        n += 1
    return n


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat().replace("+00:00", "Z")


def _slot_out(slot: float | None, basis: Basis) -> Any:
    if slot is None:
        return None
    return {"tick": int(slot)} if basis == "tick" else {"at": _iso(slot), "ts": slot}


def _describe(exc: BaseException) -> str:
    text = "".join(traceback.format_exception_only(type(exc), exc)).strip()
    return text[:500]


def _jsonable(value: Any) -> Any:
    """Keep small JSON values as the last result; describe anything else."""
    if value is None or isinstance(value, bool | int | float | str):
        return value if not isinstance(value, str) else value[:500]
    if isinstance(value, Mapping | list | tuple):
        import json

        try:
            text = json.dumps(value)
        except (TypeError, ValueError):
            return repr(value)[:500]
        return value if len(text) <= 2000 else text[:500]
    return repr(value)[:500]


def load_config_jobs(entries: Iterable[Mapping[str, Any]] | None) -> list[JobSpec]:
    """The JobSpecs named in ``WORLDLOOP_JOBS`` (None or empty: none)."""
    if not entries:
        return []
    if isinstance(entries, str | bytes | Mapping):
        raise ConfigError("WORLDLOOP_JOBS must be a list of objects")
    return [spec_from_config(e) for e in entries]


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
