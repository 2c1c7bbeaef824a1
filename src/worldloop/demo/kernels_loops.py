"""The compiled loops behind :mod:`.kernels_numba`, each built twice: parallel and one-thread.

Every loop is written once, with ``prange`` where its iterations are independent, and
compiled both with ``parallel=True`` and without (where ``prange`` is a plain ``range``): the
two builds give the same bits, and the caller picks one per call. Loops that split work by
ranges take the number of ranges (``chunks``) last; any number gives the same result.

Numerical rules (so the bits equal NumPy's, see :mod:`.kernels`): no ``fastmath``; each
floating-point value is computed by the same operations, in the same precision and order as
the NumPy reference; a parallel iteration writes only its own rows or cells.
"""

from __future__ import annotations

import os
import types
from collections.abc import Callable
from typing import Any

# an idle OpenMP worker sleeps at once instead of spinning, then sleeping (see kernels_numba);
# read when numba starts its threads (its first parallel loop, or numba.set_num_threads)
os.environ.setdefault("OMP_WAIT_POLICY", "passive")

import numba as nb
import numpy as np

from .kernels_pcg import pcg_fill

Pair = tuple[Callable[..., Any], Callable[..., Any]]
"""(parallel build, one-thread build) of one loop."""

ALIVE, DEAD, PARENT = 0, 1, 2
"""Row status from :data:`life`."""


def _both(fn: Callable[..., Any]) -> Pair:
    """Compile ``fn`` with ``parallel=True`` and without, each cached under its own name
    (numba's cache keys on the function's qualified name, not on its options)."""
    serial = types.FunctionType(
        fn.__code__, fn.__globals__, fn.__name__ + "_serial", fn.__defaults__, fn.__closure__
    )
    serial.__qualname__ = fn.__qualname__ + "_serial"
    return (
        nb.njit(cache=True, nogil=True, parallel=True, error_model="numpy")(fn),
        nb.njit(cache=True, nogil=True, error_model="numpy")(serial),
    )


def _grow_grass(grass: Any, regrow: Any, grass_max: Any) -> Any:  # pragma: no cover - compiled
    flat = grass.reshape(-1)
    out = np.empty_like(grass)
    flat_out = out.reshape(-1)
    for i in nb.prange(flat.size):
        g = flat[i] + regrow
        flat_out[i] = g if g < grass_max or g != g else grass_max
    return out


def _wander(vel: Any, kick: Any, half: Any, kick_scale: Any, vmax: Any) -> None:  # pragma: no cover
    vmax2 = vmax * vmax
    for i in nb.prange(vel.shape[0]):
        vx = vel[i, 0] + np.float64((kick[i, 0] - half) * kick_scale)
        vy = vel[i, 1] + np.float64((kick[i, 1] - half) * kick_scale)
        s2 = vx * vx + vy * vy
        if not s2 >= vmax2 and s2 == s2:  # np.maximum: NaN wins
            s2 = vmax2
        scale = vmax / np.sqrt(s2)
        vel[i, 0] = vx * scale
        vel[i, 1] = vy * scale


def _wander_raw(
    vel: Any, raw: Any, half: Any, kick_scale: Any, vmax: Any
) -> None:  # pragma: no cover - compiled
    # _wander, with the kicks made from raw PCG64 draws (kernels.raw_float32_pairs)
    n = vel.shape[0]
    chunks = min(n, 64) if n else 1
    flat = vel.reshape(-1)
    for t in nb.prange(chunks):
        lo, hi = t * n // chunks, (t + 1) * n // chunks
        _wander_rows(flat[2 * lo : 2 * hi], raw[lo:hi], half, kick_scale, vmax)


_LOW32 = np.uint64(0xFFFFFFFF)


