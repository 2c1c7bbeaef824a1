"""A small world and server for the durability tests (independent of the demo game).

``Drift``: particles random-walk on a line (systems use the generator every tick, so replay
must restore the generator exactly); ``kick`` adds to one particle's velocity and is rejected
for an unknown particle. The app adds two test-only endpoints: POST /test/commands submits a
command and waits until it is applied (acknowledged only after its journal write), and
GET /test/state returns the live tick and state hash while the world is paused.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import numpy as np
from flask import Flask, request

from worldloop import (
    Command,
    CommandInvalid,
    CommandRejected,
    System,
    World,
    WorldLoop,
    get_runtime,
)
from worldloop.world import State, rng_from_state, rng_state


class Drift(World):
    """Particles on a ring of length 1000 with noisy velocities."""

    name: ClassVar[str] = "drift"

    def __init__(self, particles: int = 64, seed: int = 7) -> None:
        super().__init__()
        self.rng = np.random.default_rng(seed)
        self.x = self.rng.uniform(0, 1000, particles)
        self.v = np.zeros(particles)
        self.kicks = 0

    def validate(self, type_: str, payload: Mapping[str, Any], actor: str | None) -> dict[str, Any]:
        if type_ != "kick":
            raise CommandInvalid(f"unknown command {type_!r}")
        i, dv = payload.get("i"), payload.get("dv")
        if not isinstance(i, int) or isinstance(i, bool):
            raise CommandInvalid("i must be an integer")
        if not isinstance(dv, int | float) or isinstance(dv, bool) or not math.isfinite(dv):
            raise CommandInvalid("dv must be a finite number")
        return {"i": i, "dv": float(dv)}

    def apply(self, command: Command) -> Any:
        i = int(command.payload["i"])
        if not 0 <= i < len(self.x):
            raise CommandRejected(f"no particle {i}")
        self.v[i] += float(command.payload["dv"])
        self.kicks += 1
        return {"i": i, "v": float(self.v[i])}

    def systems(self) -> Sequence[System]:
        return (System("noise", self._noise), System("move", self._move))

    def _noise(self) -> None:
        self.v += self.rng.normal(0, 0.1, self.v.shape)

    def _move(self) -> None:
        self.x = np.mod(self.x + self.v * self.dt, 1000.0)

    def get_state(self) -> State:
        return {"x": self.x, "v": self.v, "kicks": self.kicks, "rng": rng_state(self.rng)}

    def set_state(self, state: Mapping[str, Any]) -> None:
        self.x = np.array(state["x"], dtype=np.float64)
        self.v = np.array(state["v"], dtype=np.float64)
        self.kicks = int(state["kicks"])
        self.rng = rng_from_state(str(state["rng"]))

    def view(self) -> dict[str, Any]:
        return {"x": self.x}

    def summary(self) -> dict[str, Any]:
        return {"particles": len(self.x), "kicks": self.kicks}


def create_world(config: Mapping[str, Any]) -> Drift:
    return Drift(int(config.get("DRIFT_PARTICLES", 64)), int(config.get("DRIFT_SEED", 7)))


def create_app(kinds: Mapping[str, Any] | None = None) -> Flask:
    """The test server: config from WORLDLOOP_* environment variables; ``kinds``: the world
    kinds the API creates worlds of (tests/fleet_app.py)."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    app = Flask(__name__, instance_path=os.environ["WORLDLOOP_INSTANCE_PATH"])
    for key, value in os.environ.items():
        if key.startswith(("WORLDLOOP_", "DRIFT_")):
            app.config[key] = _decode(value)

    @app.post("/test/commands")
    def submit() -> tuple[dict[str, Any], int]:
        body = request.get_json(force=True)
        ticket = get_runtime().submit(body["type"], body.get("payload") or {})
        if not ticket.wait(10.0):
            return {"command_id": ticket.id, "status": "queued"}, 202
        return ticket.to_dict(), 200

    @app.get("/test/state")
    def state() -> dict[str, Any]:
        rt = get_runtime()
        if not rt.ticker.paused:
            return {"error": {"code": "not_paused", "message": "pause first", "details": {}}}
        return {"tick": rt.world.tick, "hash": rt.world.state_hash()}

    WorldLoop(app, world=create_world, kinds=kinds, json_errors="all")
    return app


def _decode(value: str) -> Any:
    import json

    try:
        return json.loads(value)
    except ValueError:
        return value
