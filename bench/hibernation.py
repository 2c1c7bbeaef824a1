"""Hibernation (issue 13): memory returned by putting idle worlds to sleep, and how long a
sleeping world takes to answer its first request.

Memory: the demo app is made in this process with a SQLite store (a file in a temporary
folder: a sleeping world's snapshot and journal are on disk; a ``memory://NAME`` store would
keep them in the RSS), N meadows of --creatures creatures are created through its WorldHost at
--rate Hz, and --sleep of them are put to sleep with ``WorldHost.hibernate`` (what the idle
sweep calls). Reported: the process's RSS
before the worlds, with all N awake, and after the sleep, both as the allocator left it and
after ``release_memory()``, which the idle sweep calls after it put worlds to sleep (a garbage
collection, then glibc's ``malloc_trim(0)``: glibc keeps freed memory in its arenas until asked).
The baseline of the ratio is the RSS with all N awake, in the same run.

Wake latency: --wakes worlds of --wake-creatures creatures (a store of their own), each put to
sleep, then woken by its first request, ``GET /api/v1/worlds/<name>`` through the app's test
client (rebuild from kind + config, recovery from snapshot + journal with its hash check,
start, first snapshot). Baseline: the same request to an awake world of the same size.

    python bench/hibernation.py                          # 1,000 worlds, 900 put to sleep
    python bench/hibernation.py --worlds 20 --sleep 18 --wakes 5
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchenv import emit, header, pct, rss_kib
from worldloop.hibernation import release_memory


def make_app(tmp: str, store: str, worlds: int, rate: float, creatures: int) -> Any:
    from worldloop.demo import create_app

    return create_app(
        {
            "TESTING": True,
            "WORLDLOOP_HANDLE_SIGNALS": False,
            "WORLDLOOP_RATE_HZ": rate,
            "WORLDLOOP_STORE_URL": store,
            "WORLDLOOP_MAX_WORLDS": worlds + 1,
            "WORLDLOOP_MAX_WORLDS_PER_KIND": worlds + 1,
            "WORLDLOOP_LOG_LEVEL": "WARNING",
            "MEADOW_ENTITIES": creatures,
            "MEADOW_DEMO_JOBS": False,
        },
        instance_path=str(Path(tmp) / "instance"),
    )


def memory(worlds: int, sleep: int, creatures: int, rate: float) -> dict[str, float]:
    """RSS (KiB) before the worlds, with all awake, and after ``sleep`` of them slept."""
    os.environ.pop("WERKZEUG_RUN_MAIN", None)
    with tempfile.TemporaryDirectory() as tmp:
        app = make_app(tmp, f"sqlite:///{Path(tmp) / 'memory.db'}", worlds, rate, creatures)
        state = app.extensions["worldloop"]
        state.runtime.pause()  # the default world is not one of the N
        host = state.host
        release_memory()
        empty = rss_kib()
        t0 = time.perf_counter()
        for i in range(worlds):
            host.create(f"w{i}", "meadow", {"entities": creatures, "seed": i})
        created = time.perf_counter() - t0
        time.sleep(2.0)  # every world published (at start) and settled
        halted = sum(1 for w in host.worlds()[1:] if w.runtime.degraded)
        gc.collect()
        awake = rss_kib()
        t0 = time.perf_counter()
        slept = sum(1 for i in range(sleep) if host.hibernate(f"w{i}") is not None)
        slept_s = time.perf_counter() - t0
        gc.collect()
        after = rss_kib()
        trimmed = rss_kib() if release_memory() else float("nan")
        state.stop()
    return {
        "empty": empty,
        "awake": awake,
        "after": after,
        "trimmed": trimmed,
        "slept": slept,
        "halted": halted,
        "create_s": created,
        "sleep_s": slept_s,
    }


def wake_latency(wakes: int, creatures: int, rate: float = 1.0) -> dict[str, list[float]]:
    """Seconds of the first request to each of ``wakes`` sleeping worlds, and of the same
    request to an awake world (the baseline)."""
    os.environ.pop("WERKZEUG_RUN_MAIN", None)
    with tempfile.TemporaryDirectory() as tmp:
        app = make_app(tmp, f"sqlite:///{Path(tmp) / 'wake.db'}", wakes + 1, rate, creatures)
        state = app.extensions["worldloop"]
        state.runtime.pause()
        host = state.host
        client = app.test_client()
        names = [f"big{i}" for i in range(wakes)]
        for i, name in enumerate(names):
            host.create(name, "meadow", {"entities": creatures, "seed": i})
        host.create("awake", "meadow", {"entities": creatures, "seed": 99})
        time.sleep(2.0 / rate)  # a few ticks journaled
        for name in names:
            if host.hibernate(name) is None:
                raise RuntimeError(f"world {name} did not go to sleep")
        woke: list[float] = []
        for name in names:
            t0 = time.perf_counter()
            resp = client.get(f"/api/v1/worlds/{name}")
            woke.append(time.perf_counter() - t0)
            if resp.status_code != 200 or not resp.get_json()["running"]:
                raise RuntimeError(f"world {name} did not wake: {resp.get_json()}")
            host.hibernate(name)  # back to sleep: the awake ones would load the next samples
        base: list[float] = []
        for _ in range(max(wakes, 20)):
            t0 = time.perf_counter()
            client.get("/api/v1/worlds/awake")
            base.append(time.perf_counter() - t0)
        state.stop()
    return {"woke": woke, "base": base}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worlds", type=int, default=1000)
    parser.add_argument("--sleep", type=int, default=900)
    parser.add_argument("--creatures", type=int, default=100)
    parser.add_argument("--rate", type=float, default=0.05)
    parser.add_argument("--wakes", type=int, default=50)
    parser.add_argument("--wake-creatures", type=int, default=1000)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    # wake-ups first: the memory part leaves 1,000 stopped worlds' threads and engines behind
    lat = wake_latency(args.wakes, args.wake_creatures)
    mem = memory(args.worlds, min(args.sleep, args.worlds), args.creatures, args.rate)
    woke_ms = [v * 1000 for v in lat["woke"]]
    base_ms = [v * 1000 for v in lat["base"]]
    per_world = (mem["awake"] - mem["empty"]) / args.worlds
    lines = header("Hibernation: memory returned, wake-up latency")
    lines += [
        f"Memory: {args.worlds} meadows of {args.creatures} creatures at {args.rate:g} Hz in "
        f"one process (one WorldRuntime each, their loops on the app's loop pool), SQLite "
        f"store (a sleeping world's snapshot and journal are on disk; the low rate keeps the "
        f"journal's writes out of what is measured here: memory); {int(mem['slept'])} of "
        f"them put to sleep with WorldHost.hibernate (what the idle sweep calls). Baseline of "
        f"the ratio: the RSS with all {args.worlds} awake, same run.",
        "",
        "| state | RSS (MiB) | ratio to all awake |",
        "|---|---:|---:|",
        f"| app, no extra world | {mem['empty'] / 1024:.1f} | {mem['empty'] / mem['awake']:.2f} |",
        f"| {args.worlds} awake | {mem['awake'] / 1024:.1f} | 1.00 |",
        f"| {int(mem['slept'])} asleep, {args.worlds - int(mem['slept'])} awake | "
        f"{mem['after'] / 1024:.1f} | {mem['after'] / mem['awake']:.2f} |",
        f"| same, after the sweep's release_memory() | {mem['trimmed'] / 1024:.1f} | "
        f"{mem['trimmed'] / mem['awake']:.2f} |",
        "",
        f"Awake: {per_world:.0f} KiB per world over the empty app; {int(mem['halted'])} "
        f"world(s) halted by the store before the sleep. Creating the {args.worlds} "
        f"took {mem['create_s']:.1f} s; putting {int(mem['slept'])} to sleep "
        f"{mem['sleep_s']:.1f} s ({mem['sleep_s'] / max(1, mem['slept']) * 1000:.1f} ms each: "
        "stop, final snapshot, catalog record).",
        "",
        f"Wake-up: {args.wakes} meadows of {args.wake_creatures} creatures at 1 Hz, SQLite "
        f"store, each "
        f"asleep, timed on its first request (GET /api/v1/worlds/<name>, Flask test client: "
        f"rebuild, recovery from snapshot + journal, hash check, start, first snapshot). "
        f"Baseline: the same request to an awake world of the same size, same run.",
        "",
        "| request | samples | p50 (ms) | p99 (ms) | max (ms) | p99 ratio |",
        "|---|---:|---:|---:|---:|---:|",
        f"| awake world (baseline) | {len(base_ms)} | {pct(base_ms, 0.5):.2f} | "
        f"{pct(base_ms, 0.99):.2f} | {max(base_ms):.2f} | 1.0 |",
        f"| sleeping world, first request | {len(woke_ms)} | {pct(woke_ms, 0.5):.2f} | "
        f"{pct(woke_ms, 0.99):.2f} | {max(woke_ms):.2f} | "
        f"{pct(woke_ms, 0.99) / pct(base_ms, 0.99):.0f} |",
        "",
        f"Target: wake-up p99 <= 100 ms for a 1,000-creature world: "
        f"{'met' if pct(woke_ms, 0.99) <= 100 else 'NOT met'} "
        f"({pct(woke_ms, 0.99):.1f} ms at {args.wake_creatures} creatures).",
    ]
    emit(lines, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
