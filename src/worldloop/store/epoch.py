"""The epoch fence of the scale-out mode: ownership that cannot be doubled (SCALEOUT.md).

Each world has a row in ``worldloop_epochs``: its ``epoch``, bumped by every new owner when it
takes the world over, and its command stream ``cursor``, the offset of the last command the
journal holds. Once a :class:`EpochFence` is attached to a :class:`~worldloop.store.sql.SqlStore`,
every journal, snapshot and prune transaction of a world ends with a check that the row still
carries this owner's epoch (the journal write also moves the cursor, so the offset commits with
the tick): a runner paused past its lease, whose world another runner has claimed since, matches
no row, commits nothing and gets :class:`~worldloop.errors.WorldFenced`.

The check runs last in the transaction, so its row lock (PostgreSQL) is held only until the
commit: the snapshot writer and the loop never wait on each other's inserts. A claim locks the
world's head row, then bumps the epoch (the journal's order: no deadlock with a live owner); an
old owner paused in a write transaction holds one of them, and the claim ends its stalled
session instead of waiting for the server to (store/unblock.py), so the new owner's writes never
queue behind it either. A journal transaction
that several worlds share (worldloop.store.group) checks each world's fence after all their
rows, in name order. SQLite serializes write transactions anyway (``BEGIN IMMEDIATE``). The
table is created on the first claim, so a store of an older worldloop needs no migration.
"""

from __future__ import annotations

import threading
import time
import weakref
from dataclasses import dataclass

from sqlalchemy import (
    BigInteger,
    Column,
    Connection,
    Engine,
    Float,
    MetaData,
    String,
    Table,
    select,
    update,
)
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from ..errors import WorldFenced
from .group import JOURNAL
from .sql import SqlStore
from .sql_schema import heads
from .unblock import unblocking

epochs_metadata = MetaData()

epochs = Table(
    "worldloop_epochs",
    epochs_metadata,
    Column("world", String(200), primary_key=True),
    Column("epoch", BigInteger, nullable=False),
    Column("cursor", String(64), nullable=False),
    Column("owner", String(200), nullable=False),
    Column("updated_at", Float, nullable=False),
)


@dataclass(frozen=True, slots=True)
class Claim:
    """What a new owner got: its epoch, and the stream offset the journal has reached."""

    world: str
    epoch: int
    cursor: str


class EpochFence:
    """Claims worlds in one SQL store and fences every write of them to this owner's epoch."""

    def __init__(self, store: SqlStore, owner: str) -> None:
        self.store = store
        self.owner = owner[:200]
        self._mine: dict[str, int] = {}
        self._staged: dict[str, str] = {}
        self._lock = threading.Lock()
        store.fence = self

    def __repr__(self) -> str:
        return f"EpochFence({self.store!r}, {self.owner!r})"

    def epoch(self, world: str) -> int | None:
        """This owner's epoch of ``world``, or None when it has not claimed it."""
        return self._mine.get(world)

    def claim(self, world: str) -> Claim:
        """Become ``world``'s owner: bump its epoch (in a transaction of its own, committed
        before this returns) and read the cursor the journal reached. Call it only while
        holding the world's lease; every write of an older epoch fails from now on."""
        claim = bump_epoch(self.store, world, self.owner)
        with self._lock:
            self._mine[world] = claim.epoch
            self._staged.pop(world, None)
        return claim

    def current(self, world: str) -> Claim | None:
        """The world's row as stored now (its owner's epoch and cursor), or None."""
        with self.store._read("reading the epoch") as conn:
            ensure_table(conn)
            row = conn.execute(
                select(epochs.c.epoch, epochs.c.cursor).where(epochs.c.world == world)
            ).first()
        return None if row is None else Claim(world, int(row[0]), str(row[1]))

    def owns(self, world: str) -> bool:
        """Whether the stored epoch of ``world`` is still this owner's (a read)."""
        mine = self._mine.get(world)
        current = self.current(world)
        return mine is not None and current is not None and current.epoch == mine

    def stage(self, world: str, cursor: str) -> None:
        """The stream offset of the last command taken for the tick about to be journaled:
        the next journal write commits it with the tick (loop thread)."""
        self._staged[world] = cursor

    def forget(self, world: str) -> None:
        """Stop owning ``world`` here: any later write of it fails (after a release)."""
        with self._lock:
            self._mine.pop(world, None)
            self._staged.pop(world, None)

    def __call__(self, conn: Connection, world: str, what: str) -> None:
        """The check at the end of every write transaction of ``world`` (SqlStore._write)."""
        mine = self._mine.get(world)
        if mine is None:
            raise WorldFenced(
                f"world {world!r}: {what} refused: this runner does not own the world "
                "(no epoch claimed, or given up)",
                details={"world": world},
            )
        row = epochs.c
        if what == JOURNAL:
            values: dict[str, object] = {"updated_at": time.time()}
            cursor = self._staged.get(world)
            if cursor is not None:
                values["cursor"] = cursor
            found = conn.execute(
                update(epochs).where(row.world == world, row.epoch == mine).values(**values)
            ).rowcount
        else:  # a shared row lock: the snapshot writer never blocks the journal's update
            stored = conn.execute(
                select(row.epoch).where(row.world == world).with_for_update(read=True)
            ).scalar()
            found = int(stored == mine)
        if not found:
            raise WorldFenced(
                f"world {world!r}: {what} refused: another runner owns the world now "
                f"(this runner's epoch {mine} is stale); nothing was committed",
                details={"world": world, "epoch": mine},
            )


