"""What avatars cost a crowded meadow's tick: the ``flee`` system, one axis at a time vs n x 2.

The live benchmarks run 100,000 sheep on the demo's 1000 x 1000 field (benchenv.meadow_config):
about 60 sheep within an avatar's flee radius and ~560 candidates in the grid buckets around
it. There ``flee`` was most of a tick with players in it (200 avatars: ~18 of ~28 ms), because
its neighbour query gathered rows of n x 2 arrays (``pos[cand]``) and repeated each avatar's
row per candidate. ``systems.flee`` now does the same arithmetic one contiguous array per axis
(``SpatialGrid.pairs_within_axes``). The baseline, measured in the same run on the same world
and positions, is the n x 2 formulation as it was (bench/meadow_before.py); both leave the same
velocities, bit for bit (the run fails otherwise).

For each avatar count: ``flee`` alone (CPU ms of this thread per call, median of ``--calls``,
the two formulations taking turns call by call on copies of the same velocities), and a whole
``world.step`` with those avatars walking (median of ``--ticks``).

Run: python bench/flee.py [--avatars 0,50,200,1000] [--out bench/results/flee.md]
"""

from __future__ import annotations

import argparse
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
from meadow_before import flee as flee_n_by_2  # noqa: E402
from meadow_tick import add_players  # noqa: E402
from worldloop.demo.meadow import create_world  # noqa: E402
from worldloop.demo.systems import flee  # noqa: E402


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
