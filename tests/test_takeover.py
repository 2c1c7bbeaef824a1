"""What a world's take-over costs in the Redis mode (issue 14): the owners' stores of one
process share one prepared PostgreSQL engine (store/engines.py) while each keeps its own epoch
fence, a claim is one statement, and a runner told of a release reads the placement again
before waking the world's standby (worldloop.fleet). The pause itself is a measured figure
(bench/scaleout_placement.py), never a timed assertion here."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any, cast

import pytest
import redis

from tests.durability_app import Drift
from tests.redis_support import REDIS_URL
from tests.store_support import PG_URL, drop_pg_schema, require_postgres
from tests.support import wait_for
from worldloop.commands import Command, CommandQueue
from worldloop.durability import Durability
from worldloop.errors import WorldFenced
from worldloop.fleet import Fleet
from worldloop.scaleout import ScaleoutRuntime
from worldloop.store import engines
from worldloop.store.epoch import EpochFence
from worldloop.store.sql import SqlStore


@pytest.fixture
def pg_schema() -> Iterator[str]:
    """A PostgreSQL schema of the test's own, dropped afterwards."""
    require_postgres()
    schema = f"wl_test_{uuid.uuid4().hex[:12]}"
    try:
        yield schema
    finally:
        drop_pg_schema(schema)


def rec(seq: int) -> dict[str, object]:
    return {"id": f"c{seq}", "seq": seq, "type": "kick", "payload": {}, "actor": None, "ok": True}


