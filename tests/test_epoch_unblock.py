"""A new owner's claim ends the stalled session of an earlier owner that holds the world's locks
(store/unblock.py) instead of waiting for the server's idle-in-transaction timeout (10 s); it
never ends a session that is not worldloop's, nor one that does not block it."""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Iterator

import psycopg
import pytest
from sqlalchemy import Connection
from sqlalchemy.exc import DBAPIError

from tests.store_support import PG_DSN, PG_URL, drop_pg_schema, pg_session_alive, require_postgres
from tests.support import wait_for
from worldloop.errors import WorldFenced
from worldloop.store.epoch import Claim, EpochFence, fenced_store
from worldloop.store.group import JOURNAL, _write_rows, journal_entry
from worldloop.store.pg_options import SESSION_DEFAULTS
from worldloop.store.unblock import LOCK_GRACE

pytestmark = pytest.mark.postgres

SERVER_ENDS_IT = SESSION_DEFAULTS["idle_in_transaction_session_timeout"] / 1000
"""When the server itself would end a stalled session: every bound here is well under it."""


@pytest.fixture
def fences() -> Iterator[tuple[EpochFence, EpochFence]]:
    """Two owners of one PostgreSQL schema of the test's own; ``a`` has claimed world ``w``
    and committed tick 1 (command ``c1``)."""
    require_postgres()
    schema = f"wl_test_{uuid.uuid4().hex[:12]}"
    a = fenced_store(PG_URL, "runner a", schema=schema)
    b = fenced_store(PG_URL, "runner b", schema=schema)
    try:
        a.claim("w")
        a.stage("w", "5-0")
        a.store.append("w", 1, [rec(1)])
        yield a, b
    finally:
        a.store.close()
        b.store.close()
        drop_pg_schema(schema)


def rec(seq: int) -> dict[str, object]:
    return {"id": f"c{seq}", "seq": seq, "type": "kick", "payload": {}, "actor": None, "ok": True}


def stalled_write(fence: EpochFence, world: str, upto: str) -> tuple[Connection, int]:
    """A journal transaction of ``fence``'s owner for ``world`` left idle (its runner paused):
    ``upto`` "rows" stops after its rows (the head row locked), "fence" after its fence (the
    epochs row locked too). Returns the connection and its server pid."""
    conn = fence.store.engine.connect()
    conn.begin()
    pid = int(conn.exec_driver_sql("SELECT pg_backend_pid()").scalar_one())
    _write_rows(conn, [journal_entry(fence.store, world, 2, [rec(2)], None, 1)])
    if upto == "fence":
        fence(conn, world, JOURNAL)
    return conn, pid


@pytest.mark.parametrize("upto", ["rows", "fence"])
def test_a_claim_ends_the_stalled_session_of_the_old_owner(
    fences: tuple[EpochFence, EpochFence], upto: str, caplog: pytest.LogCaptureFixture
) -> None:
    a, b = fences
    a.claim("idle")  # a bystander: a's stalled write of another world blocks nobody
    a.store.append("idle", 1, [rec(1)])
    bystander, bystander_pid = stalled_write(a, "idle", "fence")
    paused, paused_pid = stalled_write(a, "w", upto)
    try:
        time.sleep(LOCK_GRACE)  # stalled, as a runner paused past its lease is
        started = time.monotonic()
        with caplog.at_level(logging.WARNING, logger="worldloop.store"):
            claim = b.claim("w")
        took = time.monotonic() - started
        print(f"claim past a session stalled after its {upto}: {took:.2f} s")
        assert claim == Claim("w", 2, "5-0")
        assert took < 5 < SERVER_ENDS_IT  # a liveness bound, not a speed one
        wait_for(lambda: not pg_session_alive(paused_pid), 5, 0.05, "the stalled session to end")
        assert f"pid {paused_pid}" in caplog.text and "'w'" in caplog.text
        assert pg_session_alive(bystander_pid)  # idle in its transaction too, but blocking nothing
        with pytest.raises(DBAPIError):  # the paused runner wakes: its transaction is gone
            paused.exec_driver_sql("SELECT 1")
    finally:
        paused.invalidate()
        paused.close()
        bystander.rollback()
        bystander.close()
    a.stage("w", "9-0")
    with pytest.raises(WorldFenced):  # its retry commits nothing
        a.store.append("w", 2, [rec(2)])
    assert b.store.head("w") == 1  # what a had committed is all there
    assert b.store.find_command("w", "c1") is not None
    assert b.store.find_command("w", "c2") is None
    b.stage("w", "6-0")
    b.store.append("w", 2, [rec(3)])  # and the new owner writes past the old one's rows
    assert b.store.head("w") == 2


def test_a_claim_never_ends_a_session_that_is_not_worldloops(
    fences: tuple[EpochFence, EpochFence],
) -> None:
    a, b = fences
    schema = a.store.schema
    with psycopg.connect(PG_DSN, application_name="another client") as other:
        other.execute(  # a transaction idle on the world's epochs row (psycopg begins one)
            f'SELECT 1 FROM "{schema}".worldloop_epochs WHERE world = %s FOR UPDATE', ("w",)
        )
        pid = other.info.backend_pid
        claims: list[Claim] = []
        claimer = threading.Thread(target=lambda: claims.append(b.claim("w")), daemon=True)
        claimer.start()
        claimer.join(LOCK_GRACE * 5)  # several looks of the claim's watcher
        assert claimer.is_alive() and not claims  # it waits, as for any lock
        assert pg_session_alive(pid)
        other.rollback()
        claimer.join(5)
    assert not claimer.is_alive() and claims == [Claim("w", 2, "5-0")]
