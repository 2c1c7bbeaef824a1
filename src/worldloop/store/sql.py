"""The SQL store (SQLAlchemy Core): SQLite embedded by default, PostgreSQL for scale-out.

One implementation for both, chosen by URL. SQLite runs in WAL mode with ``synchronous=FULL``
so a committed tick is on disk before its commands are acknowledged; write transactions start
with ``BEGIN IMMEDIATE`` so the loop thread and the snapshot writer queue up instead of failing.
The schema is created and versioned here (table ``worldloop_schema``); a store written by a newer
worldloop is refused. Every database failure surfaces as :class:`StoreError`.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import threading
import time
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from sqlalchemy import (
    Connection,
    Engine,
    create_engine,
    delete,
    func,
    insert,
    inspect,
    select,
    update,
)
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.pool import StaticPool

from ..errors import StoreError
from ..files import private_dir
from . import engines
from .base import (
    JournalRecord,
    Recovery,
    SnapshotInfo,
    check_window,
    command_view,
    prune_plan,
)
from .codec import decode_state, encode_state
from .group import GroupCommit, group_for, journal_entry, write_journal
from .pg_options import pg_engine_options
from .sql_schema import (
    SCHEMA_VERSION,
    commands,
    create_schema,
    file_held,
    hashes,
    heads,
    metadata,
    migrate_1_to_2,
    quick_check,
    reason,
    schema_table,
    snapshots,
    sqlite_events,
    sqlite_write_check,
)

__all__ = ["SCHEMA_VERSION", "SqlStore"]

log = logging.getLogger("worldloop.store")


class SqlStore:
    """Journal + snapshots in SQL. Thread-safe: the loop and the snapshot writer share it.

    ``readonly`` stores never create or change anything (used by the CLI next to a running
    server). ``schema`` puts the tables in a PostgreSQL schema (created if missing).
    ``group_commit``: see :attr:`group`.
    """

    def __init__(
        self,
        url: str,
        *,
        schema: str | None = None,
        readonly: bool = False,
        busy_timeout: float = 10.0,
        group_commit: bool = True,
        share_engine: bool = False,
    ) -> None:
        self.url = str(url)
        self.group_commit = group_commit
        """Journal writes share transactions with the other worlds of this database in this
        process (WORLDLOOP_GROUP_COMMIT; worldloop.store.group)."""
        self.schema = schema
        self.readonly = readonly
        self.busy_timeout = busy_timeout
        self._engine: Engine | None = None
        self._open_lock = threading.Lock()
        self._last_seq: dict[str, int] = {}
        self.fence: Callable[[Connection, str, str], None] | None = None
        """Run last in each world's write transaction: the scale-out epoch fence (epoch.py)."""
        try:
            self._url = make_url(self.url)
        except Exception as exc:
            raise StoreError(f"bad store URL {self.url!r}: {exc}") from exc
        self.is_sqlite = self._url.get_backend_name() == "sqlite"
        self._memory = self.is_sqlite and (self._url.database or ":memory:") == ":memory:"
        self.shares_engine = share_engine and not self.is_sqlite and not readonly
        """PostgreSQL: use the process's engine for this database and schema (store/engines.py):
        no new pool, connection or schema check per store (the Redis mode's take-overs)."""

    def __repr__(self) -> str:
        return f"SqlStore({self._url.render_as_string(hide_password=True)!r})"

    # -- opening ---------------------------------------------------------------------------

    def open(self) -> None:
        """Connect, check the file and the schema version, create the schema if new."""
        with self._open_lock:
            if self._engine is not None:
                return
            if self.shares_engine:
                self._engine = engines.acquire(self.url, self.schema, self._prepared_engine)
                return
            self._engine = self._prepared_engine()
            if self._file is not None:
                file_held(self._file, 1)

    def _prepared_engine(self) -> Engine:
        engine = self._make_engine()
        try:
            self._prepare(engine)
        except StoreError:
            engine.dispose()
            raise
        except SQLAlchemyError as exc:
            engine.dispose()
            raise StoreError(
                f"cannot open the store {self!r}: {reason(exc)}", details={"url": repr(self)}
            ) from exc
        return engine

    @property
    def _file(self) -> str | None:
        """The SQLite file of this store (None: in memory, or PostgreSQL)."""
        db = self._url.database or ":memory:"
        return db if self.is_sqlite and db != ":memory:" else None

    def _make_engine(self) -> Engine:
        url = self._url
        kwargs: dict[str, Any] = {}
        if self.is_sqlite:
            db = url.database or ""
            memory = db in ("", ":memory:")
            if memory:
                kwargs.update(poolclass=StaticPool, connect_args={"check_same_thread": False})
            else:
                path = Path(db)
                if path.exists() and path.stat().st_size == 0:
                    raise StoreError(
                        f"the store file {path} is empty (truncated?); refusing to start an "
                        "empty world over it. Restore it from a backup, or delete it to start "
                        "afresh.",
                        details={"path": str(path)},
                    )
                new = not path.exists()
                if new:
                    if self.readonly:
                        raise StoreError(f"no store file at {path}", details={"path": str(path)})
                    private_dir(path.parent)
                kwargs["connect_args"] = {"timeout": self.busy_timeout}
            engine = create_engine(url, **kwargs)
            sqlite_events(
                engine,
                wal=not memory,
                busy_timeout=self.busy_timeout,
                private=None if memory or not new else Path(db),
            )
        else:
            options = pg_engine_options(url.query, self.schema)
            if self.shares_engine:  # N stores' loops on one pool: they never wait for it
                options.update(pool_size=engines.SHARED_POOL_SIZE, max_overflow=-1)
            engine = create_engine(url, **options)
        return engine

    def _prepare(self, engine: Engine) -> None:
        if self._file is not None:
            quick_check(engine, self._file)
        with engine.connect().execution_options(worldloop_write=True) as conn, conn.begin():
            if not self.is_sqlite and not self.readonly:
                create_schema(conn, self.schema)
            has_schema = inspect(conn).has_table(schema_table.name, schema=self.schema)
            if has_schema:
                row = conn.execute(select(schema_table.c.version)).first()
                if row is None:
                    raise StoreError(f"the store {self!r} has an empty schema table (corrupt)")
                version = int(row[0])
                if version > SCHEMA_VERSION:
                    raise StoreError(
                        f"the store {self!r} has schema version {version}, newer than this "
                        f"worldloop understands ({SCHEMA_VERSION}); upgrade worldloop.",
                        details={"version": version, "supported": SCHEMA_VERSION},
                    )
                if version < SCHEMA_VERSION and not self.readonly:
                    self._migrate(conn, version)
            elif self.readonly:
                raise StoreError(f"no worldloop store at {self!r}")
            else:
                metadata.create_all(conn)
                conn.execute(
                    insert(schema_table).values(
                        id=1, version=SCHEMA_VERSION, created_at=time.time()
                    )
                )

    def _migrate(self, conn: Connection, version: int) -> None:
        """Bring a store of an older schema version up to SCHEMA_VERSION, in the open's
        transaction (all or nothing)."""
        if version == 1:
            migrate_1_to_2(conn, None if self.is_sqlite else self.schema)
            version = 2
        if version != SCHEMA_VERSION:
            raise StoreError(f"no migration from store schema version {version}")
        conn.execute(update(schema_table).values(version=SCHEMA_VERSION))
        log.info("store %r migrated to schema version %d", self, SCHEMA_VERSION)

    # -- transactions ------------------------------------------------------------------------

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            self.open()
        assert self._engine is not None
        return self._engine

    @contextlib.contextmanager
    def _read(self, what: str) -> Iterator[Connection]:
        """A consistent read (one transaction; REPEATABLE READ on PostgreSQL)."""
        with self._guard(what):
            conn = self.engine.connect()
            if not self.is_sqlite:
                conn = conn.execution_options(isolation_level="REPEATABLE READ")
            with conn, conn.begin():
                yield conn

    @contextlib.contextmanager
    def _write(self, what: str, world: str | None = None) -> Iterator[Connection]:
        if self.readonly:
            raise StoreError(f"{what}: this store was opened read-only")
        with (
            self._guard(what),
            self.engine.connect().execution_options(worldloop_write=True) as conn,
            conn.begin(),
        ):
            yield conn
            if world is not None and self.fence is not None:
                self.fence(conn, world, what)

    @contextlib.contextmanager
    def _guard(self, what: str) -> Iterator[None]:
        try:
            yield
        except StoreError:
            raise
        except SQLAlchemyError as exc:
            raise StoreError(
                f"{what} failed: {reason(exc)}", details={"store": repr(self)}
            ) from exc

    # -- the journal ---------------------------------------------------------------------------

    def append(
        self,
        world: str,
        tick: int,
        records: Sequence[JournalRecord],
        state_hash: str | None = None,
    ) -> None:
        """Journal a tick (its fence checked last, same transaction); with group commit, in the
        transaction of every world of this database that journals meanwhile (store/group.py)."""
        last = self._last_seq.get(world, 0)
        entry = journal_entry(self, world, tick, records, state_hash, last)
        group = self.group
        if group is not None:
            group.append(entry)
        else:
            write_journal(self, [entry])
            if entry.error is not None:
                raise entry.error
        self._last_seq[world] = entry.last_seq

    @property
    def group(self) -> GroupCommit | None:
        """This process's group committer for this database, or None (off, read-only, or an
        in-memory SQLite database, which no other store object shares)."""
        if not self.group_commit or self.readonly or self._memory:
            return None
        return group_for(self.url, self.schema)

    def head(self, world: str) -> int | None:
        with self._read("reading the head") as conn:
            row = conn.execute(select(heads.c.tick).where(heads.c.world == world)).first()
        return None if row is None else int(row[0])

    def load(
        self, world: str, upto: int | None = None, *, snapshot_tick: int | None = None
    ) -> Recovery:
        """The latest snapshot at or before ``upto`` (default: the head) and the journal after it.

        ``snapshot_tick`` picks a given snapshot instead of the latest one (for verify).

        Raises StoreError when the data cannot reproduce that tick (missing snapshot, bad
        checksum, ``upto`` outside what is kept).
        """
        with self._read("loading the world") as conn:
            head_row = conn.execute(
                select(heads.c.tick, heads.c.last_seq).where(heads.c.world == world)
            ).first()
            head_tick = None if head_row is None else int(head_row[0])
            last_seq = 0 if head_row is None else int(head_row[1])
            q = select(snapshots).where(snapshots.c.world == world)
            if upto is not None:
                q = q.where(snapshots.c.tick <= upto)
            if snapshot_tick is not None:
                q = q.where(snapshots.c.tick == snapshot_tick)
            snap = conn.execute(q.order_by(snapshots.c.tick.desc()).limit(1)).first()
            oldest = None
            if snap is None:
                oldest = conn.execute(
                    select(func.min(snapshots.c.tick)).where(snapshots.c.world == world)
                ).scalar()
            target = check_window(
                world, head_tick, None if snap is None else int(snap.tick), upto, oldest
            )
            if snap is None or target is None:
                return Recovery(None, None, None)
            snap_tick = int(snap.tick)
            data = bytes(snap.data)
            if hashlib.sha256(data).hexdigest() != snap.checksum or len(data) != snap.size:
                raise StoreError(
                    f"world {world!r}: the snapshot of tick {snap_tick} fails its checksum "
                    "(corrupt store)",
                    details={"world": world, "tick": snap_tick},
                )
            cmd_rows = conn.execute(
                select(commands.c.tick, commands.c.record)
                .where(
                    commands.c.world == world,
                    commands.c.tick > snap_tick,
                    commands.c.tick <= target,
                )
                .order_by(commands.c.tick, commands.c.pos)
            ).all()
            hash_rows = conn.execute(
                select(hashes.c.tick, hashes.c.state_hash).where(
                    hashes.c.world == world, hashes.c.tick > snap_tick, hashes.c.tick <= target
                )
            ).all()
        by_tick: dict[int, list[JournalRecord]] = {}
        try:
            for tick, record in cmd_rows:
                by_tick.setdefault(int(tick), []).append(json.loads(record))
        except ValueError as exc:
            raise StoreError(f"world {world!r}: a journal record is corrupt: {exc}") from exc
        self._last_seq[world] = max(self._last_seq.get(world, 0), last_seq)
        return Recovery(
            snapshot_tick=snap_tick,
            state=decode_state(data),
            state_hash=str(snap.state_hash),
            head_tick=target,
            commands=by_tick,
            hashes={int(t): str(h) for t, h in hash_rows},
            last_seq=last_seq,
        )

    def find_command(self, world: str, command_id: str) -> dict[str, Any] | None:
        with self._read("finding a command") as conn:
            row = conn.execute(
                select(commands.c.tick, commands.c.record).where(
                    commands.c.world == world, commands.c.command_id == command_id
                )
            ).first()
        return None if row is None else command_view(int(row[0]), json.loads(row[1]))

    def find_key(self, world: str, scope: str) -> tuple[int, JournalRecord] | None:
        with self._read("finding an idempotency key") as conn:
            row = conn.execute(
                select(commands.c.tick, commands.c.record)
                .where(commands.c.world == world, commands.c.idem_key == scope)
                .order_by(commands.c.tick, commands.c.pos)
                .limit(1)
            ).first()
        return None if row is None else (int(row[0]), json.loads(row[1]))

    def journal_range(self, world: str) -> tuple[int | None, int | None, int]:
        with self._read("reading the journal") as conn:
            first, count = conn.execute(
                select(func.min(commands.c.tick), func.count()).where(commands.c.world == world)
            ).one()
            head = conn.execute(select(heads.c.tick).where(heads.c.world == world)).scalar()
        return (
            None if first is None else int(first),
            None if head is None else int(head),
            int(count),
        )

    # -- snapshots -----------------------------------------------------------------------------

    def save_snapshot(
        self, world: str, tick: int, state: Mapping[str, Any], state_hash: str
    ) -> None:
        self.save_snapshot_bytes(world, tick, encode_state(state), state_hash)

    def save_snapshot_bytes(self, world: str, tick: int, data: bytes, state_hash: str) -> None:
        """Store an already encoded state (replaces any snapshot of the same tick)."""
        checksum = hashlib.sha256(data).hexdigest()
        with self._write("snapshot write", world) as conn:
            conn.execute(
                delete(snapshots).where(snapshots.c.world == world, snapshots.c.tick == tick)
            )
            conn.execute(
                insert(snapshots).values(
                    world=world,
                    tick=tick,
                    state_hash=state_hash,
                    checksum=checksum,
                    size=len(data),
                    created_at=time.time(),
                    data=data,
                )
            )

    def snapshots(self, world: str) -> list[SnapshotInfo]:
        """Stored snapshots of ``world``, oldest first."""
        with self._read("listing snapshots") as conn:
            rows = conn.execute(
                select(
                    snapshots.c.tick,
                    snapshots.c.state_hash,
                    snapshots.c.size,
                    snapshots.c.created_at,
                )
                .where(snapshots.c.world == world)
                .order_by(snapshots.c.tick)
            ).all()
        return [SnapshotInfo(int(t), str(h), int(s), float(c)) for t, h, s, c in rows]

    def prune(self, world: str, retention_ticks: int, *, interim: Collection[int] = ()) -> None:
        """Delete what :func:`~worldloop.store.base.prune_plan` says is no longer needed."""
        plan = prune_plan([s.tick for s in self.snapshots(world)], retention_ticks, interim)
        if plan is None:
            return
        base, drop = plan
        with self._write("pruning", world) as conn:
            if drop:
                conn.execute(
                    delete(snapshots).where(snapshots.c.world == world, snapshots.c.tick.in_(drop))
                )
            if base is not None:
                conn.execute(
                    delete(commands).where(commands.c.world == world, commands.c.tick <= base)
                )
                conn.execute(delete(hashes).where(hashes.c.world == world, hashes.c.tick <= base))

    def drop_schema(self) -> None:
        """Remove every worldloop table (tests and tooling only)."""
        with self._guard("dropping the schema"), self.engine.begin() as conn:
            metadata.drop_all(conn)

    def check_writable(self, timeout: float = 0.25) -> None:
        """Raise StoreError unless a write transaction can start now (for /readyz).

        SQLite: take the write lock (BEGIN IMMEDIATE), try a write that touches no row (SQLite
        takes the lock on a read-only file and refuses only the first write), and roll back at
        once, waiting at most ``timeout`` s, so a readiness probe never hangs on a lock.
        PostgreSQL: the server must answer and not be read-only (a standby, or
        default_transaction_read_only).
        """
        if self.readonly:
            raise StoreError(f"the store {self!r} was opened read-only")
        with self._guard("write check"):
            if self.is_sqlite:
                sqlite_write_check(self.engine, timeout, self.busy_timeout)
                return
            with self.engine.connect() as conn:
                read_only = conn.exec_driver_sql("SHOW transaction_read_only").scalar()
                conn.rollback()
            if str(read_only).lower() == "on":
                raise StoreError(f"the store {self!r} is read-only (a standby?)")

    def close(self) -> None:
        with self._open_lock:
            engine, self._engine = self._engine, None
        if engine is not None and self.shares_engine:
            engines.release(self.url, self.schema)
        elif engine is not None:
            engine.dispose()
            if self._file is not None:
                file_held(self._file, -1)
