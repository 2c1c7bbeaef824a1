"""What the player-facing API needs from a world beyond the World base (all reader-side hooks).

Every method reads only a published snapshot, never the live world, so handlers stay off the
loop thread's state. A world without these hooks still serves the engine endpoints.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

from ..snapshot import Snapshot


@runtime_checkable
class PlayerWorld(Protocol):
    """A world with players, avatars and queryable entities (the meadow game implements it).

    Players may send the command types the world declares in ``World.commands``.
    """

    def join_command(
        self, player_id: str, name: Any, token_hash: str
    ) -> tuple[str, dict[str, Any]]: ...

    def player_for_token(self, snapshot: Snapshot, token_hash: str) -> str | None: ...

    def avatar_of(self, snapshot: Snapshot, player_id: str) -> int | None: ...

    def find_entity(self, snapshot: Snapshot, entity_id: int) -> dict[str, Any] | None: ...

    def page_entities(
        self,
        snapshot: Snapshot,
        bbox: tuple[float, float, float, float] | None,
        limit: int,
        after_id: int,
    ) -> tuple[list[dict[str, Any]], int | None]: ...
