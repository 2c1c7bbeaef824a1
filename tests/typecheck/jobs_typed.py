"""Jobs registered the typed way: mypy --strict passes on this file (tests/test_jobs_typing.py).

Not a test module (pytest does not collect it); it only has to type-check.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, assert_type

from worldloop import (
    JobContext,
    JobKind,
    JobScheduler,
    Snapshot,
    World,
    WorldLoop,
    WorldLoopState,
)


class Garden(World):
    """A user's own world type: world jobs may take it instead of the World base."""

    def reseed(self) -> float:
        return 1.0


scheduler = JobScheduler()
ext = WorldLoop()


@scheduler.job("reseed", kind="world", cron="0 4 * * *", tz="Europe/Paris", misfire="coalesce")
def reseed(world: Garden, ctx: JobContext) -> dict[str, Any]:
    return {"grass": world.reseed(), "tick": ctx.tick}


@scheduler.job("census", every=60, timeout=30.0)  # kind defaults to background
def census(snapshot: Snapshot, ctx: JobContext) -> int:
    return snapshot.tick


@scheduler.job("bump", kind=JobKind.WORLD, every_ticks=5, max_concurrent=1, grace=2)
def bump(world: World, ctx: JobContext) -> None:
    pass


@ext.job("report", kind=JobKind.BACKGROUND, every=5.0, misfire="skip")
def report(snapshot: Snapshot, ctx: JobContext) -> str:
    return snapshot.world


@ext.job(kind="world", every_ticks=1)
def count(world: Garden, ctx: JobContext) -> None:
    pass


def register_on_one_app(state: WorldLoopState) -> None:
    @state.job("local", kind="world", every=1)
    def local(world: Garden, ctx: JobContext) -> None:
        pass

    @state.job("local-report", every_ticks=10)
    def local_report(snapshot: Snapshot, ctx: JobContext) -> None:
        pass


# The decorators hand back the function with its own types.
assert_type(reseed, Callable[[Garden, JobContext], dict[str, Any]])
assert_type(census, Callable[[Snapshot, JobContext], int])
assert_type(report, Callable[[Snapshot, JobContext], str])
