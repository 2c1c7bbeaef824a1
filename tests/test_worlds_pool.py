"""The extra worlds of an app run on its loop pool (WORLDLOOP_LOOP_THREADS), the default world
on a thread of its own; 0 threads is the old way, a loop thread per world."""

from __future__ import annotations

import threading
from pathlib import Path

from tests.support import wait_for
from worldloop.runtime import WorldRuntime

from .test_worlds_api import ADMIN, create, make_app


def loop_threads() -> set[str]:
    return {t.name for t in threading.enumerate() if t.name.startswith("worldloop-")}


def test_extra_worlds_share_the_pool_and_the_default_world_keeps_its_thread(
    tmp_path: Path,
) -> None:
    app = make_app(tmp_path, WORLDLOOP_LOOP_THREADS=2)
    state = app.extensions["worldloop"]
    client = app.test_client()
    try:
        pool = state.loop_pool
        assert pool is not None and pool.size == 2
        assert state.runtime.ticker.pool is None  # the default world: its own thread
        runtimes: list[WorldRuntime] = []
        for i in range(8):
            assert create(client, f"room-{i}", entities=10, seed=i).status_code == 201
            runtimes.append(state.host.get(f"room-{i}").runtime)
        for rt in runtimes:
            assert rt.ticker.pool is pool
            assert rt.ticker.wait_for_ticks(rt.stats().ticks + 5, 10.0)
        assert pool.stats().threads == 2 and pool.stats().tickers == 8
        pool_threads = {n for n in loop_threads() if n.startswith("worldloop-pool")}
        assert len(pool_threads) == 2
        # the clock controls of a pooled world work as on its own thread
        paused = client.post("/api/v1/worlds/room-3/admin/pause", headers=ADMIN)
        assert paused.status_code == 200, paused.get_data(as_text=True)
        tick = runtimes[3].tick
        stepped = client.post("/api/v1/worlds/room-3/admin/step", json={"n": 3}, headers=ADMIN)
        assert stepped.status_code == 200, stepped.get_data(as_text=True)
        assert runtimes[3].tick == tick + 3
        assert runtimes[3].checkpoint(5.0)["tick"] == tick + 3  # a call on the pool thread
        # deleting worlds takes them off the pool; the last one gone, its threads end
        for i in range(8):
            resp = client.delete(f"/api/v1/worlds/room-{i}", headers=ADMIN)
            assert resp.status_code == 200, resp.get_data(as_text=True)
        assert len(pool) == 0
    finally:
        state.stop()


def test_zero_loop_threads_gives_each_world_its_own(tmp_path: Path) -> None:
    app = make_app(tmp_path, WORLDLOOP_LOOP_THREADS=0)
    state = app.extensions["worldloop"]
    client = app.test_client()
    try:
        assert state.loop_pool is None
        for i in range(3):
            assert create(client, f"own-{i}", entities=10, seed=i).status_code == 201
            rt = state.host.get(f"own-{i}").runtime
            assert rt.ticker.pool is None
            assert rt.ticker.wait_for_ticks(2, 10.0)
        assert {f"worldloop-own-{i}" for i in range(3)} <= loop_threads()
    finally:
        state.stop()


def test_a_thousand_worlds_in_one_process_tick_on_a_bounded_number_of_threads(
    tmp_path: Path,
) -> None:
    """1,000 worlds created through the API in one process: each ticks on its own schedule, the
    process keeps the pool's threads (not one more per world), and the list shows all of them.
    Small worlds at 2 Hz: the count is the subject here, the timing is bench/many_worlds.py's."""
    count = 1000
    app = make_app(
        tmp_path,
        WORLDLOOP_LOOP_THREADS=2,
        WORLDLOOP_RATE_HZ=2.0,
        WORLDLOOP_MAX_WORLDS=count,
        WORLDLOOP_MAX_WORLDS_PER_KIND=count,
        WORLDLOOP_WORLD_CREATE_BURST=count,
    )
    state = app.extensions["worldloop"]
    client = app.test_client()
    try:
        state.runtime.pause()
        before = threading.active_count()
        for i in range(count):
            resp = create(client, f"w{i}", entities=5, seed=i)
            assert resp.status_code == 201, resp.get_data(as_text=True)
        runtimes = [state.host.get(f"w{i}").runtime for i in range(count)]
        for rt in runtimes:
            assert rt.ticker.wait_for_ticks(2, 60.0), f"{rt.name} did not tick"
        assert state.loop_pool is not None and state.loop_pool.stats().threads == 2
        # a world's snapshot writer lives only while it writes (durability.WRITER_IDLE_SECONDS):
        # on a loaded machine some worlds write interim snapshots, and those threads then go
        wait_for(lambda: threading.active_count() - before <= 4, 15.0, what="threads not per world")
        listed = client.get("/api/v1/worlds").get_json()["worlds"]
        assert len(listed) == count + 1
        assert {w["status"] for w in listed[1:]} == {"running"}
    finally:
        assert state.stop()
