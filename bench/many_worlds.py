"""Many worlds in one process (issue 13): N meadows of 100 creatures at 10 Hz, each its own
WorldRuntime, their loops on the app's loop pool (WORLDLOOP_LOOP_THREADS threads however many
worlds), against the old way measured in the same run: a loop thread per world
(WORLDLOOP_LOOP_THREADS=0).

For each N, the demo app is made in this process (memory:// store: the journal is another
benchmark), N worlds of kind ``meadow`` are created through its WorldHost, and every tick's
start lateness (start - deadline on the world's own schedule) is recorded by a runtime plug-in
for --seconds. Reported: the share of worlds on time (at least 95% of the ticks due in the
window ran), tick-start lateness p50/p99/max across all worlds' ticks, the loop threads and all
the process's threads, and resident memory per world (RSS after creating them minus before,
over N), each row in a process of its own, --repeat times (3) in interleaved rounds, shown
by its run of median p99 (the box is shared: a noisy spell hits every mode alike). The ratio
column is p99 over the p99 of the thread-per-world row of the same N (else of the first row);
that row at 1,000 worlds is left out by default (its 1,000 threads took minutes just to start
on the shared 2-CPU box).
``--journal-worlds`` adds pool rows on a SQLite store, to count the threads the journal adds
(worldloop.durability's snapshot writer: one per world that has written a snapshot). The second
table runs bare tickers (no world; a tick that burns ``--tick-us`` of CPU): the scheduling alone.

    python bench/many_worlds.py                       # 1, 10, 100, 1000 worlds, 10 s each
    python bench/many_worlds.py --worlds 1,50 --baseline-worlds 1 --seconds 3
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchenv import header
from worldloop.clock import Ticker, TickInfo
from worldloop.looppool import LoopPool, default_size
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
    mode: str
    worlds: int
    on_time: float
    p50_ms: float
    p99_ms: float
    max_ms: float
    loop_threads: int
    writer_threads: int
    threads: int
    rss_per_world_kib: float
    create_s: float
    ran: float
    cost_ms: float
    cpu_us: float
    """Process CPU time in the window over the ticks run: what a tick costs all threads."""
    load: float = float("nan")
    """The box's 1-minute load average at the end of the row (its neighbours included)."""
    p99_runs: tuple[float, ...] = ()
    """p99 of every repetition of the row (the row shows the run of the median p99)."""


def census(loop_names: set[str]) -> tuple[int, int]:
    """(loop threads of the extra worlds, journal snapshot-writer threads) alive now."""
    loop = writers = 0
    for t in threading.enumerate():
        if t.name.startswith("worldloop-pool") or t.name in loop_names:
            loop += 1
        elif t.name == "worldloop-snapshot-writer":
            writers += 1
    return loop, writers


