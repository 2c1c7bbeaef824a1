"""Observation costs: the metrics listener per tick, and stream frames shared by many readers.

1. Metrics: time of ``LoopObserver.after_tick`` (all Prometheus updates for one tick) against the
   baseline of the tick itself (commands + systems + publish), measured in the same run.
2. Stream fan-out: building the frames K readers need for one snapshot, with the per-snapshot
   frame cache (what /api/v1/stream does) against building and serializing per reader.

The world is the viewer-contract "garden" from tests/observe_world.py (grass, creatures,
players). Usage: python bench/observe.py [--creatures 20000] [--ticks 200] [--out FILE]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT))

from tests.observe_world import GardenWorld  # noqa: E402

from benchenv import emit, header  # noqa: E402
from worldloop import TickReport, WorldRuntime  # noqa: E402
from worldloop.api.stream import frame_json  # noqa: E402
from worldloop.metrics import LoopObserver  # noqa: E402
from worldloop.plugins import TickListener  # noqa: E402
from worldloop.snapshot import Snapshot, dumps  # noqa: E402


def us(xs: list[float]) -> str:
    return f"{statistics.median(xs) * 1e6:,.1f}"


def bench_metrics(creatures: int, ticks: int) -> list[str]:
    rt = WorldRuntime(GardenWorld(creatures=creatures), rate_hz=1000, start_paused=True)
    reports: list[TickReport] = []
    rt.add_plugin(TickListener(reports.append))
    rt.start()
    try:
        rt.submit("join", {"name": "bench"})
        for i in range(ticks):
            for _ in range(10):
                rt.submit("move_to", {"player": "p1", "x": i, "y": i})
            rt.submit("move_to", {"player": "nobody", "x": 0, "y": 0})  # one rejection a tick
            rt.step(1)
    finally:
        rt.stop()
    observer = LoopObserver(rt)
    listener = []
    for report in reports:
        t0 = time.perf_counter()
        observer.after_tick(rt, report)
        listener.append(time.perf_counter() - t0)
    tick = [r.duration for r in reports]
    ratio = statistics.median(listener) / statistics.median(tick)
    return [
        "| measure | median µs | ratio to tick |",
        "|---|---:|---:|",
        f"| tick ({creatures:,} creatures, 11 commands) — baseline | {us(tick)} | 1.00 |",
        f"| metrics listener per tick | {us(listener)} | {ratio:.3f} |",
    ]


def bench_fanout(creatures: int, rounds: int) -> list[str]:
    rt = WorldRuntime(GardenWorld(creatures=creatures), rate_hz=1000, start_paused=True)
    rt.start()
    rt.stop()
    world = rt.world
    rows = [
        "| readers | per-reader build ms/tick (baseline) | cached ms/tick | speed-up |",
        "|---:|---:|---:|---:|",
    ]
    for readers in (1, 10, 100):
        base, cached = [], []
        for _ in range(rounds):
            snap = Snapshot(world.name, world.tick, world.sim_time, world.view(), world.summary())
            t0 = time.perf_counter()
            for _ in range(readers):
                dumps(world.view_region(snap, None, 2000))
            base.append(time.perf_counter() - t0)
            snap = Snapshot(world.name, world.tick, world.sim_time, world.view(), world.summary())
            t0 = time.perf_counter()
            for _ in range(readers):
                frame_json(rt, snap, None, 2000)
            cached.append(time.perf_counter() - t0)
        b, c = statistics.median(base), statistics.median(cached)
        rows.append(f"| {readers} | {b * 1e3:,.2f} | {c * 1e3:,.2f} | {b / c:,.1f}x |")
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--creatures", type=int, default=20_000)
    ap.add_argument("--ticks", type=int, default=200)
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    lines = [
        *header("Observation costs"),
        "## Metrics listener vs the tick",
        "",
        *bench_metrics(args.creatures, args.ticks),
        "",
        f"## Stream frames for one snapshot ({args.creatures:,} creatures, limit 2000)",
        "",
        *bench_fanout(args.creatures, args.rounds),
        "",
    ]
    emit(lines, args.out)


if __name__ == "__main__":
    main()
