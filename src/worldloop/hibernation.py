"""Hibernation: an idle extra world is snapshotted and unloaded, and woken when needed.

A world with no players, no pending command and no job due, for ``WORLDLOOP_HIBERNATE_AFTER``
seconds (or its kind's own ``hibernate_after``), is stopped with a final snapshot, marked asleep
in the catalog (a restart brings it back asleep, not loaded) and dropped: its runtime, loop
thread, queue and snapshots go, so their memory is returned. The next request that names it,
or the due time of one of its wall-clock jobs (kept in the catalog at sleep time), wakes it:
rebuilt from its kind and config and recovered from snapshot + journal (hash-checked) like a
restart, then caught up over the idle gap by its kind's policy:

- ``skip`` (the default): the clock restarts at the recovered tick; no simulated time passed;
- ``simulate``: the ticks the gap would have run are stepped at once (journaled as any tick),
  at most ``max_simulate`` of them, before the clock resumes.

One thread per host sweeps every world (:class:`Hibernator`), never one per world.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Literal

from .errors import ConfigError
from .jobs import JobSpec
from .store.catalog import CatalogEntry

if TYPE_CHECKING:
    from .host import WorldHost
    from .hosted import HostedWorld

log = logging.getLogger("worldloop.hibernation")

CatchUp = Literal["skip", "simulate"]

MIN_SWEEP, MAX_SWEEP = 0.05, 1.0
"""Bounds of the seconds between two sweeps (a quarter of the shortest idle time)."""
SIMULATE_TIMEOUT = 120.0
"""Seconds a wake waits for its simulated ticks (bounded by ``max_simulate`` anyway)."""


@dataclass(frozen=True, slots=True)
class KindOptions:
    """What a world kind declares beyond its factory (``loop.kind(name, ...)``)."""

    catch_up: CatchUp = "skip"
    """How a woken world treats the time it slept: ``skip`` it, or ``simulate`` its ticks."""
    max_simulate: int = 1000
    """Most ticks ``simulate`` steps on one wake (the rest of the gap is skipped)."""
    hibernate_after: float | None = None
    """Idle seconds before a world of this kind sleeps; None: WORLDLOOP_HIBERNATE_AFTER;
    0: never."""
    jobs: tuple[JobSpec, ...] = ()
    """Scheduled jobs every world of this kind runs (a due one wakes a sleeping world)."""

    def __post_init__(self) -> None:
        if self.catch_up not in ("skip", "simulate"):
            raise ConfigError(f"catch_up must be 'skip' or 'simulate', not {self.catch_up!r}")
        if self.max_simulate < 0:
            raise ConfigError("max_simulate must be >= 0")
        if self.hibernate_after is not None and not self.hibernate_after >= 0:
            raise ConfigError("hibernate_after must be >= 0 seconds (0: never)")
        if not all(isinstance(j, JobSpec) for j in self.jobs):
            raise ConfigError("a kind's jobs must be JobSpecs (worldloop.jobs.make_spec)")


def kind_options(
    catch_up: CatchUp = "skip",
    max_simulate: int = 1000,
    hibernate_after: float | None = None,
    jobs: Sequence[JobSpec] = (),
) -> KindOptions:
    """:class:`KindOptions` from the keyword options of ``loop.kind``."""
    return KindOptions(catch_up, int(max_simulate), hibernate_after, tuple(jobs))


def release_memory() -> bool:
    """Return the memory of the worlds just put to sleep to the OS: collect their reference
    cycles (runtime <-> plug-ins), then ask glibc's allocator to give back the free pages it
    keeps in its arenas (``malloc_trim``; without it the RSS hardly drops). False where the
    C library has no ``malloc_trim`` (musl, macOS): the memory is free for reuse there."""
    gc.collect()
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        trim = libc.malloc_trim
    except (OSError, AttributeError, TypeError):
        return False
    trim(0)
    return True


def players_of(summary: Any) -> int:
    """The player count a world's snapshot summary states (``player_count`` or ``players``)."""
    found = summary.get("player_count", summary.get("players")) if summary else None
    return found if isinstance(found, int) else 0


def asleep_summary(entry: CatalogEntry) -> dict[str, Any]:
    """What ``GET /api/v1/worlds`` lists for a hibernated world (from its catalog record)."""
    sleep = entry.asleep
    return {
        "name": entry.name,
        "kind": entry.kind,
        "default": False,
        "status": "hibernated",
        "tick": 0 if sleep is None else sleep.tick,
        "rate_hz": 0.0 if sleep is None else sleep.rate_hz,
        "players": 0,
        "error": None,
    }


def revive(host: WorldHost, entry: CatalogEntry) -> HostedWorld:
    """A sleeping world rebuilt, recovered and started, its idle gap caught up by its kind's
    policy (see the module docstring); the caller publishes it."""
    sleep = entry.asleep
    options = host.options(entry.kind)
    missed = 0
    if sleep is not None and options.catch_up == "simulate" and not entry.paused:
        gap = max(0.0, host.hibernator.wall() - sleep.slept_at)
        missed = min(options.max_simulate, int(gap * sleep.rate_hz))
    hosted = host.build(replace(entry, paused=entry.paused or missed > 0))
    rt = hosted.runtime
    if sleep is not None and hosted.jobs is not None:
        hosted.jobs.since(sleep.slept_at)
    rt.start()
    try:
        if sleep is not None and rt.stats().rate_hz != sleep.rate_hz:
            rt.set_rate(sleep.rate_hz)
        if missed:
            rt.step(missed, timeout=SIMULATE_TIMEOUT)
            if not entry.paused:
                rt.resume()
    except BaseException:
        rt.stop()
        raise
    log.info(
        "world %r woke at tick %d (%s%s)",
        entry.name,
        rt.world.tick,
        options.catch_up,
        f", {missed} ticks simulated" if missed else "",
    )
    return hosted


