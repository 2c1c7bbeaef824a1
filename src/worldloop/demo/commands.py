"""The meadow's commands, one pydantic model per type: what a payload may hold and how it is
cleaned. ``Meadow.commands`` declares them, so ``World.validate`` checks them and the API
documents them; nothing here reads the live world (validation runs on request threads).
"""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    model_serializer,
)

from ..models import Finite, Utf8

MAX_SPEED = 50.0
MAX_COORD = 1e9
MAX_NAME = 32
MAX_SAY = 200
MAX_FORECAST_TICKS = 20_000
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def clean_name(value: str) -> str:
    """A player name: 1..32 printable characters, surrounding spaces removed."""
    name = value.strip()
    if not 1 <= len(name) <= MAX_NAME or _CONTROL.search(name):
        raise ValueError(f"name must be 1..{MAX_NAME} printable characters")
    return name


def clean_text(value: str) -> str:
    """Chat text: control characters become spaces, 1..200 characters once trimmed."""
    text = _CONTROL.sub(" ", value).strip()
    if not 1 <= len(text) <= MAX_SAY:
        raise ValueError(f"text must be 1..{MAX_SAY} characters")
    return text


Name = Annotated[Utf8, AfterValidator(clean_name), Field(description="1..32 printable characters")]
Text = Annotated[Utf8, AfterValidator(clean_text), Field(description="1..200 characters")]
Coord = Annotated[Finite, Field(ge=-MAX_COORD, le=MAX_COORD)]
Speed = Annotated[Finite, Field(ge=-MAX_SPEED, le=MAX_SPEED)]
EntityId = Annotated[int, Field(ge=1, le=2**53)]
OwnAvatar = Annotated[
    EntityId | None,
    Field(description="Optional: it must be your own avatar (403 otherwise)."),
]


class Payload(BaseModel):
    """Strict JSON types (no "1" for 1, no true for 1); unknown keys are ignored. Absent optional
    fields stay absent in the journaled payload."""

    model_config = ConfigDict(strict=True, allow_inf_nan=False, frozen=True)

    @model_serializer(mode="wrap")
    def _without_nones(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        return {k: v for k, v in handler(self).items() if v is not None}


class MoveTo(Payload):
    """Walk the avatar to a point (the shortest way round the torus)."""

    x: Coord
    y: Coord
    entity_id: OwnAvatar = None


class Stop(Payload):
    """Stand still."""

    entity_id: OwnAvatar = None


class Plant(Payload):
    """Regrow the grass of the avatar's cell (409 cell_full when it is already full grown)."""

    entity_id: OwnAvatar = None


class Say(Payload):
    """Chat: the last 50 lines are kept in the snapshot."""

    text: Text
    entity_id: OwnAvatar = None


class Join(Payload):
    """Internal: make a player's avatar (POST /players sends it; the token is kept hashed)."""

    player_id: Annotated[str, Field(pattern=r"^[0-9a-f]{32}$")]
    name: Name
    token_hash: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]


class Move(Payload):
    """Internal: set an entity's velocity."""

    entity_id: EntityId
    vx: Speed
    vy: Speed


PLAYER_COMMANDS: dict[str, type[BaseModel]] = {
    "move_to": MoveTo,
    "stop": Stop,
    "plant": Plant,
    "say": Say,
}
"""What a player may send through the API."""


class Forecast(Payload):
    """Internal: forecast the meadow ``ticks`` ahead, off the tick (POST /api/v1/forecast)."""

    ticks: Annotated[int, Field(ge=1, le=MAX_FORECAST_TICKS)] = 2000


INTERNAL_COMMANDS: dict[str, type[BaseModel]] = {"join": Join, "move": Move, "forecast": Forecast}
