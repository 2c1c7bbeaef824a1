"""GET /api/v1/entities (bbox query, paged by id) and GET /api/v1/entities/{id}."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, request

from ..state import get_runtime
from .common import player_world, query_bbox, query_int
from .errors import BadRequest, NotFound

bp = Blueprint("worldloop_entities", __name__, url_prefix="/api/v1")

MAX_LIMIT = 1000
MAX_ID = 2**63 - 1


@bp.get("/entities")
def list_entities() -> dict[str, Any]:
    rt = get_runtime()
    world = player_world(rt)
    bbox = query_bbox()
    limit = query_int("limit", 100, 1, MAX_LIMIT)
    after = _cursor(request.args.get("cursor"))
    snap = rt.snapshot
    items, next_id = world.page_entities(snap, bbox, limit, after)
    return {
        "tick": snap.tick,
        "items": items,
        "next_cursor": None if next_id is None else str(next_id),
    }


@bp.get("/entities/<int:entity_id>")
def get_entity(entity_id: int) -> dict[str, Any]:
    rt = get_runtime()
    world = player_world(rt)
    snap = rt.snapshot
    found = world.find_entity(snap, entity_id) if entity_id <= MAX_ID else None
    if found is None:
        raise NotFound(f"no entity {entity_id}", details={"entity_id": entity_id})
    return {"tick": snap.tick, **found}


def _cursor(raw: str | None) -> int:
    """Cursors are opaque to clients; they are the last id of the previous page."""
    if raw is None or raw == "":
        return 0
    if not raw.isascii() or not raw.isdigit() or len(raw) > 19 or int(raw) > MAX_ID:
        raise BadRequest("cursor is not one this API issued", details={"param": "cursor"})
    return int(raw)
