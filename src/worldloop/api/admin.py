"""Admin endpoints (Bearer admin token): pause, resume, step n, set rate, take a snapshot."""

from __future__ import annotations

import concurrent.futures
from typing import Annotated, Any

from flask import Blueprint
from pydantic import AliasChoices, BaseModel, ConfigDict, Field

from ..clock import MAX_RATE_HZ, MIN_RATE_HZ
from ..errors import ClockStateError, WorldNotRunning
from ..models import Integral
from ..runtime import WorldRuntime
from ..state import get_runtime, state_of
from .auth import ADMIN
from .declare import Reply, operation

bp = Blueprint("worldloop_admin", __name__, url_prefix="/api/v1/admin")

MAX_STEP = 1000
STEP_TIMEOUT = 30.0


class AdminStatus(BaseModel):
    world: str
    tick: int
    rate_hz: float
    paused: bool
    running: bool
    queue_depth: int
    stepped: int = Field(0, description="Ticks run by this request (step only).")


class StepBody(BaseModel):
    model_config = ConfigDict(strict=True)

    n: Annotated[int, Field(ge=1, le=MAX_STEP), Integral] = 1


class RateBody(BaseModel):
    model_config = ConfigDict(strict=True)

    rate_hz: Annotated[
        float,
        Field(
            ge=MIN_RATE_HZ,
            le=MAX_RATE_HZ,
            allow_inf_nan=False,
            validation_alias=AliasChoices("rate_hz", "hz"),
            description="Ticks per second.",
        ),
    ]


class Checkpoint(BaseModel):
    tick: int
    state_hash: str = ""
    stored: bool = False


_STATUS = {200: Reply("The clock's state afterwards", AdminStatus)}
_CLOCK_ERRORS: tuple[int | tuple[int, str], ...] = (401, 403, 409, 503)


@bp.get("/status")
@operation(
    "Clock state",
    tags=("admin",),
    security=ADMIN,
    responses={200: Reply("Clock state", AdminStatus)},
    errors=(401, 403, 503),
)
def status() -> dict[str, Any]:
    return _status(get_runtime())


@bp.post("/pause")
@operation(
    "Pause the clock", tags=("admin",), security=ADMIN, responses=_STATUS, errors=_CLOCK_ERRORS
)
def pause() -> dict[str, Any]:
    rt = _running()
    rt.pause()
    _remember_pause(rt, True)
    return _status(rt)


@bp.post("/resume")
@operation(
    "Resume the clock", tags=("admin",), security=ADMIN, responses=_STATUS, errors=_CLOCK_ERRORS
)
def resume() -> dict[str, Any]:
    rt = _running()
    rt.resume()
    _remember_pause(rt, False)
    return _status(rt)


@bp.post("/step")
@operation(
    "Run n ticks while paused",
    tags=("admin",),
    security=ADMIN,
    body=StepBody,
    responses=_STATUS,
    errors=(400, *_CLOCK_ERRORS, 413, 422),
)
def step(body: StepBody) -> dict[str, Any]:
    rt = _running()
    if not rt.stats().paused:
        raise ClockStateError("pause the world before stepping it")
    try:
        rt.step(body.n, timeout=STEP_TIMEOUT)
    except (concurrent.futures.TimeoutError, concurrent.futures.CancelledError):
        raise WorldNotRunning(f"the {body.n} steps did not finish in {STEP_TIMEOUT:g} s") from None
    except ValueError as exc:
        raise ClockStateError(str(exc)) from None
    return {**_status(rt), "stepped": body.n}


@bp.post("/rate")
@operation(
    "Set the tick rate",
    tags=("admin",),
    security=ADMIN,
    body=RateBody,
    responses=_STATUS,
    errors=(400, *_CLOCK_ERRORS, 413, 422),
)
def set_rate(body: RateBody) -> dict[str, Any]:
    rt = _running()
    rt.set_rate(body.rate_hz)
    return _status(rt)


@bp.post("/snapshot")
@operation(
    "Take a snapshot of the full state now (hash, and store it)",
    tags=("admin",),
    security=ADMIN,
    responses={200: Reply("Tick and state hash", Checkpoint)},
    errors=_CLOCK_ERRORS,
)
def take_snapshot() -> dict[str, Any]:
    """Hash (and store, when the runtime has a store) the full state, on the loop thread
    between two ticks; works paused too."""
    rt = _running()
    try:
        return rt.checkpoint(STEP_TIMEOUT)
    except (concurrent.futures.TimeoutError, concurrent.futures.CancelledError):
        raise WorldNotRunning("the loop did not take the snapshot in time") from None


def _running() -> WorldRuntime:
    rt = get_runtime()
    if not rt.running:
        raise WorldNotRunning(f"world {rt.name!r} is not running in this process")
    return rt


def _remember_pause(rt: WorldRuntime, paused: bool) -> None:
    """An extra world comes back paused (or not) after a restart: its catalog entry says."""
    state_of().host.record_pause(rt.name, paused)


def _status(rt: WorldRuntime) -> dict[str, Any]:
    stats = rt.stats()
    return {
        "world": rt.name,
        "tick": rt.tick,
        "rate_hz": stats.rate_hz,
        "paused": stats.paused,
        "running": rt.running,
        "queue_depth": rt.queue_depth,
    }
