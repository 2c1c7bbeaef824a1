"""Snapshots share the meadow's arrays instead of copying them (issue 17): the world hands them
over read-only and replaces them rather than writing them again, so a published snapshot never
changes, whatever the world does next, and publishing changes nothing in the world."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from tests.test_kernels import busy_meadow
from worldloop.commands import Command
from worldloop.demo.kernels import numba_available, reader_grid_sort
from worldloop.demo.meadow import Meadow
from worldloop.demo.views import grid_of
from worldloop.snapshot import Snapshot, freeze_arrays, is_frozen

KERNELS = [
    "numpy",
    pytest.param(
        "numba", marks=pytest.mark.skipif(not numba_available(), reason="numba is not installed")
    ),
]


def test_freeze_arrays_shares_only_arrays_nobody_can_write() -> None:
    writable = np.arange(5)
    frozen = np.arange(5)
    frozen.flags.writeable = False
    base = np.arange(10)
    view_of_writable = base[2:]
    view_of_writable.flags.writeable = False
    out = freeze_arrays({"a": writable, "b": frozen, "c": {"d": view_of_writable}})
    assert out["b"] is frozen
    assert out["a"] is not writable and not out["a"].flags.writeable
    assert out["c"]["d"] is not view_of_writable  # its base can still be written
    base[5] = -1
    assert out["c"]["d"][3] == 5
    assert not is_frozen(view_of_writable) and is_frozen(frozen)


def publish(world: Meadow) -> Snapshot:
    """What the runtime does after each tick."""
    return Snapshot(world.name, world.tick, world.sim_time, freeze_arrays(world.view()))


def arrays_of(data: Any) -> list[np.ndarray[Any, Any]]:
    if isinstance(data, np.ndarray):
        return [data.copy()]
    if isinstance(data, dict):
        return [a for key in sorted(data) for a in arrays_of(data[key])]
    return []


def commands_for(world: Meadow, tick: int) -> list[Command]:
    """Each player plants where it stands, and walks a short way (so avatars arrive often)."""
    out = []
    for i, pid in enumerate(sorted(world.players)):
        out.append(Command(id=f"p{tick}-{i}", seq=0, type="plant", payload={}, actor=pid))
        x, y = world.pos[world._index_of(world.players[pid]["entity_id"])]
        target = {"x": float(x) + (tick % 3), "y": float(y)}
        out.append(Command(id=f"m{tick}-{i}", seq=0, type="move_to", payload=target, actor=pid))
    return out


@pytest.mark.parametrize("kernels", KERNELS)
def test_a_published_snapshot_never_changes_and_publishing_changes_nothing(kernels: str) -> None:
    world, quiet = busy_meadow(kernels), busy_meadow(kernels)
    snaps: list[tuple[Snapshot, list[np.ndarray[Any, Any]]]] = []
    planted = 0
    for tick in range(150):
        snap = publish(world)
        assert snap.data["entities"]["pos"] is world.pos  # shared, not copied
        snaps.append((snap, arrays_of(snap.data)))
        grid_of(snap)  # a reader builds the grid of its snapshot, off the loop
        cmds = commands_for(world, tick) if tick % 3 == 0 else []  # and ticks with none
        if tick == 70:  # the nightly job's write into the grass
            world.reseed_grass()
            quiet.reseed_grass()
        outcomes = world.step(cmds)
        quiet.step(cmds)
        planted += sum(o.ok for o in outcomes if o.command.type == "plant")
        assert all(o.ok or (o.error_details or {}).get("reason") == "cell_full" for o in outcomes)
    assert planted > 10
    assert world.system_errors == quiet.system_errors == {}
    assert world.births and world.deaths
    assert world.state_hash() == quiet.state_hash()  # publishing changed nothing
    for snap, copies in snaps:
        assert all(np.array_equal(a, b) for a, b in zip(arrays_of(snap.data), copies, strict=True))
        assert np.array_equal(
            np.sort(grid_of(snap).order), np.arange(len(snap.data["entities"]["id"]))
        )


@pytest.mark.parametrize("kernels", KERNELS)
def test_the_grid_a_reader_builds_is_the_one_the_world_builds(kernels: str) -> None:
    world = busy_meadow(kernels)  # numba: loaded, so the reader builds with its one thread
    for _ in range(5):
        world.step([])
    snap = publish(world)
    if kernels == "numba":
        assert reader_grid_sort().__name__ == "grid_one_thread"
    mine, theirs = world.grid, grid_of(snap)
    assert (mine.cols, mine.rows) == (theirs.cols, theirs.rows)
    assert np.array_equal(mine.order, theirs.order)
    assert np.array_equal(mine.starts, theirs.starts)
