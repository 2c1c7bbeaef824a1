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
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    Connection,
    Engine,
    Float,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    create_engine,
    delete,
    event,
    insert,
    inspect,
    select,
    update,
)
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.pool import StaticPool
from sqlalchemy.schema import CreateSchema

from ..errors import StoreError
from .base import JournalRecord, Recovery, SnapshotInfo
from .codec import decode_state, encode_state

log = logging.getLogger("worldloop.store")

SCHEMA_VERSION = 1
"""Bump when the tables change, and add the migration to ``SqlStore._migrate``."""

metadata = MetaData()

schema_table = Table(
    "worldloop_schema",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("version", Integer, nullable=False),
    Column("created_at", Float, nullable=False),
)

heads = Table(
    "worldloop_heads",
    metadata,
    Column("world", String(200), primary_key=True),
    Column("tick", BigInteger, nullable=False),
    Column("last_seq", BigInteger, nullable=False),
    Column("updated_at", Float, nullable=False),
)

commands = Table(
    "worldloop_commands",
    metadata,
    Column("world", String(200), primary_key=True),
    Column("tick", BigInteger, primary_key=True, autoincrement=False),
    Column("pos", Integer, primary_key=True, autoincrement=False),
    Column("seq", BigInteger, nullable=False),
    Column("command_id", String(64), nullable=False),
    Column("record", Text, nullable=False),
    Index("ix_worldloop_commands_id", "command_id"),
)

hashes = Table(
    "worldloop_hashes",
    metadata,
    Column("world", String(200), primary_key=True),
    Column("tick", BigInteger, primary_key=True, autoincrement=False),
    Column("state_hash", String(64), nullable=False),
)

snapshots = Table(
    "worldloop_snapshots",
    metadata,
    Column("world", String(200), primary_key=True),
    Column("tick", BigInteger, primary_key=True, autoincrement=False),
    Column("state_hash", String(64), nullable=False),
    Column("checksum", String(64), nullable=False),
    Column("size", BigInteger, nullable=False),
    Column("created_at", Float, nullable=False),
    Column("data", LargeBinary, nullable=False),
)


def default_store_url(instance_path: str | Path) -> str:
    """The embedded default: one SQLite file in the app's instance folder."""
    return f"sqlite:///{Path(instance_path) / 'worldloop.db'}"


