"""examples/timer_recipe.py on worldloop (docs/migrate-from-timer.md, step by step).

    gunicorn -w 1 --threads 4 -b 127.0.0.1:8000 'examples.timer_migrated:create_app()'

The global dict is the World's state; the global Lock is gone (one loop thread writes, handlers
submit commands and read immutable snapshots); atexit is replaced by worldloop's bounded,
signal-safe stop with a final snapshot; the Timer by a drift-free fixed clock.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any

from flask import Flask, request
from pydantic import BaseModel, Field

from worldloop import Command, System, World, WorldLoop, get_runtime
from worldloop.config import env_config


class Steer(BaseModel):
    name: str = Field(min_length=1, max_length=32)
    vx: float = Field(ge=-100, le=100)
    vy: float = Field(ge=-100, le=100)


class Robots(World):
    """Step 1: the global dict becomes the world's state."""

    name = "robots"
    commands = {"steer": Steer}

    def __init__(self) -> None:
        super().__init__()
        self.robots: dict[str, dict[str, float]] = {}

    def apply(self, command: Command) -> Any:  # step 2: what a handler did under the lock
        p = command.payload
        robot = self.robots.setdefault(p["name"], {"x": 0.0, "y": 0.0, "vx": 0.0, "vy": 0.0})
        robot["vx"], robot["vy"] = p["vx"], p["vy"]
        return dict(robot)

    def systems(self) -> list[System]:  # step 3: what tick() did, without the Timer
        return [System("move", self.move)]

    def move(self) -> None:
        for robot in self.robots.values():
            robot["x"] += robot["vx"] * self.dt
            robot["y"] += robot["vy"] * self.dt

    def get_state(self) -> dict[str, Any]:  # step 4: durable (journal + snapshots)
        return {"robots": json.dumps(self.robots, sort_keys=True)}

    def set_state(self, state: Mapping[str, Any]) -> None:
        self.robots = json.loads(str(state["robots"]))

    def view(self) -> dict[str, Any]:
        return {"robots": {k: dict(v) for k, v in self.robots.items()}}


def create_app(config: Mapping[str, Any] | None = None) -> Flask:
    """Step 5: routes submit commands and read the last snapshot; no lock, no atexit."""
    app = Flask(__name__, instance_path=os.path.abspath("instance"))
    app.config.update({**env_config(os.environ), **(config or {})})
    WorldLoop(app, world=lambda cfg: Robots())

    @app.post("/robots/<name>")
    def steer(name: str) -> Any:
        body = request.get_json(force=True)
        ticket = get_runtime().submit("steer", {"name": name, "vx": body["vx"], "vy": body["vy"]})
        ticket.wait(2.0)  # applied by the next tick (a full queue is 503 + Retry-After)
        return ticket.to_dict()

    @app.get("/robots")
    def robots() -> Any:
        snap = get_runtime().snapshot  # lock-free: the last published tick
        return {"tick": snap.tick, "robots": snap.data["robots"]}

    return app
