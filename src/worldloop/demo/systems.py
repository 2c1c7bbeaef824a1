"""The meadow's systems, run every tick in this order by ``Meadow.systems()``: grass grows,
sheep wander and flee avatars, avatars walk to their targets, everyone moves, sheep graze, then
metabolism, births and deaths. Each is vectorized over the world's arrays (no per-entity loop):
the random numbers come from the world's generator here, the arithmetic from ``m.kernels``
(demo/kernels.py), whose implementations agree bit for bit.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

from .spatial import torus_delta

if TYPE_CHECKING:
    from .meadow import Meadow

SHEEP = 0
AVATAR = 1
KIND_NAMES = ("sheep", "avatar")


def grow_grass(m: Meadow) -> None:
    """Grass grows everywhere, up to ``grass_max``: here, or (kernels that can) in the same
    pass as ``graze``, next to read or write the grass."""
    if m.kernels.grows_while_grazing:
        m._grass_to_grow = True
        return
    _grow_now(m)


def _grow_now(m: Meadow) -> None:
    m.grass = m.kernels.grow_grass(m.grass, m.params.grass_regrow, m.params.grass_max)


def wander(m: Meadow) -> None:
    """Random-walk velocities (uniform kicks with the variance of N(0, wander)), capped.

    With no avatars, ``flee`` and ``avatars`` change no velocity, so the kernels may move
    everyone in the same pass (``Kernels.wander_move``): ``movement`` then takes what it made.
    """
    n = len(m.ids)
    if n == 0:
        return
    kick = (m.params.wander * math.sqrt(12.0), m.params.sheep_speed)
    if m._avatars.size == 0:
        size = (m.width, m.height, m.gcols, m.grows)
        m._wandered_moved = m.kernels.wander_move(m.vel, m.pos, m.rng, kick, m.dt, size)
        if m._wandered_moved is not None:
            return
    m.kernels.wander(m.vel, m.rng, *kick)


def flee(m: Meadow) -> None:
    """Sheep near an avatar are pushed away from it (one neighbour query for all avatars)."""
    avatars = m._avatars
    if avatars.size == 0:
        return
    _who, near, dx, dy = m.grid.pairs_within_axes(m.pos, m.pos[avatars], m.params.flee_radius)
    sheep = np.flatnonzero(m.kind[near] == SHEEP)
    if sheep.size == 0:
        return
    near, dx, dy = near[sheep], dx[sheep], dy[sheep]
    scale = m.params.flee_push / np.maximum(np.hypot(dx, dy), 1e-6)
    # one axis at a time (contiguous arrays: a third of the time of n x 2 rows); a sheep near
    # two avatars is pushed by both, in avatar order
    np.add.at(m.vel[:, 0], near, dx * scale)
    np.add.at(m.vel[:, 1], near, dy * scale)


def steer_avatars(m: Meadow) -> None:
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
        m.writable("pos")[a[arrived]] = m.target[a[arrived]]
        m.target[a[arrived]] = np.nan
    go = ~arrived
    m.vel[a[go]] = d[go] / dist[go][:, None] * m.params.avatar_speed


def movement(m: Meadow) -> None:
    # a tick moves far less than the world's size, so one wrap each way is nearly always
    # enough; what is still outside (a huge velocity set by a command) is wrapped here
    moved, m._wandered_moved = m._wandered_moved, None
    if moved is None:
        moved = m.kernels.move(m.pos, m.vel, m.dt, m.width, m.height, m.gcols, m.grows)
    m.pos, outside, cells = moved
    m._moved_cells = None if outside else (m.pos, cells)  # for graze, next
    if outside:
        for axis, size in ((0, m.width), (1, m.height)):
            col = m.pos[:, axis]
            np.mod(col, size, out=col)
            np.minimum(col, m._upper[axis], out=col)


def graze(m: Meadow) -> None:
    grow, m._grass_to_grow = m._grass_to_grow, False
    n_sheep = len(m.ids) - m._avatars.size
    if n_sheep == 0:
        if grow:
            _grow_now(m)
        return
    p = m.params
    sheep = None if m._avatars.size == 0 else m.kind == SHEEP
    moved, m._moved_cells = m._moved_cells, None
    cells = moved[1] if moved is not None and moved[0] is m.pos else m._cells()
    if grow:
        food, growth = (p.bite, p.food_energy), (p.grass_regrow, p.grass_max)
        both = m.kernels.grow_graze(cells, sheep, m.grass, m.energy, food, growth)
        if both is not None:
            m.energy, m.grass = both  # an array of its own: published as it is, not copied
            return
        _grow_now(m)
    grass = m.writable("grass").reshape(-1)
    m.energy = m.kernels.graze(cells, sheep, grass, m.energy, p.bite, p.food_energy)


def life(m: Meadow) -> None:
    """Metabolism, ageing, births and deaths: one rebuild of the arrays per tick (the dead rows
    dropped and the newborn appended in one pass, ``Kernels.rebuild``)."""
    p = m.params
    m.age, dead, n_sheep, n_dead, parents = m.kernels.life(
        m.kind, m.age, m.writable("energy"), p.metabolism, p.max_age, p.breed_energy
    )
    room = m.max_creatures - (n_sheep - n_dead)
    if parents.size and room > 0:
        parents = parents[m.rng.random(parents.size) < p.breed_chance][:room]
    else:
        parents = parents[:0]
    if not n_dead and parents.size == 0:
        return
    child_pos = child_energy = None
    if parents.size:
        m.energy[parents] *= 0.5
        child_energy = m.energy[parents].copy()
        jitter = m.rng.normal(0.0, 2.0, (parents.size, 2))
        child_pos = np.mod(m.pos[parents] + jitter, (m.width, m.height))
    m.deaths += n_dead
    m.births += parents.size
    m._spawn(SHEEP, child_pos, child_energy, dead if n_dead else None)
