"""GET /api/v1/world: the world's summary, read from the latest snapshot (no locks).

The hottest read of all: its JSON is rendered once per published snapshot and loop state
(rate, paused, running) and the same bytes serve every request until one of them changes.
"""

from __future__ import annotations

from typing import Any, cast
from weakref import WeakKeyDictionary

from flask import Blueprint, Flask, Response, current_app
from pydantic import BaseModel, ConfigDict

from ..clock import TickerStats
from ..runtime import WorldRuntime
from ..snapshot import Snapshot
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


_RENDERED: WeakKeyDictionary[WorldRuntime, tuple[tuple[Any, ...], bytes, str]] = WeakKeyDictionary()
"""Per runtime, the last summary rendered and what it was rendered from: the snapshot itself
(by identity: a runner restarted at the same tick publishes a new one), the loop's rate, paused
and running, and the app's JSON provider. One entry per runtime, replaced on any change; the
previous snapshot it holds lives until the next summary request at most."""


def summary_of(snap: Snapshot, stats: TickerStats, running: bool) -> dict[str, Any]:
    """The summary's JSON object: the clock's state, then the world's own summary keys."""
    return {
        "world": snap.world,
        "tick": snap.tick,
        "sim_time": snap.sim_time,
        "rate_hz": stats.rate_hz,
        "paused": stats.paused,
        "running": running,
        **snap.summary,
    }


@bp.get("/world")
@operation(
    "World summary (latest snapshot)",
    tags=("world",),
    responses={200: Reply("Summary", WorldSummary)},
    errors=(503,),
)
def world_summary() -> Response:
    rt = get_runtime()
    snap = rt.snapshot
    stats = rt.stats()
    running = rt.running
    app: Flask = current_app._get_current_object()  # type: ignore[attr-defined]
    key = (snap, stats.rate_hz, stats.paused, running, app.json)
    found = _RENDERED.get(rt)
    if found is None or found[0] != key:
        # rendered by the app's own JSON provider, exactly as returning the dict would be
        rendered = cast(Response, app.json.response(summary_of(snap, stats, running)))
        found = _RENDERED[rt] = (key, rendered.get_data(), rendered.content_type or "")
    return app.response_class(found[1], content_type=found[2])
