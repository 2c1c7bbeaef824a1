"""One prepared SQLAlchemy engine per PostgreSQL database and schema per process, shared by the
SQL stores that ask for it.

In the Redis mode every take-over of a world builds a new :class:`~worldloop.store.sql.SqlStore`
(its :class:`~worldloop.store.epoch.EpochFence` is per store object, so each owner needs its
own). Building an engine per store meant a new connection pool, a TCP + auth handshake and the
schema checks (create schema, has-table, version read) inside the pause a moved world sees.
Stores that share an engine share only the pool and the schema checks: fences, group commit and
the per-world sequence numbers stay on each store object. The engine is counted: it is disposed
when its last store closes. The process id is part of the key, so a forked child never uses
its parent's connections.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import Engine

SHARED_POOL_SIZE = 10
"""Connections a shared engine keeps open. Its overflow is unbounded, as N stores with pools of
their own were: a loop thread never waits on the pool for its journal write."""


@dataclass(slots=True)
class _Shared:
    engine: Engine
    users: int


_engines: dict[tuple[int, str, str | None], _Shared] = {}
_lock = threading.Lock()


def acquire(url: str, schema: str | None, make: Callable[[], Engine]) -> Engine:
    """The process's engine for ``(url, schema)``, built and prepared by ``make`` when there is
    none yet (``make`` raises: nothing is kept). Every acquire needs one :func:`release`."""
    key = (os.getpid(), url, schema)
    with _lock:
        shared = _engines.get(key)
        if shared is None:
            shared = _engines[key] = _Shared(make(), 0)
        shared.users += 1
        return shared.engine


def release(url: str, schema: str | None) -> None:
    """One user of ``(url, schema)``'s engine is done; the last one disposes of it."""
    key = (os.getpid(), url, schema)
    with _lock:
        shared = _engines.get(key)
        if shared is None:
            return
        shared.users -= 1
        if shared.users > 0:
            return
        del _engines[key]
    shared.engine.dispose()


def users(url: str, schema: str | None) -> int:
    """How many open stores of this process share ``(url, schema)``'s engine (0: none)."""
    shared = _engines.get((os.getpid(), url, schema))
    return 0 if shared is None else shared.users
