"""Group commit: the journal writes of the worlds of one process on one SQL store, batched.

Every world journals each tick before acknowledging its commands (DESIGN.md, invariant 5), and
on SQLite (WAL, ``synchronous=FULL``) or PostgreSQL each commit is an fsync. A process with
hundreds of worlds would pay one fsync per world per tick; here the worlds that tick together
share one transaction instead, so one fsync makes all of them durable.

How (the classic leader/follower group commit, as in PostgreSQL's and MySQL's WAL writers):
a loop thread hands :meth:`GroupCommit.append` its tick's entry. If no write is in flight, it
becomes the *leader* and commits at once (a lone world waits for nobody: no timer, no extra
thread). Entries that arrive while a write is in flight queue up; when it ends, the first of
them leads the next transaction, with every entry queued by then. Each caller returns only
after the transaction holding its entry committed, so "acknowledged only after durable" is
unchanged.

One world's failure stays its own: each world's epoch fence (scale-out) runs after its rows,
in the same transaction, as in every fenced write. If a fence refuses (another runner owns that
world now) or a statement fails on one world's rows, the transaction is rolled back and redone
once with each world in a savepoint, so only that world fails (a fenced world gets
:class:`WorldFenced`) and the others commit. A transaction that fails as a whole (the database
is down or locked) fails every entry, and each world retries as it does alone.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import DataError, IntegrityError, SQLAlchemyError

from ..errors import StoreError, WorldFenced
from ..looppool import blocking
from .base import JournalRecord, encode_record
from .sql_schema import commands, hashes, heads, reason

if TYPE_CHECKING:
    from .sql import SqlStore

__all__ = ["JOURNAL", "GroupCommit", "JournalEntry", "group_for", "journal_entry", "write_journal"]

JOURNAL = "journal write"
"""The ``what`` of a journal transaction: the epoch fence moves the stream cursor only in it."""


@dataclass(slots=True)
class JournalEntry:
    """One world's tick, ready to write: its rows, its head, and (after a write) its error."""

    store: SqlStore
    world: str
    tick: int
    rows: list[dict[str, Any]]
    state_hash: str | None
    last_seq: int
    error: StoreError | None = None
    """Set when the transaction left this entry out (fenced) or failed on its rows."""


def journal_entry(
    store: SqlStore,
    world: str,
    tick: int,
    records: Sequence[JournalRecord],
    state_hash: str | None,
    last_seq: int,
) -> JournalEntry:
    """The rows of ``world``'s tick (commands in order, the head's new ``last_seq``)."""
    rows: list[dict[str, Any]] = [
        {
            "world": world,
            "tick": tick,
            "pos": pos,
            "seq": int(rec["seq"]),
            "command_id": str(rec["id"]),
            "record": encode_record(rec),
            "idem_key": None if rec.get("key") is None else str(rec["key"]),
        }
        for pos, rec in enumerate(records)
    ]
    last = max([last_seq, *(int(rec["seq"]) for rec in records)])
    return JournalEntry(store, world, tick, rows, state_hash, last)


def write_journal(leader: SqlStore, entries: Sequence[JournalEntry]) -> None:
    """Commit ``entries`` (worlds of ``leader``'s database) in one transaction on its engine.

    Entries left out get their ``error`` (fenced, or their own rows failed); StoreError when
    the transaction as a whole did not commit (then no entry is durable).
    """
    if leader.readonly:
        raise StoreError(f"{JOURNAL}: this store was opened read-only")
    entries = sorted(entries, key=lambda e: e.world)  # one lock order for every transaction
    for entry in entries:
        entry.error = None
    try:
        try:
            _transaction(leader, entries, isolate=False)
        except WorldFenced as exc:
            if len(entries) == 1:
                entries[0].error = exc
                return
            _transaction(leader, entries, isolate=True)  # leave the fenced world(s) out
        except (IntegrityError, DataError):
            if len(entries) == 1:
                raise
            _transaction(leader, entries, isolate=True)  # find the world whose rows fail
    except SQLAlchemyError as exc:
        raise StoreError(
            f"{JOURNAL} failed: {reason(exc)}", details={"store": repr(leader)}
        ) from exc


def _transaction(leader: SqlStore, entries: Sequence[JournalEntry], *, isolate: bool) -> None:
    """Rows first, each world's fence last (as every fenced write: its row lock is held only
    until the commit). ``isolate``: each world in a savepoint, rolled back alone if its fence
    refuses or its rows fail; otherwise batched, and any such failure rolls back everything."""
    with (
        leader.engine.connect().execution_options(worldloop_write=True) as conn,
        conn.begin(),
    ):
        if not isolate:
            _write_rows(conn, entries)
            for entry in entries:
                _fence(conn, entry)
            return
        for entry in entries:
            savepoint = conn.begin_nested()
            try:
                _write_rows(conn, [entry])
                _fence(conn, entry)
            except WorldFenced as exc:
                savepoint.rollback()
                entry.error = exc
            except (IntegrityError, DataError) as exc:
                savepoint.rollback()
                entry.error = StoreError(
                    f"{JOURNAL} of world {entry.world!r} failed: {reason(exc)}",
                    details={"world": entry.world, "tick": entry.tick},
                )
            else:
                savepoint.commit()


def _fence(conn: Connection, entry: JournalEntry) -> None:
    """Run the world's epoch fence (if any) in this transaction: WorldFenced if it refuses."""
    fence = entry.store.fence
    if fence is not None:
        fence(conn, entry.world, JOURNAL)


