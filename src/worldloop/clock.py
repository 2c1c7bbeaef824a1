"""Fixed-rate tick scheduling on a monotonic clock: tick k is due at t0 + k * period.

A long-lived thread calls ``on_tick`` at each deadline: the ticker's own thread, or one of the
threads of a shared :class:`~worldloop.looppool.LoopPool` (many worlds, a bounded number of
threads; never two threads in one ticker at once). Deadlines come from the anchor, never from
"now + period", so a tick's own cost never shifts later ticks (no drift).
Overruns follow a declared policy; pause, resume, step(n) and set_rate(hz) work at run time.
The clock source is pluggable so tests can drive time by hand (:class:`ManualClock`).
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from .errors import ClockStateError

if TYPE_CHECKING:
    from .looppool import LoopPool

log = logging.getLogger("worldloop.clock")

MAX_RATE_HZ = 1000.0
MIN_RATE_HZ = 0.01
"""A tick at least every 100 s: slower periods overflow timed waits (or become infinite) and
would kill the loop thread, and a rate change takes effect only at the next due tick."""
T = TypeVar("T")
Calls = list[tuple[Callable[[], Any], Future[Any]]]
"""Work queued with :meth:`Ticker.call`, run on the loop thread between two ticks."""


class OverrunPolicy(StrEnum):
    """What the loop does when it falls a whole period or more behind schedule."""

    CATCH_UP = "catch_up"
    """Run the missed ticks back to back, at most ``max_catch_up`` of them; drop the rest."""
    SKIP = "skip"
    """Drop every missed slot and run the next tick on the current slot."""


class Clock(Protocol):
    """A source of monotonic time that a ticker can sleep on."""

    def now(self) -> float:
        """Seconds on a monotonic scale."""
        ...

    def wait(self, cv: threading.Condition, deadline: float) -> None:
        """Block on ``cv`` (held by the caller) until ``deadline`` or a notify, whichever first."""
        ...


class MonotonicClock:
    """The real clock: ``time.monotonic`` and a timed condition wait."""

    def now(self) -> float:
        return time.monotonic()

    def wait(self, cv: threading.Condition, deadline: float) -> None:
        delay = deadline - time.monotonic()
        if delay > 0:
            cv.wait(delay)


class ManualClock:
    """A clock that moves only when told to: tests advance it and the ticker follows."""

    def __init__(self, start: float = 0.0) -> None:
        self._t = start
        self._lock = threading.Lock()
        self._waiters: set[threading.Condition] = set()

    def now(self) -> float:
        return self._t

    def wait(self, cv: threading.Condition, deadline: float) -> None:
        with self._lock:  # register before checking, so an advance() in between is not lost
            self._waiters.add(cv)
        if self._t < deadline:
            cv.wait()

    def advance(self, seconds: float) -> None:
        """Move time forward and wake every ticker sleeping on this clock."""
        if seconds < 0:
            raise ValueError("a monotonic clock cannot go back")
        self._t += seconds
        with self._lock:
            waiters = list(self._waiters)
        for cv in waiters:
            with cv:
                cv.notify_all()


@dataclass(frozen=True, slots=True)
class TickInfo:
    """When a tick was due and when it actually started (both on the ticker's clock)."""

    slot: int
    scheduled: float
    started: float
    period: float
    manual: bool = False
    """True for ticks run by ``step(n)`` while paused: they have no schedule to be late for."""

    @property
    def lateness(self) -> float:
        return 0.0 if self.manual else max(0.0, self.started - self.scheduled)


@dataclass(frozen=True, slots=True)
class TickerStats:
    """Counters of a ticker, read without locks (a consistent copy made by the loop)."""

    ticks: int
    overruns: int
    skipped: int
    errors: int
    rate_hz: float
    paused: bool
    running: bool
    last_lateness: float
    last_duration: float


class Ticker:
    """Runs ``on_tick`` on a fixed-rate schedule in one long-lived thread: its own, or, given a
    ``pool``, one of the pool's (which then also provides the clock)."""

    def __init__(
        self,
        on_tick: Callable[[TickInfo], None],
        rate_hz: float,
        *,
        clock: Clock | None = None,
        policy: OverrunPolicy | str = OverrunPolicy.CATCH_UP,
        max_catch_up: int = 5,
        name: str = "worldloop-ticker",
        start_paused: bool = False,
        pool: LoopPool | None = None,
    ) -> None:
        _check_rate(rate_hz)
        if max_catch_up < 0:
            raise ValueError("max_catch_up must be >= 0")
        if pool is not None and clock is not None and clock is not pool.clock:
            raise ValueError("a ticker on a loop pool runs on the pool's clock")
        self._on_tick = on_tick
        self._pool = pool
        self._clock: Clock = pool.clock if pool is not None else clock or MonotonicClock()
        self._policy = OverrunPolicy(policy)
        self._max_catch_up = max_catch_up
        self._name = name
        self._cv = threading.Condition()
        self._period = 1.0 / rate_hz
        self._t0 = 0.0
        self._k = 0
        self._paused = start_paused
        self._executing = False
        self._stopping = False
        self._steps: list[tuple[int, Future[int]]] = []
        self._calls: list[tuple[Callable[[], Any], Future[Any]]] = []
        self._thread: threading.Thread | None = None
        self._started = False
        self._ended = False
        self._owner: threading.Thread | None = None
        """The pool thread running this ticker's work right now (pool mode)."""
        self._ticks = 0
        self._overruns = 0
        self._skipped = 0
        self._errors = 0
        self._last_lateness = 0.0
        self._last_duration = 0.0
        self._tick_cv = threading.Condition()

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        """Start the loop thread (or join the pool); the first tick is due at once."""
        with self._cv:
            if self._started:
                raise ClockStateError("ticker already started")
            self._started = True
            self._t0 = self._clock.now()
            self._k = 0
            self._stopping = False
            if self._pool is not None:
                self._pool.attach(self)
                return
            self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 2.0) -> bool:
        """Ask the loop to end and wait up to ``timeout`` s; True if it ended in time."""
        with self._cv:
            self._stopping = True
            self._cv.notify_all()
            thread = self._thread
            left_now = self._pool is not None and self._started and self._pool.detach(self)
        if left_now:  # in a pool and not running: it ends here, at once
            self._finish()
        if self._pool is not None:
            if not self._started or self._on_loop_thread():
                return True
            with self._cv:
                return self._cv.wait_for(lambda: self._ended, timeout)
        if thread is None or thread is threading.current_thread():
            return True
        thread.join(timeout)
        return not thread.is_alive()

    @property
    def running(self) -> bool:
        if self._pool is not None:
            return self._started and not self._ended and not self._stopping
        t = self._thread
        return t is not None and t.is_alive() and not self._stopping

    @property
    def name(self) -> str:
        return self._name

    @property
    def pool(self) -> LoopPool | None:
        """The loop pool this ticker runs on; None when it has a thread of its own."""
        return self._pool

    def _on_loop_thread(self) -> bool:
        current = threading.current_thread()
        return current is self._thread or current is self._owner

    def _wake(self) -> None:
        """Tell whoever runs the loop that its schedule changed (caller holds ``_cv``)."""
        self._cv.notify_all()
        if self._pool is not None and self._started:
            self._pool.wake(self)

    # -- controls --------------------------------------------------------------------------

    @property
    def rate_hz(self) -> float:
        return 1.0 / self._period

    @property
    def period(self) -> float:
        return self._period

    @property
    def paused(self) -> bool:
        return self._paused

    @property
    def policy(self) -> OverrunPolicy:
        return self._policy

    def set_rate(self, rate_hz: float) -> None:
        """Change the rate at once: the next tick is due one new period from now, or at the
        old schedule's next tick if that is sooner, and the schedule is re-anchored there.

        The sleeping loop is woken to recompute its deadline, so raising the rate after a
        very slow one (0.01 Hz: a 100 s sleep) takes effect now, not when the old tick fires.
        """
        _check_rate(rate_hz)
        with self._cv:
            period = 1.0 / rate_hz
            next_due = self._t0 + self._k * self._period
            if self._started:
                next_due = min(next_due, self._clock.now() + period)
            self._t0 = next_due
            self._k = 0
            self._period = period
            self._wake()

    def pause(self, wait: float = 5.0) -> None:
        """Stop ticking; waits (up to ``wait`` s) for a tick already under way to finish, so the
        caller sees a settled world. From the loop thread itself it does not wait."""
        with self._cv:
            self._paused = True
            self._wake()
            if not self._on_loop_thread():
                self._cv.wait_for(lambda: not self._executing, wait)

    def resume(self) -> None:
        """Resume ticking; the schedule restarts now, so a pause is never "caught up"."""
        with self._cv:
            if not self._paused:
                return
            self._paused = False
            self._t0 = self._clock.now()
            self._k = 0
            self._wake()

    def step(self, n: int = 1) -> Future[int]:
        """Run ``n`` ticks now, while paused. The future resolves to the tick count afterwards."""
        if n < 1:
            raise ValueError("step count must be >= 1")
        fut: Future[int] = Future()
        with self._cv:
            if not self._paused:
                raise ClockStateError("step() needs the world to be paused first")
            if self._stopping or not self._started:
                raise ClockStateError("the ticker is not running")
            self._steps.append((n, fut))
            self._wake()
        return fut

    def call(self, fn: Callable[[], T]) -> Future[T]:
        """Run ``fn`` on the loop thread between two ticks (paused or not); its future has the
        result. For work that must see a settled world, e.g. hashing or saving the full state."""
        fut: Future[T] = Future()
        with self._cv:
            if self._stopping or not self._started:
                raise ClockStateError("the ticker is not running")
            self._calls.append((fn, fut))
            self._wake()
        return fut

    # -- observation ----------------------------------------------------------------------

    def stats(self) -> TickerStats:
        return TickerStats(
            ticks=self._ticks,
            overruns=self._overruns,
            skipped=self._skipped,
            errors=self._errors,
            rate_hz=self.rate_hz,
            paused=self._paused,
            running=self.running,
            last_lateness=self._last_lateness,
            last_duration=self._last_duration,
        )

    def wait_for_ticks(self, count: int, timeout: float) -> bool:
        """Block until at least ``count`` ticks have run in total; False on timeout."""
        with self._tick_cv:
            return self._tick_cv.wait_for(lambda: self._ticks >= count, timeout)

    # -- the loop --------------------------------------------------------------------------

    def _run(self) -> None:
        """The ticker's own thread (no pool): wait for each piece of work and do it."""
        log.debug("ticker %s started at %.1f Hz", self._name, self.rate_hz)
        try:
            while True:
                work = self._next_tick()
                if work is None:
                    break
                self._work(work)
        finally:
            self._finish()

    def _next_tick(self) -> TickInfo | Calls | None:
        """Wait (releasing the control lock) until a tick is due; None when stopping."""
        with self._cv:
            while True:
                work = self._next(self._clock.now())
                if not isinstance(work, float):
                    return work
                if work == math.inf:
                    self._cv.wait()
                else:
                    self._clock.wait(self._cv, work)

    def _due(self) -> float:
        """When this ticker next has work (caller holds ``_cv``): ``-inf`` at once (a stop,
        calls, steps), ``inf`` never until a control changes it (paused), else the deadline."""
        if self._stopping or self._calls:
            return -math.inf
        if self._paused:
            return -math.inf if self._steps else math.inf
        return self._t0 + self._k * self._period

    def _next(self, now: float) -> TickInfo | Calls | float | None:
        """The work due at ``now``, claimed (caller holds ``_cv``); else when to look again
        (a float, ``inf``: on a control); None when stopping.

        Calls queued with :meth:`call` come first, returned as a list to run before the tick.
        """
        if self._stopping:
            return None
        if self._calls:
            calls, self._calls = self._calls, []
            self._executing = True
            return calls
        if self._paused:
            if not self._steps:
                return math.inf
            self._executing = True
            return TickInfo(-1, now, now, self._period, manual=True)
        due = self._t0 + self._k * self._period
        if now < due:
            return due
        behind = math.floor((now - due) / self._period)
        if behind >= 1:
            self._overruns += 1
            drop = behind if self._policy is OverrunPolicy.SKIP else behind - self._max_catch_up
            if drop > 0:
                self._k += drop
                self._skipped += drop
                due = self._t0 + self._k * self._period
        info = TickInfo(self._k, due, now, self._period)
        self._k += 1
        self._executing = True
        return info

    def _work(self, work: TickInfo | Calls) -> None:
        """Run claimed work (calls, or one tick), then let a waiting pause() see it done."""
        try:
            if isinstance(work, list):
                _run_calls(work)
            else:
                self._execute(work)
        finally:
            with self._cv:
                self._executing = False
                self._cv.notify_all()

    def _finish(self) -> None:
        """The loop ended: cancel what still waits for it, and tell a waiting stop()."""
        with self._cv:
            steps, self._steps = self._steps, []
            calls, self._calls = self._calls, []
            self._stopping = True
            self._ended = True
            self._cv.notify_all()
        for _, fut in steps:
            fut.cancel()
        for _, call_fut in calls:
            call_fut.cancel()
        log.debug("ticker %s stopped after %d ticks", self._name, self._ticks)

    def _execute(self, info: TickInfo) -> None:
        try:
            self._on_tick(info)
        except Exception:
            self._errors += 1
            log.exception("tick failed (ticker %s); the loop goes on", self._name)
        self._last_lateness = info.lateness
        self._last_duration = self._clock.now() - info.started
        with self._tick_cv:
            self._ticks += 1
            self._tick_cv.notify_all()
        if info.manual:
            self._finish_step()

    def _finish_step(self) -> None:
        with self._cv:
            if not self._steps:
                return
            n, fut = self._steps[0]
            if n > 1:
                self._steps[0] = (n - 1, fut)
                return
            self._steps.pop(0)
        fut.set_result(self._ticks)


def _run_calls(calls: Calls) -> None:
    for fn, fut in calls:
        if not fut.set_running_or_notify_cancel():
            continue
        try:
            fut.set_result(fn())
        except Exception as exc:
            log.exception("a call on the loop thread failed")
            fut.set_exception(exc)


def _check_rate(rate_hz: float) -> None:
    if not isinstance(rate_hz, int | float) or isinstance(rate_hz, bool):
        raise ValueError("rate must be a number of ticks per second")
    if not math.isfinite(rate_hz) or not MIN_RATE_HZ <= rate_hz <= MAX_RATE_HZ:
        raise ValueError(
            f"rate must be within {MIN_RATE_HZ:g}..{MAX_RATE_HZ:g} Hz, got {rate_hz!r}"
        )
