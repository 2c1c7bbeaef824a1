"""The side-by-side part of ``bench/meadow_tick.py`` (issue 17): the meadow's implementations
at one size, their ticks taking turns, with wall and process-CPU time per tick, the state hash
of each, and the time per system. Run through ``meadow_tick.py``; its own module so neither
grows past a screenful of concepts.
"""

from __future__ import annotations

import json as stdlib_json
import math
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from meadow_before import MeadowBefore
from worldloop.demo.kernels import get_kernels, numba_available
from worldloop.demo.meadow import Meadow
from worldloop.snapshot import Snapshot, freeze_arrays

BUDGET_MS = 50.0
AREA_PER_CREATURE = 250.0  # world units^2: the demo's default density is 1000^2 / 200 = 5000


def implementations() -> list[tuple[str, str, int]]:
    """(label, kernels, numba threads) to compare; numba rows only when it is installed."""
    rows = [("NumPy as it was (baseline)", "before", 0), ("NumPy kernels (default)", "numpy", 0)]
    if numba_available():
        rows += [
            ("numba kernels, 1 thread", "numba", 1),
            ("numba kernels, 2 threads", "numba", 2),
            ("numba kernels, 2 threads, OpenMP's default wait", "numba-spin", 2),
        ]
    return rows


SPIN_ENV = {"OMP_WAIT_POLICY": ""}
"""Set but empty: the kernels leave it alone, and GNU OpenMP (which says the value is invalid)
keeps its default, spin-then-sleep, as before the kernels set ``passive``. Read when numba
starts its threads, so that row runs in a child process."""


def measure_in_child(
    kernels: str, threads: int, n: int, ticks: int, warmup: int, block: int
) -> dict[str, Any]:
    """:func:`measure_impl` in a fresh process with :data:`SPIN_ENV`."""
    tick_script = str(Path(__file__).with_name("meadow_tick.py"))
    spec = f"{kernels}:{threads}:{n}:{ticks}:{warmup}:{block}:{SETTLE_TICKS}"
    argv = [sys.executable, tick_script, "--one-impl", spec]
    env = {**os.environ, **SPIN_ENV}
    out = subprocess.run(argv, env=env, capture_output=True, text=True, check=True, timeout=900)
    result: dict[str, Any] = stdlib_json.loads(out.stdout.strip().splitlines()[-1])
    return result


SETTLE_TICKS = 100
"""Ticks a world runs from its seed before it is measured. A new meadow's sheep are young and
fed: none dies or breeds for some 70 ticks, and those ticks skip the rebuild of every array
that a living meadow pays each tick (its deaths and births). The measured worlds all start
from the state one world reached after these ticks."""

_settled: dict[int, dict[str, Any]] = {}


def settled_state(n: int) -> dict[str, Any]:
    """The state of the ``n``-creature meadow after :data:`SETTLE_TICKS` ticks from its seed
    (run once per size and process, on the fastest kernels at hand: every one gives the same
    bits)."""
    if n not in _settled:
        world = _seeded("numba" if numba_available() else "numpy", n)
        for _ in range(SETTLE_TICKS):
            world.step([])
        _settled[n] = {**world.get_state(), "tick": world.tick}
    return _settled[n]


def _seeded(kernels: str, n: int) -> Meadow:
    side = math.sqrt(n * AREA_PER_CREATURE)
    if kernels == "before":
        return MeadowBefore(width=side, height=side, entities=n, seed=1, max_creatures=2 * n)
    return Meadow(width=side, height=side, entities=n, seed=1, max_creatures=2 * n, kernels=kernels)


def make_meadow(kernels: str, n: int) -> Meadow:
    """A meadow of about ``n`` creatures on ``kernels``, settled (:data:`SETTLE_TICKS`)."""
    world = _seeded(kernels, n)
    if SETTLE_TICKS:
        state = settled_state(n)
        world.set_state(state)
        world.tick = int(state["tick"])
    return world


