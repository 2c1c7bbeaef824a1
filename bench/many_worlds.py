"""Many worlds in one process (issue 13): N meadows of 100 creatures at 10 Hz, each its own
WorldRuntime (one loop thread per world, as worldloop.host runs them today).

For each N, the demo app is made in this process (memory:// store: the journal is another
benchmark), N worlds of kind ``meadow`` are created through its WorldHost, and every tick's
start lateness (start - deadline on the world's own schedule) is recorded by a runtime plug-in
for --seconds. Reported: the share of worlds on time (at least 95% of the ticks due in the
window ran), tick-start lateness p50/p99/max across all worlds' ticks, the process's thread
count, and resident memory per world (RSS after creating them minus before, over N). The
baseline, measured in the same run, is N = 1: the ratio column is p99 over its p99.

    python bench/many_worlds.py                       # 1, 10, 30, 100, 1000 worlds, 10 s each
    python bench/many_worlds.py --worlds 1,50 --seconds 3
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchenv import header
from worldloop.plugins import RuntimePlugin
from worldloop.runtime import TickReport, WorldRuntime

RATE_HZ = 10.0
ON_TIME_SHARE = 0.95


class Lateness(RuntimePlugin):
    """Records each scheduled tick's start lateness (loop thread; a list append)."""

    def __init__(self) -> None:
        self.values: list[float] = []
        self.cost = 0.0

    def after_tick(self, rt: WorldRuntime, report: TickReport) -> None:
        if not report.info.manual:
            self.values.append(report.info.lateness)
            self.cost += report.duration


def rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


@dataclass(frozen=True, slots=True)
class Result:
    worlds: int
    on_time: float
    p50_ms: float
    p99_ms: float
    max_ms: float
    threads: int
    rss_per_world_kib: float
    create_s: float
    ran: float
    cost_ms: float


def run(worlds: int, seconds: float, creatures: int) -> Result:
    from worldloop.demo import create_app

    os.environ.pop("WERKZEUG_RUN_MAIN", None)
    with tempfile.TemporaryDirectory() as tmp:
        app = create_app(
            {
                "TESTING": True,
                "WORLDLOOP_HANDLE_SIGNALS": False,
                "WORLDLOOP_RATE_HZ": RATE_HZ,
                "WORLDLOOP_STORE_URL": "memory://",
                "WORLDLOOP_MAX_WORLDS": worlds,
                "WORLDLOOP_MAX_WORLDS_PER_KIND": worlds,
                "WORLDLOOP_LOG_LEVEL": "WARNING",
                "MEADOW_ENTITIES": creatures,
                "MEADOW_DEMO_JOBS": False,
            },
            instance_path=str(Path(tmp) / "instance"),
        )
        state = app.extensions["worldloop"]
        state.runtime.pause()  # the default world is not one of the N
        gc.collect()
        before = rss_kib()
        plugins = []
        t0 = time.perf_counter()
        for i in range(worlds):
            hosted = state.host.create(f"w{i}", "meadow", {"entities": creatures, "seed": i})
            plugins.append(hosted.runtime.add_plugin(Lateness()))
        create_s = time.perf_counter() - t0
        for plugin in plugins:  # measure the steady state, not the start-up
            plugin.values.clear()
            plugin.cost = 0.0
        started = time.perf_counter()
        time.sleep(seconds)
        window = time.perf_counter() - started
        threads = threading.active_count()
        rss = rss_kib()
        samples = [v for p in plugins for v in p.values]
        due = window * RATE_HZ
        on_time = sum(1 for p in plugins if len(p.values) >= ON_TIME_SHARE * due) / worlds
        ran = len(samples) / (due * worlds)
        cost = sum(p.cost for p in plugins) / max(1, len(samples))
        state.stop()
    return Result(
        worlds,
        on_time,
        pct(samples, 0.5) * 1000,
        pct(samples, 0.99) * 1000,
        max(samples, default=float("nan")) * 1000,
        threads,
        (rss - before) / worlds,
        create_s,
        ran,
        cost * 1000,
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worlds", default="1,10,30,100,1000")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--creatures", type=int, default=100)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    sizes = [int(n) for n in args.worlds.split(",")]
    results = [run(n, args.seconds, args.creatures) for n in sizes]
    base = results[0].p99_ms if results else float("nan")
    lines = header("Many worlds in one process: tick-start lateness, threads, memory")
    lines += [
        f"Meadows of {args.creatures} creatures at {RATE_HZ:g} Hz, one WorldRuntime (and loop "
        f"thread) each, memory:// store; {args.seconds:g} s measured per row after creation. "
        f"On time: at least {ON_TIME_SHARE:.0%} of the ticks due in the window ran. Ratio: "
        f"p99 lateness over the first row's (N = {sizes[0]}, same run).",
        "",
        "| worlds | on time | ticks run / due | tick cost (ms) | lateness p50 (ms) | p99 (ms) | "
        "max (ms) | p99 ratio | threads | RSS per world (KiB) | creation (s) |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        lines.append(
            f"| {r.worlds} | {r.on_time:.0%} | {r.ran:.0%} | {r.cost_ms:.2f} | {r.p50_ms:.2f} | "
            f"{r.p99_ms:.2f} | {r.max_ms:.1f} | {r.p99_ms / base:.1f} | {r.threads} | "
            f"{r.rss_per_world_kib:.0f} | {r.create_s:.2f} |"
        )
    lines += [
        "",
        "Tick cost is the mean time one world's tick took (commands, systems, publish). The "
        "worlds share one interpreter lock: past N x rate x cost = 1 s of work per second, "
        "every world falls behind (catch-up bounded by WORLDLOOP_MAX_CATCH_UP, the rest skipped).",
    ]
    text = "\n".join(lines) + "\n"
    print(text, end="")
    if args.out is not None:
        args.out.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
