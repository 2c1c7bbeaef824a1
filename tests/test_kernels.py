"""The meadow's kernels (issue 17): every implementation gives the same state, bit for bit, so
the state hash, and any store, does not depend on which one ran."""

from __future__ import annotations

import math

import numpy as np
import pytest

from worldloop.commands import Command
from worldloop.demo.kernels import (
    NumpyKernels,
    get_kernels,
    numba_available,
    pcg64_drawn,
    pcg64_streams,
    raw_float32_pairs,
)
from worldloop.demo.meadow import Meadow, create_world
from worldloop.durability import replay
from worldloop.store import open_store
from worldloop.store.base import journal_record

needs_numba = pytest.mark.skipif(not numba_available(), reason="numba is not installed")


def busy_meadow(kernels: str, n: int = 4000) -> Meadow:
    """A meadow at a density where sheep breed and starve, with avatars walking among them."""
    side = math.sqrt(n * 250)
    world = Meadow(width=side, height=side, entities=n, seed=11, kernels=kernels)
    world.step(
        [
            Command(
                id=f"j{i}",
                seq=i + 1,
                type="join",
                payload={"player_id": f"{i:032x}", "name": f"p{i}", "token_hash": f"{i:064x}"},
            )
            for i in range(12)
        ]
    )
    world.step(
        [
            Command(
                id=f"m{i}",
                seq=100 + i,
                type="move_to",
                payload={"x": side * i / 12, "y": side / 2},
                actor=f"{i:032x}",
            )
            for i in range(12)
        ]
    )
    return world


