"""Replaying a world's journal over its snapshot (recovery, verify, the CLI): deterministic
stepping with every recorded state hash checked (DESIGN.md invariant 4). Re-exported by
worldloop.durability, where recovery uses it."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from .commands import Command
from .errors import StoreError
from .progress import ReplayProgress
from .store.base import Recovery
from .world import World


@dataclass(frozen=True, slots=True)
class ReplayResult:
    """What a replay did: where it started and ended, and how many hashes it checked."""

    snapshot_tick: int
    tick: int
    ticks: int
    commands: int
    hashes_checked: int
    state_hash: str
    seconds: float


def replay(
    world: World,
    rec: Recovery,
    *,
    check_hashes: bool = True,
    progress: ReplayProgress | None = None,
    progress_every: int = 100,
) -> ReplayResult:
    """Restore ``rec``'s snapshot into ``world`` and step every tick up to ``rec.head_tick``.

    Each journaled command replays through ``world.step`` (any command type), and every
    recorded state hash is checked: a mismatch raises StoreError (the world is not
    deterministic, or the store does not match this world's code). ``progress`` is told
    ``(done, total)`` before the first tick, every ``progress_every`` ticks and after the last.
    """
    if rec.state is None or rec.snapshot_tick is None:
        raise StoreError("nothing to replay: the store holds no snapshot for this world")
    started = time.perf_counter()
    world.restore(rec.state)
    checked = 0
    if check_hashes and rec.state_hash is not None:
        _check(world, rec.snapshot_tick, rec.state_hash, "snapshot")
        checked += 1
    if world.tick != rec.snapshot_tick:
        raise StoreError(
            f"snapshot of tick {rec.snapshot_tick} holds tick {world.tick} (corrupt store)"
        )
    end = rec.snapshot_tick if rec.head_tick is None else rec.head_tick
    total = end - rec.snapshot_tick
    every = max(1, int(progress_every))
    if progress is not None:
        progress(0, total)
    n_commands = 0
    for tick in range(rec.snapshot_tick + 1, end + 1):
        cmds = [Command.from_record(r) for r in rec.commands.get(tick, ())]
        n_commands += len(cmds)
        world.step(cmds)
        expected = rec.hashes.get(tick)
        if check_hashes and expected is not None:
            _check(world, tick, expected, "journal")
            checked += 1
        done = tick - rec.snapshot_tick
        if progress is not None and (done % every == 0 or done == total):
            progress(done, total)
    final = world.state_hash()
    return ReplayResult(
        rec.snapshot_tick,
        world.tick,
        end - rec.snapshot_tick,
        n_commands,
        checked,
        final,
        time.perf_counter() - started,
    )


def _check(world: World, tick: int, expected: str, where: str) -> None:
    actual = world.state_hash()
    if actual != expected:
        raise StoreError(
            f"world {world.name!r}: replay diverged at tick {tick}: state hash {actual[:12]} "
            f"but the {where} recorded {expected[:12]}. The world is not deterministic or its "
            "code changed since this store was written.",
            details={"tick": tick, "expected": expected, "actual": actual, "where": where},
        )


def copy_state(world: World) -> dict[str, Any]:
    """The world's full state with every array copied (safe to hand to another thread)."""
    return {
        k: (v.copy() if isinstance(v, np.ndarray) else v) for k, v in world.full_state().items()
    }
