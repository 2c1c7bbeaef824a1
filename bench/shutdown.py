"""How long a bounded stop takes with a store: the final snapshot of a big world on SQLite.

Runs the demo meadow with N creatures (default 100,000) in a WorldRuntime on a fresh SQLite
store, ticks it, and times ``WorldRuntime.stop()`` (loop stop + job hooks + final snapshot +
store close) against the WORLDLOOP_SHUTDOWN_TIMEOUT default of 2 s. Baseline measured in the
same run: the same stop without a store. Usage:

    python bench/shutdown.py [--creatures 100000] [--ticks 40] [--repeat 3] [--out FILE]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from benchenv import emit, header  # noqa: E402
from worldloop.demo.meadow import create_world  # noqa: E402
from worldloop.durability import copy_state  # noqa: E402
from worldloop.runtime import WorldRuntime  # noqa: E402
from worldloop.store import SqlStore  # noqa: E402
from worldloop.store.codec import encode_state  # noqa: E402
from worldloop.world import hash_state  # noqa: E402


def one_stop(creatures: int, ticks: int, store_dir: Path | None) -> tuple[float, bool, int]:
    """Seconds stop() took, whether the final snapshot landed, and the encoded state size."""
    world = create_world({"MEADOW_ENTITIES": creatures, "MEADOW_SEED": 1})
    store = None if store_dir is None else SqlStore(f"sqlite:///{store_dir / 'w.db'}")
    rt = WorldRuntime(world, store=store, start_paused=True, snapshot_every=0)
    rt.start()
    rt.step(ticks, timeout=120)
    tick = rt.world.tick
    t0 = time.perf_counter()
    rt.stop()
    took = time.perf_counter() - t0
    landed = False
    if store_dir is not None:
        check = SqlStore(f"sqlite:///{store_dir / 'w.db'}", readonly=True)
        landed = tick in [s.tick for s in check.snapshots(world.name)]
        check.close()
    return took, landed, len(encode_state(copy_state(world)))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--creatures", type=int, default=100_000)
    ap.add_argument("--ticks", type=int, default=40)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()

    base = [one_stop(args.creatures, args.ticks, None)[0] for _ in range(args.repeat)]
    runs = []
    for _ in range(args.repeat):
        with tempfile.TemporaryDirectory() as tmp:
            runs.append(one_stop(args.creatures, args.ticks, Path(tmp)))
    world = create_world({"MEADOW_ENTITIES": args.creatures, "MEADOW_SEED": 1})
    state = copy_state(world)
    t0 = time.perf_counter()
    hash_state(state)
    encode_state(state)
    encode_s = time.perf_counter() - t0

    b = statistics.median(base)
    s = statistics.median(r[0] for r in runs)
    lines = [
        *header("Shutdown with a store"),
        f"World: demo meadow, {args.creatures:,} creatures, {args.ticks} ticks before the stop; "
        f"median of {args.repeat}. Bound: WORLDLOOP_SHUTDOWN_TIMEOUT = 2 s.  ",
        "",
        "| stop | seconds (median) | max | final snapshot written | ratio to no store | "
        "share of the 2 s bound |",
        "|---|---|---|---|---|---|",
        f"| no store (baseline) | {b:.4f} | {max(base):.4f} | - | 1 | {b / 2:.1%} |",
        f"| SQLite (WAL, synchronous=FULL) | {s:.4f} | {max(r[0] for r in runs):.4f} | "
        f"{sum(r[1] for r in runs)}/{len(runs)} | {s / b if b else float('inf'):.0f} | "
        f"{s / 2:.1%} |",
        "",
        f"State size: {runs[0][2] / 1e6:.1f} MB encoded; hash + encode alone: "
        f"{encode_s * 1000:.0f} ms (of the final snapshot's time, the rest is the write).",
    ]
    emit(lines, args.out)


if __name__ == "__main__":
    main()