def measure_impl(
    kernels: str, threads: int, n: int, ticks: int, warmup: int, block: int
) -> dict[str, Any]:
    """:func:`measure_impls` for one implementation."""
    return measure_impls([(kernels, threads)], n, ticks, warmup, block)[0]


class _Times:
    """Wall ms of step and of step + snapshot, and process-CPU ms, per measured tick."""

    def __init__(self) -> None:
        self.step: list[float] = []
        self.total: list[float] = []
        self.cpu: list[float] = []

    def tick(self, world: Meadow, threads: int, keep: bool) -> None:
        set_threads(threads)
        c0, w0 = time.process_time(), time.perf_counter()
        world.step([])
        w1 = time.perf_counter()
        snapshot_of(world)
        w2, c2 = time.perf_counter(), time.process_time()
        if keep:
            self.step.append((w1 - w0) * 1000)
            self.total.append((w2 - w0) * 1000)
            self.cpu.append((c2 - c0) * 1000)

    def summary(self, prefix: str) -> dict[str, float]:
        return {
            f"{prefix}step_p50": pct(self.step, 50),
            f"{prefix}total_p50": pct(self.total, 50),
            f"{prefix}total_mean": float(np.mean(self.total)),
            f"{prefix}cpu_mean": float(np.mean(self.cpu)),
        }


def measure_impls(
    impls: list[tuple[str, int]], n: int, ticks: int, warmup: int, block: int
) -> list[dict[str, Any]]:
    """Wall and process-CPU ms per tick of step and of the snapshot build, and the final hash,
    of each (kernels, numba threads), measured two ways on the same worlds: ``ticks`` ticks
    each taking turns one tick at a time (``turn_`` keys: every tick finds the caches full of
    the other worlds, a worst case), and ``ticks`` ticks each in blocks of ``block``
    consecutive ticks, the implementations taking turns block by block (no prefix: a server
    ticks one world, tick after tick). The methods alternate round by round (``block`` ticks
    of each), and so do the implementations: a burst of load from the other jobs on the
    machine hits them all alike."""
    worlds = []
    for kernels, threads in impls:
        set_threads(threads)
        worlds.append(make_meadow(kernels, n))
    turns = [_Times() for _ in impls]
    before = (worlds[0].deaths, worlds[0].births)  # the same for every world (the same state)
    alive_before = len(worlds[0].ids)
    blocks = [_Times() for _ in impls]
    for _ in range(warmup):  # warm-up ticks also load (or compile) the numba kernels
        for (_kernels, threads), world in zip(impls, worlds, strict=True):
            _Times().tick(world, threads, False)
    for start in range(0, ticks, block):  # the two methods alternate too, a round each
        length = min(block, ticks - start)
        for _ in range(length):
            for (_kernels, threads), world, times in zip(impls, worlds, turns, strict=True):
                times.tick(world, threads, True)
        for (_kernels, threads), world, times in zip(impls, worlds, blocks, strict=True):
            for j in range(length):  # a block's first tick finds cold caches: not counted
                times.tick(world, threads, j > 0 or length == 1)
    ran = warmup + 2 * ticks  # ticks each world ran here
    return [
        {
            "n": n,
            "alive": len(world.ids),
            "alive_before": alive_before,
            "deaths_per_tick": (world.deaths - before[0]) / ran,
            "births_per_tick": (world.births - before[1]) / ran,
            **turns[k].summary("turn_"),
            **blocks[k].summary(""),
            "hash": world.state_hash(),
        }
        for k, world in enumerate(worlds)
    ]


