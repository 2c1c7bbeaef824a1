"""A new owner's claim does not wait on the locks of a stalled earlier owner (PostgreSQL).

A runner paused (SIGSTOP, a VM freeze) or cut off in the middle of a write transaction of a
world keeps its server session idle in that transaction, with the row locks it took: the
world's head row (the journal's first statement) and its ``worldloop_epochs`` row (the fence,
last). The next owner wins the lease once the old lease expired, and its claim locks the same
rows, so it used to wait until the server ended the stalled session
(``idle_in_transaction_session_timeout``, store/pg_options.py: 10 s).

:func:`unblocking` runs around the claim's statements. If they are still waiting after
:data:`LOCK_GRACE`, a watcher thread asks the server, on a connection of its own, which sessions
block the claim's backend (``pg_blocking_pids``: exactly the sessions this wait is queued behind,
nothing merely idle) and ends those that are all of:

- worldloop's own (``application_name`` starts with
  :data:`~worldloop.store.pg_options.APPLICATION_PREFIX`): never another client's session;
- idle in a transaction, and since at least :data:`LOCK_GRACE`: stalled, not a live writer
  between two statements (microseconds), nor one running a statement.

The claimed wait then ends by itself (the ended session's transaction rolls back and its locks go)
and the claim commits in the same attempt. That is safe because the claimer holds the lease (the
earlier owner's lease expired) and the epoch fence runs last in every write: the ended
transaction was not committed, so nothing of it was acknowledged (acknowledgement follows the
commit) and the commands it held are still in the stream after the committed cursor, for the new
owner to read; had it woken, the bump would have fenced it anyway. (A deletion's bump,
scaleout_worlds.py, fences the world's owner on purpose: ending its stalled write is the same.)
The watcher looks again every :data:`LOCK_GRACE`, :data:`ROUNDS` times at most; a blocker it
may not end (another client, a session in a statement, a role it may not signal) is waited for
as before, bounded by the server's timeouts. SQLite has no such sessions: there this does nothing.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterator
from typing import Any

from sqlalchemy import Connection, Engine, text
from sqlalchemy.exc import SQLAlchemyError

from .pg_options import APPLICATION_PREFIX

log = logging.getLogger("worldloop.store")

LOCK_GRACE = 0.5
"""Seconds a claim waits on a lock before it looks for a stalled session to end, and how long a
blocker must have been idle in its transaction to count as stalled. A live owner commits in
milliseconds, so a wait this long is a stalled one; short against the lease ttl, so a SIGSTOP
take-over costs at most about this much more than a kill -9 one."""

ROUNDS = 10
"""How many times the watcher of one claim looks for blockers (every :data:`LOCK_GRACE`) before
it leaves the claim to wait as any lock wait does."""

_BLOCKERS = text(
    """
    WITH blocking AS MATERIALIZED (SELECT unnest(pg_blocking_pids(:waiter)) AS pid)
    SELECT a.pid, a.application_name, pg_terminate_backend(a.pid)
    FROM pg_stat_activity a JOIN blocking b ON a.pid = b.pid
    WHERE a.application_name LIKE :prefix
      AND a.state IN ('idle in transaction', 'idle in transaction (aborted)')
      AND a.state_change < clock_timestamp() - make_interval(secs => :stalled)
    """
)
"""End the stalled worldloop sessions that ``:waiter`` waits on; one row per session ended."""


@contextlib.contextmanager
def unblocking(conn: Connection, world: str) -> Iterator[None]:
    """Run the statements of ``conn`` (in its transaction) inside: while they wait on a lock
    longer than :data:`LOCK_GRACE`, the stalled worldloop sessions they wait on are ended."""
    if conn.dialect.name != "postgresql":
        yield
        return
    watcher = _Watcher(conn.engine, backend_pid(conn), world)
    watcher.start()
    try:
        yield
    finally:
        watcher.stop()


def backend_pid(conn: Connection) -> int:
    """The server process of ``conn`` (from the driver, without a round trip when it can)."""
    dbapi: Any = conn.connection.dbapi_connection
    pid = getattr(getattr(dbapi, "info", None), "backend_pid", None)  # psycopg 3
    if pid is None and hasattr(dbapi, "get_backend_pid"):  # psycopg2
        pid = dbapi.get_backend_pid()
    if pid is None:
        pid = conn.exec_driver_sql("SELECT pg_backend_pid()").scalar_one()
    return int(pid)


def end_stalled_blockers(engine: Engine, waiter: int) -> list[tuple[int, str]]:
    """End the stalled worldloop sessions that backend ``waiter`` is waiting on now (see the
    module's docstring); return their ``(pid, application_name)``."""
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        rows = conn.execute(
            _BLOCKERS,
            {"waiter": waiter, "prefix": f"{APPLICATION_PREFIX}%", "stalled": LOCK_GRACE},
        ).all()
    return [(int(pid), str(name)) for pid, name, _ in rows]


class _Watcher(threading.Thread):
    """Looks for the stalled sessions one claim waits on, every :data:`LOCK_GRACE`, until
    stopped (the claim's statements are done) or after :data:`ROUNDS` looks."""

    def __init__(self, engine: Engine, waiter: int, world: str) -> None:
        super().__init__(name=f"worldloop-unblock-{world}"[:60], daemon=True)
        self.engine = engine
        self.waiter = waiter
        self.world = world
        self._done = threading.Event()

    def stop(self) -> None:
        """The claim's statements are done: stop looking (and wait for a look in flight, so
        nothing is ended on behalf of a backend that has moved on)."""
        self._done.set()
        if self.is_alive():
            self.join(LOCK_GRACE * 4)

    def run(self) -> None:
        for _ in range(ROUNDS):
            if self._done.wait(LOCK_GRACE):
                return
            try:
                ended = end_stalled_blockers(self.engine, self.waiter)
            except SQLAlchemyError as exc:  # e.g. a role that may not end them: wait as before
                log.warning(
                    "world %r: the claim waits on a lock and cannot end its blockers: %s",
                    self.world,
                    exc,
                )
                return
            if ended:
                log.warning(
                    "world %r: ended stalled PostgreSQL session(s) of an earlier owner that "
                    "blocked the claim: %s",
                    self.world,
                    ", ".join(f"pid {pid} ({name})" for pid, name in ended),
                )
