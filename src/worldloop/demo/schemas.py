"""What the meadow publishes, as pydantic models: they add its own fields to the API's generic
schemas in the OpenAPI document (``Meadow.view_models``), and describe the demo's leaderboard."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, Field


class MeadowSummary(BaseModel):
    """The clock's state, then the meadow's summary: counts, grass, births and deaths."""

    entity_count: int
    creature_count: int
    player_count: int
    grass_total: float
    births: int
    deaths: int


class MeadowEntity(BaseModel):
    """A sheep, or a player's avatar (avatars carry player_id and name)."""

    id: int
    kind: Literal["sheep", "avatar", "unknown"]
    x: float
    y: float
    energy: float
    age: int
    player_id: str | None
    name: str | None
    tick: int = Field(0, description="The tick it was read at (single-entity reads).")


class LeaderboardEntry(BaseModel):
    rank: Annotated[int, Field(ge=1)]
    entity_id: int
    kind: Literal["sheep", "avatar"]
    score: float


class Leaderboard(BaseModel):
    """The best-fed creatures, as the leaderboard job last wrote them."""

    world: str
    tick: int
    sim_time: float
    slot: float | None = Field(description="null for a manual run")
    entries: list[LeaderboardEntry]


VIEW_MODELS: dict[str, type[BaseModel]] = {"WorldSummary": MeadowSummary, "Entity": MeadowEntity}
