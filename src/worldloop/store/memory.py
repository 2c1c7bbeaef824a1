"""A store in process memory: the journal and snapshots of the SQL store, without a database.

Same semantics as :class:`~worldloop.store.sql.SqlStore` (one contract suite runs over both):
records are kept as the JSON text the SQL store writes, and snapshots as the bytes of
:mod:`~worldloop.store.codec`, so a stored state is a copy that later changes to the world cannot
reach, and a state the SQL store would refuse is refused here too. ``close`` releases nothing:
``open`` after it finds everything still there. ``memory://`` is private to its object;
``memory://NAME`` is shared by every store opened on that name in this process (until it
exits), so a named store can be reopened, read-only too, like a file. Nothing survives the
process; use SQLite for that.
"""

from __future__ import annotations

import bisect
import json
import threading
import time
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..errors import StoreError
from .base import (
    JournalRecord,
    Recovery,
    SnapshotInfo,
    check_window,
    command_view,
    encode_record,
    prune_plan,
)
from .codec import decode_state, encode_state


@dataclass(slots=True)
class _Stored:
    """One world's data: head, journal by tick, hashes, snapshots, and a command index."""

    head: int | None = None
    last_seq: int = 0
    ticks: list[int] = field(default_factory=list)
    """Journaled ticks that hold commands, ascending (appends come in tick order)."""
    journal: dict[int, list[tuple[str, str]]] = field(default_factory=dict)
    """tick -> [(command id, record text)] in application order."""
    count: int = 0
    hashes: dict[int, str] = field(default_factory=dict)
    snapshots: dict[int, tuple[SnapshotInfo, bytes]] = field(default_factory=dict)
    by_id: dict[str, tuple[int, int]] = field(default_factory=dict)
    """command id -> (tick, position in that tick)."""
    by_key: dict[str, tuple[int, int]] = field(default_factory=dict)
    """idempotency key scope -> (tick, position in that tick)."""


_Worlds = dict[str, _Stored]
_named: dict[str, tuple[threading.Lock, _Worlds]] = {}
_named_lock = threading.Lock()


