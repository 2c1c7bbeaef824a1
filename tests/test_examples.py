"""The example worlds in examples/: their commands, determinism and replay."""

from __future__ import annotations

import numpy as np
import pytest
from examples.boids import Boids

from worldloop import Command, CommandInvalid


def kick(seq: int, x: float, y: float) -> Command:
    world = Boids(n=2)
    payload = world.validate("kick", {"x": x, "y": y}, "someone")
    return Command(id=f"k{seq}", seq=seq, type="kick", payload=payload, actor="someone")


def test_kick_is_declared_checked_and_scatters_the_flock() -> None:
    world = Boids(n=60, seed=3)
    with pytest.raises(CommandInvalid):
        world.validate("kick", {"x": -5, "y": 10}, "someone")
    calm = Boids(n=60, seed=3)
    (out,) = world.step([kick(1, 300.0, 300.0)])
    calm.step([])
    assert out.ok and out.result == {"kicks": 1}
    assert not np.allclose(world.vel, calm.vel)


def test_two_runs_with_the_same_commands_agree_and_a_restore_replays_exactly() -> None:
    a, b = Boids(seed=5), Boids(seed=5)
    saved = None
    for t in range(30):
        cmds = [kick(t, 100.0, 200.0)] if t % 7 == 0 else []
        if t == 10:
            saved = {
                k: np.copy(v) if isinstance(v, np.ndarray) else v for k, v in a.full_state().items()
            }
        a.step(cmds)
        b.step(cmds)
    assert a.state_hash() == b.state_hash()
    assert saved is not None
    c = Boids(seed=99)
    c.restore(saved)
    for t in range(10, 30):
        c.step([kick(t, 100.0, 200.0)] if t % 7 == 0 else [])
    assert c.state_hash() == a.state_hash()
