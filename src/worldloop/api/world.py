"""GET /api/v1/world: the world's summary, read from the latest snapshot (no locks)."""

from __future__ import annotations

from typing import Any

from flask import Blueprint
from pydantic import BaseModel, ConfigDict

from ..state import get_runtime
from .declare import Reply, operation

bp = Blueprint("worldloop_world", __name__, url_prefix="/api/v1")


class WorldSummary(BaseModel):
    """The clock's state, then the world's own ``summary()`` keys (a world documents them by
    refining this model in ``World.view_models``)."""

    model_config = ConfigDict(extra="allow")

    world: str
    tick: int
    sim_time: float
    rate_hz: float
    paused: bool
    running: bool


@bp.get("/world")
@operation(
    "World summary (latest snapshot)",
    tags=("world",),
    responses={200: Reply("Summary", WorldSummary)},
    errors=(503,),
)
def world_summary() -> dict[str, Any]:
    rt = get_runtime()
    snap = rt.snapshot
    stats = rt.stats()
    return {
        "world": snap.world,
        "tick": snap.tick,
        "sim_time": snap.sim_time,
        "rate_hz": stats.rate_hz,
        "paused": stats.paused,
        "running": rt.running,
        **snap.summary,
    }
