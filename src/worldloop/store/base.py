"""The store interface the runtime talks to; the engine knows no database.

Journal model: tick ``k`` is the state after ``k`` calls of ``World.step``. The commands applied
by the step that produced tick ``k`` are journaled under ``k``, with their outcome. A per-world
*head* holds the last durable tick (written in the same transaction as that tick's commands), so
recovery steps every tick from the snapshot to the head, empty ticks included.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from ..commands import Outcome
from ..snapshot import _default

JournalRecord = Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class Recovery:
    """What a store hands back: a snapshot and the journal after it, up to ``head_tick``."""

    snapshot_tick: int | None
    state: Mapping[str, Any] | None
    state_hash: str | None
    head_tick: int | None = None
    """Last durable tick to replay up to (None: nothing stored for this world)."""
    commands: Mapping[int, Sequence[JournalRecord]] = field(default_factory=dict)
    """Command records by tick, in application order, for ticks after the snapshot."""
    hashes: Mapping[int, str] = field(default_factory=dict)
    """State hashes recorded at some ticks after the snapshot (checked during replay)."""
    last_seq: int = 0


@dataclass(frozen=True, slots=True)
class SnapshotInfo:
    """One stored snapshot, without its data."""

    tick: int
    state_hash: str
    size: int
    created_at: float


class Store(Protocol):
    """A durable home for one or more worlds' journals and snapshots."""

    def load(
        self, world: str, upto: int | None = None, *, snapshot_tick: int | None = None
    ) -> Recovery:
        """The latest snapshot (at or before ``upto``, or exactly ``snapshot_tick``) and every
        journaled tick after it, up to ``upto`` or the head."""
        ...

    def append(
        self,
        world: str,
        tick: int,
        records: Sequence[JournalRecord],
        state_hash: str | None = None,
    ) -> None:
        """Durably record the commands applied in ``tick`` and advance the head, atomically."""
        ...

    def head(self, world: str) -> int | None:
        """The last durable tick, or None."""
        ...

    def save_snapshot(
        self, world: str, tick: int, state: Mapping[str, Any], state_hash: str
    ) -> None:
        """Durably store a full state as of the end of ``tick``."""
        ...

    def snapshots(self, world: str) -> list[SnapshotInfo]:
        """Stored snapshots of ``world`` (without data), oldest first."""
        ...

    def prune(self, world: str, retention_ticks: int) -> None:
        """Drop journal rows and snapshots no longer needed (see SqlStore.prune)."""
        ...

    def find_command(self, world: str, command_id: str) -> dict[str, Any] | None:
        """A journaled command as GET /commands/{id} shows it, or None."""
        ...

    def close(self) -> None: ...


def journal_record(outcome: Outcome) -> dict[str, Any]:
    """The journal form of an applied (or rejected) command: replay input plus its outcome."""
    record = outcome.command.to_record()
    if outcome.ok:
        record["ok"] = True
        record["result"] = _jsonable(outcome.result)
    else:
        record["ok"] = False
        record["error"] = {
            "code": outcome.error_code,
            "message": outcome.error_message,
            "details": _jsonable(dict(outcome.error_details or {})),
        }
    return record


def _jsonable(value: Any) -> Any:
    """``value`` made JSON-safe (NumPy values converted; anything else becomes its repr)."""
    try:
        return json.loads(json.dumps(value, default=_default))
    except (TypeError, ValueError):
        return repr(value)
