"""Baseline for bench/meadow_tick.py: the meadow's systems as they were before issue 17.

A frozen copy of ``worldloop/demo/systems.py`` at the commit before the kernels (plain NumPy
array expressions, the spatial grid rebuilt eagerly at the end of every tick), so the
benchmark can measure today's implementations against it in the same run, and check that
every one of them reaches the same state hash.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import partial
from typing import Any

import numpy as np

from worldloop.demo.meadow import Meadow
from worldloop.demo.spatial import SpatialGrid, torus_delta
from worldloop.demo.systems import SHEEP
from worldloop.world import System


class MeadowBefore(Meadow):
    """The meadow with the systems as they were (same rules, same state, same hash)."""

    share_published = False  # as it was: its systems write in place, snapshots copy

    def systems(self) -> Sequence[System]:
        return (
            System("grass", partial(grow_grass, self)),
            System("wander", partial(wander, self)),
            System("flee", partial(flee, self)),
            System("avatars", partial(steer_avatars, self)),
            System("movement", partial(movement, self)),
            System("grazing", partial(graze, self)),
            System("life", partial(life, self)),
            System("spatial_index", self._reindex),
        )

    def _reindex(self) -> None:
        super()._reindex()
        bucket = max(self.params.cell, self.params.flee_radius)
        self._grid = SpatialGrid.build(self.pos, self.width, self.height, bucket)

    def view(self) -> dict[str, Any]:
        data = super().view()  # as it was: the grid built in the tick, published (copied)
        grid = self.grid
        data["_grid"].update(cols=grid.cols, rows=grid.rows, order=grid.order, starts=grid.starts)
        return data

    def _cells(self) -> np.ndarray:
        cx = (self.pos[:, 0] * (self.gcols / self.width)).astype(np.intp)
        cy = (self.pos[:, 1] * (self.grows / self.height)).astype(np.intp)
        np.clip(cx, 0, self.gcols - 1, out=cx)
        np.clip(cy, 0, self.grows - 1, out=cy)
        cells: np.ndarray = cy * self.gcols + cx
        return cells


def grow_grass(m: MeadowBefore) -> None:
    g = m.grass
    g += np.float32(m.params.grass_regrow)
    np.minimum(g, np.float32(m.params.grass_max), out=g)


def wander(m: MeadowBefore) -> None:
    """Random-walk velocities (uniform kicks with the variance of N(0, wander)), capped."""
    n = len(m.ids)
    if n == 0:
        return
    kick = m.rng.random((n, 2), dtype=np.float32)
    kick -= np.float32(0.5)
    kick *= np.float32(m.params.wander * math.sqrt(12.0))
    m.vel += kick
    speed2 = np.einsum("ij,ij->i", m.vel, m.vel)
    vmax = m.params.sheep_speed
    np.maximum(speed2, vmax * vmax, out=speed2)
    scale = np.sqrt(speed2, out=speed2)
    np.divide(vmax, scale, out=scale)
    m.vel *= scale[:, None]


def pairs_n_by_2(
    g: SpatialGrid, pos: np.ndarray, centers: np.ndarray, radius: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The neighbour query as it was: ``SpatialGrid.pairs_within`` before it worked one axis at
    a time (every candidate's row of ``pos`` and its center's row gathered as n x 2 arrays, then
    torus_delta on them)."""
    k = len(centers)
    bw, bh = g.width / g.cols, g.height / g.rows
    rx, ry = min(g.cols // 2, math.ceil(radius / bw)), min(g.rows // 2, math.ceil(radius / bh))
    cx = np.minimum((centers[:, 0] / bw).astype(np.intp), g.cols - 1)
    cy = np.minimum((centers[:, 1] / bh).astype(np.intp), g.rows - 1)
    dx, dy = np.arange(-rx, rx + 1)[: g.cols], np.arange(-ry, ry + 1)[: g.rows]
    bx = (cx[:, None, None] + dx[None, None, :]) % g.cols
    by = (cy[:, None, None] + dy[None, :, None]) % g.rows
    per_center = (by * g.cols + bx).reshape(k, -1)
    owner = np.repeat(np.arange(k), per_center.shape[1])
    buckets = per_center.reshape(-1)
    lo = g.starts[buckets].astype(np.intp)
    counts = g.starts[buckets + 1].astype(np.intp) - lo
    offsets = np.repeat(lo - np.cumsum(counts) + counts, counts) + np.arange(int(counts.sum()))
    cand = g.order[offsets]
    who = np.repeat(owner, counts)
    d = torus_delta(pos[cand], centers[who], g.width, g.height)
    near = np.einsum("ij,ij->i", d, d) <= radius * radius
    return who[near], cand[near], d[near]


def flee(m: MeadowBefore) -> None:
    """Sheep near an avatar are pushed away from it (one neighbour query for all avatars)."""
    avatars = m._avatars
    if avatars.size == 0:
        return
    _who, near, d = pairs_n_by_2(m.grid, m.pos, m.pos[avatars], m.params.flee_radius)
    sheep = m.kind[near] == SHEEP
    near, d = near[sheep], d[sheep]
    if near.size == 0:
        return
    dist = np.maximum(np.hypot(d[:, 0], d[:, 1]), 1e-6)
    push = d * (m.params.flee_push / dist)[:, None]
    np.add.at(m.vel, near, push)  # a sheep near two avatars is pushed by both


def steer_avatars(m: MeadowBefore) -> None:
    a = m._avatars
    if a.size == 0:
        return
    m.vel[a] = 0.0
    tgt = m.target[a]
    moving = ~np.isnan(tgt[:, 0])
    if not moving.any():
        return
    a = a[moving]
    d = torus_delta(m.target[a], m.pos[a], m.width, m.height)
    dist = np.hypot(d[:, 0], d[:, 1])
    step = m.params.avatar_speed * m.dt
    arrived = dist <= step
    if arrived.any():
        m.pos[a[arrived]] = m.target[a[arrived]]
        m.target[a[arrived]] = np.nan
    go = ~arrived
    m.vel[a[go]] = d[go] / dist[go][:, None] * m.params.avatar_speed


def movement(m: MeadowBefore) -> None:
    pos = m.pos
    pos += m.vel * m.dt
    # a tick moves far less than the world's size, so one wrap each way is enough
    for axis, size in ((0, m.width), (1, m.height)):
        col = pos[:, axis]
        np.add(col, size, out=col, where=col < 0.0)
        np.subtract(col, size, out=col, where=col >= size)
        if col.size and (col.min() < 0.0 or col.max() >= size):
            np.mod(col, size, out=col)
            np.minimum(col, m._upper[axis], out=col)


def graze(m: MeadowBefore) -> None:
    n_sheep = len(m.ids) - m._avatars.size
    if n_sheep == 0:
        return
    cells = m._cells()
    flat = m.grass.reshape(-1)
    bite = m.params.bite
    sheep_cells = cells if m._avatars.size == 0 else cells[m.kind == SHEEP]
    demand = np.bincount(sheep_cells, minlength=flat.size).astype(np.float32)
    demand *= np.float32(bite)
    share = np.minimum(np.float32(1.0), flat / np.maximum(demand, np.float32(1e-12)))
    eaten = share[cells].astype(np.float64)
    eaten *= bite * m.params.food_energy
    if m._avatars.size:
        eaten[m._avatars] = 0.0
    m.energy += eaten
    demand *= share
    np.minimum(demand, flat, out=demand)
    flat -= demand


def life(m: MeadowBefore) -> None:
    """Metabolism, ageing, births and deaths: one compaction of the arrays per tick."""
    p = m.params
    sheep = m.kind == SHEEP
    m.age += 1
    m.energy -= np.where(sheep, p.metabolism, 0.0)
    dead = sheep & ((m.energy <= 0.0) | (m.age > p.max_age))
    alive_sheep = int(np.count_nonzero(sheep)) - int(np.count_nonzero(dead))
    room = m.max_creatures - alive_sheep
    parents = np.flatnonzero(sheep & ~dead & (m.energy >= p.breed_energy))
    if parents.size and room > 0:
        parents = parents[m.rng.random(parents.size) < p.breed_chance][:room]
    else:
        parents = parents[:0]
    if not dead.any() and parents.size == 0:
        return
    child_pos = child_energy = None
    if parents.size:
        m.energy[parents] *= 0.5
        child_energy = m.energy[parents].copy()
        jitter = m.rng.normal(0.0, 2.0, (parents.size, 2))
        child_pos = np.mod(m.pos[parents] + jitter, (m.width, m.height))
    if dead.any():
        keep = ~dead
        m.deaths += int(np.count_nonzero(dead))
        m.ids, m.kind = m.ids[keep], m.kind[keep]
        m.pos, m.vel = m.pos[keep], m.vel[keep]
        m.energy, m.age, m.target = (
            m.energy[keep],
            m.age[keep],
            m.target[keep],
        )
    if child_pos is not None and child_energy is not None:
        m.births += len(child_pos)
        m._spawn(SHEEP, child_pos, child_energy)
