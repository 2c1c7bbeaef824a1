"""The catalog of a server's extra worlds: which exist, their kind, config and paused state.

It lives in the same store as the worlds' journals, so a restart (or a kill -9) brings every
world back: the host reads the catalog, rebuilds each world from its kind and config, and
recovers it from its own snapshot + journal. ``open_catalog(url)`` picks the backend as
``open_store`` does: a table ``worldloop_worlds`` in the SQL store, or process memory for
``memory://NAME`` (shared by name, like the memory store) and ``memory://`` (private).

Deleting a world may drop its journal and snapshots too (:meth:`Catalog.drop_data`). A world
put to sleep by the host (worldloop.hibernation) is marked asleep here (:meth:`Catalog.set_asleep`)
so that a restart brings it back asleep, not loaded.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Protocol

from ..errors import StoreError, WorldExists


@dataclass(frozen=True, slots=True)
class Sleep:
    """A hibernated world's record: where it stopped, and when a job of it is next due."""

    tick: int
    rate_hz: float
    slept_at: float
    """Wall time (unix seconds) it fell asleep: a "simulate" kind steps the gap on waking."""
    wake_at: float | None = None
    """Wall time its next wall-clock job is due (the host wakes it then); None: no such job."""


@dataclass(frozen=True, slots=True)
class CatalogEntry:
    """One hosted world as the catalog keeps it."""

    name: str
    kind: str
    config: Mapping[str, Any] = field(default_factory=dict)
    paused: bool = False
    created_at: float = 0.0
    asleep: Sleep | None = None
    """Set while the world hibernates (it is not loaded until a request or a job wakes it)."""


class Catalog(Protocol):
    """Where a server keeps its list of worlds (thread-safe; failures are StoreError)."""

    def entries(self) -> list[CatalogEntry]:
        """Every world in the catalog, oldest first."""
        ...

    def add(self, entry: CatalogEntry) -> None:
        """Record a new world; WorldExists when the name is taken."""
        ...

    def remove(self, name: str) -> bool:
        """Forget a world; False when there was none of that name."""
        ...

    def set_paused(self, name: str, paused: bool) -> None:
        """Record whether the world is paused (it comes back paused after a restart)."""
        ...

    def set_asleep(self, name: str, sleep: Sleep | None) -> None:
        """Record that the world hibernates (``sleep``) or woke up (None)."""
        ...

    def drop_data(self, name: str) -> None:
        """Drop the world's journal, hashes and snapshots from the store."""
        ...

    def close(self) -> None: ...


class MemoryCatalog:
    """A catalog in process memory (nothing survives the process)."""

    def __init__(self, store: Any = None) -> None:
        self._lock = threading.Lock()
        self._entries: dict[str, CatalogEntry] = {}
        self._store = store  # a MemoryStore whose worlds drop_data forgets, or None

    def entries(self) -> list[CatalogEntry]:
        with self._lock:
            return sorted(self._entries.values(), key=lambda e: (e.created_at, e.name))

    def add(self, entry: CatalogEntry) -> None:
        with self._lock:
            if entry.name in self._entries:
                raise WorldExists(f"a world named {entry.name!r} exists already")
            self._entries[entry.name] = entry

    def remove(self, name: str) -> bool:
        with self._lock:
            return self._entries.pop(name, None) is not None

    def set_paused(self, name: str, paused: bool) -> None:
        with self._lock:
            entry = self._entries.get(name)
            if entry is not None:
                self._entries[name] = replace(entry, paused=paused)

    def set_asleep(self, name: str, sleep: Sleep | None) -> None:
        with self._lock:
            entry = self._entries.get(name)
            if entry is not None:
                self._entries[name] = replace(entry, asleep=sleep)

    def drop_data(self, name: str) -> None:
        if self._store is not None:
            self._store.drop_world(name)

    def close(self) -> None:
        """Nothing to release."""


_named: dict[str, MemoryCatalog] = {}
_named_lock = threading.Lock()


