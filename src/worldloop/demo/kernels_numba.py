"""The meadow's kernels compiled with numba (the ``fast`` extra): fused loops, both cores.

Each loop does per row exactly what :class:`~worldloop.demo.kernels.NumpyKernels` does per
array, in the same precision and order: no ``fastmath`` (which would allow fused
multiply-adds and reordering), and every loop that runs in parallel (``prange``) writes only
its own rows, so no floating-point sum depends on how the rows were split between threads.
Counting passes (histograms, prefix sums, compaction) run on one thread. Compiled code is
cached next to this module, so only the first start on a machine pays for compiling.
"""

from __future__ import annotations

from typing import Any

import numba as nb
import numpy as np
from numpy.typing import NDArray

from .kernels import F32, F64

_jit = nb.njit(cache=True, nogil=True)
_pjit = nb.njit(cache=True, nogil=True, parallel=True)


@_pjit
def _grow_grass(grass: Any, regrow: Any, grass_max: Any) -> None:  # pragma: no cover - compiled
    flat = grass.reshape(-1)
    for i in nb.prange(flat.size):
        g = flat[i] + regrow
        flat[i] = g if g < grass_max or g != g else grass_max


@_pjit
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


@_pjit
def _move(pos: Any, vel: Any, dt: Any, width: Any, height: Any) -> Any:  # pragma: no cover
    n = pos.shape[0]
    outside = np.zeros(n, dtype=np.bool_)
    for i in nb.prange(n):
        x = pos[i, 0] + vel[i, 0] * dt
        y = pos[i, 1] + vel[i, 1] * dt
        if x < 0.0:
            x = x + width
        if x >= width:
            x = x - width
        if y < 0.0:
            y = y + height
        if y >= height:
            y = y - height
        pos[i, 0] = x
        pos[i, 1] = y
        outside[i] = x < 0.0 or x >= width or y < 0.0 or y >= height
    return outside.any()


@_pjit
def _cells(pos: Any, cols: Any, rows: Any, fx: Any, fy: Any) -> Any:  # pragma: no cover
    n = pos.shape[0]
    out = np.empty(n, dtype=np.intp)
    for i in nb.prange(n):
        cx: Any = np.intp(pos[i, 0] * fx)
        cy: Any = np.intp(pos[i, 1] * fy)
        cx = min(max(cx, 0), cols - 1)
        cy = min(max(cy, 0), rows - 1)
        out[i] = cy * cols + cx
    return out


@_jit
def _count(cells: Any, sheep: Any, use_mask: Any, n_cells: Any) -> Any:  # pragma: no cover
    counts = np.zeros(n_cells, dtype=np.int32)
    for i in range(cells.size):
        if not use_mask or sheep[i]:
            counts[cells[i]] += 1
    return counts


@_pjit
def _share(counts: Any, grass: Any, bite: Any, one: Any, tiny: Any) -> Any:  # pragma: no cover
    # per occupied cell: the share of each bite it can serve, and what is eaten from it
    # (cells nobody grazes keep their grass, and their share is never read)
    share = np.empty(counts.size, dtype=np.float32)
    for c in nb.prange(counts.size):
        if counts[c]:
            here = grass[c]
            demand = np.float32(counts[c]) * bite
            s = here / (demand if demand >= tiny else tiny)
            if s > one:
                s = one
            share[c] = s
            eaten = demand * s
            grass[c] = here - (eaten if eaten <= here else here)
    return share


@_pjit
def _eat(cells: Any, sheep: Any, use_mask: Any, share: Any, energy: Any, gain: Any) -> None:
    for i in nb.prange(cells.size):  # pragma: no cover - compiled
        if use_mask and not sheep[i]:
            energy[i] = energy[i] + 0.0
        else:
            energy[i] = energy[i] + np.float64(share[cells[i]]) * gain


@_jit
def _life(
    kind: Any, age: Any, energy: Any, metabolism: Any, max_age: Any, breed_energy: Any
) -> Any:  # pragma: no cover
    n = kind.size
    dead = np.zeros(n, dtype=np.bool_)
    parents = np.empty(n, dtype=np.intp)
    n_sheep = 0
    n_dead = 0
    n_parents = 0
    for i in range(n):
        age[i] += 1
        if kind[i] != 0:
            energy[i] = energy[i] - 0.0
            continue
        n_sheep += 1
        e = energy[i] - metabolism
        energy[i] = e
        if e <= 0.0 or age[i] > max_age:
            dead[i] = True
            n_dead += 1
        elif e >= breed_energy:
            parents[n_parents] = i
            n_parents += 1
    return dead, n_sheep, n_dead, parents[:n_parents].copy()


