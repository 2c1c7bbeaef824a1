"""Simulation time: dt = 1 / rate when the runtime takes a new world (unless the world fixes
its own), kept in the state, so a run-time rate change or a restart at another rate changes
the wall speed and never dt, and replay agrees (checked by the state hash)."""

from __future__ import annotations

from pathlib import Path

import pytest
from examples.boids import Boids

from worldloop import ManualClock, WorldRuntime
from worldloop.store import open_store


class Fixed(Boids):
    fixed_dt = 0.1


def runtime(world: Boids, rate: float, store_url: str | None = None) -> WorldRuntime:
    store = open_store(store_url) if store_url else None
    return WorldRuntime(
        world, rate_hz=rate, clock=ManualClock(start=0.0), start_paused=True, store=store
    )


def test_dt_is_one_over_the_rate_at_creation() -> None:
    rt = runtime(Boids(n=5), 30.0)
    rt.start()
    try:
        rt.step(9)
        assert rt.snapshot.tick == 9
        assert rt.snapshot.sim_time == pytest.approx(9 / 30)  # not 0.45 (9 x 0.05)
        rt.set_rate(60.0)  # a rate change at run time: the wall speed changes, dt does not
        rt.step(3)
        assert rt.snapshot.sim_time == pytest.approx(12 / 30)
    finally:
        rt.stop()


def test_a_world_may_fix_its_own_dt() -> None:
    rt = runtime(Fixed(n=5), 30.0)
    rt.start()
    try:
        rt.step(9)
        assert rt.snapshot.sim_time == pytest.approx(0.9)
    finally:
        rt.stop()


def test_dt_is_part_of_the_state_so_a_restart_at_another_rate_replays_exactly(
    tmp_path: Path,
) -> None:
    url = f"sqlite:///{tmp_path / 'w.db'}"
    first = runtime(Boids(n=20), 25.0, url)
    first.start()
    first.step(40)
    hash_before, sim_before = first.world.state_hash(), first.snapshot.sim_time
    first.stop()
    again = runtime(Boids(n=20, seed=7), 50.0, url)  # another rate; the store decides dt
    again.start()
    try:
        assert again.world.dt == pytest.approx(1 / 25)
        assert again.snapshot.tick == 40
        assert again.world.state_hash() == hash_before
        assert again.snapshot.sim_time == pytest.approx(sim_before) == pytest.approx(40 / 25)
    finally:
        again.stop()


def test_dt_counts_in_the_state_hash() -> None:
    a, b = Boids(n=5), Boids(n=5)
    assert a.state_hash() == b.state_hash()
    b.use_rate(30.0)
    assert a.state_hash() != b.state_hash()
