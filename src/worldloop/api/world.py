"""GET /api/v1/world: the world's summary, read from the latest snapshot (no locks).

The hottest read of all: its JSON is rendered once per published snapshot and loop state
(rate, paused, running) and the same bytes serve every request until one of them changes.
"""

from __future__ import annotations

import weakref
from typing import Any, NamedTuple, cast

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


class _Rendered(NamedTuple):
    """A summary rendered, and what from: the snapshot (weakly: by identity, as a runner
    restarted at the same tick publishes a new one) and the loop state and JSON provider."""

    snapshot: weakref.ref[Snapshot]
    state: tuple[float, bool, bool, Any]
    body: bytes
    content_type: str


_RENDERED: weakref.WeakKeyDictionary[WorldRuntime, _Rendered] = weakref.WeakKeyDictionary()
"""Per runtime, the last summary rendered: one entry, replaced when the snapshot, the loop's
rate, paused or running, or the app's JSON provider change. It refers to its snapshot weakly,
so a superseded snapshot is freed as soon as the runtime lets go of it, not at the next
summary request."""


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
    state = (stats.rate_hz, stats.paused, running, app.json)
    found = _RENDERED.get(rt)
    if found is None or found.snapshot() is not snap or found.state != state:
        # rendered by the app's own JSON provider, exactly as returning the dict would be
        rendered = cast(Response, app.json.response(summary_of(snap, stats, running)))
        found = _Rendered(
            weakref.ref(snap), state, rendered.get_data(), rendered.content_type or ""
        )
        _RENDERED[rt] = found
    return app.response_class(found.body, content_type=found.content_type)