def profile_systems(kernels: str, threads: int, n: int, ticks: int, warmup: int) -> dict[str, Any]:
    """Median wall and process-CPU ms of each system (and of the snapshot build) per tick: the
    systems run one by one, as ``World.step`` runs them with no commands."""
    set_threads(threads)
    world = make_meadow(kernels, n)
    wall: dict[str, list[float]] = {}
    cpu: dict[str, list[float]] = {}

    def timed(name: str, fn: Any, keep: bool) -> None:
        c0, w0 = time.process_time(), time.perf_counter()
        fn()
        w1, c1 = time.perf_counter(), time.process_time()
        if keep:
            wall.setdefault(name, []).append((w1 - w0) * 1000)
            cpu.setdefault(name, []).append((c1 - c0) * 1000)

    for i in range(warmup + ticks):
        for system in world.systems():
            timed(system.name, system.run, i >= warmup)
        world.tick += 1
        timed("snapshot", lambda: snapshot_of(world), i >= warmup)
    return {name: (pct(wall[name], 50), pct(cpu[name], 50)) for name in wall}


def set_threads(threads: int) -> None:
    """Numba's thread count for this thread (loading the kernels first: their import sets
    OMP_WAIT_POLICY, which must come before numba starts its threads)."""
    if threads:
        import numba

        get_kernels("numba")
        numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))


def snapshot_of(world: Meadow) -> Snapshot:
    """What the runtime publishes after each tick."""
    return Snapshot(
        world.name, world.tick, world.sim_time, freeze_arrays(world.view()), world.summary()
    )


def breakdown(n: int, ticks: int, warmup: int) -> list[str]:
    """The per-system table (markdown lines) at ``n`` creatures, one column per implementation."""
    impls = [impl for impl in implementations() if impl[1] != "numba-spin"]
    cols = [profile_systems(kernels, threads, n, ticks, warmup) for _l, kernels, threads in impls]
    names = list(cols[1]) + [k for k in cols[0] if k not in cols[1]]
    lines = [
        "| system | " + " | ".join(label for label, _k, _t in impls) + " |",
        "|---|" + "---:|" * len(impls),
    ]
    for name in [*names, "total"]:
        cells = []
        for col in cols:
            if name == "total":
                w, c = sum(v[0] for v in col.values()), sum(v[1] for v in col.values())
            else:
                w, c = col.get(name, (0.0, 0.0))
            cells.append(f"{w:.2f} / {c:.2f}")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines


def compare_implementations(
    sizes: list[int], ticks: int, warmup: int, block: int
) -> tuple[list[str], bool]:
    """The side-by-side table (markdown lines) and whether every hash matched the baseline."""
    lines = [
        "| creatures | implementation | alive: first tick → last | deaths / births per tick "
        "| step p50 | step speed-up "
        "| step + snapshot p50 | step + snapshot mean | within 25 ms (p50 and mean)? "
        "| CPU mean (all threads) | one tick each in turn: step + snapshot p50 / mean "
        "| state hash |",
        "|---:|---|---:|---:|---:|---:|---:|---:|:---:|---:|---:|:---:|",
    ]
    all_same = True
    for n in sizes:
        base: dict[str, Any] | None = None
        impls = implementations()
        in_turns = [(kernels, threads) for _l, kernels, threads in impls if kernels != "numba-spin"]
        results = iter(measure_impls(in_turns, n, ticks, warmup, block))
        for label, kernels, threads in impls:
            if kernels == "numba-spin":
                r = measure_in_child("numba", threads, n, ticks, warmup, block)
            else:
                r = next(results)
            base = base or r
            same = r["hash"] == base["hash"]
            all_same = all_same and same
            within = max(r["total_p50"], r["total_mean"]) <= BUDGET_MS / 2
            lines.append(
                f"| {n:,} | {label} | {r['alive_before']:,} → {r['alive']:,} "
                f"| {r['deaths_per_tick']:.0f} / {r['births_per_tick']:.0f} | {r['step_p50']:.2f} "
                f"| {base['step_p50'] / r['step_p50']:.1f}x "
                f"| {r['total_p50']:.2f} | {r['total_mean']:.2f} | {'yes' if within else 'NO'} "
                f"| {r['cpu_mean']:.2f} | {r['turn_total_p50']:.2f} / {r['turn_total_mean']:.2f} "
                f"| {'= baseline' if same else 'DIFFERENT'} ({r['hash'][:12]}) |"
            )
    return lines, all_same


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))
