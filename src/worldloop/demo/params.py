"""The meadow's rules (:class:`Params`), in a module of their own so the world's module stays
about the world; ``worldloop.demo.meadow`` re-exports them."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any


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

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> Params:
        """The rules with any ``MEADOW_<FIELD>`` key of ``config`` (a value, or the string an
        environment gives) in place of the default: ``MEADOW_METABOLISM=0`` is a meadow whose
        sheep never starve, as the benchmarks run it to keep 100,000 creatures on 1000 x 1000
        (the default rules feed about 850 there: the 100,000 all starve within ~20 s).
        ValueError for a value that is not a finite number >= 0, or a fraction for an integer
        rule."""
        given: dict[str, Any] = {}
        for f in fields(cls):
            raw = config.get(f"MEADOW_{f.name.upper()}")
            if raw in (None, ""):
                continue
            number = float(raw)
            if not math.isfinite(number) or number < 0:
                raise ValueError(f"MEADOW_{f.name.upper()} must be a finite number >= 0")
            if f.type == "int":
                if not number.is_integer():
                    raise ValueError(f"MEADOW_{f.name.upper()} must be a whole number")
                given[f.name] = int(number)
            else:
                given[f.name] = number
        return cls(**given)