@nb.njit(cache=True, nogil=True, error_model="numpy")
def _wander_rows(
    vel: Any, raw: Any, half: Any, kick_scale: Any, vmax: Any
) -> None:  # pragma: no cover
    """_wander's rows, the kicks made from raw PCG64 draws: float32 (u32 >> 8) * 2**-24, the
    low half of each draw for x, the high half for y. ``vel`` is flat (x, y, x, y...).

    Written so LLVM vectorizes it (about 4x faster than the same arithmetic row by row): the
    rows as one flat array, each 24-bit kick converted through int32 (exact, and a packed
    instruction, where uint64 to float32 has none on AVX2), and the cap as a select."""
    vmax2 = vmax * vmax
    eight = np.uint64(8)
    unit = np.float32(1.0 / 16777216.0)
    for i in range(vel.shape[0] // 2):  # raw may be longer (a buffer): vel says how many
        r = raw[i]
        kx = np.float32(np.int32((r & _LOW32) >> eight)) * unit
        ky = np.float32(np.int32(r >> np.uint64(40))) * unit
        vx = vel[2 * i] + np.float64((kx - half) * kick_scale)
        vy = vel[2 * i + 1] + np.float64((ky - half) * kick_scale)
        s2 = vx * vx + vy * vy
        s2 = s2 if s2 >= vmax2 or s2 != s2 else vmax2  # np.maximum: NaN wins
        scale = vmax / np.sqrt(s2)
        vel[2 * i] = vx * scale
        vel[2 * i + 1] = vy * scale


DRAW_BLOCK = 1024
"""Rows whose draws :data:`wander_move` makes at a time, into a buffer that stays in cache."""


def _wander_move(
    pos: Any,
    vel: Any,
    starts: Any,
    inc_hi: Any,
    inc_lo: Any,
    half: Any,
    kick_scale: Any,
    vmax: Any,
    dt: Any,
    width: Any,
    height: Any,
    cols: Any,
    rows: Any,
    fx: Any,
    fy: Any,
) -> Any:  # pragma: no cover - compiled
    # _wander_raw then _move, a block of rows at a time (its draws and velocities still in
    # cache when it moves); each range of rows (starts: one PCG64 state per range, advanced
    # to its first row's draw) makes its own draws: the bits of random_raw(n) split among
    # the ranges, so the draws use every thread too
    n = pos.shape[0]
    chunks = starts.shape[0]
    out = np.empty_like(pos)
    cells = np.empty(n, dtype=np.int32)
    last = np.zeros(1, dtype=np.uint64)
    outside = 0
    p, v, o = pos.reshape(-1), vel.reshape(-1), out.reshape(-1)
    for t in nb.prange(chunks):
        raw = np.empty(DRAW_BLOCK, dtype=np.uint64)
        hi, lo = starts[t, 0], starts[t, 1]
        end = (t + 1) * n // chunks
        for block in range(t * n // chunks, end, DRAW_BLOCK):
            top = min(block + DRAW_BLOCK, end)
            hi, lo = pcg_fill(hi, lo, inc_hi, inc_lo, raw, top - block)
            _wander_rows(v[2 * block : 2 * top], raw, half, kick_scale, vmax)
            outside += _move_rows(
                p[2 * block : 2 * top],
                v[2 * block : 2 * top],
                dt,
                width,
                height,
                cols,
                rows,
                fx,
                fy,
                o[2 * block : 2 * top],
                cells[block:top],
            )
            if t == chunks - 1 and top == end:
                last[0] = raw[top - block - 1]  # the generator keeps the last draw's high half
    return out, outside, cells, last[0]


def _move(
    pos: Any, vel: Any, dt: Any, width: Any, height: Any, cols: Any, rows: Any, fx: Any, fy: Any
) -> Any:  # pragma: no cover - compiled
    n = pos.shape[0]
    out = np.empty_like(pos)
    cells = np.empty(n, dtype=np.int32)
    outside = 0
    chunks = min(n, 64) if n else 1
    p, v, o = pos.reshape(-1), vel.reshape(-1), out.reshape(-1)
    for t in nb.prange(chunks):
        lo, hi = t * n // chunks, (t + 1) * n // chunks
        outside += _move_rows(
            p[2 * lo : 2 * hi],
            v[2 * lo : 2 * hi],
            dt,
            width,
            height,
            cols,
            rows,
            fx,
            fy,
            o[2 * lo : 2 * hi],
            cells[lo:hi],
        )
    return out, outside, cells


@nb.njit(cache=True, nogil=True, error_model="numpy")
def _move_rows(
    pos: Any,
    vel: Any,
    dt: Any,
    width: Any,
    height: Any,
    cols: Any,
    rows: Any,
    fx: Any,
    fy: Any,
    out: Any,
    cells: Any,
) -> Any:  # pragma: no cover - compiled
    """_move's rows into ``out`` and their cells into ``cells``; the count still outside.
    ``pos``, ``vel`` and ``out`` are flat (x, y, x, y...).

    Branch-free (selects) over flat arrays, so LLVM vectorizes it; the cells are clamped in
    floating point before converting (:func:`_cell`)."""
    outside = 0
    for i in range(cells.shape[0]):
        x = pos[2 * i] + vel[2 * i] * dt
        y = pos[2 * i + 1] + vel[2 * i + 1] * dt
        x = x + width if x < 0.0 else x
        x = x - width if x >= width else x
        y = y + height if y < 0.0 else y
        y = y - height if y >= height else y
        out[2 * i] = x
        out[2 * i + 1] = y
        outside += (x < 0.0) | (x >= width) | (y < 0.0) | (y >= height)
        cells[i] = _cell(x, y, cols, rows, fx, fy)
    return outside


@nb.njit(cache=True, nogil=True, inline="always")
def _cell(x: Any, y: Any, cols: Any, rows: Any, fx: Any, fy: Any) -> Any:  # pragma: no cover
    """The grass cell of (x, y), as NumpyKernels.cells computes it for a position inside the
    world (or NaN, cell 0): clamped to the grid in floating point, then truncated through
    int32, which vectorizes (a grid has far fewer than 2**31 cells). Outside the world the
    reference's int64 conversion may differ, but a caller never uses those cells (the
    positions are wrapped and their cells computed again)."""
    cx = x * fx
    cy = y * fy
    cx = cx if cx > 0.0 else 0.0  # NaN: 0, as the reference's clip of its conversion
    cy = cy if cy > 0.0 else 0.0
    cx = cx if cx < cols - 1 else cols - 1.0
    cy = cy if cy < rows - 1 else rows - 1.0
    return np.int32(cy) * np.int32(cols) + np.int32(cx)


def _cells(pos: Any, cols: Any, rows: Any, fx: Any, fy: Any) -> Any:  # pragma: no cover
    n = pos.shape[0]
    out = np.empty(n, dtype=np.int32)  # a grass grid has far fewer than 2**31 cells
    for i in nb.prange(n):
        out[i] = _cell(pos[i, 0], pos[i, 1], cols, rows, fx, fy)
    return out


def _count(
    cells: Any, sheep: Any, use_mask: Any, n_cells: Any, chunks: Any
) -> Any:  # pragma: no cover - compiled
    # each range of rows counts its sheep per cell in a census of its own (a row of counts):
    # the cell's count is the sum of the rows (exact in any order), which _share adds up
    n = cells.size
    counts = np.zeros((chunks, n_cells), dtype=np.int32)
    for t in nb.prange(chunks):
        mine = counts[t]
        for i in range(t * n // chunks, (t + 1) * n // chunks):
            if not use_mask or sheep[i]:
                mine[cells[i]] += 1
    return counts


def _count16(
    cells: Any, sheep: Any, use_mask: Any, n_cells: Any, chunks: Any
) -> Any:  # pragma: no cover - compiled
    # _count into 16-bit counters: half the memory the rows hit at random (at 1M rows over
    # 2.5M cells, the census costs about half as much); a counter that would pass 65535 marks
    # its range full, and the caller counts again in 32 bits
    n = cells.size
    counts = np.zeros((chunks, n_cells), dtype=np.uint16)
    full = np.zeros(chunks, dtype=np.bool_)
    for t in nb.prange(chunks):
        mine = counts[t]
        for i in range(t * n // chunks, (t + 1) * n // chunks):
            if not use_mask or sheep[i]:
                c = cells[i]
                k = mine[c]
                if k == 65535:
                    full[t] = True
                mine[c] = k + 1
    return counts, full


def _share(
    counts: Any,
    grass: Any,
    out: Any,
    bite: Any,
    one: Any,
    tiny: Any,
    grow: Any,
    regrow: Any,
    grass_max: Any,
) -> Any:  # pragma: no cover - compiled
    # per cell: the share of each bite it can serve (its sheep: the sum of the one or two
    # rows of counts, _count's censuses), and its grass after grazing, into out (grass
    # itself, or a new array); with grow, the grass grows first, as _grow_grass does.
    # Every cell, with no branch on whether anyone grazes it (a third of the cells at the
    # demo's density: a branch the CPU guesses wrong a third of the time): a cell nobody
    # grazes has demand 0, loses min(0 * share, grass) = 0 and keeps its grass to the bit,
    # and its share is never read (NumpyKernels.graze computes it the same way). Two rows
    # are read as two flat arrays, not a loop over the rows, so LLVM vectorizes the loop.
    first = counts[0]
    second = counts[counts.shape[0] - 1]
    two = counts.shape[0] == 2
    share = np.empty(first.size, dtype=np.float32)
    for c in nb.prange(first.size):
        here = grass[c]
        if grow:
            g = here + regrow
            here = g if g < grass_max or g != g else grass_max
        count = np.int32(first[c]) + (np.int32(second[c]) if two else np.int32(0))
        demand = np.float32(count) * bite
        s = here / (demand if demand >= tiny else tiny)
        if s > one:
            s = one
        share[c] = s
        eaten = demand * s
        out[c] = here - (eaten if eaten <= here else here)
    return share


def _eat(
    cells: Any, sheep: Any, use_mask: Any, share: Any, energy: Any, gain: Any
) -> Any:  # pragma: no cover - compiled
    out = np.empty_like(energy)
    for i in nb.prange(cells.size):
        if use_mask and not sheep[i]:
            out[i] = energy[i] + 0.0
        else:
            out[i] = energy[i] + np.float64(share[cells[i]]) * gain
    return out


def _life(
    kind: Any, age: Any, energy: Any, metabolism: Any, max_age: Any, breed_energy: Any
) -> Any:  # pragma: no cover - compiled
    n = kind.size
    new_age = np.empty_like(age)
    status = np.zeros(n, dtype=np.int8)
    n_sheep = 0
    n_dead = 0
    n_parents = 0
    for i in nb.prange(n):
        a = age[i] + 1
        new_age[i] = a
        if kind[i] != 0:
            energy[i] = energy[i] - 0.0
        else:
            n_sheep += 1  # integer sums: exact in any order
            e = energy[i] - metabolism
            energy[i] = e
            if e <= 0.0 or a > max_age:
                status[i] = DEAD
                n_dead += 1
            elif e >= breed_energy:
                status[i] = PARENT
                n_parents += 1
    return new_age, status, n_sheep, n_dead, n_parents


def _grid(
    pos: Any, fx: Any, fy: Any, cols: Any, rows: Any, chunks: Any
) -> Any:  # pragma: no cover - compiled
    # a stable counting sort split by row ranges: each range counts its rows per bucket, the
    # ranges' slots in each bucket follow in range order (_prefix), and each range places its
    # own rows, so every row lands where one thread would put it
    n = pos.shape[0]
    n_buckets = cols * rows
    bucket = np.empty(n, dtype=np.int32)
    slot = np.zeros((chunks, n_buckets), dtype=np.int32)
    for t in nb.prange(chunks):
        _bucket_rows(
            pos, fx, fy, cols, rows, t * n // chunks, (t + 1) * n // chunks, bucket, slot[t]
        )
    starts = np.empty(n_buckets + 1, dtype=np.int32)
    starts[n_buckets] = _prefix(slot)
    starts[:n_buckets] = slot[0]
    order = np.empty(n, dtype=np.int32)
    for t in nb.prange(chunks):
        _place_rows(bucket, t * n // chunks, (t + 1) * n // chunks, slot[t], order)
    return order, starts


@nb.njit(cache=True, nogil=True, error_model="numpy")
def _bucket_rows(
    pos: Any, fx: Any, fy: Any, cols: Any, rows: Any, lo: Any, hi: Any, bucket: Any, counts: Any
) -> None:  # pragma: no cover - compiled
    """The bucket of rows ``lo:hi`` (spatial.bucket_of), counted per bucket in ``counts``."""
    for i in range(lo, hi):
        bx = min(max(int(pos[i, 0] * fx), 0), cols - 1)
        by = min(max(int(pos[i, 1] * fy), 0), rows - 1)
        b = by * cols + bx
        bucket[i] = b
        counts[b] += 1


@nb.njit(cache=True, nogil=True)
def _place_rows(bucket: Any, lo: Any, hi: Any, slot: Any, order: Any) -> None:  # pragma: no cover
    """Put rows ``lo:hi`` at their bucket's next ``slot`` in ``order``."""
    for i in range(lo, hi):
        b = bucket[i]
        order[slot[b]] = i
        slot[b] += 1


@nb.njit(cache=True, nogil=True)
def _prefix(counts: Any) -> Any:  # pragma: no cover - compiled
    """Turn per-(range, key) counts into each range's first slot for each key: keys in order,
    and within a key the ranges in order (what a stable sort on one thread gives); returns
    the total."""
    run = 0
    for key in range(counts.shape[1]):
        for t in range(counts.shape[0]):
            k = counts[t, key]
            counts[t, key] = run
            run += k
    return run


def _rebuild(
    src: Any, dead: Any, tail: Any, width: Any, out: Any, chunks: Any
) -> None:  # pragma: no cover - compiled
    # into flat ``out``: the rows of flat ``src`` (``width`` values a row) but the ``dead``
    # rows (sorted), then the rows of flat ``tail``; each range of rows copies its runs
    # between dead rows (runs of memory, not row by row: deaths are sparse) to where they
    # land, so any split gives the same array
    n = src.size // width if width else 0
    n_dead = dead.size
    for t in nb.prange(chunks):
        lo, hi = t * n // chunks, (t + 1) * n // chunks
        d = np.searchsorted(dead, lo)  # dead rows before this range
        start = lo
        while start < hi:
            stop = dead[d] if d < n_dead and dead[d] < hi else hi
            if stop > start:
                out[(start - d) * width : (stop - d) * width] = src[start * width : stop * width]
            if stop < hi:  # stop is a dead row: skip it
                d += 1
            start = stop + 1 if stop < hi else hi
    out[(n - n_dead) * width :] = tail


grow_grass = _both(_grow_grass)
wander = _both(_wander)
wander_raw = _both(_wander_raw)
move = _both(_move)
wander_move = _both(_wander_move)
cells = _both(_cells)
count = _both(_count)
count16 = _both(_count16)
share = _both(_share)
eat = _both(_eat)
life = _both(_life)
grid = _both(_grid)
rebuild = _both(_rebuild)
