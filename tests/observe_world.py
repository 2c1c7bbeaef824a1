"""A small world that draws: grass, creatures and players, framed per the viewer contract.

Used by the stream/viewer tests so they exercise every part of a frame (World.view_region's
documented format) independently of the meadow game. ``create_app`` serves it like the demo.
Commands: ``join`` {name}, ``move_to`` {player, x, y}, ``say`` {player, text}, ``boom`` (a
system failure on the next tick), ``hang`` {seconds} (one slow tick). A scripted player
"scout" walks a circle and greets, so a real server shows movement with no API beyond the engine's.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import numpy as np
from flask import Flask

from worldloop import Command, CommandInvalid, CommandRejected, System, World
from worldloop.frame import Grid, Layer, Panel, Scene, Series, clip_box, pick
from worldloop.snapshot import Snapshot
from worldloop.world import State, rng_from_state, rng_state


class GardenWorld(World):
    """A width x height torus with a grass grid, wandering creatures and named players."""

    name: ClassVar[str] = "garden"

    def __init__(
        self, *, width: float = 400.0, height: float = 300.0, creatures: int = 300, seed: int = 1
    ) -> None:
        super().__init__()
        self.width, self.height = float(width), float(height)
        self.cell = 10.0
        self.rng = np.random.default_rng(seed)
        self.grass = self.rng.uniform(0, 1, (int(height // 10), int(width // 10)))
        n = creatures
        self.cid = np.arange(1, n + 1, dtype=np.int64)
        self.pos = self.rng.uniform(0, 1, (n, 2)) * np.array([self.width, self.height])
        self.energy = self.rng.uniform(1, 10, n)
        self.players: dict[str, dict[str, Any]] = {}
        self.fail_next = False

    # -- commands --------------------------------------------------------------------------

    def validate(self, type_: str, payload: Mapping[str, Any], actor: str | None) -> dict[str, Any]:
        if type_ == "join":
            name = payload.get("name")
            if not isinstance(name, str) or not name:
                raise CommandInvalid("name required")
            return {"name": name}
        if type_ == "move_to":
            x, y = payload.get("x"), payload.get("y")
            if not all(isinstance(v, int | float) and math.isfinite(v) for v in (x, y)):
                raise CommandInvalid("x and y must be finite numbers")
            return {"player": str(payload.get("player")), "x": float(x), "y": float(y)}  # type: ignore[arg-type]
        if type_ == "say":
            return {"player": str(payload.get("player")), "text": str(payload.get("text"))[:80]}
        if type_ == "boom":
            return {}
        if type_ == "hang":
            seconds = payload.get("seconds")
            if not isinstance(seconds, int | float) or not 0 < seconds <= 5:
                raise CommandInvalid("seconds must be in (0, 5]")
            return {"seconds": float(seconds)}
        raise CommandInvalid(f"unknown command {type_!r}")

    def apply(self, command: Command) -> Any:
        p = command.payload
        if command.type == "join":
            pid = f"p{len(self.players) + 1}"
            self.players[pid] = {
                "player_id": pid,
                "name": p["name"],
                "entity_id": 10_000 + len(self.players),
                "x": self.width / 2,
                "y": self.height / 2,
                "say": None,
            }
            return {"player_id": pid}
        player = self.players.get(p.get("player", ""))
        if command.type == "boom":
            self.fail_next = True
            return {}
        if command.type == "hang":
            time.sleep(p["seconds"])  # a deliberately slow tick: stalls and overruns the loop
            return {}
        if player is None:
            raise CommandRejected("no such player")
        if command.type == "move_to":
            player["x"], player["y"] = p["x"] % self.width, p["y"] % self.height
        else:
            player["say"] = p["text"]
        return {"ok": True}

    # -- systems ---------------------------------------------------------------------------

    def systems(self) -> Sequence[System]:
        return (System("wander", self._wander), System("grow", self._grow))

    def _wander(self) -> None:
        if self.fail_next:
            self.fail_next = False
            raise RuntimeError("boom (requested by a test)")
        self.pos += self.rng.normal(0, 1.0, self.pos.shape)
        np.mod(self.pos, (self.width, self.height), out=self.pos)
        scout = self.players.get("scout")
        if scout is not None:
            a = self.tick * 0.05
            scout["x"] = self.width / 2 + 0.3 * self.width * math.cos(a)
            scout["y"] = self.height / 2 + 0.3 * self.height * math.sin(a)

    def _grow(self) -> None:
        self.grass = np.minimum(1.0, self.grass + 0.001)

    # -- state -----------------------------------------------------------------------------

    def get_state(self) -> State:
        return {
            "grass": self.grass,
            "pos": self.pos,
            "energy": self.energy,
            "rng": rng_state(self.rng),
        }

    def set_state(self, state: Mapping[str, Any]) -> None:
        self.grass = np.array(state["grass"])
        self.pos = np.array(state["pos"])
        self.energy = np.array(state["energy"])
        self.rng = rng_from_state(str(state["rng"]))

    def view(self) -> dict[str, Any]:
        return {
            "width": self.width,
            "height": self.height,
            "grass": self.grass,
            "cid": self.cid,
            "pos": self.pos,
            "energy": self.energy,
            "players": tuple(dict(p) for p in self.players.values()),
        }

    def summary(self) -> dict[str, Any]:
        return {
            "tick": self.tick,
            "creature_count": len(self.cid),
            "player_count": len(self.players),
            "grass_total": float(self.grass.sum()),
            "entity_count": len(self.cid) + len(self.players),
        }

    def scene(
        self, snapshot: Snapshot, bbox: tuple[float, float, float, float] | None, limit: int
    ) -> Scene:
        d = snapshot.data
        w, h = d["width"], d["height"]
        box = clip_box(bbox, w, h)
        pos = d["pos"]
        idx, total = pick(pos[:, 0], pos[:, 1], box, limit)
        # Shared by every viewport of this snapshot (and computed inside the frame's own cached
        # computation: nested use of Snapshot.cached must work).
        levels = snapshot.cached(
            "garden:levels", lambda s: np.clip(s.data["grass"] * 255, 0, 255).astype(np.uint8)
        )
        x0, y0, x1, y1 = box
        players = [p for p in d["players"] if x0 <= p["x"] < x1 and y0 <= p["y"] < y1]
        creatures = Layer(
            "creature",
            pos[idx, 0],
            pos[idx, 1],
            id=d["cid"][idx],
            shade=np.clip(d["energy"][idx] / 2.0, 0, 1),
            color="#f2c14e",
            total=total,
        )
        avatars = Layer(
            "player",
            [p["x"] for p in players],
            [p["y"] for p in players],
            id=[p["entity_id"] for p in players],
            label=[p["name"] for p in players],
            say=[p["say"] for p in players],
            color="#ff5a7a",
            size=7.0,
        )
        summary = snapshot.summary
        panel = Panel(
            stats={"creatures": summary["creature_count"], "players": summary["player_count"]},
            plots=(Series("creatures", summary["creature_count"], "#f2c14e"),),
            plot_title="population",
            plot_unit="count",
        )
        return Scene(w, h, (creatures, avatars), Grid(levels, 10.0), panel, box)


def create_world(config: Mapping[str, Any]) -> GardenWorld:
    world = GardenWorld(creatures=int(config.get("GARDEN_CREATURES", 300)))
    if config.get("GARDEN_SCOUT", True):
        world.players["scout"] = {
            "player_id": "scout",
            "name": "Scout",
            "entity_id": 9999,
            "x": 0.0,
            "y": 0.0,
            "say": "hello, garden!",
        }
    return world


def create_app(config: Mapping[str, Any] | None = None, instance_path: str | None = None) -> Flask:
    """The garden served like the demo: world API, health, metrics, stream and viewer."""
    from worldloop import WorldLoop

    instance = instance_path or os.environ.get("WORLDLOOP_INSTANCE_PATH") or "instance"
    app = Flask(__name__, instance_path=os.path.abspath(instance))
    app.config.update({k: v for k, v in os.environ.items() if k.startswith("WORLDLOOP_")})
    if "WORLDLOOP_RATE_HZ" in app.config:
        app.config["WORLDLOOP_RATE_HZ"] = float(app.config["WORLDLOOP_RATE_HZ"])
    app.config.update(config or {})
    WorldLoop(app, world=create_world, viewer=True, json_errors="all")
    return app


def make_test_app(tmp_path: Any, **config: Any) -> Flask:
    """The garden app for in-process tests: 50 Hz, no signal handlers, files under tmp_path."""
    base = {"TESTING": True, "WORLDLOOP_HANDLE_SIGNALS": False, "WORLDLOOP_RATE_HZ": 50.0}
    return create_app({**base, **config}, instance_path=str(tmp_path / "instance"))


def runtime_of(app: Flask) -> Any:
    """The app's WorldRuntime."""
    return app.extensions["worldloop"].runtime