@pytest.fixture(params=["one-thread builds", "parallel builds"])
def numba_builds(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run the numba kernels' one-thread builds (the default below PARALLEL_MIN_ROWS rows), or
    their parallel builds on every thread numba has, down to the smallest arrays."""
    import numba

    from worldloop.demo import kernels_numba

    if request.param == "parallel builds":
        if numba.config.NUMBA_NUM_THREADS < 2:
            pytest.skip("one CPU: numba has no second thread")
        monkeypatch.setattr(kernels_numba, "PARALLEL_MIN_ROWS", 1)
        monkeypatch.setattr(kernels_numba.timings, "prefer_parallel", lambda key: True)
        numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)
    return str(request.param)


@needs_numba
def test_numba_and_numpy_give_the_same_hash_every_tick(numba_builds: str) -> None:
    a, b = busy_meadow("numpy"), busy_meadow("numba")
    for _ in range(250):
        a.step([])
        b.step([])
        assert a.state_hash() == b.state_hash()
    assert a.births > 0 and a.deaths > 0  # the run went through births and deaths
    assert np.array_equal(a.grid.order, b.grid.order)
    assert np.array_equal(a.grid.starts, b.grid.starts)


@needs_numba
@pytest.mark.parametrize("build", [0, 1], ids=["parallel", "one-thread"])
def test_loops_split_in_ranges_give_what_one_range_gives(build: int) -> None:
    from worldloop.demo import kernels_loops as loops
    from worldloop.demo.spatial import grid_by_argsort

    rng = np.random.default_rng(3)
    n, cols, rows = 5003, 37, 23
    pos = rng.uniform(0, 1, (n, 2)) * [370.0, 230.0]
    pos[:3] = [[0.0, 0.0], [np.nextafter(370.0, 0), np.nextafter(230.0, 0)], [185.0, 0.0]]
    want_order, want_starts = grid_by_argsort(pos, 370.0, 230.0, cols, rows)
    cells = NumpyKernels().cells(pos, cols, rows, 370.0, 230.0)
    sheep = rng.random(n) < 0.8
    want_counts = np.bincount(cells[sheep], minlength=cols * rows)
    for chunks in (1, 2, 3, 7):
        order, starts = loops.grid[build](pos, cols / 370.0, rows / 230.0, cols, rows, chunks)
        assert np.array_equal(order, want_order) and np.array_equal(starts, want_starts)
        counts = loops.count[build](cells, sheep, True, cols * rows, chunks)
        assert counts.shape == (chunks, cols * rows)  # a census per range of rows
        assert np.array_equal(counts.sum(axis=0), want_counts)
        counts16, full = loops.count16[build](cells, sheep, True, cols * rows, chunks)
        assert np.array_equal(counts16.sum(axis=0), want_counts) and not full.any()


@needs_numba
def test_a_cell_with_more_sheep_than_16_bits_count_is_counted_in_32() -> None:
    from worldloop.demo import kernels_loops as loops

    crowd = np.zeros(70_000, dtype=np.int32)
    _counts, full = loops.count16[1](crowd, np.ones(0, np.bool_), False, 3, 1)
    assert full.any()  # the 16-bit census says it overflowed
    a = Meadow(width=10, height=10, entities=70_000, seed=2, kernels="numpy")
    b = Meadow(width=10, height=10, entities=70_000, seed=2, kernels="numba")
    for _ in range(3):
        a.step([])
        b.step([])
        assert a.state_hash() == b.state_hash()


def test_raw_draws_make_the_same_kicks_and_leave_the_same_generator() -> None:
    drawn, raw_side = np.random.default_rng(8), np.random.default_rng(8)
    for n in (1, 1000, 0, 7):
        kicks = drawn.random((n, 2), dtype=np.float32)
        raw = raw_float32_pairs(raw_side, n)
        assert raw is not None
        low = ((raw & np.uint64(0xFFFFFFFF)) >> np.uint64(8)).astype(np.float32)
        high = (raw >> np.uint64(40)).astype(np.float32)
        made = np.stack([low, high], axis=1) * np.float32(2.0**-24)
        assert np.array_equal(made, kicks)
        assert drawn.bit_generator.state == raw_side.bit_generator.state
    raw_side.random(dtype=np.float32)  # half a draw held: the raw path steps aside
    assert raw_float32_pairs(raw_side, 4) is None
    assert raw_float32_pairs(np.random.Generator(np.random.MT19937(1)), 4) is None


@needs_numba
def test_numba_wander_falls_back_to_drawing_the_kicks_the_same_way() -> None:
    from worldloop.demo.kernels_numba import NumbaKernels

    for rng_of in (
        lambda: np.random.Generator(np.random.MT19937(4)),
        lambda: np.random.default_rng(4),
    ):
        vel = [np.random.default_rng(1).normal(0, 3, (300, 2)) for _ in range(2)]
        rngs = [rng_of(), rng_of()]
        rngs[0].random(dtype=np.float32)  # for PCG64: half a draw held
        rngs[1].random(dtype=np.float32)
        NumpyKernels().wander(vel[0], rngs[0], 5.2, 8.0)
        NumbaKernels().wander(vel[1], rngs[1], 5.2, 8.0)
        assert np.array_equal(vel[0], vel[1])
        assert np.array_equal(rngs[0].random(9, dtype=np.float32), rngs[1].random(9, np.float32))


@needs_numba
@pytest.mark.parametrize("build", [0, 1], ids=["parallel", "one-thread"])
def test_wander_and_move_in_one_pass_make_the_draws_and_rows_of_the_two_passes(
    build: int,
) -> None:
    from worldloop.demo import kernels_loops as loops

    width, height, cols, rows = 370.0, 230.0, 37, 23
    geometry = (0.05, width, height, cols, rows, cols / width, rows / height)
    kick = (np.float32(0.5), np.float32(5.2), 8.0)
    for n in (1, 7, 1000, 3 * loops.DRAW_BLOCK + 5):
        start = np.random.default_rng(n)
        start.random(5)  # somewhere along the stream
        pos = np.random.default_rng(1).uniform(0, 1, (n, 2)) * [width, height]
        vel = np.random.default_rng(2).normal(0, 30, (n, 2))  # some rows leave the meadow
        two_passes = np.random.default_rng(0)
        two_passes.bit_generator.state = start.bit_generator.state
        want_vel = vel.copy()
        raw = raw_float32_pairs(two_passes, n)
        loops.wander_raw[build](want_vel, raw, *kick)
        want_pos, want_outside, want_cells = loops.move[build](pos, want_vel, *geometry)
        for chunks in (1, 2, 3, 7):
            one_pass = np.random.default_rng(0)
            one_pass.bit_generator.state = start.bit_generator.state
            streams = pcg64_streams(one_pass, n, chunks)
            assert streams is not None
            got_vel = vel.copy()
            got_pos, outside, got_cells, last = loops.wander_move[build](
                pos, got_vel, streams.starts, streams.inc_hi, streams.inc_lo, *kick, *geometry
            )
            pcg64_drawn(one_pass, n, int(last))
            assert np.array_equal(got_vel, want_vel) and np.array_equal(got_pos, want_pos)
            assert np.array_equal(got_cells, want_cells) and outside == want_outside
            assert one_pass.bit_generator.state == two_passes.bit_generator.state
    held = np.random.default_rng(1)
    held.random(dtype=np.float32)  # half a draw held: the one pass steps aside
    assert pcg64_streams(held, 4, 2) is None
    assert pcg64_streams(np.random.Generator(np.random.MT19937(1)), 4, 2) is None


@needs_numba
def test_numba_without_avatars_gives_the_same_hash_until_one_joins(numba_builds: str) -> None:
    side = math.sqrt(3000 * 250)
    a, b = (
        Meadow(width=side, height=side, entities=3000, seed=5, kernels=k)
        for k in ("numpy", "numba")
    )
    join = Command(
        id="j", seq=1, type="join", payload={"player_id": "f" * 32, "name": "p", "token_hash": "0"}
    )
    for tick in range(120):
        commands = [join] if tick == 80 else []  # wander and move in one pass, then not
        a.step(commands)
        b.step(commands)
        assert a.state_hash() == b.state_hash()
    assert a.births > 0 and b._avatars.size == 1


@needs_numba
def test_grass_grows_once_a_tick_whether_or_not_sheep_graze_it() -> None:
    a, b = (
        Meadow(width=200, height=100, entities=0, seed=3, kernels=k) for k in ("numpy", "numba")
    )
    before = a.grass.copy()
    for _ in range(3):  # no sheep: graze has nothing to eat, the grass grows all the same
        a.step([])
        b.step([])
        assert a.state_hash() == b.state_hash()
    assert (a.grass > before).any()
    assert b.kernels.grows_while_grazing and not b._grass_to_grow  # nothing left pending


@needs_numba
def test_numba_gives_the_same_hash_with_one_thread_or_two() -> None:
    import numba

    hashes = []
    for threads in (1, 2):
        numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
        w = busy_meadow("numba")
        for _ in range(60):
            w.step([])
        hashes.append(w.state_hash())
    numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)
    assert hashes[0] == hashes[1]


@needs_numba
def test_a_busy_parallel_lock_sends_the_second_caller_to_the_one_thread_build(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from worldloop.demo import kernels_loops as loops
    from worldloop.demo import kernels_numba

    monkeypatch.setattr(kernels_numba.nb, "get_num_threads", lambda: 2)
    monkeypatch.setattr(kernels_numba, "timings", kernels_numba._Timings())
    fn, chunks, locked = kernels_numba._pick(loops.count, 10**6)
    assert (fn, chunks, locked) == (loops.count[0], 2, True)
    try:  # meanwhile, another thread (another world) asks: it runs on its own thread
        assert kernels_numba._pick(loops.count, 10**6) == (loops.count[1], 1, False)
    finally:
        kernels_numba._parallel.release()
    assert kernels_numba._pick(loops.count, 10) == (loops.count[1], 1, False)


@needs_numba
def test_each_loop_runs_the_build_that_has_lately_been_faster() -> None:
    from worldloop.demo.kernels_numba import _Timings

    t = _Timings()
    assert t.prefer_parallel(7)  # each build is measured once first
    t.record(7, True, 1000, 0.004)
    assert not t.prefer_parallel(7)
    t.record(7, False, 1000, 0.002)  # one thread: twice as fast (a loaded machine)
    picks = [t.prefer_parallel(7) for _ in range(2 * t.explore)]
    assert picks.count(True) == 2  # the parallel build is tried again now and then
    for _ in range(10):  # the load went away: the parallel build becomes the faster
        t.record(7, True, 1000, 0.001)
    assert t.prefer_parallel(7) or t.prefer_parallel(7)
    assert t.prefer_parallel(8)  # another loop has its own record


@needs_numba
def test_a_journal_written_with_one_kernel_replays_with_the_other() -> None:
    store = open_store("memory://kernels-replay")
    live = busy_meadow("numpy")
    store.save_snapshot(live.name, live.tick, live.full_state(), live.state_hash())
    for _ in range(40):
        outcomes = live.step([])
        store.append(live.name, live.tick, [journal_record(o) for o in outcomes])
    replayed = Meadow(width=1.0, height=1.0, entities=0, kernels="numba")
    result = replay(replayed, store.load(live.name))
    assert result.state_hash == live.state_hash()


def test_huge_velocities_still_wrap_into_the_world() -> None:
    w = Meadow(width=100, height=50, entities=10, seed=1, kernels="numpy")
    w.vel[:] = [[1e6, -3e6]]
    w.step([])
    assert ((w.pos >= 0) & (w.pos < [100, 50])).all()


@needs_numba
def test_huge_velocities_wrap_the_same_with_numba() -> None:
    a = Meadow(width=100, height=50, entities=10, seed=1, kernels="numpy")
    b = Meadow(width=100, height=50, entities=10, seed=1, kernels="numba")
    for w in (a, b):
        w.vel[:] = [[1e6, -3e6]]
        w.step([])
    assert a.state_hash() == b.state_hash()


def test_kernels_are_chosen_by_name() -> None:
    assert get_kernels("numpy").name == "numpy"
    assert get_kernels("auto").name == ("numba" if numba_available() else "numpy")
    assert create_world({"MEADOW_ENTITIES": 5}).kernels.name == "numpy"
    with pytest.raises(ValueError, match="unknown kernels"):
        get_kernels("cuda")


@needs_numba
def test_the_server_world_starts_on_numpy_and_switches_when_numba_is_ready() -> None:
    import threading

    world = create_world({"MEADOW_ENTITIES": 3000, "MEADOW_KERNELS": "numba", "MEADOW_SEED": 2})
    same = create_world({"MEADOW_ENTITIES": 3000, "MEADOW_SEED": 2})
    assert world.kernels.name == "numpy"  # at once: nobody waits for numba to load
    for _ in range(20):  # a replay: steps, nothing published, nothing loaded meanwhile
        world.step([])
        same.step([])
    assert world.kernels.name == "numpy"
    world.view()  # the first publish (after the recovery) starts loading them
    for loader in threading.enumerate():
        if loader.name == "worldloop-kernels":
            loader.join(300)
    assert world.kernels.name == "numba"
    for _ in range(20):
        world.step([])
        same.step([])
    assert world.state_hash() == same.state_hash()


def test_asking_for_numba_without_it_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    from worldloop.demo import kernels

    monkeypatch.setattr(kernels, "numba_available", lambda: False)
    with pytest.raises(ImportError, match=r"worldloop\[fast\]"):
        create_world({"MEADOW_ENTITIES": 5, "MEADOW_KERNELS": "numba"})
    assert create_world({"MEADOW_ENTITIES": 5, "MEADOW_KERNELS": "auto"}).kernels.name == "numpy"


@needs_numba
@pytest.mark.parametrize("build", [0, 1], ids=["parallel", "one-thread"])
def test_rebuild_drops_the_dead_and_appends_the_newborn_as_numpy_does(build: int) -> None:
    from worldloop.demo import kernels_loops as loops
    from worldloop.demo.kernels_numba import NumbaKernels

    rng = np.random.default_rng(5)
    n = 1001
    arrays = [
        np.arange(n, dtype=np.int64),
        rng.integers(0, 2, n).astype(np.int8),
        rng.random((n, 2)),
        rng.random(n).astype(np.int32),
    ]
    tails = [a[:3] * 0 + 7 for a in arrays]
    patterns = {
        "none": [],
        "first and last": [0, n - 1],
        "a run": list(range(10, 40)),
        "scattered": sorted(rng.choice(n, 57, replace=False).tolist()),
        "all": list(range(n)),
    }
    for rows in patterns.values():
        dead = np.zeros(n, dtype=np.bool_)
        dead[rows] = True
        for with_tails in (None, tails):
            want = NumpyKernels().rebuild(dead, arrays, with_tails)
            assert NumbaKernels().rebuild(dead, arrays, with_tails)[2].flags.owndata
            for a, w, t in zip(arrays, want, with_tails or [a[:0] for a in arrays], strict=True):
                for chunks in (1, 2, 3, 7):
                    out = np.empty_like(w)
                    flat = (a.reshape(-1), np.flatnonzero(dead), t.reshape(-1))
                    loops.rebuild[build](*flat, a[:1].size, out.reshape(-1), chunks)
                    assert np.array_equal(out, w)
