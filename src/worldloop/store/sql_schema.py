"""The SQL store's tables, schema version and SQLite connection set-up (SQLAlchemy Core).

Split from ``sql.py`` along the seam between what is stored (the tables, their version) and how
the store reads and writes it.
"""

from __future__ import annotations

import hashlib
import os
import threading
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
    event,
)
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.schema import CreateSchema

from ..errors import StoreError
from ..files import make_private

SCHEMA_VERSION = 2
"""Bump when the tables change, and add the migration to ``SqlStore._migrate``.

2: ``worldloop_commands.idem_key`` (a command's idempotency key scope, indexed per world)."""

KEY_LENGTH = 300
"""Longest idempotency key scope stored (the API bounds the client's part well below it)."""

metadata = MetaData()


_open_files: dict[str, int] = {}
"""SQLite store files open in this process (realpath -> open store objects)."""
_open_lock = threading.Lock()


def quick_check(engine: Engine, database: str) -> None:
    """``PRAGMA quick_check`` of a SQLite store file, unless another store object of this
    process has it open: a damaged file is refused with a clear StoreError when it is opened.
    The check reads the whole file, so it is not repeated for every store object on an open
    file (each world of a server, a world waking from hibernation); a file that no store of
    this process holds open is checked again (it may have been replaced or damaged)."""
    with _open_lock:
        if _open_files.get(os.path.realpath(database)):
            return
    with engine.connect() as conn:
        rows = [r[0] for r in conn.exec_driver_sql("PRAGMA quick_check").fetchall()]
        conn.rollback()
    if rows != ["ok"]:
        raise StoreError(
            f"the store file {database} is corrupt: {'; '.join(rows[:5])}",
            details={"path": database, "problems": rows[:20]},
        )


def file_held(database: str, by: int) -> None:
    """Count a store object opening (``by=1``) or closing (``by=-1``) the file ``database``."""
    key = os.path.realpath(database)
    with _open_lock:
        left = _open_files.get(key, 0) + by
        if left > 0:
            _open_files[key] = left
        else:
            _open_files.pop(key, None)


def create_schema(conn: Connection, schema: str | None) -> None:
    """On PostgreSQL, in the transaction that prepares the store: wait for any other process
    preparing the same schema (a transaction-scoped advisory lock), then create the schema.

    Two workers opening a new store at once would otherwise race: ``CREATE SCHEMA IF NOT
    EXISTS`` and ``CREATE TABLE`` both fail with a unique violation in the loser, killing its
    boot. Serialized, the second finds what the first created."""
    digest = hashlib.blake2b(f"worldloop-prepare\0{schema or ''}".encode(), digest_size=8)
    conn.exec_driver_sql(
        "SELECT pg_advisory_xact_lock(%(key)s)",
        {"key": int.from_bytes(digest.digest(), "big", signed=True)},
    )
    if schema:
        conn.execute(CreateSchema(schema, if_not_exists=True))


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
    Column("idem_key", String(KEY_LENGTH), nullable=True),
    Index("ix_worldloop_commands_id", "command_id"),
    Index("ix_worldloop_commands_key", "world", "idem_key"),
)


def migrate_1_to_2(conn: Connection, schema: str | None) -> None:
    """Add the idempotency key column and its index to a version 1 store (kept data intact:
    old commands have no key)."""
    prep = conn.dialect.identifier_preparer
    table = prep.quote(commands.name)
    if schema:
        table = f"{prep.quote_schema(schema)}.{table}"
    conn.exec_driver_sql(f"ALTER TABLE {table} ADD COLUMN idem_key VARCHAR({KEY_LENGTH})")
    index = next(ix for ix in commands.indexes if ix.name == "ix_worldloop_commands_key")
    index.create(conn)


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


worlds = Table(
    "worldloop_worlds",
    metadata,
    Column("name", String(200), primary_key=True),
    Column("kind", String(200), nullable=False),
    Column("config", Text, nullable=False),
    Column("paused", Integer, nullable=False),
    Column("created_at", Float, nullable=False),
)
"""The catalog of a server's extra worlds (worldloop.store.catalog). Additive: a store made
before it gets the table on the catalog's first write, so no schema version bump is needed
(an older worldloop ignores it)."""

sleeping = Table(
    "worldloop_sleeping",
    metadata,
    Column("name", String(200), primary_key=True),
    Column("tick", BigInteger, nullable=False),
    Column("rate_hz", Float, nullable=False),
    Column("slept_at", Float, nullable=False),
    Column("wake_at", Float, nullable=True),
)
"""The hibernated worlds of the catalog (worldloop.hibernation): a row per world asleep, with
its last tick and the wall time its next job is due. Additive, as ``worldloop_worlds`` is."""


def sqlite_events(
    engine: Engine, *, wal: bool, busy_timeout: float, private: Path | None = None
) -> None:
    """WAL + full sync, our own BEGIN (IMMEDIATE for writes) instead of pysqlite's.

    ``private``: the database file this engine creates; it is made 0600 as soon as SQLite has
    created it (still empty) and before anything is written, and SQLite gives its -wal and
    -shm files the database file's mode, so they are 0600 too (checked after the first write).
    """

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        if private is not None:
            make_private(private)
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        try:
            cur.execute(f"PRAGMA busy_timeout = {int(busy_timeout * 1000)}")
            if wal:
                cur.execute("PRAGMA journal_mode = WAL")
            cur.execute("PRAGMA synchronous = FULL")
        finally:
            cur.close()
        if private is not None:
            for suffix in ("-wal", "-shm", "-journal"):
                side = private.with_name(private.name + suffix)
                if side.exists():
                    make_private(side)

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        write = conn.get_execution_options().get("worldloop_write", False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")


def reason(exc: SQLAlchemyError) -> str:
    orig = getattr(exc, "orig", None)
    return f"{type(orig or exc).__name__}: {orig or exc}".strip().splitlines()[0]


def sqlite_write_check(engine: Engine, timeout: float, busy_timeout: float) -> None:
    """Take SQLite's write lock (BEGIN IMMEDIATE), try a write that touches no row (SQLite
    refuses only the first write of a read-only file) and roll back, waiting at most
    ``timeout`` s; StoreError when that fails (SqlStore.check_writable)."""
    raw = engine.raw_connection()
    try:
        cur = raw.cursor()
        cur.execute(f"PRAGMA busy_timeout = {int(timeout * 1000)}")
        try:
            cur.execute("BEGIN IMMEDIATE")
            try:
                cur.execute(f"UPDATE {heads.name} SET tick = tick WHERE 0")
            finally:
                cur.execute("ROLLBACK")
        finally:
            cur.execute(f"PRAGMA busy_timeout = {int(busy_timeout * 1000)}")
            cur.close()
    except Exception as exc:  # sqlite3 errors are DBAPI errors, not SQLAlchemy's
        raise StoreError(f"write check failed: {type(exc).__name__}: {exc}") from exc
    finally:
        raw.close()
