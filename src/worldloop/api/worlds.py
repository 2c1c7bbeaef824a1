"""Many worlds over HTTP: ``/api/v1/worlds`` (list, create, delete) and every per-world route
under ``/api/v1/worlds/<world>/...``.

The per-world routes are the v1 handlers themselves, not copies: each world-aware blueprint is
registered a second time under ``/api/v1/worlds/<world>``, and a URL value preprocessor moves
``world`` from the URL into ``flask.g`` (404 JSON for a world this app does not host), where
``get_runtime()`` finds it. The routes of today keep meaning the default world.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from flask import Blueprint, Flask, g
from pydantic import BaseModel, ConfigDict, Field

from ..names import NAME_RE
from ..state import WORLD_KEY, get_world, request_world, state_of
from .auth import ADMIN
from .common import limiter
from .declare import Reply, operation
from .snapshot import world_snapshot
from .world import world_summary

bp = Blueprint("worldloop_worlds", __name__, url_prefix="/api/v1/worlds")

PREFIX = "/api/v1/worlds/<world>"
SCOPED = (
    "worldloop_entities",
    "worldloop_players",
    "worldloop_commands",
    "worldloop_admin",
    "worldloop_stream",
    "worldloop_jobs",
    "worldloop_live",
)
"""The blueprints whose routes also serve every world under :data:`PREFIX`."""
SUFFIX = "_of_world"

WorldName = Annotated[
    str,
    Field(
        pattern=NAME_RE.pattern,
        description="1 to 64 letters, digits, '-' or '_', starting with a letter or digit.",
    ),
]


class RunnerInfo(BaseModel):
    """The process that runs a world (the Redis mode)."""

    host: str
    pid: int


class WorldInfo(BaseModel):
    """One world of this server, as the list shows it."""

    name: str
    kind: str = Field(description="The world's kind; 'default' for the app's own world.")
    default: bool
    status: Literal["running", "paused", "stopped", "failed", "hibernated"] = Field(
        description="hibernated: idle, unloaded until a request or a due job wakes it."
    )
    tick: int
    rate_hz: float
    players: int | None = None
    error: str | None = Field(None, description="Why a failed world could not start.")
    runner: RunnerInfo | None = Field(
        None, description="The Redis mode: the process that runs the world now (none: moving)."
    )
    epoch: int | None = Field(
        None, description="The Redis mode: the newest owner epoch this server has served."
    )


class WorldList(BaseModel):
    worlds: list[WorldInfo]
    kinds: list[str] = Field(description="The kinds POST /api/v1/worlds can create.")


class CreateWorld(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")

    name: WorldName
    kind: str = Field(min_length=1, max_length=200)
    config: dict[str, Any] = Field(default_factory=dict, description="Given to the kind.")


class DeleteQuery(BaseModel):
    journal: Literal["keep", "drop"] = Field(
        "keep",
        description="keep: the journal and snapshots stay (creating the name again resumes "
        "them); drop: they are deleted from the store.",
    )


class Deleted(BaseModel):
    name: str
    tick: int
    journal: Literal["keep", "drop"]


@bp.get("")
@operation(
    "The worlds of this server (the default one first)",
    tags=("worlds",),
    responses={200: Reply("The worlds", WorldList)},
)
def list_worlds() -> dict[str, Any]:
    host = state_of().host
    return {"worlds": host.summaries(), "kinds": sorted(host.kinds)}


@bp.post("")
@operation(
    "Create a world of a kind (and start it)",
    tags=("worlds", "admin"),
    security=ADMIN,
    body=CreateWorld,
    responses={201: Reply("The new world", WorldInfo)},
    errors=(
        400,
        401,
        403,
        (409, "The name is taken, or the server holds as many worlds as it may"),
        413,
        (422, "Bad name, unknown kind, or a config the kind refused"),
        (429, "Worlds are created faster than WORLDLOOP_WORLD_CREATE_RATE (see Retry-After)"),
        (501, "This process cannot create worlds (a web worker whose runner is unreachable)"),
        503,
    ),
)
def create_world(body: CreateWorld) -> tuple[dict[str, Any], int, dict[str, str]]:
    limiter("world_create").hit("server")
    hosted = state_of().host.create(body.name, body.kind, body.config)
    return hosted.summary(), 201, {"Location": f"/api/v1/worlds/{hosted.name}"}


@bp.delete("/<world>")
@operation(
    "Delete a world: stop it, final snapshot, forget it (journal kept unless dropped)",
    tags=("worlds", "admin"),
    security=ADMIN,
    query=DeleteQuery,
    responses={200: Reply("The deleted world's last tick", Deleted)},
    errors=(400, 401, 403, 404, (409, "The default world cannot be deleted"), 503),
)
def delete_world(query: DeleteQuery) -> dict[str, Any]:
    name = request_world() or get_world().name
    tick = state_of().host.delete(name, drop_journal=query.journal == "drop")
    return {"name": name, "tick": tick, "journal": query.journal}


bp.add_url_rule("/<world>", "world_summary", world_summary, methods=["GET"])
bp.add_url_rule("/<world>/snapshot", "world_snapshot", world_snapshot, methods=["GET"])


def _take_world(endpoint: str | None, values: dict[str, Any] | None) -> None:
    """Move the ``world`` URL value of worldloop's routes into ``g``; 404 for no such world."""
    if not values or "world" not in values or not (endpoint or "").startswith("worldloop_"):
        return
    name = values.pop("world")
    state_of().host.find(name)  # WorldNotFound: 404 JSON before the view runs (not woken)
    g.pop(WORLD_KEY, None)
    g.setdefault(WORLD_KEY, name)


def install_worlds(app: Flask) -> None:
    """Route ``/api/v1/worlds`` and, under it, each registered world-aware blueprint again."""
    if bp.name in app.blueprints:
        return
    app.register_blueprint(bp)
    for name in SCOPED:
        found = app.blueprints.get(name)
        if found is None or found.url_prefix is None:
            continue
        prefix = found.url_prefix.replace("/api/v1", PREFIX, 1)
        app.register_blueprint(found, name=name + SUFFIX, url_prefix=prefix)
    app.url_value_preprocessor(_take_world)
