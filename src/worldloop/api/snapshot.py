"""GET /api/v1/world/snapshot: the whole published state, serialized once per tick.

ETag carries the tick; If-None-Match answers 304; ``?after_tick=N`` long-polls (bounded) for
the first snapshot newer than N.
"""

from __future__ import annotations

from flask import Blueprint, Response, request

from ..state import current_settings, get_runtime
from .common import query_float, query_int

bp = Blueprint("worldloop_snapshot", __name__, url_prefix="/api/v1")


@bp.get("/world/snapshot")
def world_snapshot() -> Response:
    rt = get_runtime()
    after = query_int("after_tick", -1, -1, 2**62)
    max_wait = current_settings().long_poll_max
    timeout = query_float("timeout", min(10.0, max_wait), 0.0, max_wait)
    snap = rt.snapshot
    if after >= 0 and snap.tick <= after:
        snap = rt.wait_for_snapshot(after, timeout)
    headers = {
        "ETag": snap.etag,
        "X-World-Tick": str(snap.tick),
        "Cache-Control": "no-cache",
    }
    if snap.etag in _etags(request.headers.get("If-None-Match", "")):
        return Response(status=304, headers=headers)
    return Response(snap.to_json(), status=200, mimetype="application/json", headers=headers)


def _etags(header: str) -> set[str]:
    tags = {t.strip().removeprefix("W/") for t in header.split(",") if t.strip()}
    return tags
