"""The meadow's rules (:class:`Params`), in a module of their own so the world's module stays
about the world; ``worldloop.demo.meadow`` re-exports them."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Params:
    """The rules of the meadow (per tick unless noted); part of the state so replays agree.

    Tuned so the demo's 200 sheep grow to about 750 in 80 s (20 Hz), overgraze, fall back and
    settle near 640, well under the default cap of 1000: the population plot tells a story."""

    cell: float = 10.0
    """Grass cell side, world units."""
    grass_max: float = 1.0
    grass_regrow: float = 0.001
    bite: float = 0.05
    """Grass a sheep eats per tick when there is enough."""
    food_energy: float = 0.6
    metabolism: float = 0.007
    sheep_speed: float = 8.0
    """Top wandering speed, units per simulated second."""
    wander: float = 1.5
    breed_energy: float = 2.0
    breed_chance: float = 0.006
    max_age: int = 6000
    avatar_speed: float = 40.0
    flee_radius: float = 25.0
    flee_push: float = 4.0
    plant_amount: float = 0.5
