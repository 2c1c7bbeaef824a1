"""The meadow's forecast: the flock simulated thousands of ticks ahead, off the tick.

A ``forecast`` command asks for it: the world puts a copy of its full state (encoded as a stored
snapshot is, no pickle) into a task request (``World.request_task``). A Celery worker (or the
in-process pool when Celery is not configured) rebuilds a private Meadow from that copy, runs it
forward with no commands, and returns a small series: sheep and grass over time. The result comes
back as a journaled command and lands in the world's state and summary, where the viewer and
``GET /api/v1/forecast`` show it.
"""

from __future__ import annotations

import base64
import json
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import CommandRejected
from ..outbox import TaskRequest
from ..store.codec import decode_state, encode_state
from .commands import MAX_FORECAST_TICKS as MAX_TICKS

if TYPE_CHECKING:
    from .meadow import Meadow

FORECAST_TASK = "meadow.forecast"
"""The task's name, on Celery and in the in-process pool."""
SAMPLES = 50


class ForecastBusy(CommandRejected, code="forecast_busy", status=409):
    """A forecast is already being computed; ask again once it is back."""


def request(world: Meadow, ticks: int) -> dict[str, Any]:
    """Record a forecast request with a copy of the state (loop thread, inside the command)."""
    busy = [r.id for r in world.outbox.pending.values() if r.task == FORECAST_TASK]
    if busy:
        raise ForecastBusy("a forecast is already running", details={"task_id": busy[0]})
    state = base64.b64encode(encode_state(world.full_state())).decode()
    task_id = world.request_task(
        FORECAST_TASK, {"ticks": ticks, "from_tick": world.tick, "state": state}
    )
    return {"task_id": task_id, "from_tick": world.tick, "ticks": ticks}


def settle(
    world: Meadow, req: TaskRequest, status: str, result: Any, error: str | None
) -> dict[str, Any]:
    """Keep the outcome in the world's state (applied once; replay reads the journal)."""
    done = {
        "task_id": req.id,
        "from_tick": req.params["from_tick"],
        "ticks": req.params["ticks"],
        "status": status,
        "error": error,
        "series": result if status == "succeeded" else None,
    }
    world.forecast = json.dumps(done, sort_keys=True)
    return {"task_id": req.id, "status": status}


def run_forecast(params: dict[str, Any]) -> dict[str, Any]:
    """The task: rebuild a private meadow from the copy and run it forward (any process)."""
    from .meadow import SHEEP, Meadow

    ticks = int(params["ticks"])
    if not 1 <= ticks <= MAX_TICKS:
        raise ValueError(f"ticks must be 1..{MAX_TICKS}")
    world = Meadow(entities=0)
    world.restore(decode_state(base64.b64decode(params["state"])))
    world.outbox.load(None)  # the copy asks for nothing
    every = max(1, ticks // SAMPLES)
    tick, sheep, grass = [], [], []
    for i in range(1, ticks + 1):
        world.step(())
        if i % every == 0 or i == ticks:
            tick.append(world.tick)
            sheep.append(int(np.count_nonzero(world.kind == SHEEP)))
            grass.append(round(float(world.grass.sum(dtype=np.float64)), 3))
    return {"tick": tick, "sheep": sheep, "grass": grass}


def summary(forecast: str | None) -> dict[str, Any] | None:
    """The forecast as the world's summary shows it (the series is a few hundred numbers)."""
    if forecast is None:
        return None
    done: dict[str, Any] = json.loads(forecast)
    return done
