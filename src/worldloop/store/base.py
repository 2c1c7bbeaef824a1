"""The store protocol the engine talks to; the engine knows no database.

Journal model: tick ``k`` is the state after ``k`` calls of ``World.step``. The commands applied
by the step that produced tick ``k`` are journaled under ``k``, with their outcome. A per-world
*head* holds the last durable tick (written in the same transaction as that tick's commands), so
recovery steps every tick from the snapshot to the head, empty ticks included.

Every backend (``store/memory.py``, ``store/sql.py``, a plug-in) implements :class:`Store` with
the same semantics, checked by one contract suite (``tests/contracts/test_store_contract.py``).
The helpers below hold the parts of those semantics that do not depend on where data is kept,
so two backends cannot drift apart on them.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from ..commands import Outcome
from ..errors import StoreError
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
    """A durable home for one or more worlds' journals and snapshots (keyed by world name).

    Thread-safe: the loop thread journals, the snapshot writer saves and prunes, and request
    threads read (``find_command``, ``check_writable``) at the same time. Every failure is a
    :class:`StoreError`. Opened by URL with :func:`worldloop.store.open_store`.
    """

    @property
    def url(self) -> str:
        """Where the data lives (the URL it was opened with)."""
        ...

    def open(self) -> None:
        """Connect and check now instead of at first use (idempotent; also reopens after
        :meth:`close`). Raises StoreError when the store is missing, damaged or too new."""
        ...

    def check_writable(self, timeout: float = 0.25) -> None:
        """Raise StoreError unless a write could start now, within ``timeout`` s (/readyz)."""
        ...

    # -- the journal (loop thread) -------------------------------------------------------------

    def append(
        self,
        world: str,
        tick: int,
        records: Sequence[JournalRecord],
        state_hash: str | None = None,
    ) -> None:
        """Durably record the commands applied in ``tick`` (in order) and, when given, the
        state hash at ``tick``, and advance the head to ``tick``: all or nothing. Returns only
        once it is durable: the runtime acknowledges the commands after this."""
        ...

    def head(self, world: str) -> int | None:
        """The last durable tick, or None when nothing is stored for ``world``."""
        ...

    def load(
        self, world: str, upto: int | None = None, *, snapshot_tick: int | None = None
    ) -> Recovery:
        """The latest snapshot at or before ``upto`` (default: the head), or exactly the one
        of ``snapshot_tick``, and every journaled tick after it up to ``upto`` or the head.

        An empty store gives ``Recovery(None, None, None)``. Raises StoreError when the data
        cannot rebuild that tick (no such snapshot, ``upto`` after the head, bad checksum).
        """
        ...

    def find_command(self, world: str, command_id: str) -> dict[str, Any] | None:
        """A journaled command as GET /commands/{id} shows it (see :func:`command_view`)."""
        ...

    def find_key(self, world: str, scope: str) -> tuple[int, JournalRecord] | None:
        """The journaled command submitted with idempotency key ``scope`` (the record's
        ``key``), as ``(tick, record)``; None if the journal holds none (or pruned it)."""
        ...

    def journal_range(self, world: str) -> tuple[int | None, int | None, int]:
        """(first tick still journaled with commands, head, number of journaled commands)."""
        ...

    # -- snapshots (writer thread) ---------------------------------------------------------------

    def save_snapshot(
        self, world: str, tick: int, state: Mapping[str, Any], state_hash: str
    ) -> None:
        """Durably store a full state as of the end of ``tick`` (replaces one of the same
        tick). The stored copy is independent of ``state``: mutating it later changes nothing."""
        ...

    def snapshots(self, world: str) -> list[SnapshotInfo]:
        """Stored snapshots of ``world`` (without data), oldest first."""
        ...

    def prune(self, world: str, retention_ticks: int, *, interim: Collection[int] = ()) -> None:
        """Drop the journal and snapshots no longer needed (see :func:`prune_plan`)."""
        ...

    def close(self) -> None:
        """Release connections and files. Durable backends keep their data for a reopen."""
        ...


def prune_plan(
    snapshot_ticks: Sequence[int], retention_ticks: int, interim: Collection[int] = ()
) -> tuple[int | None, list[int]] | None:
    """What :meth:`Store.prune` removes: ``(base, snapshots to drop)``, or None for nothing
    (a None base: no journal goes).

    Keep what rebuilds any tick from ``latest snapshot - retention_ticks`` onwards: the *base*
    is the newest snapshot at or before both the previous snapshot and that tick. Journal ticks
    up to the base (commands and hashes) and snapshots older than it go, so every tick from the
    base to the head can still be rebuilt. The ``interim`` snapshots (taken only to keep restarts
    short) also go once two newer snapshots exist, unless one is the base: the journal still
    rebuilds their ticks from an older kept snapshot. ``snapshot_ticks`` is ascending.
    """
    if len(snapshot_ticks) < 2:
        return None
    latest, prev = snapshot_ticks[-1], snapshot_ticks[-2]
    limit = min(prev, latest - max(0, retention_ticks))
    older = [t for t in snapshot_ticks if t <= limit]
    base = older[-1] if older else None
    drop = [t for t in snapshot_ticks if base is not None and t < base]
    drop += [t for t in snapshot_ticks if t in interim and t < prev and (base is None or t > base)]
    if base is None and not drop:
        return None
    return base, drop


def check_window(
    world: str, head_tick: int | None, snap_tick: int | None, upto: int | None, oldest: int | None
) -> int | None:
    """The last tick :meth:`Store.load` replays to, or None for an empty store; raises the
    same StoreError from every backend when the window cannot be rebuilt.

    ``snap_tick`` is the snapshot chosen for ``upto`` (None if there is none), ``oldest`` the
    oldest stored snapshot (for the message).
    """
    if snap_tick is None:
        if head_tick is None and upto is None:
            return None
        raise StoreError(
            f"world {world!r}: no snapshot at or before tick "
            f"{upto if upto is not None else head_tick} (journal head {head_tick}, "
            f"oldest snapshot {oldest}); the store cannot rebuild it",
            details={"world": world, "head": head_tick, "oldest_snapshot": oldest},
        )
    last = max(head_tick if head_tick is not None else snap_tick, snap_tick)
    target = last if upto is None else upto
    if target > last:
        raise StoreError(
            f"world {world!r}: tick {target} is after the last journaled tick {last}",
            details={"world": world, "head": last},
        )
    return target


def command_view(tick: int, record: JournalRecord) -> dict[str, Any]:
    """A journal record as GET /commands/{id} shows it: id, type, status, tick, result/error,
    and the ``actor`` who sent it (None for the engine's own), for the API's owner check."""
    out: dict[str, Any] = {
        "command_id": record["id"],
        "type": record["type"],
        "status": "applied" if record.get("ok") else "rejected",
        "tick": int(tick),
        "actor": record.get("actor"),
    }
    if record.get("ok"):
        out["result"] = record.get("result")
    else:
        out["error"] = record.get("error") or {}
    return out


def encode_record(record: JournalRecord) -> str:
    """The stored text of a journal record (compact, sorted keys: equal records, equal text)."""
    return json.dumps(record, separators=(",", ":"), sort_keys=True)


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
