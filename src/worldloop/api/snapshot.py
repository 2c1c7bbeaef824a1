"""GET /api/v1/world/snapshot: the whole published state, serialized once per tick.

ETag carries the tick; If-None-Match (a list, weak tags, ``*``: Werkzeug's parsing) answers
304; ``?after_tick=N`` long-polls (bounded) for the first snapshot newer than N.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response
from pydantic import BaseModel

from ..state import current_settings, get_runtime
from .common import not_modified
from .declare import Reply, operation
from .params import SnapshotQuery

bp = Blueprint("worldloop_snapshot", __name__, url_prefix="/api/v1")


class Snapshot(BaseModel):
    """One published tick: the world's ``view()`` as ``data`` (private ``_`` keys left out)."""

    world: str
    tick: int
    sim_time: float
    created_at: float
    summary: dict[str, Any]
    data: dict[str, Any]


@bp.get("/world/snapshot")
@operation(
    "The whole published state; ETag is the tick; long-poll",
    tags=("world",),
    query=SnapshotQuery,
    headers=(("If-None-Match", "An ETag from an earlier answer: 304 when unchanged."),),
    responses={
        200: Reply("The snapshot", Snapshot, headers=("ETag",)),
        304: Reply("Unchanged since the ETag sent"),
    },
    errors=(400, 503),
)
def world_snapshot(query: SnapshotQuery) -> Response:
    rt = get_runtime()
    snap = rt.snapshot
    if query.after_tick >= 0 and snap.tick <= query.after_tick:
        timeout = query.timeout
        if timeout is None:
            timeout = min(10.0, current_settings().long_poll_max)
        snap = rt.wait_for_snapshot(query.after_tick, timeout)
    headers = {
        "ETag": snap.etag,
        "X-World-Tick": str(snap.tick),
        "Cache-Control": "no-cache",
    }
    if not_modified(snap.etag):
        return Response(status=304, headers=headers)
    return Response(snap.to_json(), status=200, mimetype="application/json", headers=headers)
