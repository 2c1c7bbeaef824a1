"""The outbox: heavy work a world asks for, recorded in the world's own state.

A command, system or world job calls ``world.request_task(task, params)`` on the loop thread. The
request gets a deterministic id (the world's name and a sequence number kept in the state), so a
replay makes the same request with the same id. Nothing is sent from the tick: an offload plug-in
(``worldloop.offload``) sends a request only once its tick is durable, and sends every pending
request again after a restart. The result comes back as one journaled ``task:result`` command
that the world applies only while the request is still pending: a redelivered task, or a result
that arrives after its time-out was recorded, changes nothing, and replay reads the journaled
result instead of running the task again.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

TASK_RESULT = "task:result"
"""The internal command type that carries a task's outcome back into the world."""


@dataclass(frozen=True, slots=True)
class TaskRequest:
    """One pending request: the task's name, its JSON parameters (a copy, never live state)."""

    id: str
    task: str
    params: dict[str, Any]
    tick: int
    """The tick that made the request (the request is durable once this tick is)."""

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "task": self.task, "params": self.params, "tick": self.tick}


class TaskResult(BaseModel):
    """The payload of a ``task:result`` command, built by the offload plug-in, journaled."""

    model_config = ConfigDict(frozen=True)

    task_id: str = Field(min_length=1, max_length=200)
    status: Literal["succeeded", "failed", "timed_out"]
    result: Any = None
    error: str | None = None


class Outbox:
    """Pending task requests, in request order; part of the world's hashed state."""

    def __init__(self) -> None:
        self.seq = 0
        self.pending: dict[str, TaskRequest] = {}
        self.version = 0
        """Bumped on every change, so a plug-in can skip an unchanged outbox cheaply."""

    def request(self, world_name: str, task: str, params: dict[str, Any], tick: int) -> str:
        """Record a request and return its id: ``<world>.<seq>``, the same on every replay."""
        json.dumps(params)  # JSON only (no pickle): fail in the caller, not in the sender
        self.seq += 1
        task_id = f"{world_name}.{self.seq}"
        self.pending[task_id] = TaskRequest(task_id, task, dict(params), tick)
        self.version += 1
        return task_id

    def settle(self, task_id: str) -> TaskRequest | None:
        """Remove and return the request ``task_id`` when pending; None when already settled."""
        request = self.pending.pop(task_id, None)
        if request is not None:
            self.version += 1
        return request

    def to_state(self) -> str | None:
        """The outbox as a JSON string for the full state; None while no task was ever asked."""
        if not self.seq:
            return None
        return json.dumps(
            {"seq": self.seq, "pending": [r.to_dict() for r in self.pending.values()]},
            sort_keys=True,
        )

    def load(self, data: str | None) -> None:
        """Inverse of :meth:`to_state`."""
        self.pending = {}
        self.seq = 0
        self.version += 1
        if not data:
            return
        doc = json.loads(data)
        self.seq = int(doc["seq"])
        for r in doc["pending"]:
            self.pending[str(r["id"])] = TaskRequest(
                str(r["id"]), str(r["task"]), dict(r["params"]), int(r["tick"])
            )
