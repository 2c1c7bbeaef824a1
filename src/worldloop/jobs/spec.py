"""What a job is: its kind, misfire policy, the context a run is told, and the JobSpec that holds
them with its schedule, built from keyword options or from a ``WORLDLOOP_JOBS`` entry.
"""

from __future__ import annotations

import importlib
import re
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Literal, Protocol, TypeVar, overload

from ..errors import ConfigError
from .schedules import Cron, Every, EveryTicks, Schedule

if TYPE_CHECKING:
    from ..snapshot import Snapshot
    from ..world import World

COMMAND_PREFIX = "job:"
"""World-job and claim commands are named ``job:<job name>``."""
TASK_PREFIX = "worldloop.job."
"""A background job on Celery runs as the task ``worldloop.job.<job name>``."""
_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


# -- kinds, policies and the run context ------------------------------------------------------


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


MisfireOption = Misfire | Literal["run_late", "skip", "coalesce"]
"""A misfire policy as ``job(...)`` accepts it: the enum member or its value."""

RunsOn = Literal["pool", "celery"]
"""Where a background job runs: ``pool``, this process's worker threads (at most once per slot),
or ``celery``, the world's task sender (exactly once per slot; see worldloop.jobs.offloaded)."""


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


# -- the job functions and the decorators that register them ----------------------------------

WorldJobFunc = Callable[["World", JobContext], Any]
"""A world job: called on the loop thread with the live world, inside the tick's command."""
BackgroundJobFunc = Callable[["Snapshot", JobContext], Any]
"""A background job: called in a worker thread with the latest immutable snapshot."""

WorldT = TypeVar("WorldT", bound="World")
ResultT = TypeVar("ResultT")


class WorldJobDecorator(Protocol):
    """What ``job(kind="world", ...)`` returns: takes ``f(world, ctx)``, returns it unchanged.

    The world parameter may be any World subclass (the job's own world type).
    """

    def __call__(
        self, func: Callable[[WorldT, JobContext], ResultT], /
    ) -> Callable[[WorldT, JobContext], ResultT]: ...


class BackgroundJobDecorator(Protocol):
    """What ``job(kind="background", ...)`` returns: takes ``f(snapshot, ctx)``, unchanged."""

    def __call__(
        self, func: Callable[[Snapshot, JobContext], ResultT], /
    ) -> Callable[[Snapshot, JobContext], ResultT]: ...


class JobRegistrar(Protocol):
    """The typed ``job(...)`` decorator factory (scheduler, extension and app state share it).

    ``kind="world"`` takes ``f(world, ctx)``, ``kind="background"`` (the default)
    ``f(snapshot, ctx)``; mypy checks which. Give exactly one of ``every`` (seconds),
    ``every_ticks`` or ``cron`` (with ``tz``); the other options are :class:`JobSpec`'s
    (``on="celery"``, background jobs only, runs them on Celery workers).
    """

    @overload
    def __call__(
        self,
        name: str | None = None,
        *,
        kind: Literal[JobKind.WORLD, "world"],
        every: float | None = None,
        every_ticks: int | None = None,
        cron: str | None = None,
        tz: str = "UTC",
        misfire: MisfireOption = Misfire.COALESCE,
        max_concurrent: int = 1,
        timeout: float | None = None,
        grace: float = 1.0,
    ) -> WorldJobDecorator: ...

    @overload
    def __call__(
        self,
        name: str | None = None,
        *,
        kind: Literal[JobKind.BACKGROUND, "background"] = JobKind.BACKGROUND,
        every: float | None = None,
        every_ticks: int | None = None,
        cron: str | None = None,
        tz: str = "UTC",
        misfire: MisfireOption = Misfire.COALESCE,
        max_concurrent: int = 1,
        timeout: float | None = None,
        grace: float = 1.0,
        on: RunsOn = "pool",
    ) -> BackgroundJobDecorator: ...


# -- the spec ---------------------------------------------------------------------------------


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
    on: RunsOn = "pool"
    """Background jobs: ``pool`` (threads of this process) or ``celery`` (the world's task
    sender, with a completion record: exactly once per slot)."""

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
        if self.on not in ("pool", "celery"):
            raise ConfigError(f"job {self.name!r}: on must be 'pool' or 'celery'")
        if self.on == "celery" and self.kind is not JobKind.BACKGROUND:
            raise ConfigError(f"job {self.name!r}: only background jobs can run on celery")

    @property
    def command_type(self) -> str:
        return COMMAND_PREFIX + self.name

    @property
    def offloaded(self) -> bool:
        """Runs through the world's task sender (``on="celery"``)."""
        return self.on == "celery"

    @property
    def task_name(self) -> str:
        """The task an offloaded run is sent as (registered on Celery by the extension)."""
        return TASK_PREFIX + self.name


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
    on: RunsOn | str = "pool",
) -> JobSpec:
    """Build a JobSpec from keyword options (exactly one of every, every_ticks, cron).

    Strings are checked here, at run time, because config files name kinds and policies.
    """
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
        name,
        func,
        kind_,
        schedule,
        misfire_,
        int(max_concurrent),
        timeout,
        float(grace),
        on,  # type: ignore[arg-type]  # a config string: checked by JobSpec
    )


# -- WORLDLOOP_JOBS ---------------------------------------------------------------------------

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
    "on",
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


def load_config_jobs(entries: Iterable[Mapping[str, Any]] | None) -> list[JobSpec]:
    """The JobSpecs named in ``WORLDLOOP_JOBS`` (None or empty: none)."""
    if not entries:
        return []
    if isinstance(entries, str | bytes | Mapping):
        raise ConfigError("WORLDLOOP_JOBS must be a list of objects")
    return [spec_from_config(e) for e in entries]
