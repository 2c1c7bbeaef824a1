"""The meadow's kernels compiled with numba (the ``fast`` extra): fused loops, both cores.

Each loop does per row exactly what :class:`~worldloop.demo.kernels.NumpyKernels` does per
array, in the same precision and order: no ``fastmath`` (which would allow fused
multiply-adds and reordering), and every loop that runs in parallel (``prange``) writes only
its own rows (or its own cells), so no floating-point value depends on how the work was split
between threads. The counting passes (grazing's per-cell census, the spatial grid's counting
sort) are split by ranges too, and their integer sums are exact in any order. The loops
themselves live in :mod:`.kernels_loops`; this module picks, per call, the parallel or the
one-thread build of each (:func:`_pick`): whichever has lately been faster (:class:`_Timings`).

Threads: numba's OpenMP layer by default lets an idle worker spin, then sleep, and waking it
on a shared machine costs milliseconds per parallel loop (two threads were slower than one).
Unless the environment says otherwise, ``OMP_WAIT_POLICY=passive`` is set (by
:mod:`.kernels_loops`, before it imports numba), so an idle worker sleeps at once and is woken
in microseconds. Compiled code is cached next to the loops' module, so only the first start
on a machine pays for compiling.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from typing import Any

import numba as nb
import numpy as np
from numpy.typing import NDArray

from . import kernels_loops as loops  # sets OMP_WAIT_POLICY (numba starts no thread on import)
from .kernels import F32, F64, pcg64_drawn, pcg64_streams, raw_float32_pairs

PARALLEL_MIN_ROWS = 50_000
"""Below this many rows (or cells) a loop runs on the calling thread: waking the other threads
costs more than they would save."""

_parallel = threading.Lock()
"""Held while a parallel loop runs: a second thread that asks for one meanwhile (two worlds
ticking in one process) runs the one-thread build instead of queueing behind it or doubling
the threads on the cores; both builds give the same bits."""


class _Timings:
    """Which build of each loop has been faster lately, per row: parallel or one-thread.

    Both give the same bits, so the choice is free to follow the machine: on idle cores the
    parallel build wins, but on a shared, loaded machine a parallel loop ends only when its
    slowest thread does, and a thread off its core makes two threads slower than one. Each
    loop keeps a moving average of wall ns per row for each build, runs the faster one, and
    tries the other every :attr:`explore` calls (at 20 Hz, every few seconds) to notice when
    the load changes.
    """

    explore = 32
    weight = 0.25  # of the newest call in the moving average

    def __init__(self) -> None:
        self.ns_per_row: dict[int, list[float]] = {}
        self.calls: dict[int, int] = {}

    def prefer_parallel(self, key: int) -> bool:
        """Whether to run the parallel build of loop ``key`` this time."""
        calls = self.calls[key] = self.calls.get(key, 0) + 1
        parallel, one = self.ns_per_row.setdefault(key, [0.0, 0.0])
        if not parallel or not one:
            return not parallel  # measure each build once first
        faster = parallel <= one
        return not faster if calls % self.explore == 0 else faster

    def record(self, key: int, parallel: bool, rows: int, seconds: float) -> None:
        """Count a call of ``rows`` rows that took ``seconds`` (wall)."""
        avg = self.ns_per_row.setdefault(key, [0.0, 0.0])
        i = 0 if parallel else 1
        ns = seconds * 1e9 / max(rows, 1)
        avg[i] = ns if not avg[i] else avg[i] + self.weight * (ns - avg[i])


timings = _Timings()


def _pick(pair: loops.Pair, size: int) -> tuple[Callable[..., Any], int, bool]:
    """The build of ``pair`` to run for ``size`` rows, its chunk count, and whether the
    parallel lock was taken (release it after the call)."""
    if size >= PARALLEL_MIN_ROWS:
        threads = nb.get_num_threads()
        if threads > 1 and timings.prefer_parallel(id(pair)) and _parallel.acquire(blocking=False):
            return pair[0], threads, True
    return pair[1], 1, False


def _timed(pair: loops.Pair, size: int, args: tuple[Any, ...], chunked: bool) -> Any:
    fn, chunks, locked = _pick(pair, size)
    started = time.perf_counter()
    try:
        return fn(*args, chunks) if chunked else fn(*args)
    finally:
        if locked:
            _parallel.release()
        if size >= PARALLEL_MIN_ROWS:
            timings.record(id(pair), locked, size, time.perf_counter() - started)


def _call(pair: loops.Pair, size: int, *args: Any) -> Any:
    """Run ``pair`` on ``args`` (the parallel build when it pays and no one else runs one)."""
    return _timed(pair, size, args, chunked=False)


def _call_chunked(pair: loops.Pair, size: int, *args: Any) -> Any:
    """:func:`_call` for loops split by ranges, which take the number of ranges last."""
    return _timed(pair, size, args, chunked=True)


class NumbaKernels:
    """:class:`~worldloop.demo.kernels.Kernels` compiled with numba (parallel where exact)."""

    name = "numba"

    def grow_grass(self, grass: F32, regrow: float, grass_max: float) -> F32:
        out: F32 = _call(
            loops.grow_grass, grass.size, grass, np.float32(regrow), np.float32(grass_max)
        )
        return out

    def wander(self, vel: F64, rng: np.random.Generator, kick_scale: float, vmax: float) -> None:
        n = vel.shape[0]
        args = (np.float32(0.5), np.float32(kick_scale), float(vmax))
        raw = raw_float32_pairs(rng, n)
        if raw is None:
            _call(loops.wander, n, vel, rng.random((n, 2), dtype=np.float32), *args)
        else:
            _call(loops.wander_raw, n, vel, raw, *args)

    def wander_move(
        self,
        vel: F64,
        pos: F64,
        rng: np.random.Generator,
        kick: tuple[float, float],
        dt: float,
        size: tuple[float, float, int, int],
    ) -> tuple[F64, bool, NDArray[np.signedinteger[Any]]] | None:
        n = pos.shape[0]
        fn, _chunks, locked = _pick(loops.wander_move, n)
        try:
            # the one-thread build walks the same ranges one after the other: the ranges
            # (and so the draws' start states) do not depend on the build
            streams = pcg64_streams(rng, n, max(nb.get_num_threads(), 1) if n else 1)
            if streams is None:
                return None
            width, height, cols, rows = size
            started = time.perf_counter()
            out, outside, cells, last = fn(
                pos,
                vel,
                streams.starts,
                streams.inc_hi,
                streams.inc_lo,
                np.float32(0.5),
                np.float32(kick[0]),
                float(kick[1]),
                float(dt),
                float(width),
                float(height),
                cols,
                rows,
                cols / width,
                rows / height,
            )
            if n >= PARALLEL_MIN_ROWS:
                timings.record(id(loops.wander_move), locked, n, time.perf_counter() - started)
        finally:
            if locked:
                _parallel.release()
        pcg64_drawn(rng, n, int(last))
        return out, bool(outside), cells

    def move(
        self, pos: F64, vel: F64, dt: float, width: float, height: float, cols: int, rows: int
    ) -> tuple[F64, bool, NDArray[np.signedinteger[Any]]]:
        geometry = (float(width), float(height), cols, rows, cols / width, rows / height)
        out, outside, cells = _call(loops.move, pos.shape[0], pos, vel, float(dt), *geometry)
        return out, bool(outside), cells

    def cells(
        self, pos: F64, cols: int, rows: int, width: float, height: float
    ) -> NDArray[np.signedinteger[Any]]:
        out: NDArray[np.signedinteger[Any]] = _call(
            loops.cells, pos.shape[0], pos, cols, rows, cols / width, rows / height
        )
        return out

    def graze(
        self,
        cells: NDArray[np.signedinteger[Any]],
        sheep: NDArray[np.bool_] | None,
        grass: F32,
        energy: F64,
        bite: float,
        food_energy: float,
    ) -> F64:
        return self._graze(cells, sheep, grass, grass, energy, (bite, food_energy), None)

    grows_while_grazing = True

    def grow_graze(
        self,
        cells: NDArray[np.signedinteger[Any]],
        sheep: NDArray[np.bool_] | None,
        grass: F32,
        energy: F64,
        food: tuple[float, float],
        growth: tuple[float, float],
    ) -> tuple[F64, F32] | None:
        out = np.empty_like(grass)
        return self._graze(cells, sheep, grass, out, energy, food, growth), out

    def _graze(
        self,
        cells: NDArray[np.signedinteger[Any]],
        sheep: NDArray[np.bool_] | None,
        grass: F32,
        out: F32,
        energy: F64,
        food: tuple[float, float],
        growth: tuple[float, float] | None,
    ) -> F64:
        """Graze ``grass`` (flat) into ``out`` (itself or a new array), growing it first
        when ``growth`` is (regrow, grass_max); the new energy."""
        bite, food_energy = food
        regrow, grass_max = growth or (0.0, 0.0)
        flat = grass.reshape(-1)
        mask = np.ones(0, dtype=np.bool_) if sheep is None else sheep
        use_mask = sheep is not None
        census = (cells, mask, use_mask, flat.size)
        counts, full = _call_chunked(loops.count16, cells.size, *census)
        if full.any():  # some cell holds more than 65535 sheep
            counts = _call_chunked(loops.count, cells.size, *census)
        if counts.shape[0] > 2:  # loops.share adds up one or two censuses
            counts = counts.sum(axis=0, dtype=np.int32)[None]
        share = _call(
            loops.share,
            flat.size,
            counts,
            flat,
            out.reshape(-1),
            np.float32(bite),
            np.float32(1.0),
            np.float32(1e-12),
            growth is not None,
            np.float32(regrow),
            np.float32(grass_max),
        )
        new_energy: F64 = _call(
            loops.eat, cells.size, cells, mask, use_mask, share, energy, bite * food_energy
        )
        return new_energy

    def life(
        self,
        kind: NDArray[np.int8],
        age: NDArray[np.int32],
        energy: F64,
        metabolism: float,
        max_age: int,
        breed_energy: float,
    ) -> tuple[NDArray[np.int32], NDArray[np.bool_], int, int, NDArray[np.intp]]:
        new_age, status, n_sheep, n_dead, n_parents = _call(
            loops.life,
            kind.size,
            kind,
            age,
            energy,
            float(metabolism),
            int(max_age),
            float(breed_energy),
        )
        dead = status == loops.DEAD
        parents = (
            np.flatnonzero(status == loops.PARENT) if n_parents else np.empty(0, dtype=np.intp)
        )
        return new_age, dead, int(n_sheep), int(n_dead), parents

    def rebuild(
        self, dead: NDArray[np.bool_] | None, arrays: list[Any], tails: list[Any] | None
    ) -> list[Any]:
        rows = np.flatnonzero(dead) if dead is not None else np.empty(0, dtype=np.intp)
        rebuilt = []
        for i, a in enumerate(arrays):
            tail = a[:0] if tails is None else tails[i]
            out = np.empty((len(a) - rows.size + len(tail), *a.shape[1:]), dtype=a.dtype)
            width = math.prod(a.shape[1:])  # values a row
            flat = (a.reshape(-1), rows, tail.reshape(-1), width, out.reshape(-1))
            _call_chunked(loops.rebuild, a.size, *flat)  # a new array of its own, to publish
            rebuilt.append(out)
        return rebuilt

    def grid(
        self, pos: F64, width: float, height: float, cols: int, rows: int
    ) -> tuple[NDArray[np.int32], NDArray[np.int32]]:
        order, starts = _call_chunked(
            loops.grid, pos.shape[0], pos, cols / width, rows / height, cols, rows
        )
        return order, starts

    def grid_one_thread(
        self, pos: F64, width: float, height: float, cols: int, rows: int
    ) -> tuple[NDArray[np.int32], NDArray[np.int32]]:
        """:meth:`grid` on the calling thread only (for readers: the cores are the loop's)."""
        order, starts = loops.grid[1](pos, cols / width, rows / height, cols, rows, 1)
        return order, starts

    def warm_up(self) -> None:
        """Load (or compile) both builds of every kernel for the argument types the meadow
        uses."""
        n = PARALLEL_MIN_ROWS
        rng = np.random.default_rng(0)
        pos = rng.uniform(0.0, 1.0, (n, 2))
        grass = np.full((2, 2), 0.5, dtype=np.float32)
        big_grass = np.full((n, 1), 0.5, dtype=np.float32)
        for rows, g in ((4, grass), (n, big_grass)):  # one-thread, then parallel builds
            p = pos[:rows]
            self.grow_grass(g, 0.1, 1.0)
            self.wander(p.copy(), rng, 1.0, 1.0)
            self.wander(p.copy(), np.random.Generator(np.random.MT19937(0)), 1.0, 1.0)
            self.move(p, p, 0.1, 1.0, 1.0, g.shape[1], g.shape[0])
            self.wander_move(p.copy(), p, rng, (1.0, 1.0), 0.1, (1.0, 1.0, 2, 2))
            cells = self.cells(p, g.shape[1], g.shape[0], 1.0, 1.0)
            energy = np.ones(rows)
            for sheep in (None, np.ones(rows, dtype=np.bool_)):
                self.graze(cells, sheep, g.reshape(-1), energy, 0.1, 0.5)
                self.grow_graze(cells, sheep, g.reshape(-1), energy, (0.1, 0.5), (0.1, 1.0))
            kind = np.zeros(rows, dtype=np.int8)
            age, dead = self.life(kind, np.zeros(rows, dtype=np.int32), energy, 0.1, 10, 2.0)[:2]
            arrays: list[Any] = [np.arange(rows, dtype=np.int64), kind, p, energy, age]
            self.rebuild(dead, arrays, [a[:1] for a in arrays])
            self.grid(p, 1.0, 1.0, 2, 2)
