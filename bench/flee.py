"""What avatars cost a crowded meadow's tick: the ``flee`` system, one axis at a time vs n x 2.

The live benchmarks run 100,000 sheep on the demo's 1000 x 1000 field (benchenv.meadow_config):
about 60 sheep within an avatar's flee radius and ~560 candidates in the grid buckets around
it. There ``flee`` was most of a tick with players in it (200 avatars: ~18 of ~28 ms), because
its neighbour query gathered rows of n x 2 arrays (``pos[cand]``) and repeated each avatar's
row per candidate. ``systems.flee`` now does the same arithmetic one contiguous array per axis
(``SpatialGrid.pairs_within_axes``). The baseline, measured in the same run on the same world
and positions, is the n x 2 formulation as it was (kept here); both must leave the same
velocities, bit for bit (the run fails otherwise).

For each avatar count: ``flee`` alone (CPU ms of this thread per call, median of ``--calls``,
the two formulations taking turns call by call on copies of the same velocities), and a whole
``world.step`` with those avatars walking (median of ``--ticks``).

Run: python bench/flee.py [--avatars 0,50,200,1000] [--out bench/results/flee.md]
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "bench"))

from benchenv import emit, header, meadow_config  # noqa: E402
from meadow_tick import add_players  # noqa: E402
from worldloop.demo.meadow import SHEEP, Meadow, create_world  # noqa: E402
from worldloop.demo.spatial import SpatialGrid, torus_delta  # noqa: E402
from worldloop.demo.systems import flee  # noqa: E402


def pairs_n_by_2(
    g: SpatialGrid, pos: np.ndarray, centers: np.ndarray, radius: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The baseline's neighbour query: ``SpatialGrid.pairs_within`` as it was (every candidate's
    row of ``pos`` and its center's row gathered as n x 2 arrays, then torus_delta on them)."""
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


def flee_n_by_2(m: Meadow) -> None:
    """The baseline: ``flee`` as it was (n x 2 displacements, rows gathered per candidate)."""
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
    np.add.at(m.vel, near, push)


def cpu_ms(fn: Callable[..., object], *args: object) -> float:
    t0 = time.thread_time()
    fn(*args)
    return (time.thread_time() - t0) * 1000.0


def measure(entities: int, avatars: int, calls: int, ticks: int) -> dict[str, float]:
    world = create_world(meadow_config(entities))
    if avatars:
        add_players(world, avatars)
    for _ in range(5):
        world.step([])
    vel = world.vel.copy()
    new: list[float] = []
    old: list[float] = []
    for i in range(calls):
        for which in (0, 1) if i % 2 == 0 else (1, 0):
            world.vel = vel.copy()
            world.grid  # noqa: B018 (built once per tick by whichever reads it first: not timed)
            if which == 0:
                new.append(cpu_ms(flee, world))
                after_new = world.vel.copy()
            else:
                old.append(cpu_ms(flee_n_by_2, world))
                after_old = world.vel.copy()
    if not np.array_equal(after_new, after_old):
        raise SystemExit(f"flee and its baseline disagree at {avatars} avatars")
    world.vel = vel
    step = [cpu_ms(world.step, []) for _ in range(ticks)]
    return {
        "avatars": avatars,
        "new": statistics.median(new),
        "old": statistics.median(old),
        "step": statistics.median(step),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--entities", type=int, default=100_000)
    ap.add_argument("--avatars", default="0,50,200,1000")
    ap.add_argument("--calls", type=int, default=30)
    ap.add_argument("--ticks", type=int, default=30)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    rows = [measure(args.entities, int(a), args.calls, args.ticks) for a in args.avatars.split(",")]
    lines = header("Avatars in a crowded meadow: the flee system")
    lines += [
        f"{args.entities:,} sheep on the demo's 1000 x 1000 field (benchenv.meadow_config, as the "
        "live benchmarks run it), avatars walking to random targets. CPU ms of this thread: "
        f"`flee` alone, median of {args.calls} calls per formulation taking turns on the same "
        "velocities (the grid built beforehand: whichever system reads it first builds it, once "
        f"a tick); a whole `world.step` with the same avatars, median of {args.ticks} ticks. "
        "Both formulations left the same velocities, bit for bit.",
        "",
        "| avatars | flee, n x 2 (baseline) | flee, one axis at a time | speed-up | whole step |",
        "|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        ratio = f"{r['old'] / r['new']:.1f}x" if r["new"] > 0.05 else "-"
        lines.append(
            f"| {r['avatars']:,} | {r['old']:.2f} | {r['new']:.2f} | {ratio} | {r['step']:.2f} |"
        )
    emit(lines, args.out)


if __name__ == "__main__":
    main()
