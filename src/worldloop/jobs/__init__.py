"""Scheduled jobs on the world clock: interval and cron schedules, world and background jobs.

Two kinds of job share one scheduler, which runs on the loop thread before each tick (so it only
ever runs in the process that holds the world's lease):

* **world** jobs run on the loop thread, at a tick boundary, *as commands* (``job:<name>``):
  they are journaled, deterministic and replayed. The world reaches the job function through
  ``World.command_handlers``, so journal replay calls the same code.
* **background** jobs run in a bounded worker pool with the latest snapshot and never block
  the tick. Each slot is first *claimed* by a journaled ``job:<name>`` command that records the
  slot in the world's state; the run is submitted only once that tick is durable. With
  ``on="celery"`` the claim also records the run as a task request in the world's outbox, sent
  to Celery once durable, and the run's result closes the slot (``offloaded``).

Either way the last run slot of every job lives in the world state (``World.job_slots``), so a
restart or a failover never runs a slot twice (background: at most once per slot, exactly once
unless the process dies while the run is in flight; on Celery: exactly once, a completion record
closing each slot).

Schedules are evaluated against injectable clocks (wall time for intervals in seconds and for
cron, the world tick for intervals in ticks), so tests drive them by hand.

The modules: ``schedules`` (when slots fall), ``spec`` (what a job is),
``scheduler`` (which slots are due), ``handler`` (the ``job:<name>`` command), ``pool``
(background runs), ``offloaded`` (background runs on Celery), ``runs`` (results and counters),
``collector`` (Prometheus).
"""

from ..errors import JobBusy, JobFailed, JobNotFound
from .collector import JobsCollector
from .runs import JobResult
from .scheduler import JobScheduler
from .schedules import MAX_COUNTED_MISSES, Basis, Cron, Every, EveryTicks, Schedule
from .spec import (
    COMMAND_PREFIX,
    BackgroundJobDecorator,
    BackgroundJobFunc,
    JobContext,
    JobKind,
    JobRegistrar,
    JobSpec,
    Misfire,
    MisfireOption,
    RunsOn,
    WorldJobDecorator,
    WorldJobFunc,
    load_config_jobs,
    make_spec,
    spec_from_config,
)

__all__ = [
    "COMMAND_PREFIX",
    "MAX_COUNTED_MISSES",
    "BackgroundJobDecorator",
    "BackgroundJobFunc",
    "Basis",
    "Cron",
    "Every",
    "EveryTicks",
    "JobBusy",
    "JobContext",
    "JobFailed",
    "JobKind",
    "JobNotFound",
    "JobRegistrar",
    "JobResult",
    "JobScheduler",
    "JobSpec",
    "JobsCollector",
    "Misfire",
    "MisfireOption",
    "RunsOn",
    "Schedule",
    "WorldJobDecorator",
    "WorldJobFunc",
    "load_config_jobs",
    "make_spec",
    "spec_from_config",
]