_HEAD_UPSERTS: dict[str, Any] = {}
"""The heads upsert of each dialect, built once: building it (``excluded`` sets up the table's
column collections) cost about a tenth of a journal write of 20 commands to SQLite (3.1 ms ->
2.7 ms), on the loop thread, every tick."""


def _head_upsert(dialect: str) -> Any:
    upsert = _HEAD_UPSERTS.get(dialect)
    if upsert is None:
        dialect_insert: Callable[..., Any] = sqlite_insert
        if dialect != "sqlite":  # imported here: an SQLite server never loads it
            from sqlalchemy.dialects.postgresql import insert as pg_insert

            dialect_insert = pg_insert
        stmt = dialect_insert(heads)
        upsert = _HEAD_UPSERTS[dialect] = stmt.on_conflict_do_update(
            index_elements=[heads.c.world],
            set_={
                "tick": stmt.excluded.tick,
                "last_seq": stmt.excluded.last_seq,
                "updated_at": stmt.excluded.updated_at,
            },
        )
    return upsert


def _write_rows(conn: Connection, entries: Sequence[JournalEntry]) -> None:
    """Heads, commands and hashes of ``entries``: one batched statement per table."""
    if not entries:
        return
    now = time.time()
    conn.execute(
        _head_upsert(conn.dialect.name),
        [
            {"world": e.world, "tick": e.tick, "last_seq": e.last_seq, "updated_at": now}
            for e in entries
        ],
    )
    rows = [row for e in entries for row in e.rows]
    if rows:
        conn.execute(insert(commands), rows)
    hashed = [
        {"world": e.world, "tick": e.tick, "state_hash": e.state_hash}
        for e in entries
        if e.state_hash is not None
    ]
    if hashed:
        conn.execute(insert(hashes), hashed)


@dataclass(slots=True, eq=False)
class _Waiter:
    """A caller waiting for its entry's transaction (or to lead the next one)."""

    entry: JournalEntry
    woken: threading.Event = field(default_factory=threading.Event)
    done: bool = False
    error: BaseException | None = None


@dataclass(frozen=True, slots=True)
class GroupStats:
    """What a group committer did: transactions, entries written, and the largest batch."""

    commits: int
    entries: int
    largest: int


BatchWriter = Callable[["SqlStore", Sequence[JournalEntry]], None]
"""Commits one batch on the given (leader's) store: :func:`write_journal`, or a test's."""


class GroupCommit:
    """Commits the journal entries of one database's worlds in shared transactions.

    Thread-safe; one per database per process (:func:`group_for`). ``write`` commits a batch
    (default :func:`write_journal`); it runs on the leader's thread, on the leader's store.
    """

    def __init__(self, write: BatchWriter = write_journal) -> None:
        self._write = write
        self._lock = threading.Lock()
        self._pending: list[_Waiter] = []
        self._busy = False
        self._commits = 0
        self._entries = 0
        self._largest = 0

    def stats(self) -> GroupStats:
        with self._lock:
            return GroupStats(self._commits, self._entries, self._largest)

    @property
    def waiting(self) -> int:
        """Entries queued behind the transaction in flight (tests, metrics)."""
        return len(self._pending)

    def append(self, entry: JournalEntry) -> None:
        """Make ``entry`` durable with whatever else is queued; returns once it committed.

        Raises what the store would: WorldFenced for a fenced world, StoreError when the
        transaction (or this world's rows) failed; nothing of a failed entry is durable.
        """
        me = _Waiter(entry)
        with self._lock:
            self._pending.append(me)
            lead = not self._busy
            self._busy = True
        if not lead:
            with blocking():  # a pool thread hands its turn on meanwhile
                me.woken.wait()  # resolved by a leader, or told to lead the next transaction
        if not me.done:
            self._lead()
        if me.error is not None:
            raise me.error
        if entry.error is not None:
            raise entry.error

    def _lead(self) -> None:
        """Write everything queued in one transaction, resolve it, hand over to the next."""
        with self._lock:  # the leader is always first: it queued before the rest, or was
            batch, self._pending = self._pending, []  # handed the lead as the first one queued
        error: BaseException | None = None
        try:
            with blocking():  # the commit's fsync: no CPU
                self._write(batch[0].entry.store, [w.entry for w in batch])
        except BaseException as exc:  # every waiter hears of it; the next leader still runs
            error = exc
        finally:
            with self._lock:
                if error is None:
                    self._commits += 1
                    self._entries += len(batch)
                    self._largest = max(self._largest, len(batch))
                following = self._pending[0] if self._pending else None
                if following is None:
                    self._busy = False
            for i, waiter in enumerate(batch):
                if error is not None:
                    waiter.error = error if i == 0 else _copy(error)
                waiter.done = True
                if i:
                    waiter.woken.set()
            if following is not None:
                following.woken.set()


def _copy(error: BaseException) -> BaseException:
    """The same failure for another waiter's thread (an exception object is not shared)."""
    if isinstance(error, StoreError):
        copy = type(error)(error.message, details=dict(error.details))
        copy.__cause__ = error
        return copy
    return error


_groups: dict[tuple[str, str | None], GroupCommit] = {}
_groups_lock = threading.Lock()


def group_for(url: str, schema: str | None) -> GroupCommit:
    """The group committer of the database at ``url`` (``schema``) in this process."""
    key = (url, schema)
    group = _groups.get(key)
    if group is None:
        with _groups_lock:
            group = _groups.setdefault(key, GroupCommit())
    return group


def _forget_groups() -> None:
    """A forked child starts with no committer: a parent's may be mid-write, its lock held."""
    global _groups_lock
    _groups.clear()
    _groups_lock = threading.Lock()


os.register_at_fork(after_in_child=_forget_groups)
