"""Admin endpoints (Bearer admin token): pause, resume, step n, set rate, take a snapshot."""

from __future__ import annotations

import concurrent.futures
import math
from typing import Any

from flask import Blueprint

from ..clock import MAX_RATE_HZ, MIN_RATE_HZ
from ..errors import ClockStateError, CommandInvalid, WorldNotRunning
from ..runtime import WorldRuntime
from ..state import get_runtime
from .auth import require_admin
from .common import json_object

bp = Blueprint("worldloop_admin", __name__, url_prefix="/api/v1/admin")

MAX_STEP = 1000
STEP_TIMEOUT = 30.0


@bp.get("/status")
@require_admin
def status() -> dict[str, Any]:
    return _status(get_runtime())


@bp.post("/pause")
@require_admin
def pause() -> dict[str, Any]:
    rt = _running()
    rt.pause()
    return _status(rt)


@bp.post("/resume")
@require_admin
def resume() -> dict[str, Any]:
    rt = _running()
    rt.resume()
    return _status(rt)


@bp.post("/step")
@require_admin
def step() -> dict[str, Any]:
    rt = _running()
    body = json_object()
    n = body.get("n", 1)
    if not isinstance(n, int) or isinstance(n, bool) or not 1 <= n <= MAX_STEP:
        raise CommandInvalid(f"n must be an integer in 1..{MAX_STEP}", details={"field": "n"})
    if not rt.stats().paused:
        raise ClockStateError("pause the world before stepping it")
    try:
        rt.step(n, timeout=STEP_TIMEOUT)
    except (concurrent.futures.TimeoutError, concurrent.futures.CancelledError):
        raise WorldNotRunning(f"the {n} steps did not finish in {STEP_TIMEOUT:g} s") from None
    except ValueError as exc:
        raise ClockStateError(str(exc)) from None
    return {**_status(rt), "stepped": n}


@bp.post("/rate")
@require_admin
def set_rate() -> dict[str, Any]:
    rt = _running()
    body = json_object()
    hz = body.get("rate_hz", body.get("hz"))
    if (
        not isinstance(hz, int | float)
        or isinstance(hz, bool)
        or not math.isfinite(hz)
        or not MIN_RATE_HZ <= hz <= MAX_RATE_HZ
    ):
        raise CommandInvalid(
            f"rate_hz must be a number in [{MIN_RATE_HZ:g}, {MAX_RATE_HZ:g}]",
            details={"field": "rate_hz"},
        )
    rt.set_rate(float(hz))
    return _status(rt)


@bp.post("/snapshot")
@require_admin
def take_snapshot() -> dict[str, Any]:
    """Hash (and store, when the runtime has a store) the full state, on the loop thread
    between two ticks; works paused too. A runtime's own ``take_snapshot()`` wins if it has one."""
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
