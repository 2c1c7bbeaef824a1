"""POST /api/v1/players: join the world as an avatar; the token is shown once, kept hashed."""

from __future__ import annotations

import secrets
import uuid
from typing import Any

from flask import Blueprint, request
from pydantic import BaseModel, ConfigDict, Field

from ..errors import CommandInvalid, WorldNotRunning
from ..state import current_settings, get_runtime
from .common import limiter, player_world, token_hash
from .declare import Reply, operation
from .errors import JoinFailed

bp = Blueprint("worldloop_players", __name__, url_prefix="/api/v1")


class NewPlayer(BaseModel):
    model_config = ConfigDict(strict=True)

    name: str = Field(description="The avatar's name; the world checks it (422 names the field).")


class Player(BaseModel):
    player_id: str
    token: str = Field(description="Shown once; send as a Bearer token.")
    entity_id: int
    name: str
    tick: int


@bp.post("/players")
@operation(
    "Join as a player: returns the token once",
    tags=("players",),
    body=NewPlayer,
    responses={201: Reply("The new player and its avatar", Player)},
    errors=(400, 404, 409, 413, 422, 429, 503),
)
def create_player(body: NewPlayer) -> tuple[dict[str, Any], int, dict[str, str]]:
    rt = get_runtime()
    world = player_world(rt)
    limiter("join").hit(f"ip:{request.remote_addr}")
    if rt.stats().paused:
        raise WorldNotRunning("the world is paused; players can join when it resumes")
    player_id = uuid.uuid4().hex
    token = secrets.token_urlsafe(32)
    type_, payload = world.join_command(player_id, body.name, token_hash(token))
    ticket = rt.submit(type_, payload)
    if not ticket.wait(current_settings().command_wait):
        raise WorldNotRunning(
            "the world did not tick in time to add the player; retry",
            details={"command_id": ticket.id},
        )
    outcome = ticket.outcome
    if outcome is None or not outcome.ok:
        if outcome is not None and outcome.error_code == CommandInvalid.code:
            raise CommandInvalid(
                outcome.error_message or "invalid", details=dict(outcome.error_details or {})
            )
        raise JoinFailed(
            (outcome.error_message if outcome else None) or "join failed",
            details=dict(outcome.error_details or {}) if outcome else {},
        )
    result = outcome.result
    body_out = {
        "player_id": player_id,
        "token": token,
        "entity_id": int(result["entity_id"]),
        "name": ticket.command.payload.get("name"),
        "tick": ticket.tick,
    }
    return (
        body_out,
        201,
        {"Cache-Control": "no-store", "Location": f"/api/v1/entities/{body_out['entity_id']}"},
    )
