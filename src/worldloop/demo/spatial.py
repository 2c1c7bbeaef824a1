"""A uniform bucket grid over a torus for neighbour and bounding-box queries on point arrays.

Built once per tick from the positions (a stable counting sort, no per-entity Python work) and
published with the snapshot, so reader threads answer region queries without scanning
every entity.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

MAX_BUCKETS_PER_SIDE = 128
"""128 x 128 buckets keep bucket ids within int16, where NumPy's stable sort is a radix sort."""


@dataclass(frozen=True, slots=True)
class SpatialGrid:
    """Entities bucketed by position: bucket ``b`` holds ``order[starts[b]:starts[b + 1]]``."""

    width: float
    height: float
    cols: int
    rows: int
    order: NDArray[np.int32]
    starts: NDArray[np.int32]

    @classmethod
    def build(
        cls,
        pos: NDArray[np.float64],
        width: float,
        height: float,
        bucket: float,
        sort_by: GridSort | None = None,
    ) -> SpatialGrid:
        """Bucket ``pos`` (n x 2, in [0, width) x [0, height)) into cells >= ``bucket`` wide.

        ``sort_by`` buckets the rows and sorts them by bucket (stably), giving each bucket's
        start; by default :func:`grid_by_argsort` (NumPy; a compiled counting sort gives the
        same arrays faster).
        """
        cols = max(1, min(MAX_BUCKETS_PER_SIDE, math.floor(width / bucket)))
        rows = max(1, min(MAX_BUCKETS_PER_SIDE, math.floor(height / bucket)))
        order, starts = (sort_by or grid_by_argsort)(pos, width, height, cols, rows)
        return cls(float(width), float(height), cols, rows, order, starts)

    def query_bbox(self, x0: float, y0: float, x1: float, y1: float) -> NDArray[np.int32]:
        """Indices of entities in buckets touching [x0, x1] x [y0, y1] (a superset: filter after).

        Coordinates outside the world wrap around the torus; a span of a whole side or more
        covers that side once.
        """
        cols_ = _runs(x0, x1, self.width, self.cols)
        rows_ = [r for a, b in _runs(y0, y1, self.height, self.rows) for r in range(a, b + 1)]
        parts: list[NDArray[np.int32]] = []
        for r in rows_:
            base = r * self.cols
            for c0, c1 in cols_:
                lo, hi = int(self.starts[base + c0]), int(self.starts[base + c1 + 1])
                if hi > lo:
                    parts.append(self.order[lo:hi])
        if not parts:
            return np.empty(0, dtype=np.int32)
        return np.concatenate(parts)

    def pairs_within(
        self, pos: NDArray[np.float64], centers: NDArray[np.float64], radius: float
    ) -> tuple[NDArray[np.intp], NDArray[np.int32], NDArray[np.float64]]:
        """Every (center, entity) pair closer than ``radius``, for all centers at once.

        Returns the center's row, the entity's index and the torus displacement center->entity
        (n x 2): :meth:`pairs_within_axes`, its two axes stacked.
        """
        who, near, dx, dy = self.pairs_within_axes(pos, centers, radius)
        return who, near, np.stack((dx, dy), axis=1)

    def pairs_within_axes(
        self, pos: NDArray[np.float64], centers: NDArray[np.float64], radius: float
    ) -> tuple[NDArray[np.intp], NDArray[np.int32], NDArray[np.float64], NDArray[np.float64]]:
        """Every (center, entity) pair closer than ``radius``: the center's row, the entity's
        index, and the torus displacement center->entity as one array per axis.

        Vectorized over centers: the neighbouring buckets of all centers are gathered in one
        go, ordered by center, then bucket, then row. The arithmetic runs on one contiguous
        array per axis: gathering rows of an n x 2 array (``pos[cand]``) and repeating each
        center row per candidate cost three times the rest together (200 avatars among 100k
        sheep: 14.7 ms a tick, 3.2 ms this way, the same bits).
        """
        k = len(centers)
        empty_f = np.empty(0)
        empty = (np.empty(0, np.intp), np.empty(0, np.int32), empty_f, empty_f)
        if k == 0 or len(self.order) == 0:
            return empty
        bw, bh = self.width / self.cols, self.height / self.rows
        rx = min(self.cols // 2, math.ceil(radius / bw))
        ry = min(self.rows // 2, math.ceil(radius / bh))
        cx = np.minimum((centers[:, 0] / bw).astype(np.intp), self.cols - 1)
        cy = np.minimum((centers[:, 1] / bh).astype(np.intp), self.rows - 1)
        dx = np.arange(-rx, rx + 1)
        dy = np.arange(-ry, ry + 1)
        if 2 * rx + 1 > self.cols:
            dx = dx[: self.cols]
        if 2 * ry + 1 > self.rows:
            dy = dy[: self.rows]
        bx = (cx[:, None, None] + dx[None, None, :]) % self.cols
        by = (cy[:, None, None] + dy[None, :, None]) % self.rows
        per_center = (by * self.cols + bx).reshape(k, -1)
        buckets = per_center.reshape(-1)
        lo = self.starts[buckets].astype(np.intp)
        counts = self.starts[buckets + 1].astype(np.intp) - lo
        total = int(counts.sum())
        if total == 0:
            return empty
        # positions of every bucket member in ``order``, without a Python loop over buckets
        offsets = np.repeat(lo - np.cumsum(counts) + counts, counts) + np.arange(total)
        cand = self.order[offsets]
        per = counts.reshape(k, -1).sum(axis=1)  # candidates of each center, in center order
        axes = []
        for axis, size in ((0, self.width), (1, self.height)):
            d = pos[:, axis].take(cand)
            d -= np.repeat(centers[:, axis], per)
            d -= size * np.round(d / size)  # torus_delta's wrap, one axis
            axes.append(d)
        ddx, ddy = axes
        near = np.flatnonzero(ddx * ddx + ddy * ddy <= radius * radius)
        who = np.repeat(np.arange(k), per)
        return who[near], cand[near], ddx[near], ddy[near]

    def query_radius(
        self, pos: NDArray[np.float64], x: float, y: float, radius: float
    ) -> NDArray[np.int32]:
        """Indices of entities within ``radius`` of (x, y), measured across the torus."""
        cand = self.query_bbox(x - radius, y - radius, x + radius, y + radius)
        if cand.size == 0:
            return cand
        d = torus_delta(pos[cand], np.array([x, y]), self.width, self.height)
        return cand[(d[:, 0] ** 2 + d[:, 1] ** 2) <= radius * radius]


GridSort = Callable[
    [NDArray[np.float64], float, float, int, int], tuple[NDArray[np.int32], NDArray[np.int32]]
]
"""``(pos, width, height, cols, rows) -> (rows sorted stably by bucket, each bucket's start)``,
the buckets being :func:`bucket_of`'s."""


def grid_by_argsort(
    pos: NDArray[np.float64], width: float, height: float, cols: int, rows: int
) -> tuple[NDArray[np.int32], NDArray[np.int32]]:
    """The reference :data:`GridSort`: :func:`bucket_of`, then :func:`order_by_argsort`."""
    return order_by_argsort(bucket_of(pos, width, height, cols, rows), cols * rows)


def order_by_argsort(
    b: NDArray[np.signedinteger[Any]], n_buckets: int
) -> tuple[NDArray[np.int32], NDArray[np.int32]]:
    """Rows sorted stably by bucket ``b``, and each bucket's start (``n_buckets + 1`` values):
    NumPy's stable sort (a radix sort for int16 ids)."""
    order = np.argsort(b, kind="stable").astype(np.int32, copy=False)
    counts = np.bincount(b, minlength=n_buckets)
    starts = np.zeros(n_buckets + 1, dtype=np.int32)
    np.cumsum(counts, out=starts[1:])
    return order, starts


def bucket_of(
    pos: NDArray[np.float64], width: float, height: float, cols: int, rows: int
) -> NDArray[np.signedinteger[Any]]:
    """The bucket id of each position (row-major), int16 when it fits."""
    dtype = np.int16 if cols * rows <= np.iinfo(np.int16).max else np.int32
    bx = (pos[:, 0] * (cols / width)).astype(np.int32)
    by = (pos[:, 1] * (rows / height)).astype(np.int32)
    np.clip(bx, 0, cols - 1, out=bx)
    np.clip(by, 0, rows - 1, out=by)
    b: NDArray[np.int32] = by * cols + bx
    out: NDArray[np.signedinteger[Any]] = b.astype(dtype, copy=False)
    return out


def torus_delta(
    a: NDArray[np.float64], b: NDArray[np.float64], width: float, height: float
) -> NDArray[np.float64]:
    """The shortest displacement from ``b`` to ``a`` on the torus, per row."""
    d = a - b
    size = np.array([width, height])
    d -= size * np.round(d / size)
    return d


def _runs(lo: float, hi: float, size: float, n: int) -> list[tuple[int, int]]:
    """Inclusive bucket runs covering [lo, hi] on an axis of ``n`` buckets wrapping at ``size``."""
    if hi - lo >= size:
        return [(0, n - 1)]
    a = math.floor(lo * n / size)
    b = math.floor(hi * n / size)
    a_mod, span = a % n, b - a
    if a_mod + span < n:
        return [(a_mod, a_mod + span)]
    return [(a_mod, n - 1), (0, (a_mod + span) % n)]
