"""GET /api/v1/entities (bbox query, paged by id) and GET /api/v1/entities/{id}."""

from __future__ import annotations

from typing import Any

from flask import Blueprint
from pydantic import BaseModel, ConfigDict

from ..state import get_runtime
from .common import player_world
from .declare import Reply, operation
from .errors import NotFound
from .params import MAX_ID, EntitiesQuery

bp = Blueprint("worldloop_entities", __name__, url_prefix="/api/v1")


class Entity(BaseModel):
    """One entity as the world's ``find_entity`` shows it (a world documents its fields by
    refining this model in ``World.view_models``)."""

    model_config = ConfigDict(extra="allow")

    id: int
    kind: str


class EntityPage(BaseModel):
    tick: int
    items: list[Entity]
    next_cursor: str | None


@bp.get("/entities")
@operation(
    "Entities in a bounding box, by id, paged",
    tags=("world",),
    query=EntitiesQuery,
    responses={200: Reply("A page of entities", EntityPage)},
    errors=(400, 404, 503),
)
def list_entities(query: EntitiesQuery) -> dict[str, Any]:
    rt = get_runtime()
    world = player_world(rt)
    snap = rt.snapshot
    items, next_id = world.page_entities(snap, query.bbox, query.limit, query.cursor)
    return {
        "tick": snap.tick,
        "items": items,
        "next_cursor": None if next_id is None else str(next_id),
    }


@bp.get("/entities/<int:entity_id>")
@operation(
    "One entity",
    tags=("world",),
    responses={200: Reply("The entity (with the tick it was read at)", Entity)},
    errors=(404, 503),
)
def get_entity(entity_id: int) -> dict[str, Any]:
    rt = get_runtime()
    world = player_world(rt)
    snap = rt.snapshot
    found = world.find_entity(snap, entity_id) if entity_id <= MAX_ID else None
    if found is None:
        raise NotFound(f"no entity {entity_id}", details={"entity_id": entity_id})
    return {"tick": snap.tick, **found}
