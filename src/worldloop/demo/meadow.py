"""Meadow: entities moving on a toroidal 2D plane (the minimal demo; the full game builds on it)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import numpy as np

from ..commands import Command
from ..errors import CommandInvalid, CommandRejected
from ..snapshot import Snapshot
from ..world import State, System, World, rng_from_state, rng_state

MAX_SPEED = 50.0
GRASS_CELLS = 16
"""The grass grid is GRASS_CELLS x GRASS_CELLS cells over the meadow."""


class Meadow(World):
    """Entities wander on a ``width`` x ``height`` torus; ``move`` sets an entity's velocity."""

    name: ClassVar[str] = "meadow"

    def __init__(
        self, *, width: float = 1000.0, height: float = 1000.0, entities: int = 200, seed: int = 0
    ) -> None:
        super().__init__()
        self.width = float(width)
        self.height = float(height)
        self.rng = np.random.default_rng(seed)
        n = int(entities)
        self.ids = np.arange(1, n + 1, dtype=np.int64)
        self.pos = self.rng.uniform(0, 1, (n, 2)) * np.array([self.width, self.height])
        self.vel = self.rng.normal(0, 5.0, (n, 2))
        self.grass = np.zeros((GRASS_CELLS, GRASS_CELLS))
        self.reseed_grass()

    # -- commands --------------------------------------------------------------------------

    def validate(self, type_: str, payload: Mapping[str, Any], actor: str | None) -> dict[str, Any]:
        if type_ != "move":
            raise CommandInvalid(f"unknown command type {type_!r}", details={"allowed": ["move"]})
        if not isinstance(payload, Mapping):
            raise CommandInvalid("payload must be an object")
        eid = payload.get("entity_id")
        if not isinstance(eid, int) or isinstance(eid, bool) or eid < 1:
            raise CommandInvalid(
                "entity_id must be a positive integer", details={"field": "entity_id"}
            )
        out: dict[str, Any] = {"entity_id": eid}
        for key in ("vx", "vy"):
            v = payload.get(key)
            if not isinstance(v, int | float) or isinstance(v, bool) or not math.isfinite(v):
                raise CommandInvalid(f"{key} must be a finite number", details={"field": key})
            if abs(v) > MAX_SPEED:
                raise CommandInvalid(f"{key} must be within ±{MAX_SPEED:g}", details={"field": key})
            out[key] = float(v)
        return out

    def apply(self, command: Command) -> Any:
        eid = int(command.payload["entity_id"])
        idx = np.searchsorted(self.ids, eid)
        if idx >= len(self.ids) or self.ids[idx] != eid:
            raise CommandRejected(f"no entity {eid}", details={"entity_id": eid})
        self.vel[idx] = (command.payload["vx"], command.payload["vy"])
        return {"entity_id": eid, "x": float(self.pos[idx, 0]), "y": float(self.pos[idx, 1])}

    # -- systems ---------------------------------------------------------------------------

    def systems(self) -> Sequence[System]:
        return (System("wander", self._wander), System("movement", self._movement))

    def _wander(self) -> None:
        self.vel += self.rng.normal(0, 0.5, self.vel.shape)
        np.clip(self.vel, -MAX_SPEED, MAX_SPEED, out=self.vel)

    def _movement(self) -> None:
        self.pos += self.vel * self.dt
        np.mod(self.pos, (self.width, self.height), out=self.pos)

    # -- hooks for scheduled jobs ----------------------------------------------------------

    def reseed_grass(self) -> float:
        """Re-seed the grass everywhere from the world's generator; returns the total grass.

        The demo's nightly world job calls this on the loop thread (deterministic, replayed).
        """
        self.grass = self.rng.uniform(0.5, 1.0, (GRASS_CELLS, GRASS_CELLS))
        return float(self.grass.sum())

    @staticmethod
    def leaderboard(snapshot: Snapshot, limit: int = 10) -> list[dict[str, Any]]:
        """The top ``limit`` entities of a published snapshot (reads only the snapshot).

        The minimal meadow ranks entities by how far north they stand; the demo's background
        job writes this every minute.
        """
        ids = np.asarray(snapshot.data["ids"])
        pos = np.asarray(snapshot.data["pos"])
        order = np.argsort(-pos[:, 1], kind="stable")[: max(0, limit)]
        return [
            {"rank": r + 1, "entity_id": int(ids[i]), "score": round(float(pos[i, 1]), 3)}
            for r, i in enumerate(order)
        ]

    # -- state -----------------------------------------------------------------------------

    def get_state(self) -> State:
        return {
            "width": self.width,
            "height": self.height,
            "ids": self.ids,
            "pos": self.pos,
            "vel": self.vel,
            "grass": self.grass,
            "rng": rng_state(self.rng),
        }

    def set_state(self, state: Mapping[str, Any]) -> None:
        self.width = float(state["width"])
        self.height = float(state["height"])
        self.ids = np.array(state["ids"], dtype=np.int64)
        self.pos = np.array(state["pos"], dtype=np.float64)
        self.vel = np.array(state["vel"], dtype=np.float64)
        self.grass = np.array(state["grass"], dtype=np.float64)
        self.rng = rng_from_state(str(state["rng"]))

    def view(self) -> dict[str, Any]:
        return {"width": self.width, "height": self.height, "ids": self.ids, "pos": self.pos}

    def summary(self) -> dict[str, Any]:
        return {"entity_count": len(self.ids), "grass_total": round(float(self.grass.sum()), 3)}


def create_world(config: Mapping[str, Any]) -> Meadow:
    """World factory used by the demo app (reads MEADOW_* config keys)."""
    return Meadow(
        width=config.get("MEADOW_WIDTH", 1000.0),
        height=config.get("MEADOW_HEIGHT", 1000.0),
        entities=config.get("MEADOW_ENTITIES", 200),
        seed=config.get("MEADOW_SEED", 0),
    )
