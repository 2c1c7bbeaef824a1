"""Interim snapshots are paced by what a replay would cost (the step's CPU time, capped at its
wall time), not by the step's wall time, which a loaded host stretches: waits for a core or
the GIL made snapshots several times as frequent under load, and each one's store I/O made the
next ticks' journal commits wait (overruns)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import pytest

from tests.durability_app import Drift
from worldloop.commands import Command, Outcome
from worldloop.durability import Durability, replay_cost
from worldloop.runtime import WorldRuntime
from worldloop.store.memory import MemoryStore


def test_replay_cost_is_cpu_time_capped_at_wall_time() -> None:
    assert replay_cost(wall=0.050, cpu=0.004) == 0.004  # descheduled: the waits are not a cost
    assert replay_cost(wall=0.010, cpu=0.018) == 0.010  # more threads than one: wall caps it
    assert replay_cost(wall=0.010, cpu=-0.001) == 0.0


class Sleepy(Drift):
    """A world whose step mostly waits: long in wall time, next to nothing in CPU time (as a
    step on a host whose cores are busy elsewhere)."""

    def step(self, commands: Sequence[Command]) -> list[Outcome]:
        time.sleep(0.1)
        return super().step(commands)


def test_the_runtime_paces_snapshots_by_the_steps_cpu_time(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    seen: list[float] = []
    after_tick = Durability.after_tick

    def noted(self: Durability, world: Any, step_seconds: float = 0.0) -> None:
        seen.append(step_seconds)
        after_tick(self, world, step_seconds)

    monkeypatch.setattr(Durability, "after_tick", noted)
    rt = WorldRuntime(Sleepy(), rate_hz=50, store=MemoryStore("memory://sleepy"))
    rt.start()
    try:
        assert rt.ticker.wait_for_ticks(3, timeout=30)
    finally:
        rt.stop()
    assert len(seen) >= 3
    assert all(s < 0.05 for s in seen), seen  # each step slept 0.1 s, nearly all of it idle
