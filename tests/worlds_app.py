"""A server hosting many worlds for the host tests (issue 13), independent of the demo game.

The default world is a ``Drift`` (tests/durability_app.py); kinds ``drift`` (a Drift sized and
seeded by its config) and ``faulty`` (a Drift with a system that raises every tick). Two
test-only endpoints reach any world: POST /test/worlds/<world>/kick submits a kick and answers
200 once it is applied (acknowledged only after its journal write), and GET
/test/worlds/<world>/state returns its published tick and kicks, and (where the world runs)
its failing-system count. GET /test/group shows what the group committer on the app's store
did (worldloop.store.group).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping, Sequence
from typing import Any

from flask import Flask, request
from pydantic import BaseModel, ConfigDict, Field

from tests.durability_app import Drift, create_world
from worldloop import System, WorldLoop
from worldloop.state import state_of
from worldloop.store.group import group_for


class DriftConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    particles: int = Field(16, ge=1, le=10_000)
    seed: int = Field(7, ge=0)


def drift_kind(config: Mapping[str, Any]) -> Drift:
    cfg = DriftConfig.model_validate(dict(config))
    return Drift(cfg.particles, cfg.seed)


class Faulty(Drift):
    """A Drift whose last system raises every tick: contained, counted, the loop goes on."""

    def systems(self) -> Sequence[System]:
        return (*super().systems(), System("explode", self._explode))

    def _explode(self) -> None:
        raise RuntimeError("this system fails every tick")


def faulty_kind(config: Mapping[str, Any]) -> Faulty:
    cfg = DriftConfig.model_validate(dict(config))
    return Faulty(cfg.particles, cfg.seed)


KINDS = {"drift": drift_kind, "faulty": faulty_kind}


def create_app() -> Flask:
    """The test server: config from WORLDLOOP_* environment variables."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    logging.getLogger("worldloop.world").setLevel(logging.CRITICAL)  # one line per failing tick
    app = Flask(__name__, instance_path=os.environ["WORLDLOOP_INSTANCE_PATH"])
    for key, value in os.environ.items():
        if key.startswith(("WORLDLOOP_", "DRIFT_")):
            try:
                app.config[key] = json.loads(value)
            except ValueError:
                app.config[key] = value

    @app.post("/test/worlds/<world>/kick")
    def kick(world: str) -> tuple[dict[str, Any], int]:
        body = request.get_json(force=True)
        ticket = state_of().host.get(world).runtime.submit("kick", body)
        if not ticket.wait(10.0):
            return {"command_id": ticket.id, "status": "queued"}, 202
        return ticket.to_dict(), 200

    @app.get("/test/worlds/<world>/state")
    def live(world: str) -> dict[str, Any]:
        rt = state_of().host.get(world).runtime
        snap = rt.snapshot  # published: the same in a web worker of a runner process
        return {
            "tick": snap.tick,
            "kicks": snap.summary["kicks"],
            "system_errors": dict(rt.world.system_errors),  # live only where the world runs
            "paused": rt.stats().paused,
            "pid": os.getpid(),
        }

    @app.get("/test/group")
    def group() -> dict[str, Any]:
        """What this process's group committer on the app's store did (store/group.py)."""
        state = state_of()
        stats = group_for(state.store_url, state.settings.store_schema).stats()
        return {"commits": stats.commits, "entries": stats.entries, "largest": stats.largest}

    WorldLoop(app, world=create_world, kinds=KINDS, json_errors="all")
    return app