def test_n_owners_stores_share_one_engine_prepared_once(
    pg_schema: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    prepared: list[object] = []
    real = SqlStore._prepare

    def counting(self: SqlStore, engine: Any) -> None:
        prepared.append(engine)
        real(self, engine)

    monkeypatch.setattr(SqlStore, "_prepare", counting)
    stores = [SqlStore(PG_URL, schema=pg_schema, share_engine=True) for _ in range(5)]
    try:
        for store in stores:
            store.open()
        assert len({id(s.engine) for s in stores}) == 1
        assert len(prepared) == 1  # the schema checks ran once for the five stores
        assert engines.users(PG_URL, pg_schema) == 5
        for store in stores[:4]:
            store.close()
        assert engines.users(PG_URL, pg_schema) == 1
        with stores[4].engine.connect() as conn:  # still usable: not disposed under the last
            assert conn.exec_driver_sql("SELECT 1").scalar() == 1
    finally:
        for store in stores:
            store.close()
    assert engines.users(PG_URL, pg_schema) == 0
    unshared = [SqlStore(PG_URL, schema=pg_schema) for _ in range(2)]
    try:
        assert unshared[0].engine is not unshared[1].engine
    finally:
        for store in unshared:
            store.close()


def test_fences_stay_per_owner_on_a_shared_engine(pg_schema: str) -> None:
    old = EpochFence(SqlStore(PG_URL, schema=pg_schema, share_engine=True), "runner a")
    new = EpochFence(SqlStore(PG_URL, schema=pg_schema, share_engine=True), "runner b")
    try:
        assert old.store.engine is new.store.engine
        first = old.claim("w")
        assert (first.epoch, first.cursor) == (1, "0-0")
        old.stage("w", "5-0")
        old.store.append("w", 1, [rec(1)])
        second = new.claim("w")  # the bump and the cursor in one statement
        assert (second.epoch, second.cursor) == (2, "5-0")
        with pytest.raises(WorldFenced):
            old.store.save_snapshot("w", 1, {"x": 1}, "h1")
        with pytest.raises(WorldFenced):
            old.store.append("w", 2, [rec(2)])
        new.store.save_snapshot("w", 1, {"x": 1}, "h1")
        new.store.append("w", 2, [rec(2)])
        assert new.store.head("w") == 2
    finally:
        old.store.close()
        new.store.close()


def test_a_sqlite_store_never_shares(tmp_path: Any) -> None:
    url = f"sqlite:///{tmp_path / 'w.db'}"
    a, b = SqlStore(url, share_engine=True), SqlStore(url, share_engine=True)
    try:
        assert not a.shares_engine
        assert a.engine is not b.engine
    finally:
        a.close()
        b.close()


class Standby:
    """A world's runtime as the fleet sees it: records whether the fleet wanted the world
    at the moment it was woken."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.fleet: Fleet | None = None
        self.owner: object | None = None
        self.woken_wanting: list[bool] = []

    def wake(self) -> None:
        assert self.fleet is not None
        self.woken_wanting.append(self.fleet.wants(self.name))


def test_a_release_after_a_leave_wakes_the_standby_with_a_fresh_placement(prefix: str) -> None:
    def fleet() -> Fleet:
        # polls of a minute: no placement is read again but the one the release triggers
        return Fleet(redis.Redis.from_url(REDIS_URL), prefix=prefix, ttl=60.0, poll=60.0)

    stay, leave = fleet(), fleet()
    standbys = [Standby(f"w{i:02d}") for i in range(12)]
    for sb in standbys:
        stay.attach(cast(ScaleoutRuntime, sb))
    stay.start()
    leave.start()
    try:
        stay.refresh()
        elsewhere = [sb for sb in standbys if not stay.wants(sb.name)]
        assert elsewhere  # some worlds are placed on the runner about to leave
        leave.stop()  # leaves the registry, then hands each of its worlds over
        moved = elsewhere[0]
        assert not stay.wants(moved.name)  # the view read before the leave still names it
        leave.registry.announce_release(moved.name)
        wait_for(lambda: moved.woken_wanting, 5, 0.02, "the release to wake the standby")
        assert all(moved.woken_wanting), moved.woken_wanting
    finally:
        stay.stop()
        leave.stop()


def test_a_free_world_placed_here_by_a_refresh_wakes_its_standby(prefix: str) -> None:
    def fleet() -> Fleet:
        return Fleet(redis.Redis.from_url(REDIS_URL), prefix=prefix, ttl=60.0, poll=60.0)

    stay, dead = fleet(), fleet()
    standbys = [Standby(f"w{i:02d}") for i in range(12)]
    for sb in standbys:
        stay.attach(cast(ScaleoutRuntime, sb))
    held = redis.Redis.from_url(REDIS_URL)
    try:
        dead.registry.join()
        stay.start()
        orphans = [sb for sb in standbys if not stay.wants(sb.name)]
        assert orphans  # placed on the other runner
        for sb in standbys:
            sb.woken_wanting.clear()
        held.set(f"{prefix}{standbys[0].name}:lease", b"elsewhere pid 1 x")  # held: not woken
        dead.registry.leave()  # as if its entry expired: its worlds are free and placed here
        stay.refresh()
        assert all(sb.woken_wanting == [True] for sb in orphans if sb is not standbys[0])
        assert standbys[0].woken_wanting == []
    finally:
        held.close()
        stay.stop()
        dead.registry.leave()


def journal(dur: Durability, world: Drift, ticks: int, step_seconds: float) -> None:
    """Step and journal ``ticks`` ticks with a command each, as the loop does, with a given
    step cost (the stepping the snapshots are paced by)."""
    for _ in range(ticks):
        t = world.tick
        cmd = Command(id=f"c{t}", seq=t + 1, type="kick", payload={"i": t % 8, "dv": 0.5})
        dur.record(world, world.step([cmd]))
        dur.after_tick(world, step_seconds)
        assert dur.drain(10)


@pytest.mark.parametrize("hand_over", [False, True])
def test_a_hand_over_skips_a_final_snapshot_dearer_than_its_replay(
    tmp_path: Any, hand_over: bool
) -> None:
    store = SqlStore(f"sqlite:///{tmp_path / 'w.db'}")
    try:
        dur = Durability(store, snapshot_every=1000, recovery_seconds=0.25)
        world = Drift()
        dur.recover(world, CommandQueue(10))
        journal(dur, world, 1, 0.3)  # a quarter second of stepping: an interim snapshot
        assert dur.last_snapshot_tick == 1 and dur._write_seconds > 0
        journal(dur, world, 5, 0.0)  # then ticks far cheaper to replay than to snapshot
        dur.hand_over = hand_over
        assert dur.final_snapshot(world) is (not hand_over)
        assert [s.tick for s in store.snapshots(world.name)][-1] == (1 if hand_over else 6)
        dur.close()
    finally:
        store.close()
    again = SqlStore(store.url)  # the next owner: snapshot + journal, hash-checked
    try:
        moved = Drift()
        result = Durability(again).recover(moved, CommandQueue(10))
    finally:
        again.close()
    assert result is not None and result.tick == 6
    assert result.snapshot_tick == (1 if hand_over else 6)
    assert moved.state_hash() == world.state_hash()
