"""Meadow: the reference game. Grass grows on a grid, sheep wander, graze, breed and die, and
players walk their avatars around, plant grass and chat. The world evolves on its own.

All entity state is a NumPy structure of arrays kept sorted by entity id (ids are never
reused), every system is vectorized, and all randomness comes from the generator held in the
state, so ``step(state, commands)`` is deterministic and ``state_hash()`` proves it.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from functools import partial
from typing import Any, ClassVar

import numpy as np
from numpy.typing import NDArray

from ..commands import Command
from ..errors import CommandRejected
from ..frame import Scene
from ..outbox import TaskRequest
from ..snapshot import Snapshot
from ..world import State, System, World, rng_from_state, rng_state
from . import forecast, schemas, systems, views
from .commands import INTERNAL_COMMANDS, PLAYER_COMMANDS
from .kernels import Kernels, get_kernels, kernels_later, load_later
from .params import Params as Params
from .spatial import SpatialGrid
from .systems import AVATAR as AVATAR
from .systems import KIND_NAMES as KIND_NAMES
from .systems import SHEEP as SHEEP

CHAT_KEEP = 50
SAY_VISIBLE_TICKS = 100


class EntityForbidden(CommandRejected, code="forbidden", status=403):
    """A player tried to act on an entity that is not its own avatar."""


class EntityNotFound(CommandRejected, code="not_found", status=404):
    """The command names an entity or player that does not exist (any more)."""


class Meadow(World):
    """The meadow game world: a ``width`` x ``height`` torus of grass, sheep and avatars."""

    name: ClassVar[str] = "meadow"
    commands = PLAYER_COMMANDS
    internal_commands = INTERNAL_COMMANDS
    view_models = schemas.VIEW_MODELS

    def __init__(
        self,
        *,
        width: float = 1000.0,
        height: float = 1000.0,
        entities: int = 200,
        seed: int = 0,
        max_creatures: int | None = None,
        params: Params | None = None,
        kernels: str = "numpy",
        kernels_in_background: bool = False,
    ) -> None:
        super().__init__()
        self.kernels: Kernels = (
            kernels_later(kernels, self._use_kernels)
            if kernels_in_background
            else get_kernels(kernels)
        )
        """Who does the systems' arithmetic (demo/kernels.py): ``numpy``, ``numba`` or ``auto``;
        with ``kernels_in_background``, loaded in the background from the first publish (NumPy
        until then). Not state: every implementation gives the same bits, so they may change
        between any two systems."""
        self.width = _positive(width, "width")
        self.height = _positive(height, "height")
        self.params = params or Params()
        n = int(entities)
        if n < 0:
            raise ValueError("entities must be >= 0")
        self.max_creatures = int(max_creatures if max_creatures is not None else max(1000, 4 * n))
        self.rng = np.random.default_rng(int(seed))
        self.gcols = max(1, math.ceil(self.width / self.params.cell))
        self.grows = max(1, math.ceil(self.height / self.params.cell))
        self.grass = self.rng.uniform(0.2, 1.0, (self.grows, self.gcols)).astype(np.float32)
        self.grass *= np.float32(self.params.grass_max)
        self.ids = np.arange(1, n + 1, dtype=np.int64)
        self.next_id = n + 1
        self.kind = np.zeros(n, dtype=np.int8)
        self.pos = self.rng.uniform(0, 1, (n, 2)) * np.array([self.width, self.height])
        self.vel = self.rng.normal(0, 2.0, (n, 2))
        self.energy = self.rng.uniform(0.5, 1.5, n)
        self.age = self.rng.integers(0, self.params.max_age // 2, n).astype(np.int32)
        self.target = np.full((n, 2), np.nan)
        self.players: dict[str, dict[str, Any]] = {}
        self.chat: list[dict[str, Any]] = []
        self.births = 0
        self.deaths = 0
        self.forecast: str | None = None
        """The last forecast (JSON), see demo/forecast.py; kept in the state once there is one."""
        self._views_cache: (
            tuple[int, tuple[list[dict[str, Any]], dict[str, str], dict[int, str]]] | None
        ) = None
        self._reindex()

    # -- commands --------------------------------------------------------------------------

    def apply(self, command: Command) -> Any:
        p = command.payload
        if command.type == "join":
            return self._join(str(p["player_id"]), str(p["name"]), str(p["token_hash"]))
        if command.type == "forecast":
            return forecast.request(self, int(p["ticks"]))
        if command.type == "move":
            idx = self._index_of(int(p["entity_id"]))
            self.vel[idx] = (p["vx"], p["vy"])
            return {"entity_id": int(p["entity_id"]), **self._xy(idx)}
        idx = self._avatar_index(command.actor, p.get("entity_id"))
        eid = int(self.ids[idx])
        if command.type == "move_to":
            tx, ty = float(p["x"]) % self.width, float(p["y"]) % self.height
            self.target[idx] = (tx, ty)
            return {"entity_id": eid, "target": {"x": tx, "y": ty}, **self._xy(idx)}
        if command.type == "stop":
            self.target[idx] = np.nan
            self.vel[idx] = 0.0
            return {"entity_id": eid, **self._xy(idx)}
        if command.type == "plant":
            return self._plant(idx)
        if command.type == "say":
            return self._say(command.actor, idx, str(p["text"]))
        raise CommandRejected(f"unknown command type {command.type!r}")

    def on_task_result(
        self, request: TaskRequest, status: str, result: Any, error: str | None
    ) -> Any:
        return forecast.settle(self, request, status, result, error)

    def _join(self, player_id: str, name: str, token_hash: str) -> dict[str, Any]:
        if player_id in self.players:
            raise CommandRejected("this player id is taken", details={"player_id": player_id})
        xy = self.rng.uniform(0, 1, 2) * np.array([self.width, self.height])
        eid = self._spawn(AVATAR, xy[None, :], np.ones(1))[0]
        self.players[player_id] = {
            "name": name,
            "entity_id": eid,
            "token_hash": token_hash,
            "joined_tick": self.tick,
        }
        return {"player_id": player_id, "entity_id": eid, "x": float(xy[0]), "y": float(xy[1])}

    def _plant(self, idx: int) -> dict[str, Any]:
        col, row = self._cell_of(idx)
        level = float(self.grass[row, col])
        cap = self.params.grass_max
        if level >= 0.99 * cap:
            raise CommandRejected(
                "the grass here is already full grown",
                details={"reason": "cell_full", "cell": [col, row], "grass": level},
            )
        new = min(cap, level + self.params.plant_amount)
        self.writable("grass")[row, col] = new
        return {
            "entity_id": int(self.ids[idx]),
            "cell": [col, row],
            "grass": float(np.float32(new)),
        }

    def _say(self, player_id: str | None, idx: int, text: str) -> dict[str, Any]:
        eid = int(self.ids[idx])
        owner = player_id or self._owner_of(eid)
        name = self.players[owner]["name"] if owner in self.players else None
        line = {"tick": self.tick, "player_id": owner, "name": name, "entity_id": eid, "text": text}
        self.chat.append(line)
        del self.chat[:-CHAT_KEEP]
        return {"entity_id": eid, "tick": self.tick, "text": text}

    def _avatar_index(self, actor: str | None, entity_id: Any) -> int:
        """The array index of the avatar a command acts on; only its owner may act on it."""
        if actor is None:
            if entity_id is None:
                raise CommandRejected("an internal command must name its entity_id")
            idx = self._index_of(int(entity_id))
            if self.kind[idx] != AVATAR:
                raise EntityForbidden(f"entity {entity_id} is not an avatar")
            return idx
        player = self.players.get(actor)
        if player is None:
            raise EntityNotFound("no such player", details={"player_id": actor})
        own = int(player["entity_id"])
        if entity_id is not None and int(entity_id) != own:
            raise EntityForbidden(
                "a player can act only on its own avatar",
                details={"entity_id": int(entity_id), "own_entity_id": own},
            )
        return self._index_of(own)

    # -- systems ---------------------------------------------------------------------------

    def systems(self) -> Sequence[System]:
        return (
            System("grass", partial(systems.grow_grass, self)),
            System("wander", partial(systems.wander, self)),
            System("flee", partial(systems.flee, self)),
            System("avatars", partial(systems.steer_avatars, self)),
            System("movement", partial(systems.movement, self)),
            System("grazing", partial(systems.graze, self)),
            System("life", partial(systems.life, self)),
            System("spatial_index", self._reindex),
        )

    def _spawn(
        self,
        kind: int,
        pos: NDArray[np.float64] | None,
        energy: NDArray[np.float64] | None,
        dead: NDArray[np.bool_] | None = None,
    ) -> list[int]:
        """Append new entities (``pos`` rows, none when None) with fresh ids (ids only grow, so
        the arrays stay sorted), dropping the ``dead`` rows in the same pass; the new ids."""
        k = 0 if pos is None else len(pos)
        new_ids = np.arange(self.next_id, self.next_id + k, dtype=np.int64)
        self.next_id += k
        # Only an avatar's target is ever set (move_to): with none in the world, every target
        # is NaN, and the new ones are written without reading (copying) the old ones.
        targets = self._avatars.size > 0 or kind == AVATAR
        tails = None
        if pos is not None and energy is not None:
            tails = [
                new_ids,
                np.full(k, kind, dtype=np.int8),
                pos,
                np.zeros((k, 2)),
                energy,
                np.zeros(k, dtype=np.int32),
                *([np.full((k, 2), np.nan)] if targets else []),
            ]
        arrays = [self.ids, self.kind, self.pos, self.vel, self.energy, self.age]
        rebuilt = self.kernels.rebuild(dead, [*arrays, self.target] if targets else arrays, tails)
        self.ids, self.kind, self.pos, self.vel, self.energy, self.age = rebuilt[:6]
        self.target = rebuilt[6] if targets else np.full((len(self.ids), 2), np.nan)
        if kind == AVATAR:
            self._reindex()
        return [int(i) for i in new_ids]

    def writable(self, name: str) -> Any:
        """The state array ``name``, writable: itself, or a copy of it when it is published
        (read-only, shared with a snapshot), which then replaces it in the world."""
        arr = getattr(self, name)
        if not arr.flags.writeable:
            arr = arr.copy()
            setattr(self, name, arr)
        return arr

    def _use_kernels(self, kernels: Kernels) -> None:
        self.kernels = kernels  # one reference swap: the next system call uses them

    def _reindex(self) -> None:
        """Refresh the derived indexes from the state: the avatar rows now, the spatial grid
        when it is next read (a replay, which publishes nothing, builds it only for ``flee``)."""
        self._grid: SpatialGrid | None = None
        self._moved_cells: tuple[NDArray[np.float64], NDArray[np.signedinteger[Any]]] | None = None
        """The grass cells ``movement`` found for the positions it made (``graze`` takes them
        if the positions are still those)."""
        self._wandered_moved: (
            tuple[NDArray[np.float64], bool, NDArray[np.signedinteger[Any]]] | None
        ) = None
        """What ``wander`` made when it moved everyone too (``movement`` takes it, next)."""
        self._grass_to_grow = False
        """Whether this tick's grass growth waits for ``graze`` (systems.grow_grass)."""
        self._avatars = np.flatnonzero(self.kind == AVATAR)
        self._upper = np.array(
            [np.nextafter(self.width, 0.0), np.nextafter(self.height, 0.0)], dtype=np.float64
        )

    @property
    def grid(self) -> SpatialGrid:
        """The spatial grid of the current positions (derived state, never hashed or saved),
        built when first read after a change (``flee`` reads it, when there are avatars)."""
        if self._grid is None:
            bucket = max(self.params.cell, self.params.flee_radius)
            self._grid = SpatialGrid.build(
                self.pos, self.width, self.height, bucket, self.kernels.grid
            )
        return self._grid

    def reseed_grass(self) -> float:
        """Regrow every cell to a random level from the world's generator; returns the total.

        For scheduled world jobs (run on the loop thread as commands, so replayed exactly).
        """
        levels = self.rng.uniform(0.5, 1.0, self.grass.shape) * self.params.grass_max
        self.grass = levels.astype(np.float32)
        return float(self.grass.sum(dtype=np.float64))

    @staticmethod
    def leaderboard(snapshot: Snapshot, limit: int = 10) -> list[dict[str, Any]]:
        """The ``limit`` best-fed creatures of a published snapshot (reads only the snapshot)."""
        return views.leaderboard(snapshot, limit)

    # -- helpers ---------------------------------------------------------------------------

    def _cells(self) -> NDArray[np.signedinteger[Any]]:
        return self.kernels.cells(self.pos, self.gcols, self.grows, self.width, self.height)

    def _cell_of(self, idx: int) -> tuple[int, int]:
        col = min(self.gcols - 1, int(self.pos[idx, 0] * self.gcols / self.width))
        row = min(self.grows - 1, int(self.pos[idx, 1] * self.grows / self.height))
        return col, row

    def _index_of(self, eid: int) -> int:
        idx = int(np.searchsorted(self.ids, eid))
        if idx >= len(self.ids) or self.ids[idx] != eid:
            raise EntityNotFound(f"no entity {eid}", details={"entity_id": eid})
        return idx

    def _owner_of(self, eid: int) -> str | None:
        for pid, player in self.players.items():
            if player["entity_id"] == eid:
                return pid
        return None

    def _xy(self, idx: int) -> dict[str, float]:
        return {"x": float(self.pos[idx, 0]), "y": float(self.pos[idx, 1])}

    # -- state -----------------------------------------------------------------------------

    def get_state(self) -> State:
        p = self.params
        return {
            "width": self.width,
            "height": self.height,
            "max_creatures": self.max_creatures,
            "params": json.dumps(
                {f: getattr(p, f) for f in Params.__dataclass_fields__}, sort_keys=True
            ),
            "grass": self.grass,
            "ids": self.ids,
            "kind": self.kind,
            "pos": self.pos,
            "vel": self.vel,
            "energy": self.energy,
            "age": self.age,
            "target": self.target,
            "next_id": self.next_id,
            "births": self.births,
            "deaths": self.deaths,
            "players": json.dumps(self.players, sort_keys=True),
            "chat": json.dumps(self.chat, sort_keys=True),
            "rng": rng_state(self.rng),
            **({} if self.forecast is None else {"forecast": self.forecast}),
        }

    def set_state(self, state: Mapping[str, Any]) -> None:
        self.forecast = None if state.get("forecast") is None else str(state["forecast"])
        self.width = float(state["width"])
        self.height = float(state["height"])
        self.max_creatures = int(state["max_creatures"])
        self.params = Params(**json.loads(str(state["params"])))
        self.gcols = max(1, math.ceil(self.width / self.params.cell))
        self.grows = max(1, math.ceil(self.height / self.params.cell))
        self.grass = np.array(state["grass"], dtype=np.float32).reshape(self.grows, self.gcols)
        self.ids = np.array(state["ids"], dtype=np.int64)
        self.kind = np.array(state["kind"], dtype=np.int8)
        self.pos = np.array(state["pos"], dtype=np.float64).reshape(-1, 2)
        self.vel = np.array(state["vel"], dtype=np.float64).reshape(-1, 2)
        self.energy = np.array(state["energy"], dtype=np.float64)
        self.age = np.array(state["age"], dtype=np.int32)
        self.target = np.array(state["target"], dtype=np.float64).reshape(-1, 2)
        self.next_id = int(state["next_id"])
        self.births = int(state["births"])
        self.deaths = int(state["deaths"])
        self.players = json.loads(str(state["players"]))
        self.chat = json.loads(str(state["chat"]))
        self.rng = rng_from_state(str(state["rng"]))
        self._views_cache = None
        self._reindex()

    # -- what readers see ------------------------------------------------------------------

    share_published: ClassVar[bool] = True
    """Whether :meth:`view` hands its arrays over read-only, for snapshots to share rather than
    copy (``freeze_arrays``). The systems never write a published array in place: kernels
    return new arrays, and the rare in-place writes (a command, an avatar arriving) go through
    :meth:`writable`, which copies a published array first."""

    def view(self) -> dict[str, Any]:
        """The published data. Keys starting with ``_`` are private: never serialized."""
        load_later(self.kernels)  # published: recovered, in the process that ticks
        players, auth, owner = self._player_views()
        if self.share_published:
            for arr in (self.grass, self.ids, self.kind, self.pos, self.energy, self.age):
                arr.flags.writeable = False
        bucket = max(self.params.cell, self.params.flee_radius)
        return {
            "width": self.width,
            "height": self.height,
            "cell": self.params.cell,
            "grass_max": self.params.grass_max,
            "grass": self.grass,
            "entities": {
                "id": self.ids,
                "kind": self.kind,
                "pos": self.pos,
                "energy": self.energy,
                "age": self.age,
            },
            "players": players,
            "chat": [dict(line) for line in self.chat],
            "_auth": auth,
            "_owner": owner,
            # the spatial grid of these positions is built by the first reader that asks for
            # it (views.grid_of), off the loop, and only for snapshots somebody queries
            "_grid": {"bucket": bucket},
        }

    def _player_views(
        self,
    ) -> tuple[list[dict[str, Any]], dict[str, str], dict[int, str]]:
        """Reader-side player tables, rebuilt only when the set of players changes.

        Snapshots share them, so they are treated as immutable once built.
        """
        key = len(self.players)
        cached = self._views_cache
        if cached is None or cached[0] != key:
            cached = self._views_cache = (key, views.player_tables(self.players))
        return cached[1]

    def summary(self) -> dict[str, Any]:
        n = len(self.ids)
        players = len(self.players)
        return {
            "tick": self.tick,
            "entity_count": n,
            "creature_count": n - players,
            "player_count": players,
            "grass_total": round(float(self.grass.sum(dtype=np.float64)), 3),
            "births": self.births,
            "deaths": self.deaths,
            **({} if self.forecast is None else {"forecast": forecast.summary(self.forecast)}),
        }

    def scene(
        self, snapshot: Snapshot, bbox: tuple[float, float, float, float] | None, limit: int
    ) -> Scene:
        return views.region_scene(snapshot, bbox, limit)

    # -- reader hooks for the player API (worldloop.api.protocols.PlayerWorld) ----------------

    def join_command(
        self, player_id: str, name: Any, token_hash: str
    ) -> tuple[str, dict[str, Any]]:
        """The internal command that makes a player's avatar (validated like any other)."""
        return "join", {"player_id": player_id, "name": name, "token_hash": token_hash}

    def player_for_token(self, snapshot: Snapshot, token_hash: str) -> str | None:
        player_id: str | None = snapshot.data["_auth"].get(token_hash)
        return player_id

    def avatar_of(self, snapshot: Snapshot, player_id: str) -> int | None:
        player = views.players_by_id(snapshot).get(player_id)
        return None if player is None else int(player["entity_id"])

    def find_entity(self, snapshot: Snapshot, entity_id: int) -> dict[str, Any] | None:
        return views.find_entity(snapshot, entity_id)

    def page_entities(
        self,
        snapshot: Snapshot,
        bbox: tuple[float, float, float, float] | None,
        limit: int,
        after_id: int,
    ) -> tuple[list[dict[str, Any]], int | None]:
        return views.page_entities(snapshot, bbox, limit, after_id)


def _positive(value: Any, what: str) -> float:
    v = float(value)
    if not math.isfinite(v) or v <= 0:
        raise ValueError(f"{what} must be a positive number")
    return v


def create_world(config: Mapping[str, Any]) -> Meadow:
    """World factory used by the demo app (reads MEADOW_* config keys, as values or as the
    strings an environment gives; the rules' keys: :meth:`Params.from_config`)."""
    max_creatures = config.get("MEADOW_MAX_CREATURES")
    return Meadow(
        width=float(config.get("MEADOW_WIDTH", 1000.0)),
        height=float(config.get("MEADOW_HEIGHT", 1000.0)),
        entities=int(config.get("MEADOW_ENTITIES", 200)),
        seed=int(config.get("MEADOW_SEED", 0)),
        max_creatures=None if max_creatures in (None, "") else int(max_creatures),
        params=Params.from_config(config),
        kernels=str(config.get("MEADOW_KERNELS") or "numpy"),
        kernels_in_background=True,
    )
