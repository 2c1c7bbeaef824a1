"""A world that implements nothing of the frame protocol (no scene): served with the viewer."""

from __future__ import annotations

import os
from typing import Any

from flask import Flask
from pydantic import BaseModel

from worldloop import Command, System, World, WorldLoop
from worldloop.config import env_config


class Add(BaseModel):
    by: int


class Tally(World):
    """A counter: no bounds, no layers, no panel."""

    name = "tally"
    commands = {"add": Add}

    def __init__(self) -> None:
        super().__init__()
        self.n = 0

    def apply(self, command: Command) -> Any:
        self.n += int(command.payload["by"])
        return {"n": self.n}

    def systems(self) -> list[System]:
        return [System("count", self.count)]

    def count(self) -> None:
        self.n += 1

    def get_state(self) -> dict[str, Any]:
        return {"n": self.n}

    def set_state(self, state: Any) -> None:
        self.n = int(state["n"])

    def view(self) -> dict[str, Any]:
        return {"n": self.n}


def create_app() -> Flask:
    app = Flask(__name__)
    app.config.update(env_config(os.environ))
    WorldLoop(app, world=lambda cfg: Tally(), viewer=True, store_url="memory://")
    return app
