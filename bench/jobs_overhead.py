"""Per-tick cost of the job scheduler: the meadow stepped with no jobs (baseline), with many
idle jobs (not due: the common case), and with a world job due every tick.

Run: python bench/jobs_overhead.py [--ticks N] [--jobs N]. Prints a markdown table; ratios
are against the no-jobs baseline measured in the same run.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

from benchenv import header
from worldloop import JobContext, JobScheduler, ManualClock, World, WorldRuntime
from worldloop.demo.meadow import Meadow
from worldloop.lease import MemoryLease


def bump(world: World, ctx: JobContext) -> int:
    return ctx.tick


def idle(snapshot: object, ctx: JobContext) -> None:
    return None


def measure(setup: Callable[[JobScheduler], None], ticks: int, rounds: int) -> float:
    """Median seconds per tick over ``rounds`` runs of ``ticks`` paused steps."""
    results = []
    for _ in range(rounds):
        world = Meadow(entities=200, seed=1)
        jobs = JobScheduler(workers=2)
        setup(jobs)
        rt = WorldRuntime(
            world, clock=ManualClock(), start_paused=True, lease=MemoryLease(uuid.uuid4().hex)
        )
        jobs.attach(rt)
        rt.start()
        try:
            rt.step(10)
            started = time.perf_counter()
            rt.step(ticks, timeout=120)
            results.append((time.perf_counter() - started) / ticks)
        finally:
            rt.stop()
    return statistics.median(results)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--ticks", type=int, default=2000)
    ap.add_argument("--jobs", type=int, default=50)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    n = args.jobs

    def idle_jobs(s: JobScheduler) -> None:
        for i in range(n // 2):
            s.job(f"cron{i}", cron="0 4 * * *", tz="Europe/Paris")(idle)
            s.job(f"every{i}", every=3600)(idle)

    def due_every_tick(s: JobScheduler) -> None:
        s.job("bump", kind="world", every_ticks=1)(bump)

    cases = [
        ("no jobs (baseline)", lambda s: None),
        (f"{n} idle jobs (cron + interval, not due)", idle_jobs),
        ("1 world job due every tick", due_every_tick),
    ]
    base = None
    rows = []
    for label, setup in cases:
        per_tick = measure(setup, args.ticks, args.rounds)
        base = base or per_tick
        rows.append((label, per_tick, per_tick / base))
    print("\n".join(header("Jobs overhead per tick")))
    print(f"{args.ticks} ticks x {args.rounds} rounds, median.\n")
    print("| case | µs per tick | ratio to baseline |")
    print("|---|---:|---:|")
    for label, per_tick, ratio in rows:
        print(f"| {label} | {per_tick * 1e6:.1f} | {ratio:.2f} |")


if __name__ == "__main__":
    main()