class SqlCatalog:
    """The catalog as a table of the SQL store (``worldloop_worlds``, created on first use)."""

    def __init__(self, url: str, *, schema: str | None = None) -> None:
        from .sql import SqlStore

        self.store = SqlStore(url, schema=schema)
        self._ready = False
        self._lock = threading.Lock()

    def _conn(self, write: bool) -> Any:
        """A connection in a transaction (``BEGIN IMMEDIATE`` on SQLite for writes)."""
        from .sql_schema import sleeping, worlds

        engine = self.store.engine
        with self._lock:
            if not self._ready:
                setup = engine.connect().execution_options(worldloop_write=True)
                with setup as conn, conn.begin():
                    worlds.create(conn, checkfirst=True)
                    sleeping.create(conn, checkfirst=True)
                self._ready = True
        conn = engine.connect()
        return conn.execution_options(worldloop_write=True) if write else conn

    def _run(self, what: str, fn: Any, *, write: bool = True) -> Any:
        from sqlalchemy.exc import IntegrityError, SQLAlchemyError

        from .sql_schema import reason

        try:
            with self._conn(write) as conn, conn.begin():
                return fn(conn)
        except IntegrityError as exc:
            raise WorldExists(f"{what}: the name is taken") from exc
        except SQLAlchemyError as exc:
            raise StoreError(f"catalog: {what} failed: {reason(exc)}") from exc

    def entries(self) -> list[CatalogEntry]:
        from sqlalchemy import select

        from .sql_schema import sleeping, worlds

        def read(conn: Any) -> list[CatalogEntry]:
            rows = conn.execute(select(worlds).order_by(worlds.c.created_at, worlds.c.name))
            asleep = {
                s.name: Sleep(int(s.tick), float(s.rate_hz), float(s.slept_at), s.wake_at)
                for s in conn.execute(select(sleeping))
            }
            return [
                CatalogEntry(
                    r.name,
                    r.kind,
                    json.loads(r.config),
                    bool(r.paused),
                    r.created_at,
                    asleep.get(r.name),
                )
                for r in rows
            ]

        result: list[CatalogEntry] = self._run("read", read, write=False)
        return result

    def add(self, entry: CatalogEntry) -> None:
        from sqlalchemy import insert

        from .sql_schema import worlds

        row = {
            "name": entry.name,
            "kind": entry.kind,
            "config": json.dumps(dict(entry.config), sort_keys=True),
            "paused": int(entry.paused),
            "created_at": entry.created_at,
        }
        try:
            self._run(f"add world {entry.name!r}", lambda c: c.execute(insert(worlds), row))
        except WorldExists:
            raise WorldExists(f"a world named {entry.name!r} exists already") from None

    def remove(self, name: str) -> bool:
        from sqlalchemy import delete

        from .sql_schema import sleeping, worlds

        def gone(conn: Any) -> bool:
            conn.execute(delete(sleeping).where(sleeping.c.name == name))
            return bool(conn.execute(delete(worlds).where(worlds.c.name == name)).rowcount)

        result: bool = self._run(f"remove world {name!r}", gone)
        return result

    def set_paused(self, name: str, paused: bool) -> None:
        from sqlalchemy import update

        from .sql_schema import worlds

        stmt = update(worlds).where(worlds.c.name == name).values(paused=int(paused))
        self._run(f"pause world {name!r}", lambda c: c.execute(stmt))

    def set_asleep(self, name: str, sleep: Sleep | None) -> None:
        from sqlalchemy import delete, insert

        from .sql_schema import sleeping

        def write(conn: Any) -> None:
            conn.execute(delete(sleeping).where(sleeping.c.name == name))
            if sleep is not None:
                row = {"name": name, **asdict(sleep)}
                conn.execute(insert(sleeping), row)

        self._run(f"mark world {name!r} {'asleep' if sleep else 'awake'}", write)

    def drop_data(self, name: str) -> None:
        from sqlalchemy import delete

        from .sql_schema import commands, hashes, heads, snapshots

        def drop(conn: Any) -> None:
            for table in (commands, hashes, snapshots, heads):
                conn.execute(delete(table).where(table.c.world == name))

        self._run(f"drop the journal of world {name!r}", drop)

    def close(self) -> None:
        self.store.close()


def open_catalog(url: str, *, schema: str | None = None) -> Catalog:
    """The catalog that goes with the store at ``url`` (see the module's docstring)."""
    if url.startswith("memory://"):
        name = url.removeprefix("memory://")
        if not name:
            return MemoryCatalog()
        from .memory import MemoryStore

        with _named_lock:
            found = _named.get(name)
            if found is None:
                found = _named[name] = MemoryCatalog(MemoryStore(url))
            return found
    if url.startswith(("sqlite", "postgresql")):
        return SqlCatalog(url, schema=schema)
    raise StoreError(f"no world catalog for the store {url!r} (SQL or memory stores only)")


def now() -> float:
    """When a catalog entry is made (wall clock: it only orders the list)."""
    return time.time()
