"""The SQL store's own behaviour: codec, schema version, damaged files, lock contention, a
dropped PostgreSQL connection. What every store must do is in tests/contracts/."""

from __future__ import annotations

import sqlite3
import threading
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from flask import Flask
from sqlalchemy import select

from tests.durability_app import Drift
from tests.store_support import (
    PG_DSN,
    PG_URL,
    drop_pg_schema,
    make_runtime,
    require_postgres,
    run_ticks,
)
from tests.support import wait_for
from worldloop import StoreError, WorldRuntime
from worldloop.store import SCHEMA_VERSION, SqlStore
from worldloop.store.codec import decode_state, encode_state
from worldloop.store.sql_schema import schema_table
from worldloop.world import hash_state


def test_codec_round_trip_keeps_the_hash() -> None:
    w = Drift(particles=100, seed=1)
    w.step([])
    state = w.full_state()
    back = decode_state(encode_state(state))
    assert hash_state(back) == hash_state(state)
    assert isinstance(back["kicks"], int) and isinstance(back["x"], np.ndarray)


def test_codec_rejects_garbage() -> None:
    with pytest.raises(StoreError, match="corrupt"):
        decode_state(b"not a snapshot at all")
    data = encode_state(Drift().full_state())
    with pytest.raises(StoreError, match="corrupt"):
        decode_state(data[: len(data) // 2])


def test_a_newer_schema_version_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "w.db"
    SqlStore(f"sqlite:///{path}").open()
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE worldloop_schema SET version = ?", (SCHEMA_VERSION + 1,))
    with pytest.raises(StoreError, match="newer than this worldloop understands"):
        SqlStore(f"sqlite:///{path}").open()


def _as_version_1(store: SqlStore) -> None:
    """Turn a fresh store back into a schema version 1 store (no idempotency key column)."""
    from sqlalchemy import text

    prefix = f'"{store.schema}".' if store.schema else ""
    with store.engine.connect().execution_options(worldloop_write=True) as conn, conn.begin():
        conn.execute(text(f"DROP INDEX {prefix}ix_worldloop_commands_key"))
        conn.execute(text(f"ALTER TABLE {prefix}worldloop_commands DROP COLUMN idem_key"))
        conn.execute(text(f"UPDATE {prefix}worldloop_schema SET version = 1"))
    store.close()


@pytest.mark.parametrize("kind", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def test_a_version_1_store_is_migrated_and_keeps_its_journal(tmp_path: Path, kind: str) -> None:
    from worldloop.commands import Command, IdempotencyKey, Outcome
    from worldloop.store import journal_record

    schema = None
    if kind == "sqlite":
        url = f"sqlite:///{tmp_path / 'w.db'}"
    else:
        require_postgres()
        url, schema = PG_URL, f"wl_test_{uuid.uuid4().hex[:12]}"
    try:
        old = SqlStore(url, schema=schema)
        old.open()
        cmd = Command("c1", 1, "kick", {"i": 0}, "ann")
        old.append("w", 1, [journal_record(Outcome(cmd, True, 1))])
        _as_version_1(old)
        store = SqlStore(url, schema=schema)
        try:
            store.open()
            with store.engine.connect() as conn:
                version = conn.execute(select(schema_table.c.version)).scalar()
            assert version == SCHEMA_VERSION == 2
            assert store.find_command("w", "c1") is not None  # old data kept
            keyed = Command("c2", 2, "kick", {"i": 0}, "ann", key=IdempotencyKey("s", "fp"))
            store.append("w", 2, [journal_record(Outcome(keyed, True, 2))])
            found = store.find_key("w", "s")
            assert found is not None and found[0] == 2 and found[1]["id"] == "c2"
        finally:
            store.close()
    finally:
        if schema:
            drop_pg_schema(schema)


def _stored_world(tmp_path: Path) -> Path:
    path = tmp_path / "w.db"
    rt = make_runtime(f"sqlite:///{path}", None, snapshot_every=5)
    rt.start()
    run_ticks(rt, 12)
    assert rt.stop()
    return path


@pytest.mark.parametrize("damage", ["garbage", "truncated", "empty"])
def test_damaged_store_files_give_a_clear_error(tmp_path: Path, damage: str) -> None:
    path = _stored_world(tmp_path)
    data = path.read_bytes()
    assert len(data) > 8192
    if damage == "garbage":
        path.write_bytes(b"\x00garbage" * (len(data) // 8))
    elif damage == "truncated":
        path.write_bytes(data[: len(data) // 2])
    else:
        path.write_bytes(b"")
    rt = make_runtime(f"sqlite:///{path}", None)
    with pytest.raises(StoreError) as err:
        rt.start()
    assert str(path) in err.value.message or "corrupt" in err.value.message
    assert not rt.lease.held  # a refused start leaves nothing running


def test_a_corrupt_latest_snapshot_falls_back_to_an_older_one(tmp_path: Path) -> None:
    path = _stored_world(tmp_path)
    probe = make_runtime(f"sqlite:///{path}", None)
    probe.start()
    tick, expected = probe.world.tick, probe.world.state_hash()
    probe.stop()
    with sqlite3.connect(path) as conn:
        conn.execute(
            "UPDATE worldloop_snapshots SET data = CAST(zeroblob(size) AS BLOB) "
            "WHERE tick = (SELECT max(tick) FROM worldloop_snapshots)"
        )
    rt = make_runtime(f"sqlite:///{path}", None)
    rt.start()
    try:
        assert rt.durability is not None and rt.durability.last_recovery is not None
        assert rt.durability.last_recovery.snapshot_tick < tick
        assert (rt.world.tick, rt.world.state_hash()) == (tick, expected)
    finally:
        rt.ticker.stop()
        rt.durability.close()
        rt.lease.release()
    with sqlite3.connect(path) as conn:  # now every snapshot is damaged
        conn.execute("UPDATE worldloop_snapshots SET data = CAST(zeroblob(size) AS BLOB)")
    with pytest.raises(StoreError, match="checksum"):
        make_runtime(f"sqlite:///{path}", None).start()


def test_a_diverging_replay_is_refused(tmp_path: Path) -> None:
    """A recorded hash that replay cannot reproduce stops the start instead of running on."""
    path = tmp_path / "w.db"
    rt = make_runtime(f"sqlite:///{path}", None, snapshot_every=100, hash_every=4)
    rt.start()
    run_ticks(rt, 10)
    rt.ticker.stop()
    assert rt.durability is not None
    rt.durability.close()
    rt.lease.release()
    with sqlite3.connect(path) as conn:  # tamper with one journaled command
        conn.execute(
            "UPDATE worldloop_commands SET record = replace(record, '\"dv\":0.5', '\"dv\":0.25') "
            "WHERE tick = 3"
        )
    with pytest.raises(StoreError, match="replay diverged at tick 4"):
        make_runtime(f"sqlite:///{path}", None).start()


def test_journal_failure_halts_without_acknowledging(tmp_path: Path) -> None:
    path = tmp_path / "w.db"
    store = SqlStore(f"sqlite:///{path}", busy_timeout=0.05)
    rt = WorldRuntime(Drift(particles=8), store=store, start_paused=True, store_retry_seconds=0.3)
    rt.start()
    ok = rt.submit("kick", {"i": 1, "dv": 1.0})
    rt.step(1)
    assert ok.status == "applied"
    durable_tick, durable_hash = rt.world.tick, rt.world.state_hash()

    blocker = sqlite3.connect(path, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")  # another writer holds the database: appends fail
    try:
        lost = rt.submit("kick", {"i": 2, "dv": 1.0})
        rt.step(1)
        assert lost.done and lost.status == "rejected"
        assert lost.outcome is not None and lost.outcome.error_code == "store_unavailable"
        assert rt.degraded is not None and "journal write" in rt.degraded
        assert rt.snapshot.tick == durable_tick  # the un-journaled tick was never published
        with pytest.raises(StoreError, match="halted"):
            rt.submit("kick", {"i": 3, "dv": 1.0})
        rt.step(1)  # no further tick runs
        assert rt.world.tick == durable_tick + 1
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    rt.stop()  # no final snapshot of the diverged in-memory world

    rt2 = WorldRuntime(Drift(particles=8), store=SqlStore(f"sqlite:///{path}"), start_paused=True)
    rt2.start()
    try:
        assert rt2.world.tick == durable_tick
        assert rt2.world.state_hash() == durable_hash
        assert rt2.store is not None and rt2.store.find_command("drift", lost.id) is None
        assert rt2.store.find_command("drift", ok.id) is not None
    finally:
        rt2.stop()


def test_snapshots_are_written_off_the_loop_thread(tmp_path: Path) -> None:
    rt = make_runtime(f"sqlite:///{tmp_path / 'w.db'}", None, snapshot_every=3)
    rt.start()
    try:
        assert rt.durability is not None
        for _ in range(3):  # a due snapshot is deferred while the writer is busy: let it finish
            run_ticks(rt, 3, per_tick=0)
            assert rt.durability.drain(10)
        assert rt.durability.snapshots_written == 3
        writer = rt.durability._writer
        assert writer is not None and writer.name == "worldloop-snapshot-writer"
        assert rt.store is not None
        snaps = rt.store.snapshots("drift")  # type: ignore[attr-defined]
        assert [s.tick for s in snaps] == [0, 3, 6, 9]
    finally:
        rt.stop()


def test_an_idle_snapshot_writer_exits_and_the_next_snapshot_starts_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A process of many worlds keeps no writer thread per world: a writer with nothing to do
    exits, and the next due snapshot starts a new one and is written."""
    monkeypatch.setattr("worldloop.durability.WRITER_IDLE_SECONDS", 0.05)
    rt = make_runtime(f"sqlite:///{tmp_path / 'w.db'}", None, snapshot_every=3)
    rt.start()
    try:
        dur = rt.durability
        assert dur is not None
        for written in (1, 2):
            run_ticks(rt, 3, per_tick=0)
            wait_for(lambda n=written: dur.snapshots_written == n, 10, what="the snapshot")
            wait_for(lambda: dur._writer is None, 10, what="the idle writer to exit")
            assert not any(t.name == "worldloop-snapshot-writer" for t in threading.enumerate())
        run_ticks(rt, 1, per_tick=0)
    finally:
        rt.stop()
    assert rt.store is not None  # the final snapshot (tick 7) too, by a writer started for it
    assert [s.tick for s in rt.store.snapshots("drift")] == [0, 3, 6, 7]  # type: ignore[attr-defined]


def test_the_demo_app_keeps_its_world_in_the_instance_folder(app: Flask, tmp_path: Path) -> None:
    """Default store: sqlite:///<instance>/worldloop.db, lease file beside it."""
    rt = app.extensions["worldloop"].runtime
    instance = tmp_path / "instance"
    assert (instance / "worldloop.db").exists()
    assert (instance / "worldloop.db.lock").exists()
    assert rt.store is not None and rt.store.url == f"sqlite:///{instance / 'worldloop.db'}"
    tick = rt.snapshot.tick
    wait_for(lambda: rt.snapshot.tick > tick + 2, 10, what="a few ticks")
    assert rt.store.head(rt.name) >= tick + 2


@pytest.mark.postgres
def test_a_dropped_database_connection_is_retried_without_loss(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """PostgreSQL kills the store's sessions mid-run: the next write retries and goes on."""
    require_postgres()
    import psycopg

    schema = f"wl_test_{uuid.uuid4().hex[:12]}"
    url = f"{PG_URL}?application_name={schema}"
    rt = make_runtime(url, schema, snapshot_every=0)
    try:
        rt.start()
        run_ticks(rt, 5)
        with psycopg.connect(PG_DSN, autocommit=True) as conn:
            killed = conn.execute(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE application_name = %s",
                (schema,),
            ).fetchone()
        assert killed is not None and killed[0] >= 1
        ids = run_ticks(rt, 5)
        assert rt.degraded is None
        assert "failed (attempt 1), retrying" in caplog.text
        tick, expected = rt.world.tick, rt.world.state_hash()
        assert rt.stop()
        rt2 = make_runtime(url, schema)
        rt2.start()
        try:
            assert (rt2.world.tick, rt2.world.state_hash()) == (tick, expected)
            assert all(rt2.command_status(i) is not None for i in ids)
        finally:
            rt2.stop()
    finally:
        rt.stop()
        drop_pg_schema(schema)


@pytest.mark.postgres
def test_workers_opening_a_new_postgres_schema_at_once_all_open_it() -> None:
    """gunicorn -w N on a fresh schema: every worker prepares the store at the same moment; the
    preparations are serialized, so none dies of CREATE SCHEMA/TABLE's unique violation."""
    import threading

    require_postgres()
    schema = f"wl_test_{uuid.uuid4().hex[:12]}"
    stores = [SqlStore(PG_URL, schema=schema) for _ in range(8)]
    barrier = threading.Barrier(len(stores))
    errors: list[BaseException] = []

    def open_one(store: SqlStore) -> None:
        barrier.wait(10)
        try:
            store.open()
        except BaseException as exc:  # every failure is the finding
            errors.append(exc)

    threads = [threading.Thread(target=open_one, args=(s,)) for s in stores]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert errors == []
        with stores[0].engine.connect() as conn:
            assert conn.execute(select(schema_table.c.version)).scalar() == SCHEMA_VERSION
    finally:
        for store in stores:
            store.close()
        drop_pg_schema(schema)


def test_a_store_file_is_checked_when_first_opened_not_for_every_world(tmp_path: Path) -> None:
    """PRAGMA quick_check reads the whole file: it runs when the file is opened, not again for
    each world's store on a file already open here (a world waking from hibernation), and
    again once no store of this process holds the file (it may have been replaced)."""
    from sqlalchemy import event
    from sqlalchemy.engine import Engine

    checks: list[str] = []

    def count(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if "quick_check" in statement:
            checks.append(statement)

    url = f"sqlite:///{tmp_path / 'w.db'}"
    event.listen(Engine, "before_cursor_execute", count)
    try:
        first = SqlStore(url)
        first.open()
        second = SqlStore(url)
        second.open()
        assert len(checks) == 1
        second.close()
        first.close()
        again = SqlStore(url)
        again.open()
        assert len(checks) == 2
        again.close()
    finally:
        event.remove(Engine, "before_cursor_execute", count)
