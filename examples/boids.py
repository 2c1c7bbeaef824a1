"""Boids: a flock that steers by its neighbours, drawn in the viewer; `kick` scatters it.

flask --app examples.boids:create_app run        # then open http://127.0.0.1:5000/
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
from flask import Flask
from pydantic import BaseModel, Field

from worldloop import Command, System, World, WorldLoop
from worldloop.config import env_config
from worldloop.frame import Layer, Panel, Scene, Series, clip_box, pick
from worldloop.snapshot import Snapshot
from worldloop.world import rng_from_state, rng_state

SIZE, SPEED, SEE = 600.0, 60.0, 40.0  # world side, top speed (units/s), how far a boid sees


class Kick(BaseModel):
    """Push every boid away from a point (the flock scatters, then gathers again)."""

    x: float = Field(ge=0, le=SIZE)
    y: float = Field(ge=0, le=SIZE)
    strength: float = Field(100.0, gt=0, le=1000)


class Boids(World):
    name = "boids"
    commands = {"kick": Kick}

    def __init__(self, n: int = 150, seed: int = 1) -> None:
        super().__init__()
        self.rng = np.random.default_rng(seed)  # all randomness comes from the state
        self.pos = self.rng.uniform(0, SIZE, (n, 2))
        self.vel = self.rng.normal(0, SPEED / 2, (n, 2))
        self.kicks = 0

    def apply(self, command: Command) -> Any:
        p = command.payload
        away = self.pos - [p["x"], p["y"]]
        dist = np.maximum(np.hypot(away[:, 0], away[:, 1]), 1.0)[:, None]
        self.vel += away / dist * p["strength"] * np.exp(-dist / 150)
        self.kicks += 1
        return {"kicks": self.kicks}

    def systems(self) -> list[System]:
        return [System("flock", self.flock), System("move", self.move)]

    def flock(self) -> None:
        d = self.pos[None, :, :] - self.pos[:, None, :]  # d[i, j]: from boid i to boid j
        d -= SIZE * np.round(d / SIZE)  # the world wraps around (a torus)
        dist = np.hypot(d[..., 0], d[..., 1])
        near = (dist < SEE) & (dist > 0)
        count = np.maximum(near.sum(1, keepdims=True), 1)
        cohesion = (d * near[..., None]).sum(1) / count
        align = (near @ self.vel) / count - self.vel
        separate = -(d * (near & (dist < SEE / 3))[..., None]).sum(1)
        jitter = self.rng.normal(0, 5, self.vel.shape)
        self.vel += self.dt * (0.8 * cohesion + 1.5 * align + 3.0 * separate + jitter)
        speed = np.maximum(np.hypot(self.vel[:, 0], self.vel[:, 1]), 1e-9)[:, None]
        self.vel *= np.clip(speed, SPEED / 3, SPEED) / speed

    def move(self) -> None:
        self.pos = (self.pos + self.vel * self.dt) % SIZE

    def get_state(self) -> dict[str, Any]:
        return {"pos": self.pos, "vel": self.vel, "kicks": self.kicks, "rng": rng_state(self.rng)}

    def set_state(self, state: Any) -> None:
        self.pos, self.vel = np.array(state["pos"]), np.array(state["vel"])
        self.kicks, self.rng = int(state["kicks"]), rng_from_state(str(state["rng"]))

    def view(self) -> dict[str, Any]:  # what a snapshot publishes (arrays copied, frozen)
        return {"pos": self.pos, "vel": self.vel}

    def summary(self) -> dict[str, Any]:
        return {"boids": len(self.pos), "kicks": self.kicks}

    def scene(self, snapshot: Snapshot, bbox: Any, limit: int) -> Scene:
        pos, vel = snapshot.data["pos"], snapshot.data["vel"]
        box = clip_box(bbox, SIZE, SIZE)
        rows, total = pick(pos[:, 0], pos[:, 1], box, limit)
        heading = np.arctan2(vel[rows, 1], vel[rows, 0])  # the markers become arrows
        flock = Layer("boid", pos[rows, 0], pos[rows, 1], heading=heading, total=total)
        speed = float(np.hypot(vel[:, 0], vel[:, 1]).mean())
        panel = Panel({"boids": len(pos), "mean speed": round(speed, 1)}, [Series("speed", speed)])
        return Scene(SIZE, SIZE, [flock], panel=panel, bbox=box, background="#0d1b2a")


def create_app(config: dict[str, Any] | None = None) -> Flask:
    app = Flask(__name__)
    app.config.update({**env_config(os.environ), **(config or {})})
    WorldLoop(app, world=lambda cfg: Boids(), viewer=True, store_url="memory://")
    return app
