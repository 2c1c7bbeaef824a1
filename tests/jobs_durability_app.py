"""Jobs for the jobs-under-crash test: run by tests/durability_app.py via WORLDLOOP_JOBS.

``damp`` is a world job: it changes the Drift world (and draws from its generator), so a replay
that skipped or doubled a run would give another state hash. ``census`` is a background job: it
appends its slot and pid to ``census.log`` in the instance folder, so the test can see every
run that really happened, across kills.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from tests.durability_app import Drift
from worldloop.jobs import JobContext
from worldloop.snapshot import Snapshot
from worldloop.world import World

DAMP_EVERY = 5
CENSUS_EVERY = 7
JOBS: list[dict[str, Any]] = [
    {
        "name": "damp",
        "func": "tests.jobs_durability_app:damp",
        "kind": "world",
        "every_ticks": DAMP_EVERY,
    },
    {
        "name": "census",
        "func": "tests.jobs_durability_app:census",
        "kind": "background",
        "every_ticks": CENSUS_EVERY,
        # a run fsyncs a file: on a loaded machine (CI) one can outlast the 7 ticks (140 ms)
        # to the next slot, whose claim would then wait for it (or coalesce past it)
        "max_concurrent": 2,
    },
]


def damp(world: World, ctx: JobContext) -> dict[str, Any]:
    """Slow every particle down and jolt them a little (uses the world's generator)."""
    assert isinstance(world, Drift)
    world.v *= 0.9
    world.v += world.rng.normal(0, 0.01, world.v.shape)
    return {"slot": ctx.slot}


def census_log() -> Path:
    return Path(os.environ["WORLDLOOP_INSTANCE_PATH"]) / "census.log"


def census(snapshot: Snapshot, ctx: JobContext) -> int:
    """Record that this slot ran (one line, fsynced), as an export job would write a file."""
    with open(census_log(), "a", encoding="utf-8") as f:
        f.write(f"{ctx.slot:g} {snapshot.tick} {os.getpid()}\n")
        f.flush()
        os.fsync(f.fileno())
    return snapshot.tick