class MemoryStore:
    """Journal + snapshots in this process's memory (``memory://[NAME]``). Thread-safe."""

    def __init__(self, url: str = "memory://", *, readonly: bool = False) -> None:
        self.url = url
        self.readonly = readonly
        name = url.partition("://")[2]
        if name:
            with _named_lock:
                if name not in _named:
                    _named[name] = (threading.Lock(), {})
                self._lock, self._worlds = _named[name]
        else:
            self._lock = threading.Lock()
            self._worlds = {}

    def __repr__(self) -> str:
        return f"MemoryStore({self.url!r})"

    def open(self) -> None:
        """Nothing to connect to."""

    def drop_world(self, world: str) -> None:
        """Forget everything stored for ``world`` (a deleted world whose journal goes too)."""
        self._writable("drop a world")
        with self._lock:
            self._worlds.pop(world, None)

    def close(self) -> None:
        """Nothing to release; the data stays with the object."""

    def check_writable(self, timeout: float = 0.25) -> None:
        self._writable("write check")

    def _writable(self, what: str) -> None:
        if self.readonly:
            raise StoreError(f"{what}: this store was opened read-only")

    def _world(self, world: str) -> _Stored:
        data = self._worlds.get(world)
        if data is None:
            data = self._worlds[world] = _Stored()
        return data

    # -- the journal ---------------------------------------------------------------------------

    def append(
        self,
        world: str,
        tick: int,
        records: Sequence[JournalRecord],
        state_hash: str | None = None,
    ) -> None:
        self._writable("journal write")
        try:  # encode everything before changing anything: all or nothing
            texts = [encode_record(rec) for rec in records]
            ids = [(str(rec["id"]), int(rec["seq"])) for rec in records]
            keys = [rec.get("key") for rec in records]
        except (TypeError, ValueError, KeyError) as exc:
            raise StoreError(f"journal write failed: a record cannot be stored: {exc}") from exc
        with self._lock:
            data = self._world(world)
            if tick in data.journal or (state_hash is not None and tick in data.hashes):
                raise StoreError(f"journal write failed: tick {tick} of {world!r} is journaled")
            if texts:
                if data.ticks and tick < data.ticks[-1]:
                    bisect.insort(data.ticks, tick)
                else:
                    data.ticks.append(tick)
                data.journal[tick] = [
                    (cid, text) for (cid, _), text in zip(ids, texts, strict=True)
                ]
                data.count += len(texts)
                for pos, (command_id, _seq) in enumerate(ids):
                    data.by_id.setdefault(command_id, (tick, pos))
                    if keys[pos] is not None:
                        data.by_key.setdefault(str(keys[pos]), (tick, pos))
            if state_hash is not None:
                data.hashes[tick] = state_hash
            data.head = tick
            data.last_seq = max([data.last_seq, *(seq for _id, seq in ids)])

    def head(self, world: str) -> int | None:
        with self._lock:
            data = self._worlds.get(world)
            return None if data is None else data.head

    def load(
        self, world: str, upto: int | None = None, *, snapshot_tick: int | None = None
    ) -> Recovery:
        with self._lock:
            data = self._worlds.get(world) or _Stored()
            candidates = [
                t
                for t in data.snapshots
                if (upto is None or t <= upto) and (snapshot_tick is None or t == snapshot_tick)
            ]
            snap_tick = max(candidates) if candidates else None
            oldest = min(data.snapshots) if data.snapshots else None
            target = check_window(world, data.head, snap_tick, upto, oldest)
            if snap_tick is None or target is None:
                return Recovery(None, None, None)
            info, blob = data.snapshots[snap_tick]
            lo = bisect.bisect_right(data.ticks, snap_tick)
            hi = bisect.bisect_right(data.ticks, target)
            journal = {t: [text for _, text in data.journal[t]] for t in data.ticks[lo:hi]}
            hashes = {t: h for t, h in data.hashes.items() if snap_tick < t <= target}
            last_seq = data.last_seq
        return Recovery(
            snapshot_tick=snap_tick,
            state=decode_state(blob),
            state_hash=info.state_hash,
            head_tick=target,
            commands={t: [json.loads(text) for text in texts] for t, texts in journal.items()},
            hashes=hashes,
            last_seq=last_seq,
        )

    def find_command(self, world: str, command_id: str) -> dict[str, Any] | None:
        with self._lock:
            data = self._worlds.get(world)
            where = None if data is None else data.by_id.get(command_id)
            if data is None or where is None:
                return None
            tick, pos = where
            text = data.journal[tick][pos][1]
        return command_view(tick, json.loads(text))

    def find_key(self, world: str, scope: str) -> tuple[int, JournalRecord] | None:
        with self._lock:
            data = self._worlds.get(world)
            where = None if data is None else data.by_key.get(scope)
            if data is None or where is None:
                return None
            tick, pos = where
            text = data.journal[tick][pos][1]
        return tick, json.loads(text)

    def journal_range(self, world: str) -> tuple[int | None, int | None, int]:
        with self._lock:
            data = self._worlds.get(world) or _Stored()
            first = data.ticks[0] if data.ticks else None
            return first, data.head, data.count

    # -- snapshots -----------------------------------------------------------------------------

    def save_snapshot(
        self, world: str, tick: int, state: Mapping[str, Any], state_hash: str
    ) -> None:
        self._writable("snapshot write")
        blob = encode_state(state)  # a copy: the caller may go on changing ``state``
        info = SnapshotInfo(tick, state_hash, len(blob), time.time())
        with self._lock:
            self._world(world).snapshots[tick] = (info, blob)

    def snapshots(self, world: str) -> list[SnapshotInfo]:
        with self._lock:
            data = self._worlds.get(world)
            if data is None:
                return []
            return [data.snapshots[t][0] for t in sorted(data.snapshots)]

    def prune(self, world: str, retention_ticks: int, *, interim: Collection[int] = ()) -> None:
        self._writable("pruning")
        with self._lock:
            data = self._worlds.get(world)
            if data is None:
                return
            plan = prune_plan(sorted(data.snapshots), retention_ticks, interim)
            if plan is None:
                return
            base, drop = plan
            for t in drop:
                del data.snapshots[t]
            if base is None:
                return
            cut = bisect.bisect_right(data.ticks, base)
            for t in data.ticks[:cut]:
                entries = data.journal.pop(t)
                data.count -= len(entries)
                for pos, (command_id, text) in enumerate(entries):
                    if data.by_id.get(command_id) == (t, pos):
                        del data.by_id[command_id]
                    scope = json.loads(text).get("key") if '"key":' in text else None
                    if scope is not None and data.by_key.get(scope) == (t, pos):
                        del data.by_key[scope]
            del data.ticks[:cut]
            for t in [t for t in data.hashes if t <= base]:
                del data.hashes[t]
