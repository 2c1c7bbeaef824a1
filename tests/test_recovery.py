"""Short restarts (issue 17): interim snapshots paced by stepping time bound the replay, and
are pruned again; the meadow's spatial grid is derived state, built only when read."""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from tests.durability_app import Drift
from worldloop.commands import Command, CommandQueue
from worldloop.config import SNAPSHOT_WRITE_SHARE
from worldloop.demo.meadow import Meadow
from worldloop.durability import Durability, replay
from worldloop.store import SqlStore
from worldloop.store.base import prune_plan
from worldloop.store.memory import MemoryStore


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqlStore]:
    s = SqlStore(f"sqlite:///{tmp_path / 'w.db'}")
    try:
        yield s
    finally:
        s.close()


def run(dur: Durability, world: Drift, ticks: int, step_seconds: float) -> None:
    """Step, journal and offer a snapshot per tick, as the runtime does, with a given step cost."""
    for _ in range(ticks):
        dur.record(world, world.step([]))
        dur.after_tick(world, step_seconds)
        assert dur.drain(10)


def test_snapshots_follow_the_stepping_budget() -> None:
    # In memory: an interim snapshot also waits as long as the last one took to write (the
    # test below), which an fsync on a loaded machine can stretch past the budget.
    store = MemoryStore("memory://budget")
    dur = Durability(store, snapshot_every=1000, recovery_seconds=0.25)
    world = Drift()
    dur.recover(world, CommandQueue(10))
    run(dur, world, 24, 0.01)
    assert dur.snapshots_written == 0  # 0.24 s of stepping: not yet
    assert dur.snapshot_due(world, 0.01)
    run(dur, world, 1, 0.01)
    assert (dur.snapshots_written, dur.last_snapshot_tick) == (1, 25)
    run(dur, world, 50, 0.01)
    # interim snapshots at 25, 50, 75: the two older ones go once two newer exist
    assert [s.tick for s in store.snapshots("drift")] == [0, 50, 75]


def test_no_budget_means_the_tick_cadence_only(store: SqlStore) -> None:
    dur = Durability(store, snapshot_every=40, recovery_seconds=0)
    world = Drift()
    dur.recover(world, CommandQueue(10))
    run(dur, world, 100, 1.0)
    assert [s.tick for s in store.snapshots("drift")] == [0, 40, 80]


@pytest.mark.parametrize("share", [None, 1.0, 0.5])
def test_interim_snapshots_cost_at_most_their_share_of_the_stepping(
    store: SqlStore, share: float | None
) -> None:
    """A write is paid every time, the replay it saves only at a restart: an interim snapshot
    waits for the last one's write time / WORLDLOOP_SNAPSHOT_WRITE_SHARE (0.2 by default) of
    stepping when that is longer than the budget."""
    options = {} if share is None else {"write_share": share}
    dur = Durability(store, snapshot_every=1000, recovery_seconds=0.095, **options)
    world = Drift()
    dur.recover(world, CommandQueue(10))
    dur._write_seconds = 0.081  # a slow store: writing one costs most of the budget
    need = max(0.095, 0.081 / (share or SNAPSHOT_WRITE_SHARE))  # 0.405, 0.095, 0.162 s
    run(dur, world, math.floor(need / 0.01), 0.01)  # ticks of 0.01 s stepping, just short
    assert dur.snapshots_written == 0
    run(dur, world, 1, 0.01)
    assert dur.snapshots_written == 1


def test_a_restart_replays_from_the_interim_snapshot(store: SqlStore, tmp_path: Path) -> None:
    # the replay is the subject here, not the pacing: a write costing more than a fifth of
    # the budget (an fsync on a loaded machine) would delay the second interim snapshot
    dur = Durability(store, snapshot_every=1000, recovery_seconds=0.25, write_share=1.0)
    world = Drift()
    dur.recover(world, CommandQueue(10))
    for t in range(60):  # crash after tick 60: nothing more than the journal and snapshots
        cmd = Command(id=f"c{t}", seq=t + 1, type="kick", payload={"i": t % 8, "dv": 0.5})
        dur.record(world, world.step([cmd]))
        dur.after_tick(world, 0.01)
        assert dur.drain(10)
    again = SqlStore(store.url)
    try:
        restarted = Drift()
        result = Durability(again).recover(restarted, CommandQueue(10))
    finally:
        again.close()
    assert result is not None and (result.snapshot_tick, result.tick) == (50, 60)
    assert restarted.state_hash() == world.state_hash()


def test_prune_plan_keeps_the_base_and_the_latest_two() -> None:
    assert prune_plan([0, 7, 10, 14, 21], 100, {7, 14, 21}) == (None, [7])
    assert prune_plan([0, 7, 10, 14, 21], 100) is None
    # the base (newest snapshot at or before latest - retention) is never dropped as interim
    assert prune_plan([0, 7, 14, 21, 28], 20, {7, 14, 21, 28}) == (7, [0, 14])


def meadow_with_avatars() -> Meadow:
    world = Meadow(width=300, height=300, entities=3000, seed=4)
    joins = [
        Command(
            id=f"j{i}",
            seq=i + 1,
            type="join",
            payload={"player_id": f"{i:032x}", "name": f"p{i}", "token_hash": f"{i:064x}"},
        )
        for i in range(20)
    ]
    world.step(joins)
    moves = [
        Command(
            id=f"m{i}",
            seq=100 + i,
            type="move_to",
            payload={"x": 17.0 * i, "y": 150.0},
            actor=f"{i:032x}",
        )
        for i in range(20)
    ]
    world.step(moves)
    return world


def test_the_spatial_grid_is_the_same_read_every_tick_or_never() -> None:
    published, replayed = meadow_with_avatars(), meadow_with_avatars()
    for _ in range(60):
        published.step([])
        grid = published.grid  # what publishing a snapshot does after every tick
        assert np.array_equal(np.sort(grid.order), np.arange(len(published.ids)))
        replayed.step([])
    assert published.state_hash() == replayed.state_hash()
    assert np.array_equal(published.grid.order, replayed.grid.order)


def test_meadow_replay_matches_the_live_world(store: SqlStore) -> None:
    world = meadow_with_avatars()
    dur = Durability(store, snapshot_every=1000, recovery_seconds=0)
    dur.recover(world, CommandQueue(10))
    for _ in range(30):
        dur.record(world, world.step([]))
        world.view()
    restored = Meadow(width=300, height=300, entities=0)
    result = replay(restored, store.load("meadow"))
    assert result.tick == world.tick and result.state_hash == world.state_hash()
