"""Reader-side queries over a published meadow snapshot: scenes, entity pages, single entities.

Everything here runs on request or stream threads and reads only the frozen ``snapshot.data``
that ``Meadow.view()`` produced, never the live world.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from numpy.typing import NDArray

from ..frame import Grid, Layer, Panel, Scene, Series, clip_box
from ..snapshot import Snapshot
from .kernels import reader_grid_sort
from .spatial import SpatialGrid

MAX_GRASS_CELLS = 16384
KINDS = ("sheep", "avatar")
SHEEP_COLOR = "#f2c14e"
AVATAR_COLOR = "#ff5a7a"


def player_tables(
    players: dict[str, dict[str, Any]],
) -> tuple[list[dict[str, Any]], dict[str, str], dict[int, str]]:
    """What a snapshot publishes of the world's players: the public list (by player id), and
    who holds each token hash and owns each entity (for the API's auth and avatars)."""
    public = [
        {
            "player_id": pid,
            "name": p["name"],
            "entity_id": int(p["entity_id"]),
            "joined_tick": int(p["joined_tick"]),
        }
        for pid, p in sorted(players.items())
    ]
    auth = {p["token_hash"]: pid for pid, p in players.items()}
    owner = {int(p["entity_id"]): pid for pid, p in players.items()}
    return public, auth, owner


def grid_of(snapshot: Snapshot) -> SpatialGrid:
    """The snapshot's spatial grid, built once per snapshot by its first reader that needs it
    (the world publishes only the bucket size: most snapshots are never queried by region),
    on the reader's thread (:func:`~.kernels.reader_grid_sort`).
    """

    def build(s: Snapshot) -> SpatialGrid:
        pos = s.data["entities"]["pos"]
        width, height = float(s.data["width"]), float(s.data["height"])
        bucket = float(s.data["_grid"]["bucket"])
        return SpatialGrid.build(pos, width, height, bucket, reader_grid_sort())

    return snapshot.cached("meadow:grid", build)


def in_bbox(snapshot: Snapshot, bbox: tuple[float, float, float, float] | None) -> NDArray[np.intp]:
    """Array rows of the entities inside ``bbox`` (half-open, world coordinates), in id order."""
    ents = snapshot.data["entities"]
    pos = ents["pos"]
    if bbox is None:
        return np.arange(len(ents["id"]))
    x0, y0, x1, y1 = bbox
    cand = grid_of(snapshot).query_bbox(x0, y0, x1, y1)
    p = pos[cand]
    inside = (p[:, 0] >= x0) & (p[:, 0] < x1) & (p[:, 1] >= y0) & (p[:, 1] < y1)
    rows = np.sort(cand[inside]).astype(np.intp)
    return rows


def entity_dict(snapshot: Snapshot, row: int) -> dict[str, Any]:
    """The public record of the entity at array ``row``."""
    ents = snapshot.data["entities"]
    eid = int(ents["id"][row])
    kind = int(ents["kind"][row])
    out: dict[str, Any] = {
        "id": eid,
        "kind": KINDS[kind] if 0 <= kind < len(KINDS) else "unknown",
        "x": float(ents["pos"][row, 0]),
        "y": float(ents["pos"][row, 1]),
        "energy": float(ents["energy"][row]),
        "age": int(ents["age"][row]),
        "player_id": None,
        "name": None,
    }
    pid = snapshot.data["_owner"].get(eid)
    if pid is not None:
        out["player_id"] = pid
        out["name"] = players_by_id(snapshot)[pid]["name"]
    return out


def players_by_id(snapshot: Snapshot) -> dict[str, dict[str, Any]]:
    return snapshot.cached(
        "meadow:players", lambda s: {p["player_id"]: p for p in s.data["players"]}
    )


def find_entity(snapshot: Snapshot, entity_id: int) -> dict[str, Any] | None:
    ids = snapshot.data["entities"]["id"]
    row = int(np.searchsorted(ids, entity_id))
    if row >= len(ids) or int(ids[row]) != entity_id:
        return None
    return entity_dict(snapshot, row)


def page_entities(
    snapshot: Snapshot,
    bbox: tuple[float, float, float, float] | None,
    limit: int,
    after_id: int,
) -> tuple[list[dict[str, Any]], int | None]:
    """Entities in ``bbox`` with id > ``after_id`` by id, at most ``limit``; and the next cursor.

    Without a box the page is a slice of the id-ordered arrays: no index of every entity is
    made per request (at 100k entities that was most of the request)."""
    ids = snapshot.data["entities"]["id"]
    if bbox is None:
        total = len(ids)
        start = int(np.searchsorted(ids, after_id, side="right"))
        chosen = np.arange(start, min(start + limit, total))
    else:
        rows = in_bbox(snapshot, bbox)
        total = len(rows)
        start = int(np.searchsorted(ids[rows], after_id, side="right"))
        chosen = rows[start : start + limit]
    items = entity_dicts(snapshot, chosen)
    more = start + limit < total
    return items, (items[-1]["id"] if more and items else None)


def entity_dicts(snapshot: Snapshot, rows: NDArray[np.intp]) -> list[dict[str, Any]]:
    """:func:`entity_dict` of each of ``rows``, gathered a column at a time (one NumPy call
    per field for the whole page, not one per field per entity)."""
    ents = snapshot.data["entities"]
    pos = ents["pos"][rows]
    columns = zip(
        ents["id"][rows].tolist(),
        ents["kind"][rows].tolist(),
        pos[:, 0].tolist(),
        pos[:, 1].tolist(),
        ents["energy"][rows].tolist(),
        ents["age"][rows].tolist(),
        strict=True,
    )
    owner = snapshot.data["_owner"]
    items = []
    for eid, kind, x, y, energy, age in columns:
        out: dict[str, Any] = {
            "id": eid,
            "kind": KINDS[kind] if 0 <= kind < len(KINDS) else "unknown",
            "x": x,
            "y": y,
            "energy": energy,
            "age": age,
            "player_id": None,
            "name": None,
        }
        pid = owner.get(eid)
        if pid is not None:
            out["player_id"] = pid
            out["name"] = players_by_id(snapshot)[pid]["name"]
        items.append(out)
    return items


def leaderboard(snapshot: Snapshot, limit: int = 10) -> list[dict[str, Any]]:
    """Entities ranked by energy (ties by id), best first, at most ``limit``."""
    ents = snapshot.data["entities"]
    energy = ents["energy"]
    top = np.lexsort((ents["id"], -energy))[: max(0, int(limit))]
    return [
        {
            "rank": r + 1,
            "entity_id": int(ents["id"][i]),
            "kind": KINDS[int(ents["kind"][i])],
            "score": round(float(energy[i]), 3),
        }
        for r, i in enumerate(top.tolist())
    ]


def region_scene(
    snapshot: Snapshot, bbox: tuple[float, float, float, float] | None, limit: int
) -> Scene:
    """What the viewer draws (the frame protocol): grass as a grid, sheep, then avatars."""
    data = snapshot.data
    w, h = float(data["width"]), float(data["height"])
    box = clip_box(bbox, w, h)
    x0, y0, x1, y1 = box
    rows = in_bbox(snapshot, None if bbox is None else box)  # None: everyone, no spatial grid
    ents = data["entities"]
    creature_rows = rows[ents["kind"][rows] == 0]
    total = int(creature_rows.size)
    limit = max(0, int(limit))
    if total > limit:
        pick = np.linspace(0, total - 1, limit).astype(np.intp)
        creature_rows = creature_rows[pick]
    pos = ents["pos"][creature_rows]
    energy = ents["energy"][creature_rows]
    top = float(energy.max()) if energy.size else 0.0
    recent = snapshot.tick - 100
    last_say: dict[str, str] = {}
    for line in data["chat"]:
        if line["tick"] >= recent and line["player_id"] is not None:
            last_say[line["player_id"]] = line["text"]
    ids = ents["id"]
    avatars: list[tuple[int, float, float, str, str | None]] = []
    for p in data["players"]:
        row = int(np.searchsorted(ids, p["entity_id"]))
        if row >= len(ids) or ids[row] != p["entity_id"]:
            continue
        px, py = float(ents["pos"][row, 0]), float(ents["pos"][row, 1])
        if (x0 <= px < x1 and y0 <= py < y1) or (bbox is None):
            avatars.append((int(p["entity_id"]), px, py, p["name"], last_say.get(p["player_id"])))
    summary = snapshot.summary
    sheep = Layer(
        "sheep",
        pos[:, 0],
        pos[:, 1],
        id=ids[creature_rows],
        color=SHEEP_COLOR,
        shade=energy / top if top > 0 else None,
        total=total,
    )
    avatar = Layer(
        "avatar",
        [a[1] for a in avatars],
        [a[2] for a in avatars],
        id=[a[0] for a in avatars],
        label=[a[3] for a in avatars],
        say=[a[4] for a in avatars],
        color=AVATAR_COLOR,
        size=7.0,
    )
    panel = Panel(
        stats={
            "sheep": summary.get("creature_count", total),
            "sheep in view": total,
            "players": summary.get("player_count", len(avatars)),
            "grass": round(float(summary.get("grass_total", 0.0))),
            "births": summary.get("births", 0),
            "deaths": summary.get("deaths", 0),
        },
        plots=(
            Series("sheep", float(summary.get("creature_count", total)), SHEEP_COLOR),
            Series("players", float(summary.get("player_count", len(avatars))), AVATAR_COLOR),
        ),
        plot_title="population",
        plot_unit="count",
    )
    return Scene(
        w,
        h,
        layers=(sheep, avatar),
        grid=_grass_levels(data, box),
        panel=panel,
        bbox=box,
        background="#3a2e1e",
    )


def _grass_levels(data: Any, box: tuple[float, float, float, float]) -> Grid:
    """Grass of the region as 0..255 levels, block-averaged so rows*cols <= MAX_GRASS_CELLS."""
    grass: NDArray[np.float32] = data["grass"]
    cell = float(data["cell"])
    x0, y0, x1, y1 = box
    gr, gc = grass.shape
    c0, c1 = int(x0 // cell), min(gc, max(int(x0 // cell) + 1, math.ceil(x1 / cell)))
    r0, r1 = int(y0 // cell), min(gr, max(int(y0 // cell) + 1, math.ceil(y1 / cell)))
    c0, r0 = min(c0, gc - 1), min(r0, gr - 1)
    sub = grass[r0:r1, c0:c1]
    f = 1
    while math.ceil(sub.shape[0] / f) * math.ceil(sub.shape[1] / f) > MAX_GRASS_CELLS:
        f += 1
    rows, cols = math.ceil(sub.shape[0] / f), math.ceil(sub.shape[1] / f)
    if f > 1:
        padded = np.full((rows * f, cols * f), np.nan, dtype=np.float32)
        padded[: sub.shape[0], : sub.shape[1]] = sub
        sub = np.nanmean(padded.reshape(rows, f, cols, f), axis=(1, 3))
    scale = 255.0 / float(data.get("grass_max", 1.0) or 1.0)
    levels = np.clip(np.round(sub * scale), 0, 255).astype(np.uint8)
    return Grid(levels, cell * f, c0 * cell, r0 * cell, kind="grass")