def run(worlds: int, seconds: float, creatures: int, loop_threads: int, store: str) -> Result:
    """N worlds on ``loop_threads`` pool threads (0: a thread each), ``store`` memory|sqlite."""
    from worldloop.demo import create_app

    os.environ.pop("WERKZEUG_RUN_MAIN", None)
    with tempfile.TemporaryDirectory() as tmp:
        url = "memory://" if store == "memory" else f"sqlite:///{tmp}/worlds.db"
        app = create_app(
            {
                "TESTING": True,
                "WORLDLOOP_HANDLE_SIGNALS": False,
                "WORLDLOOP_RATE_HZ": RATE_HZ,
                "WORLDLOOP_STORE_URL": url,
                "WORLDLOOP_MAX_WORLDS": worlds,
                "WORLDLOOP_MAX_WORLDS_PER_KIND": worlds,
                "WORLDLOOP_LOOP_THREADS": loop_threads,
                "WORLDLOOP_LOG_LEVEL": "WARNING",
                "MEADOW_ENTITIES": creatures,
                "MEADOW_DEMO_JOBS": False,
                # with a journal, snapshots early enough that each world's writer shows
                "WORLDLOOP_SNAPSHOT_EVERY": 1000 if store == "memory" else 20,
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
        started, cpu = time.perf_counter(), time.process_time()
        time.sleep(seconds)
        window, cpu = time.perf_counter() - started, time.process_time() - cpu
        threads = threading.active_count()
        loop, writers = census({f"worldloop-w{i}" for i in range(worlds)})
        rss = rss_kib()
        samples = [v for p in plugins for v in p.values]
        due = window * RATE_HZ
        on_time = sum(1 for p in plugins if len(p.values) >= ON_TIME_SHARE * due) / worlds
        ran = len(samples) / (due * worlds)
        cost = sum(p.cost for p in plugins) / max(1, len(samples))
        state.stop()
    mode = f"pool of {loop_threads}" if loop_threads else "thread per world"
    return Result(
        mode if store == "memory" else f"{mode}, SQLite journal",
        worlds,
        on_time,
        pct(samples, 0.5) * 1000,
        pct(samples, 0.99) * 1000,
        max(samples, default=float("nan")) * 1000,
        loop,
        writers,
        threads,
        (rss - before) / worlds,
        create_s,
        ran,
        cost * 1000,
        cpu / max(1, len(samples)) * 1e6,
    )


def scheduler_run(tickers: int, seconds: float, loop_threads: int, cost_us: float) -> Result:
    """The clock alone: ``tickers`` bare tickers at 10 Hz whose tick burns ``cost_us`` of CPU
    (interpreter lock held), on a pool (0: a thread each): the scheduling, without the world."""
    pool = LoopPool(loop_threads) if loop_threads else None
    values: list[list[float]] = [[] for _ in range(tickers)]

    def tick_of(seen: list[float]) -> Callable[[TickInfo], None]:
        def on_tick(info: TickInfo) -> None:
            seen.append(info.lateness)
            end = time.perf_counter() + cost_us / 1e6
            while time.perf_counter() < end:
                pass

        return on_tick

    gc.collect()
    before = rss_kib()
    t0 = time.perf_counter()
    all_tickers = [
        Ticker(tick_of(values[i]), RATE_HZ, pool=pool, name=f"worldloop-t{i}")
        for i in range(tickers)
    ]
    for i, t in enumerate(all_tickers):  # phases spread over one period, as worlds created
        delay = t0 + i / (RATE_HZ * tickers) - time.perf_counter()  # over time would be
        if delay > 0:
            time.sleep(delay)
        t.start()
    create_s = time.perf_counter() - t0
    time.sleep(1.0)  # past the start-up
    for seen in values:
        seen.clear()
    started, cpu = time.perf_counter(), time.process_time()
    time.sleep(seconds)
    window, cpu = time.perf_counter() - started, time.process_time() - cpu
    counts = [len(seen) for seen in values]
    samples = [v for seen in values for v in seen]
    threads = threading.active_count()
    loop, _ = census({f"worldloop-t{i}" for i in range(tickers)})
    rss = rss_kib()
    for t in all_tickers:
        t.stop(2.0)
    due = window * RATE_HZ
    return Result(
        f"pool of {loop_threads}" if loop_threads else "thread per ticker",
        tickers,
        sum(1 for c in counts if c >= ON_TIME_SHARE * due) / tickers,
        pct(samples, 0.5) * 1000,
        pct(samples, 0.99) * 1000,
        max(samples, default=float("nan")) * 1000,
        loop,
        0,
        threads,
        (rss - before) / tickers,
        create_s,
        len(samples) / (due * tickers),
        cost_us / 1000,
        cpu / max(1, len(samples)) * 1e6,
    )


def sizes(text: str) -> list[int]:
    return [int(n) for n in text.split(",") if n.strip()]


def table(
    results: list[Result], pool: int, seconds: float, creatures: int, repeat: int
) -> list[str]:
    baseline = {r.worlds: r.p99_ms for r in results if r.mode.startswith("thread per")}
    first = results[0].p99_ms if results else float("nan")
    lines = header("Many worlds in one process: tick-start lateness, threads, memory")
    lines += [
        f"Meadows of {creatures} creatures at {RATE_HZ:g} Hz, one WorldRuntime each, "
        f"memory:// store unless said; their loops on a pool of {pool} threads "
        f"(WORLDLOOP_LOOP_THREADS), or a loop thread per world (the old way, =0), both "
        f"measured in this run; {seconds:g} s measured per row after creation. On time: at "
        f"least {ON_TIME_SHARE:.0%} of the ticks due in the window ran. Ratio: p99 lateness "
        f"over the thread-per-world row's of the same N (else the first row's). Loop threads: "
        f"the extra worlds' (the default world, paused, keeps its own, not counted); writers: "
        f"journal snapshot-writer threads (worldloop.durability); threads: the whole process; "
        f"load: the box's 1-minute load average as the row ended. Each row ran "
        f"{repeat} times in interleaved rounds; shown is its run of median p99.",
        "",
        "| mode | worlds | on time | ticks run / due | tick cost (ms) | CPU per tick (us) | "
        "lateness p50 (ms) | p99 (ms) | max (ms) | p99 ratio | loop threads | writers | "
        "threads | RSS per world (KiB) | creation (s) | load | p99 of each run (ms) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        base = baseline.get(r.worlds, first)
        lines.append(
            f"| {r.mode} | {r.worlds} | {r.on_time:.0%} | {r.ran:.0%} | {r.cost_ms:.2f} | "
            f"{r.cpu_us:.0f} | {r.p50_ms:.2f} | {r.p99_ms:.2f} | {r.max_ms:.1f} | "
            f"{r.p99_ms / base:.2f} | "
            f"{r.loop_threads} | {r.writer_threads} | {r.threads} | "
            f"{r.rss_per_world_kib:.0f} | {r.create_s:.2f} | {r.load:.1f} | "
            f"{' / '.join(f'{p:.1f}' for p in r.p99_runs)} |"
        )
    return lines


def isolated(kind: str, worlds: int, threads: int, args: argparse.Namespace) -> Result:
    """One row in a process of its own: a row's threads (a thread-per-world row's stragglers
    included) and memory never leak into the next row's figures."""
    argv = [sys.executable, __file__, "--row", f"{kind}:{worlds}:{threads}"]
    argv += ["--seconds", str(args.seconds), "--creatures", str(args.creatures)]
    argv += ["--tick-us", str(args.tick_us)]
    proc = subprocess.run(argv, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr)
        raise SystemExit(f"the row {kind}:{worlds}:{threads} failed")
    return Result(**json.loads(proc.stdout.strip().splitlines()[-1]))


def one_row(spec: str, args: argparse.Namespace) -> int:
    """``--row kind:worlds:threads`` (kind memory, sqlite or bare): print its Result as JSON."""
    kind, worlds, threads = spec.split(":")
    if kind == "bare":
        r = scheduler_run(int(worlds), args.seconds, int(threads), args.tick_us)
    else:
        r = run(int(worlds), args.seconds, args.creatures, int(threads), kind)
    print(json.dumps(dataclasses.asdict(dataclasses.replace(r, load=os.getloadavg()[0]))))
    return 0


Spec = tuple[str, int, int]
"""A row: (memory | sqlite | bare, worlds or tickers, loop threads; 0: a thread each)."""


def repeated(specs: list[Spec], args: argparse.Namespace) -> list[Result]:
    """Every row ``--repeat`` times in interleaved rounds (each row once, then again), so a
    noisy spell of the shared box hits every mode alike; each row keeps its run of median p99
    and lists the p99 of all its runs."""
    runs: dict[Spec, list[Result]] = {spec: [] for spec in specs}
    for _ in range(args.repeat):
        for spec in specs:
            runs[spec].append(isolated(*spec, args))
    kept = []
    for spec in specs:
        ordered = sorted(runs[spec], key=lambda r: r.p99_ms)
        p99s = tuple(r.p99_ms for r in runs[spec])
        kept.append(dataclasses.replace(ordered[len(ordered) // 2], p99_runs=p99s))
    return kept


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worlds", default="1,10,100,1000", help="rows on the loop pool")
    parser.add_argument("--baseline-worlds", default="1,10,100", help="thread-per-world rows")
    parser.add_argument("--journal-worlds", default="10", help="pool rows on a SQLite store")
    parser.add_argument("--scheduler-tickers", default="1000", help="bare ticker rows")
    parser.add_argument("--tick-us", type=float, default=20.0, help="a bare tick's CPU burn")
    parser.add_argument("--loop-threads", type=int, default=default_size())
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--creatures", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=3, help="runs of each row (median)")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--row", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.row:
        return one_row(args.row, args)
    pool, secs, n = args.loop_threads, args.seconds, args.creatures
    specs: list[Spec] = [("memory", w, 0) for w in sizes(args.baseline_worlds)]
    specs += [("memory", w, pool) for w in sizes(args.worlds)]
    specs += [("sqlite", w, pool) for w in sizes(args.journal_worlds)]
    worlds_rows = len(specs)
    specs += [("bare", w, t) for w in sizes(args.scheduler_tickers) for t in (0, pool)]
    every = repeated(specs, args)
    results, bare = every[:worlds_rows], every[worlds_rows:]
    lines = table(results, pool, secs, n, args.repeat)
    if bare:
        lines += [
            "",
            f"## The clock alone: bare tickers whose tick burns {args.tick_us:g} us of CPU",
            "",
            "The same measures for tickers without a world (worldloop.clock.Ticker at "
            f"{RATE_HZ:g} Hz, the tick a busy loop holding the interpreter lock): what the "
            "scheduling itself costs at a count where the ticks fit in one interpreter. Tick "
            "cost here is the burn; RSS per ticker.",
            "",
            *table(bare, pool, secs, n, args.repeat)[-(len(bare) + 2) :],
        ]
    lines += [
        "",
        "Tick cost is the mean time one world's tick took (commands, systems, publish). The "
        "worlds share one interpreter lock, so however many threads run them, past N x rate x "
        "cost = 1 s of work per second every world falls behind (catch-up bounded by "
        "WORLDLOOP_MAX_CATCH_UP, the rest skipped): the pool removes the cost of the threads "
        "themselves (stacks, wake-ups, switches), not the cost of the ticks. On a shared box "
        "lateness also measures the neighbours: the kernel shares the CPUs out by runnable "
        "thread, so a thousand loop threads take a bigger share from the other processes than "
        "two pool threads do, and the pool's threads wait their turn; CPU per tick (the "
        "process's CPU time over the ticks run) does not depend on that.",
    ]
    text = "\n".join(lines) + "\n"
    print(text, end="")
    if args.out is not None:
        args.out.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