class SqlStore:
    """Journal + snapshots in SQL. Thread-safe: the loop and the snapshot writer share it.

    ``readonly`` stores never create or change anything (used by the CLI next to a running
    server). ``schema`` puts the tables in a PostgreSQL schema (created if missing).
    """

    def __init__(
        self,
        url: str,
        *,
        schema: str | None = None,
        readonly: bool = False,
        busy_timeout: float = 10.0,
    ) -> None:
        self.url = str(url)
        self.schema = schema
        self.readonly = readonly
        self.busy_timeout = busy_timeout
        self._engine: Engine | None = None
        self._open_lock = threading.Lock()
        self._last_seq: dict[str, int] = {}
        try:
            self._url = make_url(self.url)
        except Exception as exc:
            raise StoreError(f"bad store URL {self.url!r}: {exc}") from exc
        self.is_sqlite = self._url.get_backend_name() == "sqlite"

    def __repr__(self) -> str:
        return f"SqlStore({self._url.render_as_string(hide_password=True)!r})"

    # -- opening ---------------------------------------------------------------------------

    def open(self) -> None:
        """Connect, check the file and the schema version, create the schema if new."""
        with self._open_lock:
            if self._engine is not None:
                return
            engine = self._make_engine()
            try:
                self._prepare(engine)
            except StoreError:
                engine.dispose()
                raise
            except SQLAlchemyError as exc:
                engine.dispose()
                raise StoreError(
                    f"cannot open the store {self!r}: {_reason(exc)}",
                    details={"url": repr(self)},
                ) from exc
            self._engine = engine

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
                if not path.exists():
                    if self.readonly:
                        raise StoreError(f"no store file at {path}", details={"path": str(path)})
                    path.parent.mkdir(parents=True, exist_ok=True)
                kwargs["connect_args"] = {"timeout": self.busy_timeout}
            engine = create_engine(url, **kwargs)
            _sqlite_events(engine, wal=not memory, busy_timeout=self.busy_timeout)
        else:
            if self.schema:
                kwargs["execution_options"] = {"schema_translate_map": {None: self.schema}}
            engine = create_engine(url, **kwargs)
        return engine

    def _prepare(self, engine: Engine) -> None:
        with engine.connect() as conn:
            if self.is_sqlite and (self._url.database or ":memory:") != ":memory:":
                rows = [r[0] for r in conn.exec_driver_sql("PRAGMA quick_check").fetchall()]
                if rows != ["ok"]:
                    raise StoreError(
                        f"the store file {self._url.database} is corrupt: {'; '.join(rows[:5])}",
                        details={"path": self._url.database, "problems": rows[:20]},
                    )
            conn.rollback()
        with engine.connect().execution_options(worldloop_write=True) as conn, conn.begin():
            if self.schema and not self.is_sqlite and not self.readonly:
                conn.execute(CreateSchema(self.schema, if_not_exists=True))
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
        raise StoreError(f"no migration from store schema version {version}")  # none yet

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
    def _write(self, what: str) -> Iterator[Connection]:
        if self.readonly:
            raise StoreError(f"{what}: this store was opened read-only")
        with (
            self._guard(what),
            self.engine.connect().execution_options(worldloop_write=True) as conn,
            conn.begin(),
        ):
            yield conn

    @contextlib.contextmanager
    def _guard(self, what: str) -> Iterator[None]:
        try:
            yield
        except StoreError:
            raise
        except SQLAlchemyError as exc:
            raise StoreError(
                f"{what} failed: {_reason(exc)}", details={"store": repr(self)}
            ) from exc

    # -- the journal ---------------------------------------------------------------------------

    def append(
        self,
        world: str,
        tick: int,
        records: Sequence[JournalRecord],
        state_hash: str | None = None,
    ) -> None:
        now = time.time()
        rows = [
            {
                "world": world,
                "tick": tick,
                "pos": pos,
                "seq": int(rec["seq"]),
                "command_id": str(rec["id"]),
                "record": json.dumps(rec, separators=(",", ":"), sort_keys=True),
            }
            for pos, rec in enumerate(records)
        ]
        last_seq = max([self._last_seq.get(world, 0), *(int(rec["seq"]) for rec in records)])
        with self._write("journal write") as conn:
            res = conn.execute(
                update(heads)
                .where(heads.c.world == world)
                .values(tick=tick, last_seq=last_seq, updated_at=now)
            )
            if res.rowcount == 0:
                conn.execute(
                    insert(heads).values(world=world, tick=tick, last_seq=last_seq, updated_at=now)
                )
            if rows:
                conn.execute(insert(commands), rows)
            if state_hash is not None:
                conn.execute(insert(hashes).values(world=world, tick=tick, state_hash=state_hash))
        self._last_seq[world] = last_seq

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
            if snap is None:
                if head_tick is None and upto is None:
                    return Recovery(None, None, None)
                oldest = conn.execute(
                    select(snapshots.c.tick)
                    .where(snapshots.c.world == world)
                    .order_by(snapshots.c.tick)
                    .limit(1)
                ).scalar()
                raise StoreError(
                    f"world {world!r}: no snapshot at or before tick "
                    f"{upto if upto is not None else head_tick} (journal head {head_tick}, "
                    f"oldest snapshot {oldest}); the store cannot rebuild it",
                    details={"world": world, "head": head_tick, "oldest_snapshot": oldest},
                )
            snap_tick = int(snap.tick)
            last = max(head_tick if head_tick is not None else snap_tick, snap_tick)
            target = last if upto is None else upto
            if target > last:
                raise StoreError(
                    f"world {world!r}: tick {target} is after the last journaled tick {last}",
                    details={"world": world, "head": last},
                )
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
        if row is None:
            return None
        rec = json.loads(row[1])
        out: dict[str, Any] = {
            "command_id": rec["id"],
            "type": rec["type"],
            "status": "applied" if rec.get("ok") else "rejected",
            "tick": int(row[0]),
        }
        if rec.get("ok"):
            out["result"] = rec.get("result")
        else:
            out["error"] = rec.get("error") or {}
        return out

    def journal_range(self, world: str) -> tuple[int | None, int | None, int]:
        """(first tick with commands, head, number of journaled commands)."""
        from sqlalchemy import func

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
        with self._write("snapshot write") as conn:
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

    def prune(self, world: str, retention_ticks: int) -> None:
        """Keep what rebuilds any tick from ``latest snapshot - retention_ticks`` onwards.

        The *base* is the newest snapshot at or before both the previous snapshot and
        ``latest - retention_ticks``. Journal rows up to the base and snapshots older than it
        are deleted, so every tick from the base to the head can still be rebuilt.
        """
        ticks = [s.tick for s in self.snapshots(world)]
        if len(ticks) < 2:
            return
        latest, prev = ticks[-1], ticks[-2]
        limit = min(prev, latest - max(0, retention_ticks))
        older = [t for t in ticks if t <= limit]
        if not older:
            return
        base = older[-1]
        drop = [t for t in ticks if t < base]
        with self._write("pruning") as conn:
            if drop:
                conn.execute(
                    delete(snapshots).where(snapshots.c.world == world, snapshots.c.tick.in_(drop))
                )
            conn.execute(delete(commands).where(commands.c.world == world, commands.c.tick <= base))
            conn.execute(delete(hashes).where(hashes.c.world == world, hashes.c.tick <= base))

    def drop_schema(self) -> None:
        """Remove every worldloop table (tests and tooling only)."""
        with self._guard("dropping the schema"), self.engine.begin() as conn:
            metadata.drop_all(conn)

    def check_writable(self, timeout: float = 0.25) -> None:
        """Raise StoreError unless a write transaction can start now (for /readyz).

        SQLite: take the write lock (BEGIN IMMEDIATE) and roll back at once, waiting at most
        ``timeout`` s, so a readiness probe never hangs on a lock. PostgreSQL: the server must
        answer and not be read-only (a standby, or default_transaction_read_only).
        """
        if self.readonly:
            raise StoreError(f"the store {self!r} was opened read-only")
        with self._guard("write check"):
            if self.is_sqlite:
                raw = self.engine.raw_connection()
                try:
                    cur = raw.cursor()
                    cur.execute(f"PRAGMA busy_timeout = {int(timeout * 1000)}")
                    try:
                        cur.execute("BEGIN IMMEDIATE")
                        cur.execute("ROLLBACK")
                    finally:
                        cur.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout * 1000)}")
                        cur.close()
                except Exception as exc:  # sqlite3 errors are DBAPI errors, not SQLAlchemy's
                    raise StoreError(f"write check failed: {type(exc).__name__}: {exc}") from exc
                finally:
                    raw.close()
                return
            with self.engine.connect() as conn:
                read_only = conn.exec_driver_sql("SHOW transaction_read_only").scalar()
                conn.rollback()
            if str(read_only).lower() == "on":
                raise StoreError(f"the store {self!r} is read-only (a standby?)")

    def close(self) -> None:
        with self._open_lock:
            engine, self._engine = self._engine, None
        if engine is not None:
            engine.dispose()


def _sqlite_events(engine: Engine, *, wal: bool, busy_timeout: float) -> None:
    """WAL + full sync, our own BEGIN (IMMEDIATE for writes) instead of pysqlite's."""

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        try:
            cur.execute(f"PRAGMA busy_timeout = {int(busy_timeout * 1000)}")
            if wal:
                cur.execute("PRAGMA journal_mode = WAL")
            cur.execute("PRAGMA synchronous = FULL")
        finally:
            cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        write = conn.get_execution_options().get("worldloop_write", False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")


def _reason(exc: SQLAlchemyError) -> str:
    orig = getattr(exc, "orig", None)
    return f"{type(orig or exc).__name__}: {orig or exc}".strip().splitlines()[0]