class Hibernator:
    """The host's idle sweep: one thread that puts idle worlds to sleep and wakes those whose
    job is due. :meth:`sweep` is one pass (tests call it by hand with their own clocks)."""

    def __init__(
        self,
        host: WorldHost,
        after: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.host = host
        self.after = after
        self.clock = clock
        """Idle time is measured on it (monotonic)."""
        self.wall = wall
        """Job due times, and when a world fell asleep, are on it (unix seconds)."""
        self._seen: dict[str, tuple[int, float]] = {}
        """Per awake world: its applied + rejected command count, and since when it is so."""
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._refused: set[str] = set()
        """Sleeping worlds that failed to wake for their job (not retried by the sweep)."""
        self.off = False
        """True where worlds never sleep whatever is declared (the Redis mode)."""

    def after_of(self, kind: str) -> float:
        """Idle seconds before a world of ``kind`` sleeps (0: never)."""
        own = self.host.options(kind).hibernate_after
        return self.after if own is None else own

    @property
    def interval(self) -> float:
        """Seconds between two sweeps: a quarter of the shortest idle time, within bounds."""
        afters = [self.after, *(o.hibernate_after or 0.0 for o in self.host.kind_options.values())]
        shortest = min((a for a in afters if a > 0), default=MAX_SWEEP * 4)
        return min(MAX_SWEEP, max(MIN_SWEEP, shortest / 4))

    @property
    def enabled(self) -> bool:
        if self.off:
            return False
        return self.after > 0 or any(
            (o.hibernate_after or 0) > 0 for o in self.host.kind_options.values()
        )

    # -- the thread ------------------------------------------------------------------------

    def start(self) -> None:
        """Sweep on a thread of its own from now on, if any world may ever sleep."""
        if not self.enabled or (self._thread is not None and self._thread.is_alive()):
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="worldloop-hibernate", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 2.0) -> None:
        """End the thread: a sweep under way ends after the world it is handling."""
        self._stop.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    def _halted(self) -> bool:
        """True in the sweep thread once it was told to stop (hand sweeps always finish)."""
        return self._stop.is_set() and threading.current_thread() is self._thread

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.sweep()
            except Exception:  # contained: the next sweep tries again
                log.exception("hibernation sweep failed")

    # -- one pass --------------------------------------------------------------------------

    def sweep(self) -> tuple[list[str], list[str]]:
        """Put the worlds idle long enough to sleep, wake those whose job is about due;
        returns (names put to sleep, names woken)."""
        host = self.host
        now, wall, step = self.clock(), self.wall(), self.interval
        slept: list[str] = []
        for hosted in host.worlds()[1:]:
            if self._halted():
                break
            after = self.after_of(hosted.kind)
            if after <= 0 or not self._idle(hosted, now, after):
                continue
            rt, jobs = hosted.runtime, hosted.jobs
            rate = rt.stats().rate_hz
            if jobs is not None:
                due = jobs.next_due(wall, rt.tick, rate)
                if due is not None and due <= wall + step:
                    continue  # a job runs before the next sweep: not idle after all
                wake_at = jobs.next_due(wall, rt.tick, rate, wall_only=True)
            else:
                wake_at = None
            if host.hibernate(hosted.name, wake_at) is not None:
                slept.append(hosted.name)
        if slept:
            release_memory()
        woken: list[str] = []
        for entry in host.sleeping():
            if self._halted():
                break
            sleep = entry.asleep
            if sleep is None or sleep.wake_at is None or sleep.wake_at > wall + step:
                continue
            if entry.name in self._refused:
                continue
            try:
                host.get(entry.name)
            except Exception:
                self._refused.add(entry.name)
                log.exception("world %r: cannot wake for its due job", entry.name)
                continue
            woken.append(entry.name)
        return slept, woken

    def _idle(self, hosted: HostedWorld, now: float, after: float) -> bool:
        """Whether ``hosted`` has been idle for ``after`` s: no player in its snapshot, nothing
        queued, no job in flight, and no command applied or rejected since the last look."""
        rt = hosted.runtime
        if hosted.failed is not None or not rt.running or rt.store is None:
            return False  # no journal (memory://): a world put to sleep could not come back
        snap = rt.latest
        busy = (
            (snap is not None and players_of(snap.summary) > 0)
            or rt.queue_depth > 0
            or (hosted.jobs is not None and hosted.jobs.busy)
        )
        done = sum(rt.applied.values()) + sum(rt.rejected.values())
        seen = self._seen.get(hosted.name)
        if busy or seen is None or seen[0] != done:
            self._seen[hosted.name] = (done, now)
            return False
        return now - seen[1] >= after

    def forget(self, name: str) -> None:
        """A world slept, woke or was deleted: its idle time starts again from the next look."""
        self._seen.pop(name, None)
        self._refused.discard(name)
