"""Scheduled background jobs on Celery (``on="celery"``): exactly once per slot.

A slot's claim (the journaled ``job:<name>`` command) records the slot in ``World.job_slots`` and,
in the same command, a task request in the world's outbox whose id is the world's, its nonce, the
job and the slot (:func:`request_run`): a replay makes the same request with the same id. The
offload plug-in sends it once that tick is durable, and again after a restart while it is
pending; the run's outcome comes back as a journaled ``task:result`` (the *completion record*)
that closes the slot only while it is pending. So a slot is never lost when a process dies
mid-run, and its outcome is applied once however often the task is delivered. The job itself
should be idempotent in what it does outside the world (a redelivered run may do it twice).

On the worker, :func:`job_task` rebuilds what the job is told: the latest snapshot when the run
was sent (from its JSON: arrays arrive as lists) and the slot's :class:`JobContext`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Literal

import orjson

from ..snapshot import Snapshot
from .runs import jsonable
from .spec import JobContext, JobKind, JobSpec

if TYPE_CHECKING:
    from ..world import World

STATUS: dict[str, Literal["ok", "error", "timeout"]] = {
    "succeeded": "ok",
    "failed": "error",
    "timed_out": "timeout",
}
"""A task's outcome as a job result's status."""


def slot_key(name: str, slot: float) -> str:
    """``<job>@<slot>``: the last part of a slot's task id (whole slots without a fraction)."""
    return f"{name}@{int(slot)}" if slot.is_integer() else f"{name}@{slot!r}"


def request_run(world: World, spec: JobSpec, payload: Mapping[str, Any]) -> str:
    """Record the run of a claimed slot (or a manual run) in the outbox; return its task id.

    Loop thread, inside the claim command. Only the slot's context goes into the state; the
    snapshot is added when the run is sent.
    """
    slot = payload.get("slot")
    ctx = {
        "slot": None if slot is None else float(slot),
        "tick": int(payload.get("tick", world.tick)),
        "scheduled_at": float(payload.get("scheduled_at", 0.0)),
        "missed": int(payload.get("missed", 0)),
        "manual": bool(payload.get("manual", False)),
    }
    return world.request_task(
        spec.task_name,
        {"job": spec.name, "ctx": ctx},
        key=None if slot is None else slot_key(spec.name, float(slot)),
        snapshot=True,
    )


def snapshot_from_json(text: str) -> Snapshot:
    """A snapshot rebuilt from its JSON envelope (``Snapshot.to_json``)."""
    env = orjson.loads(text)
    return Snapshot(
        str(env["world"]),
        int(env["tick"]),
        float(env["sim_time"]),
        dict(env["data"]),
        dict(env.get("summary") or {}),
        float(env["created_at"]),
    )


def job_task(spec: JobSpec) -> Callable[[dict[str, Any]], Any]:
    """The task that runs ``spec`` on a worker: ``f(snapshot, ctx)``, its value kept small."""

    def run(params: dict[str, Any]) -> Any:
        text = params.get("snapshot")
        if not isinstance(text, str):
            raise ValueError(f"job {spec.name!r}: the run was sent without a snapshot")
        c = params["ctx"]
        ctx = JobContext(
            spec.name,
            JobKind.BACKGROUND,
            None if c["slot"] is None else float(c["slot"]),
            int(c["tick"]),
            float(c["scheduled_at"]),
            int(c["missed"]),
            bool(c["manual"]),
        )
        return jsonable(spec.func(snapshot_from_json(text), ctx))

    run.__name__ = run.__qualname__ = f"job_{spec.name.replace('.', '_').replace('-', '_')}"
    run.__doc__ = f"Scheduled job {spec.name!r} on a worker."
    return run
