"""The JobScheduler: holds one world's jobs, decides on the loop thread which slots are due, and
turns each into a journaled ``job:<name>`` command; admin controls and status for any thread.

It follows the world through a runtime plug-in (``_SchedulerPlugin``): due slots are queued
before a tick, and after the tick a background job's durable claim is handed to the worker pool.
A job on Celery (``on="celery"``) is not handed anywhere: its claim recorded a task request that
the offload plug-in sends (worldloop.jobs.offloaded), and its outcome comes back to
:meth:`JobScheduler._completed` through ``World.task_handlers``.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, cast

from ..errors import ConfigError, JobBusy, JobNotFound, WorldLoopError, WorldNotRunning
from ..plugins import RuntimePlugin
from .handler import JobHandler
from .offloaded import STATUS, job_task
from .pool import WorkerPool, expire_runs, run_background
from .runs import JobResult, JobState, Run, jsonable, slot_out
from .schedules import count_slots
from .spec import (
    COMMAND_PREFIX,
    JobContext,
    JobKind,
    JobRegistrar,
    JobSpec,
    Misfire,
    MisfireOption,
    RunsOn,
    make_spec,
)

if TYPE_CHECKING:
    from ..clock import TickInfo
    from ..outbox import TaskRequest
    from ..runtime import TickReport, WorldRuntime
    from ..snapshot import Snapshot
    from ..world import World

log = logging.getLogger("worldloop.jobs")

TaskSink = Callable[[str, Callable[[dict[str, Any]], Any], "float | None"], None]
"""``(task_name, task, timeout)``: where jobs on Celery are declared (see ``use_task_sink``)."""


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
        self._jobs: dict[str, JobState] = {}
        self._lock = threading.Lock()
        self._mine: set[str] = set()
        """Ids of the commands this process queued and has not seen applied yet."""
        self._pool: WorkerPool | None = None
        self._closed = False
        self._task_sink: TaskSink | None = None

    # -- registration ---------------------------------------------------------------------

    def add(self, spec: JobSpec) -> JobSpec:
        """Register a job; with a runtime attached its world learns the job's command at once.

        Register jobs before the world starts, so journal replay finds their handlers.
        """
        with self._lock:
            if spec.name in self._jobs:
                raise ConfigError(f"a job named {spec.name!r} is already registered")
            self._jobs[spec.name] = JobState(spec)
        if self._world is not None:
            self._register_handler(self._world, spec)
        if spec.offloaded and self._task_sink is not None:
            self._task_sink(spec.task_name, job_task(spec), spec.timeout)
        return spec

    def use_task_sink(self, sink: TaskSink) -> None:
        """Give every job on Celery, now and later, to ``sink(task_name, task, timeout)``: the
        world's task sender registers them (a Celery worker building the same app learns them
        too) and the offload plug-in keeps their time-outs."""
        self._task_sink = sink
        for st in list(self._jobs.values()):
            if st.spec.offloaded:
                sink(st.spec.task_name, job_task(st.spec), st.spec.timeout)

    @property
    def job(self) -> JobRegistrar:
        """Decorator form of :meth:`add`: ``@scheduler.job(every=60, kind="background")``
        (typed by :class:`JobRegistrar`)."""
        return cast(JobRegistrar, self._job)

    def _job(
        self,
        name: str | None = None,
        *,
        kind: JobKind | str = JobKind.BACKGROUND,
        every: float | None = None,
        every_ticks: int | None = None,
        cron: str | None = None,
        tz: str = "UTC",
        misfire: MisfireOption = Misfire.COALESCE,
        max_concurrent: int = 1,
        timeout: float | None = None,
        grace: float = 1.0,
        on: RunsOn = "pool",
    ) -> Callable[[Callable[[Any, JobContext], Any]], Callable[[Any, JobContext], Any]]:

        def decorate(func: Callable[[Any, JobContext], Any]) -> Callable[[Any, JobContext], Any]:
            spec = make_spec(
                name or func.__name__,
                func,
                kind=kind,
                every=every,
                every_ticks=every_ticks,
                cron=cron,
                tz=tz,
                misfire=misfire,
                max_concurrent=max_concurrent,
                timeout=timeout,
                grace=grace,
                on=on,
            )
            self.add(spec)
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
        world.command_handlers[spec.command_type] = JobHandler(self, world, spec)
        if spec.offloaded:
            world.task_handlers[spec.task_name] = functools.partial(self._completed, spec.name)

    @property
    def names(self) -> list[str]:
        return list(self._jobs)

    def _state(self, name: str) -> JobState:
        try:
            return self._jobs[name]
        except KeyError:
            raise JobNotFound(f"no job named {name!r}", details={"job": name}) from None

    def live_state(self, command_id: str, name: str) -> JobState | None:
        """The state of job ``name`` if this process queued ``command_id`` (a live run), else
        None (a journal replay, or another process's command): only live runs are counted."""
        with self._lock:  # run_now adds to _mine under this lock
            mine = command_id in self._mine
        return self._jobs.get(name) if mine else None

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
        ctx = JobContext(name, st.spec.kind, None, rt.tick, self.wall(), manual=True)
        if st.spec.offloaded and st.offloaded >= st.spec.max_concurrent:
            raise JobBusy(
                f"job {name!r} is already running {st.offloaded} time(s)",
                details={"max_concurrent": st.spec.max_concurrent},
            )
        if st.spec.kind is JobKind.WORLD or st.spec.offloaded:  # a journaled command
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
        return self._state(name).status()

    def statuses(self) -> list[dict[str, Any]]:
        """The status of every job, in registration order."""
        return [st.status() for st in list(self._jobs.values())]

    def counters(self) -> Iterator[tuple[str, str, dict[str, float]]]:
        """(name, kind, {runs, errors, skipped, timeouts, running, paused}) per job, for metrics."""
        for st in list(self._jobs.values()):
            yield st.spec.name, st.spec.kind.value, st.counters()

    # -- hibernation (worldloop.hibernation) -----------------------------------------------

    @property
    def busy(self) -> bool:
        """True while a slot waits for its tick or a background run is in flight."""
        return any(st.pending is not None or st.active for st in list(self._jobs.values()))

    def next_due(
        self, now: float, tick: int, rate_hz: float, *, wall_only: bool = False
    ) -> float | None:
        """Wall time (unix seconds) the first scheduled job is next due, None with none: a
        tick schedule counts its ticks at ``rate_hz`` from ``tick`` (``wall_only``: tick
        schedules left out). Paused jobs do not count."""
        due: list[float] = []
        for st in list(self._jobs.values()):
            if st.paused or (wall_only and st.spec.schedule.basis != "wall"):
                continue
            schedule = st.spec.schedule
            if schedule.basis == "wall":
                base = now if st.floor is None else max(now, st.floor)
                due.append(schedule.next_after(base - 1e-6))
            else:
                due.append(now + (schedule.next_after(float(tick)) - tick) / rate_hz)
        return min(due, default=None)

    def since(self, slept_at: float) -> None:
        """Wake from hibernation: the wall-clock slots after ``slept_at`` count as missed (each
        job's misfire policy decides), instead of nothing before now as at a first start."""
        for st in list(self._jobs.values()):
            if st.spec.schedule.basis == "wall":
                st.floor = slept_at

    # -- the loop side --------------------------------------------------------------------

    def _before_tick(self, info: TickInfo) -> None:
        rt = self.runtime
        if rt is None or self._closed:
            return
        mono = self.monotonic()
        with self._lock:
            expire_runs(self._jobs.values(), mono, self.wall)
        now = self.wall()
        tick = rt.world.tick  # the loop thread: the world is between two ticks
        for st in list(self._jobs.values()):
            try:
                self._evaluate(rt, st, now, tick)
            except Exception:
                st.errors += 1
                log.exception("job %r: scheduling failed; it stays scheduled", st.spec.name)

    def _evaluate(self, rt: WorldRuntime, st: JobState, now: float, tick: int) -> None:
        spec = st.spec
        t = now if spec.schedule.basis == "wall" else float(tick)
        # The loop thread may read the world: its job_slots hold the last slot run per job.
        first = st.first_slot(t, rt.world.job_slots.get(spec.name))
        if st.paused or st.pending is not None or first > t:
            return
        latest = spec.schedule.latest_at_or_before(t)
        on_time = first == latest and t - first <= spec.grace
        slot, missed = first, 0
        if not on_time:
            misses = count_slots(spec.schedule, first, latest)
            if spec.misfire is Misfire.COALESCE:
                slot, missed = latest, misses - 1
            elif spec.misfire is Misfire.SKIP:
                if t - latest > spec.grace:
                    self._skip(st, latest, misses, "missed")
                    return
                slot, missed = latest, misses - 1
        if spec.offloaded:  # runs in flight are world state: they survive a restart
            task = spec.task_name
            st.offloaded = sum(1 for r in rt.world.outbox.pending.values() if r.task == task)
        running = st.offloaded if spec.offloaded else len(st.active)
        busy = spec.kind is JobKind.BACKGROUND and running >= spec.max_concurrent
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

    def _skip(self, st: JobState, slot: float, count: int, why: str) -> None:
        st.floor = slot  # in memory only: after a restart the same slots are skipped again
        st.skipped += count
        log.warning(
            "job %r: skipped %d slot(s) up to %s (%s)",
            st.spec.name,
            count,
            slot_out(slot, st.spec.schedule.basis),
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
            if st.spec.offloaded and ctx is not None:
                if outcome.ok:
                    st.offloaded += 1  # until the next evaluation counts the outbox
                else:
                    st.last_result = JobResult(
                        "rejected", ctx.slot, self.wall(), 0.0, None, outcome.error_message
                    )
            elif st.spec.kind is JobKind.BACKGROUND and ctx is not None:
                if outcome.ok:
                    with self._lock:
                        self._submit(st, ctx, report.snapshot)
                else:  # the slot was already taken (another runner, or a replay)
                    st.last_result = JobResult(
                        "rejected", ctx.slot, self.wall(), 0.0, None, outcome.error_message
                    )

    def _completed(
        self, name: str, request: TaskRequest, status: str, result: Any, error: str | None
    ) -> Any:
        """The completion record of a run on Celery (loop thread, in its ``task:result``
        command, which the world applies only while the run is pending): counted and kept as
        the job's last result when live; on a journal replay it changes nothing here."""
        ctx = request.params.get("ctx") or {}
        slot = ctx.get("slot")
        rt = self.runtime
        st = self._jobs.get(name)
        if st is not None and rt is not None and rt.running:
            started = float(ctx.get("scheduled_at") or 0.0)
            now = self.wall()
            with self._lock:
                st.offloaded = max(0, st.offloaded - 1)
                st.record(
                    JobResult(
                        STATUS.get(status, "error"),
                        None if slot is None else float(slot),
                        now,
                        max(0.0, now - started) if started else 0.0,
                        jsonable(result),
                        error,
                    )
                )
            if status != "succeeded":
                log.warning("job %r: run %s %s: %s", name, request.id, status, error)
        return {"job": name, "slot": slot, "status": status}

    # -- background runs and the end ------------------------------------------------------

    def _submit(self, st: JobState, ctx: JobContext, snapshot: Snapshot) -> None:
        """Start a background run; the caller holds ``self._lock``."""
        if self._closed:
            return
        if self._pool is None:
            self._pool = WorkerPool(self.workers)
        run = Run(ctx, self.monotonic())
        st.active.append(run)
        self._pool.submit(
            functools.partial(run_background, st, run, snapshot, self._lock, self.wall)
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
