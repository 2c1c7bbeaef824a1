"""The outbox: heavy work a world asks for, recorded in the world's own state.

A command, system or world job calls ``world.request_task(task, params)`` on the loop thread. The
request gets a deterministic id (the world's name, its nonce and a sequence number or a key, all
kept in the state), so a replay makes the same request with the same id. The nonce is drawn once
when the runtime creates a world (``Outbox.begin``) and is part of its journaled state: a new world
with the same name never re-uses an old world's ids, whose results may still sit in a broker or a
result backend. Nothing is sent from the tick: an offload plug-in
(``worldloop.offload``) sends a request only once its tick is durable, and sends every pending
request again after a restart. The result comes back as one journaled ``task:result`` command
that the world applies only while the request is still pending: a redelivered task, or a result
that arrives after its time-out was recorded, changes nothing, and replay reads the journaled
result instead of running the task again.
"""

from __future__ import annotations

import json
import secrets
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
    snapshot: bool = False
    """Send it with the latest published snapshot (``params["snapshot"]``, JSON), added at
    send time and never kept in the state."""

    def to_dict(self) -> dict[str, Any]:
        out = {"id": self.id, "task": self.task, "params": self.params, "tick": self.tick}
        if self.snapshot:  # only when set: older states keep their hash
            out["snapshot"] = True
        return out

    @classmethod
    def from_dict(cls, r: dict[str, Any]) -> TaskRequest:
        return cls(
            str(r["id"]),
            str(r["task"]),
            dict(r["params"]),
            int(r["tick"]),
            bool(r.get("snapshot", False)),
        )


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
        self.nonce: str | None = None
        """Names this world among all worlds of its name; None in states made before nonces."""
        self.pending: dict[str, TaskRequest] = {}
        self.version = 0
        """Bumped on every change, so a plug-in can skip an unchanged outbox cheaply."""

    def begin(self) -> bool:
        """Draw the nonce of a new world (the runtime calls it before the world's first durable
        state); a no-op once ids were handed out. True when a nonce was drawn."""
        if self.nonce is not None or self.seq:
            return False
        self.nonce = secrets.token_hex(6)
        self.version += 1
        return True

    def request(
        self,
        world_name: str,
        task: str,
        params: dict[str, Any],
        tick: int,
        *,
        key: str | None = None,
        snapshot: bool = False,
    ) -> str:
        """Record a request and return its id, the same on every replay:
        ``<world>.<nonce>.<seq>``, or ``<world>.<nonce>.<key>`` when a ``key`` names it (a job's
        slot); a pending id cannot be asked for again."""
        json.dumps(params)  # JSON only (no pickle): fail in the caller, not in the sender
        prefix = world_name if self.nonce is None else f"{world_name}.{self.nonce}"
        if key is not None:
            task_id = f"{prefix}.{key}"
            if task_id in self.pending:
                raise ValueError(f"task {task_id!r} is already pending")
        self.seq += 1
        if key is None:
            task_id = f"{prefix}.{self.seq}"
        self.pending[task_id] = TaskRequest(task_id, task, dict(params), tick, snapshot)
        self.version += 1
        return task_id

    def settle(self, task_id: str) -> TaskRequest | None:
        """Remove and return the request ``task_id`` when pending; None when already settled."""
        request = self.pending.pop(task_id, None)
        if request is not None:
            self.version += 1
        return request

    def to_state(self) -> str | None:
        """The outbox as a JSON string for the full state; None while it holds nothing (no
        nonce, no task ever asked)."""
        if not self.seq and self.nonce is None:
            return None
        doc: dict[str, Any] = {
            "seq": self.seq,
            "pending": [r.to_dict() for r in self.pending.values()],
        }
        if self.nonce is not None:
            doc["nonce"] = self.nonce
        return json.dumps(doc, sort_keys=True)

    def load(self, data: str | None) -> None:
        """Inverse of :meth:`to_state`."""
        self.pending = {}
        self.seq = 0
        self.nonce = None
        self.version += 1
        if not data:
            return
        doc = json.loads(data)
        self.seq = int(doc["seq"])
        nonce = doc.get("nonce")
        self.nonce = None if nonce is None else str(nonce)
        for r in doc["pending"]:
            self.pending[str(r["id"])] = TaskRequest.from_dict(r)