@_jit
def _compact(a: Any, keep: Any, n_keep: Any) -> Any:  # pragma: no cover
    out = np.empty((n_keep,) + a.shape[1:], dtype=a.dtype)  # noqa: RUF005 - numba types this
    j = 0
    for i in range(keep.size):
        if keep[i]:
            out[j] = a[i]
            j += 1
    return out


@_jit
def _bucket_order(buckets: Any, n_buckets: Any) -> Any:  # pragma: no cover
    counts = np.zeros(n_buckets + 1, dtype=np.int32)
    for i in range(buckets.size):
        counts[buckets[i] + 1] += 1
    for b in range(n_buckets):
        counts[b + 1] += counts[b]
    starts = counts.copy()
    order = np.empty(buckets.size, dtype=np.int32)
    for i in range(buckets.size):
        b = buckets[i]
        order[counts[b]] = i
        counts[b] += 1
    return order, starts


class NumbaKernels:
    """:class:`~worldloop.demo.kernels.Kernels` compiled with numba (parallel where exact)."""

    name = "numba"

    def grow_grass(self, grass: F32, regrow: float, grass_max: float) -> None:
        _grow_grass(grass, np.float32(regrow), np.float32(grass_max))

    def wander(self, vel: F64, kick: F32, kick_scale: float, vmax: float) -> None:
        _wander(vel, kick, np.float32(0.5), np.float32(kick_scale), float(vmax))

    def move(self, pos: F64, vel: F64, dt: float, width: float, height: float) -> bool:
        if pos.shape[0] == 0:
            return False
        return bool(_move(pos, vel, float(dt), float(width), float(height)))

    def cells(self, pos: F64, cols: int, rows: int, width: float, height: float) -> Any:
        return _cells(pos, cols, rows, cols / width, rows / height)

    def graze(
        self,
        cells: NDArray[np.intp],
        sheep: NDArray[np.bool_] | None,
        grass: F32,
        energy: F64,
        bite: float,
        food_energy: float,
    ) -> None:
        flat = grass.reshape(-1)
        mask = np.ones(0, dtype=np.bool_) if sheep is None else sheep
        counts = _count(cells, mask, sheep is not None, flat.size)
        share = _share(counts, flat, np.float32(bite), np.float32(1.0), np.float32(1e-12))
        _eat(cells, mask, sheep is not None, share, energy, bite * food_energy)

    def life(
        self,
        kind: NDArray[np.int8],
        age: NDArray[np.int32],
        energy: F64,
        metabolism: float,
        max_age: int,
        breed_energy: float,
    ) -> tuple[NDArray[np.bool_], int, int, NDArray[np.intp]]:
        dead, n_sheep, n_dead, parents = _life(
            kind, age, energy, float(metabolism), int(max_age), float(breed_energy)
        )
        return dead, int(n_sheep), int(n_dead), parents

    def compact(self, keep: NDArray[np.bool_], arrays: list[Any]) -> list[Any]:
        n_keep = int(np.count_nonzero(keep))
        return [_compact(a, keep, n_keep) for a in arrays]

    def bucket_order(
        self, buckets: NDArray[np.signedinteger[Any]], n_buckets: int
    ) -> tuple[NDArray[np.int32], NDArray[np.int32]]:
        order, starts = _bucket_order(buckets, n_buckets)
        return order, starts

    def warm_up(self) -> None:
        """Load (or compile) every kernel for the argument types the meadow uses."""
        pos = np.zeros((4, 2))
        grass = np.zeros((2, 2), dtype=np.float32)
        self.grow_grass(grass, 0.1, 1.0)
        self.wander(pos.copy(), np.zeros((4, 2), dtype=np.float32), 1.0, 1.0)
        self.move(pos.copy(), pos.copy(), 0.1, 1.0, 1.0)
        cells = self.cells(pos, 2, 2, 1.0, 1.0)
        energy = np.ones(4)
        for sheep in (None, np.ones(4, dtype=np.bool_)):
            self.graze(cells, sheep, grass.reshape(-1), energy, 0.1, 0.5)
        age = np.zeros(4, dtype=np.int32)
        kind = np.zeros(4, dtype=np.int8)
        dead = self.life(kind, age, energy, 0.1, 10, 2.0)[0]
        self.compact(
            ~dead,
            [np.arange(4, dtype=np.int64), kind, pos, pos, energy, age, pos],
        )
        for dtype in (np.int16, np.int32):
            self.bucket_order(np.zeros(4, dtype=dtype), 2)
