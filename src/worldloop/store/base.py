"""The store interface the runtime talks to; the engine knows no database."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass(frozen=True, slots=True)
class Recovery:
    """What a store hands back on start: the last snapshot and the journal after it."""

    snapshot_tick: int | None
    state: Mapping[str, Any] | None
    state_hash: str | None
    ticks: Sequence[tuple[int, Sequence[Mapping[str, Any]]]] = field(default_factory=tuple)
    """(tick, command records applied in that tick), in tick order, after the snapshot."""
    last_seq: int = 0


class Store(Protocol):
    """A durable home for one or more worlds' journals and snapshots."""

    def load(self, world: str) -> Recovery:
        """The latest snapshot and every journaled tick after it."""
        ...

    def append(
        self, world: str, tick: int, records: Sequence[Mapping[str, Any]], state_hash: str | None
    ) -> None:
        """Durably record the commands applied in ``tick``, in one transaction."""
        ...

    def save_snapshot(
        self, world: str, tick: int, state: Mapping[str, Any], state_hash: str
    ) -> None:
        """Durably store a full state as of the end of ``tick``."""
        ...

    def close(self) -> None: ...
