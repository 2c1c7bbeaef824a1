"""GET /api/v1/world: the world's summary, read from the latest snapshot (no locks)."""

from __future__ import annotations

from typing import Any

from flask import Blueprint

from ..state import get_runtime

bp = Blueprint("worldloop_world", __name__, url_prefix="/api/v1")


@bp.get("/world")
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
