"""The world's handler for a job's ``job:<name>`` command: it takes the slot in the world state
and, for a world job, runs the job there and then (for a job on Celery, records its run in the
outbox: worldloop.jobs.offloaded).

It lives in ``World.command_handlers`` so that journal replay reaches the same code: a replayed
command takes the same slot and reruns the same world job, silently (counters and logs belong to
the live run only).
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any, Literal

from ..errors import CommandRejected, JobFailed
from .offloaded import request_run
from .runs import JobResult, describe, jsonable
from .spec import JobContext, JobKind, JobSpec

if TYPE_CHECKING:
    from ..commands import Command
    from ..world import World
    from .scheduler import JobScheduler

log = logging.getLogger("worldloop.jobs")


class JobHandler:
    """Handles ``job:<name>``: records the slot, and runs a world job.

    A slot at or before the one the world already recorded is rejected: that is what keeps a
    slot from running twice across a restart or a failover.
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
            if spec.offloaded:  # the run is a task request in the world, sent once durable
                return {"job": spec.name, "claimed": slot, "task_id": request_run(world, spec, p)}
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
        st = self.scheduler.live_state(cmd.id, spec.name)  # None on a journal replay
        wall = self.scheduler.wall
        started = time.perf_counter()
        try:
            value = spec.func(world, ctx)
        except Exception as exc:
            if st is not None:
                log.exception(
                    "world job %r failed at tick %d; it stays scheduled", spec.name, world.tick
                )
                st.record(
                    JobResult(
                        "error", slot, wall(), time.perf_counter() - started, None, describe(exc)
                    )
                )
            raise JobFailed(
                f"job {spec.name!r} failed: {describe(exc)}", details={"job": spec.name}
            ) from None
        duration = time.perf_counter() - started
        if st is not None:
            status: Literal["ok", "timeout"] = "ok"
            if spec.timeout is not None and duration > spec.timeout:
                status = "timeout"
                log.error(
                    "world job %r took %.3gs (timeout %gs)", spec.name, duration, spec.timeout
                )
            st.record(JobResult(status, slot, wall(), duration, jsonable(value)))
        return value