def bump_epoch(store: SqlStore, world: str, owner: str) -> Claim:
    """Bump ``world``'s epoch in ``store`` for ``owner`` (committed on return): whoever ran
    it until now can commit nothing more. A new owner's claim, and a deletion's fence."""
    try:
        return _bump(store, world, owner)
    except BaseException:  # the table may have been created in the rolled-back transaction
        if store._engine is not None:
            _ensured.discard(store._engine)
        raise


def _bump(store: SqlStore, world: str, owner: str) -> Claim:
    with store._write("claiming the world") as conn:
        ensure_table(conn)
        now = time.time()
        values = {"world": world, "epoch": 1, "cursor": "0-0", "owner": owner[:200]}
        ins = (pg_insert if not store.is_sqlite else sqlite_insert)(epochs).values(
            **values, updated_at=now
        )
        bump = ins.on_conflict_do_update(
            index_elements=[epochs.c.world],
            set_={"epoch": epochs.c.epoch + 1, "owner": owner[:200], "updated_at": now},
        ).returning(epochs.c.epoch, epochs.c.cursor)
        if store.is_sqlite:  # BEGIN IMMEDIATE: no other writer is inside a transaction
            row = conn.execute(bump).one()  # the bump and the cursor read in one statement
        else:
            with unblocking(conn, world):  # a stalled old owner's locks: end its session
                # the head row first, as a journal write locks it (before its fence), so an old
                # owner paused between the two is found too, and a live one cannot deadlock
                conn.execute(select(heads.c.world).where(heads.c.world == world).with_for_update())
                row = conn.execute(bump).one()
    return Claim(world, int(row[0]), str(row[1]))


_ensured: weakref.WeakSet[Engine] = weakref.WeakSet()
"""Engines (one per database and schema, store/engines.py) known to have the epochs table."""


def ensure_table(conn: Connection) -> None:
    """Create the epochs table unless it exists (once per engine: a has-table query per claim
    was a round trip of every take-over)."""
    engine = conn.engine
    if engine in _ensured:
        return
    epochs.create(conn, checkfirst=True)
    _ensured.add(engine)


def fenced_store(url: str, owner: str, *, schema: str | None = None) -> EpochFence:
    """A SQL store at ``url`` with an epoch fence attached (the scale-out mode's store)."""
    return EpochFence(SqlStore(url, schema=schema), owner)
