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

from ..models import Finite, Integral, ValidUnicode

MAX_SPEED = 50.0
MAX_COORD = 1e9
MAX_NAME = 32
MAX_SAY = 200
MAX_FORECAST_TICKS = 20_000
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


NAME_PATTERN = r"^[^\x00-\x1f\x7f]*[^\x00-\x20\x7f][^\x00-\x1f\x7f]*$"
"""No control character, and something besides spaces."""
TEXT_PATTERN = r"[^\x00-\x20\x7f]"
"""Something besides spaces and control characters (JSON Schema patterns are not anchored)."""


def clean_name(value: str) -> str:
    """A player name, its pattern and length checked: surrounding spaces removed."""
    return value.strip(" ")


def clean_text(value: str) -> str:
    """Chat text, its pattern and length checked: control characters become spaces, and
    surrounding spaces are removed."""
    return _CONTROL.sub(" ", value).strip(" ")


Name = Annotated[
    str,
    Field(
        min_length=1,
        max_length=MAX_NAME,
        pattern=NAME_PATTERN,
        description=f"1..{MAX_NAME} characters, no control characters, not only spaces "
        "(surrounding spaces are removed)",
    ),
    ValidUnicode,
    AfterValidator(clean_name),
]
Text = Annotated[
    str,
    Field(
        min_length=1,
        max_length=MAX_SAY,
        pattern=TEXT_PATTERN,
        description=f"1..{MAX_SAY} characters, not only spaces and control characters (control "
        "characters become spaces; surrounding spaces are removed)",
    ),
    ValidUnicode,
    AfterValidator(clean_text),
]
Coord = Annotated[Finite, Field(ge=-MAX_COORD, le=MAX_COORD)]
Speed = Annotated[Finite, Field(ge=-MAX_SPEED, le=MAX_SPEED)]
EntityId = Annotated[int, Field(ge=1, le=2**53), Integral]
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

    ticks: Annotated[int, Field(ge=1, le=MAX_FORECAST_TICKS), Integral] = 2000


INTERNAL_COMMANDS: dict[str, type[BaseModel]] = {"join": Join, "move": Move, "forecast": Forecast}
