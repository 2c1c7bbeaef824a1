"""The meadow game world: its systems, commands, determinism and reader-side views."""

from __future__ import annotations

import hashlib
import itertools
from typing import Any

import numpy as np
import orjson
import pytest

from tests.frames import layer, rows
from worldloop import Command, CommandInvalid
from worldloop.demo import views
from worldloop.demo.meadow import AVATAR, SHEEP, Meadow, Params, create_world
from worldloop.demo.spatial import SpatialGrid, torus_delta
from worldloop.demo.systems import flee
from worldloop.demo.views import find_entity, page_entities
from worldloop.snapshot import Snapshot, dumps, freeze_arrays

_seq = itertools.count(1)


def cmd(type_: str, payload: dict[str, Any], actor: str | None = None) -> Command:
    return Command(id=f"c{next(_seq)}", seq=next(_seq), type=type_, payload=payload, actor=actor)


def join(world: Meadow, name: str = "ann", pid: str | None = None) -> tuple[str, int]:
    pid = pid or hashlib.md5(name.encode()).hexdigest()
    payload = world.validate("join", {"player_id": pid, "name": name, "token_hash": "a" * 64}, None)
    (outcome,) = world.step([cmd("join", payload)])
    assert outcome.ok, outcome
    return pid, int(outcome.result["entity_id"])


def publish(world: Meadow) -> Snapshot:
    return Snapshot(world.name, world.tick, world.sim_time, freeze_arrays(world.view()))


def test_world_evolves_on_its_own() -> None:
    world = Meadow(width=300, height=300, entities=150, seed=3)
    grass0 = world.grass.copy()
    for _ in range(400):
        world.step([])
    assert world.births > 0
    assert world.deaths >= 0
    assert not np.array_equal(world.grass, grass0)
    # ids are sorted, unique, and never reused: all newborns got ids past the initial ones
    assert np.all(np.diff(world.ids) > 0)
    assert world.next_id == 151 + world.births
    assert world.summary()["creature_count"] == len(world.ids)


def test_sheep_starve_without_grass_and_ids_stay_stable() -> None:
    params = Params(grass_regrow=0.0, metabolism=0.05, breed_chance=0.0)
    world = Meadow(width=100, height=100, entities=30, seed=1, params=params)
    world.grass[...] = 0.0
    world.energy[:] = np.linspace(0.1, 1.5, 30)
    for _ in range(3):
        world.step([])
    assert world.ids.tolist() == list(range(3, 31))  # the two weakest went first
    for _ in range(40):
        world.step([])
    assert len(world.ids) == 0
    assert world.deaths == 30


def test_the_rules_come_from_config_and_stay_in_the_state() -> None:
    """MEADOW_<RULE> keys replace the default rules (the benchmarks' 100,000 sheep that never
    starve); the rules travel in the state, so a restored world keeps them."""
    config = {"MEADOW_ENTITIES": "2000", "MEADOW_WIDTH": 100, "MEADOW_HEIGHT": 100}
    starving = create_world(config)
    kept = create_world({**config, "MEADOW_METABOLISM": "0", "MEADOW_MAX_AGE": "100000"})
    assert kept.params == Params(metabolism=0.0, max_age=100_000)
    for _ in range(300):
        starving.step([])
        kept.step([])
    assert len(starving.ids) < 200  # 100 cells feed about 85 sheep
    assert len(kept.ids) >= 2000
    restored = Meadow(width=10, height=10, entities=1, seed=99)
    restored.restore(kept.full_state())
    assert restored.params == kept.params


@pytest.mark.parametrize(
    ("key", "value"),
    [("MEADOW_METABOLISM", "-1"), ("MEADOW_BITE", "nan"), ("MEADOW_MAX_AGE", "1.5")],
)
def test_a_bad_rule_in_config_is_refused(key: str, value: str) -> None:
    with pytest.raises(ValueError, match=key):
        create_world({key: value})


def test_grazing_moves_grass_into_energy() -> None:
    params = Params(grass_regrow=0.0, metabolism=0.0, breed_chance=0.0, wander=0.0)
    world = Meadow(width=20, height=20, entities=2, seed=0, params=params)
    world.vel[:] = 0.0
    world.pos[:] = [[5.0, 5.0], [5.5, 5.5]]  # same cell: they share it
    world.grass[...] = 0.06
    e0 = world.energy.copy()
    world.step([])
    eaten = world.energy - e0
    assert np.allclose(eaten, 0.03 * params.food_energy)  # 0.06 split between two sheep
    assert world.grass[0, 0] == pytest.approx(0.0, abs=1e-6)
    assert world.grass[1, 1] == pytest.approx(0.06, abs=1e-6)


def test_breeding_adds_children_with_fresh_ids_and_half_energy() -> None:
    params = Params(breed_chance=1.0, metabolism=0.0, grass_regrow=0.0, bite=0.0)
    world = Meadow(width=50, height=50, entities=4, seed=2, params=params, max_creatures=6)
    world.energy[:] = 4.0
    world.step([])
    assert len(world.ids) == 6  # capped by max_creatures
    assert world.ids.tolist() == [1, 2, 3, 4, 5, 6]
    assert world.energy.tolist() == [2.0, 2.0, 4.0, 4.0, 2.0, 2.0]


def test_same_state_and_commands_give_the_same_hash() -> None:
    a = create_world({"MEADOW_SEED": 7, "MEADOW_ENTITIES": 300})
    b = create_world({"MEADOW_SEED": 7, "MEADOW_ENTITIES": 300})
    c = create_world({"MEADOW_SEED": 8, "MEADOW_ENTITIES": 300})
    assert a.state_hash() == b.state_hash() != c.state_hash()
    pid_a, eid_a = join(a)
    pid_b, eid_b = join(b)
    assert (pid_a, eid_a) == (pid_b, eid_b)
    script = [
        [cmd("move_to", {"x": 10.0, "y": 900.0}, pid_a)],
        [],
        [cmd("say", {"text": "hello"}, pid_a), cmd("plant", {}, pid_a)],
    ]
    for batch in script * 20:
        a.step(batch)
        b.step(batch)
    assert a.state_hash() == b.state_hash()
    b.step([])
    assert a.state_hash() != b.state_hash()


def test_state_round_trip_continues_identically() -> None:
    a = Meadow(width=400, height=300, entities=200, seed=11)
    pid, _ = join(a)
    for _ in range(50):
        a.step([cmd("move_to", {"x": 1.0, "y": 2.0}, pid)])
    b = Meadow(width=10, height=10, entities=1, seed=99)
    b.restore(
        {k: (v.copy() if isinstance(v, np.ndarray) else v) for k, v in a.full_state().items()}
    )
    assert b.state_hash() == a.state_hash()
    for _ in range(30):
        a.step([])
        b.step([])
    assert b.state_hash() == a.state_hash()
    assert b.players == a.players


def test_player_commands_act_only_on_own_avatar() -> None:
    world = Meadow(width=200, height=200, entities=10, seed=4)
    ann, ann_eid = join(world, "ann")
    _bob, bob_eid = join(world, "bob")
    out = world.step(
        [
            cmd("move_to", {"x": 5.0, "y": 5.0, "entity_id": bob_eid}, ann),
            cmd("stop", {"entity_id": 1}, ann),
            cmd("move_to", {"x": 5.0, "y": 5.0}, "0" * 32),
            cmd("move_to", {"x": 50.0, "y": 60.0, "entity_id": ann_eid}, ann),
        ]
    )
    assert [o.error_code for o in out] == ["forbidden", "forbidden", "not_found", None]
    idx_bob = int(np.searchsorted(world.ids, bob_eid))
    assert np.isnan(world.target[idx_bob]).all()
    idx = int(np.searchsorted(world.ids, ann_eid))
    assert world.target[idx].tolist() == [50.0, 60.0]


def test_avatar_walks_to_its_target_and_stops() -> None:
    world = Meadow(width=200, height=200, entities=0, seed=5)
    pid, eid = join(world)
    world.step([cmd("move_to", {"x": 190.0, "y": 10.0}, pid)])
    for _ in range(200):
        world.step([])
    idx = int(np.searchsorted(world.ids, eid))
    assert world.pos[idx].tolist() == [190.0, 10.0]
    assert np.isnan(world.target[idx]).all()
    assert world.kind[idx] == AVATAR


def test_plant_is_rejected_on_full_grass_and_say_is_kept() -> None:
    world = Meadow(width=100, height=100, entities=0, seed=6)
    pid, _ = join(world)
    world.grass[...] = 0.1
    ok, full = world.step([cmd("plant", {}, pid), cmd("plant", {}, pid)])
    assert ok.ok and ok.result["grass"] == pytest.approx(0.6, abs=1e-6)
    assert full.ok  # 0.6 -> 1.0 (capped)
    (rejected,) = world.step([cmd("plant", {}, pid)])
    assert not rejected.ok and rejected.error_code == "command_rejected"
    assert rejected.error_details and rejected.error_details["reason"] == "cell_full"
    world.step([cmd("say", {"text": "baa"}, pid)])
    assert world.chat[-1]["text"] == "baa" and world.chat[-1]["player_id"] == pid


@pytest.mark.parametrize(
    ("type_", "payload", "actor"),
    [
        ("fly", {}, "p"),
        ("join", {"player_id": "a" * 32, "name": "x", "token_hash": "b" * 64}, "p"),
        ("move", {"entity_id": 1, "vx": 1, "vy": 1}, "p"),
        ("move_to", {"x": "1", "y": 2}, "p"),
        ("move_to", {"x": float("nan"), "y": 2}, "p"),
        ("move_to", {"x": 1e12, "y": 2}, "p"),
        ("move_to", {"x": 1, "y": 2, "entity_id": True}, "p"),
        ("move_to", {"x": 1, "y": 2, "entity_id": -3}, "p"),
        ("say", {"text": ""}, "p"),
        ("say", {"text": "x" * 201}, "p"),
        ("say", {"text": 5}, "p"),
        ("join", {"player_id": "A" * 32, "name": "x", "token_hash": "b" * 64}, None),
        ("join", {"player_id": "a" * 32, "name": " ", "token_hash": "b" * 64}, None),
        ("join", {"player_id": "a" * 32, "name": "x" * 33, "token_hash": "b" * 64}, None),
        ("join", {"player_id": "a" * 32, "name": "x", "token_hash": "short"}, None),
    ],
)
def test_validation_rejects_bad_commands(type_: str, payload: dict[str, Any], actor: Any) -> None:
    world = Meadow(width=10, height=10, entities=1)
    with pytest.raises(CommandInvalid):
        world.validate(type_, payload, actor)


def test_spatial_grid_matches_brute_force() -> None:
    rng = np.random.default_rng(0)
    pos = rng.uniform(0, 1, (5000, 2)) * [300.0, 200.0]
    grid = SpatialGrid.build(pos, 300.0, 200.0, 10.0)
    for x, y, r in [(150, 100, 25), (2, 3, 30), (299, 199, 12), (0, 100, 60)]:
        got = np.sort(grid.query_radius(pos, x, y, r))
        d = torus_delta(pos, np.array([x, y]), 300.0, 200.0)
        want = np.flatnonzero(np.hypot(d[:, 0], d[:, 1]) <= r)
        assert got.tolist() == want.tolist()
    box = grid.query_bbox(40, 50, 120, 90)
    inside = (pos[:, 0] >= 40) & (pos[:, 0] < 120) & (pos[:, 1] >= 50) & (pos[:, 1] < 90)
    assert set(np.flatnonzero(inside).tolist()) <= set(box.tolist())
    assert len(box) < len(pos) / 3


def test_reseed_grass_is_deterministic() -> None:
    a, b = (
        Meadow(width=100, height=100, entities=5, seed=3),
        Meadow(width=100, height=100, entities=5, seed=3),
    )
    total = a.reseed_grass()
    assert total == b.reseed_grass() == pytest.approx(float(a.grass.sum()))
    assert a.state_hash() == b.state_hash()
    assert (a.grass >= 0.5).all()


def test_sheep_flee_from_a_nearby_avatar() -> None:
    params = Params(wander=0.0, flee_push=4.0)
    world = Meadow(width=200, height=200, entities=1, seed=0, params=params)
    _pid, eid = join(world)
    a = int(np.searchsorted(world.ids, eid))
    world.pos[0] = world.pos[a] + [5.0, 0.0]
    world.vel[0] = 0.0
    world._reindex()
    x_before = world.pos[0, 0]
    world.step([])
    assert world.pos[0, 0] > x_before  # pushed away (+x)


def test_a_whole_world_view_needs_no_spatial_grid(monkeypatch: pytest.MonkeyPatch) -> None:
    """A frame of everything (no bbox: the viewer's default, the gateway's per-tick build)
    takes every row as it is; building the snapshot's spatial grid for it cost ~5 ms a tick
    at 100,000 creatures. It draws what the whole world's box draws."""
    world = Meadow(width=500, height=400, entities=400, seed=9)
    world.step([])
    snap = publish(world)
    whole = orjson.loads(dumps(world.view_region(snap, (0.0, 0.0, 500.0, 400.0), 50)))

    def no_grid(_snap: Snapshot) -> None:
        raise AssertionError("a whole-world frame built the spatial grid")

    monkeypatch.setattr(views, "grid_of", no_grid)
    frame = orjson.loads(dumps(world.view_region(snap, None, 50)))
    assert layer(frame, "sheep") == layer(whole, "sheep")
    assert layer(frame, "sheep")["total_in_view"] == 400


def test_reader_views_of_a_snapshot() -> None:
    world = Meadow(width=500, height=400, entities=400, seed=9)
    pid, eid = join(world, "ann")
    world.step([cmd("say", {"text": "hi all"}, pid)])
    snap = publish(world)
    world.step([])  # the live world moves on; the snapshot must not
    frame = orjson.loads(dumps(world.view_region(snap, None, 50)))
    assert frame["tick"] == snap.tick
    assert frame["world"] == {"width": 500.0, "height": 400.0}
    assert frame["bbox"] == [0.0, 0.0, 500.0, 400.0]
    g = frame["grid"]
    assert g["kind"] == "grass"
    assert g["rows"] * g["cols"] == len(g["levels"]) <= 16384
    assert all(0 <= v <= 255 for v in g["levels"])
    cr = layer(frame, "sheep")
    assert len(cr["id"]) == 50 and cr["total_in_view"] == 400
    assert all(0 <= s <= 1 for s in cr["shade"])
    (me_row,) = rows(frame, "avatar")
    assert me_row == {
        "id": eid,
        "label": "ann",
        "x": pytest.approx(me_row["x"]),
        "y": pytest.approx(me_row["y"]),
        "say": "hi all",
    }
    assert frame["panel"]["stats"]["sheep"] == 400 and frame["panel"]["plot_title"]
    part = orjson.loads(dumps(world.view_region(snap, (0.0, 0.0, 100.0, 100.0), 10_000)))
    xs, ys = np.array(layer(part, "sheep")["x"]), np.array(layer(part, "sheep")["y"])
    assert (xs <= 100.0).all() and (ys <= 100.0).all()
    ents = snap.data["entities"]
    in_box = (ents["pos"][:, 0] < 100) & (ents["pos"][:, 1] < 100) & (ents["kind"] == SHEEP)
    assert layer(part, "sheep")["total_in_view"] == int(in_box.sum())
    # paging through a bbox by id sees every entity exactly once
    seen: list[int] = []
    after = 0
    while True:
        items, nxt = page_entities(snap, (0.0, 0.0, 250.0, 400.0), 37, after)
        seen += [i["id"] for i in items]
        if nxt is None:
            break
        after = nxt
    want = ents["id"][(ents["pos"][:, 0] < 250.0)].tolist()
    assert seen == want
    me = find_entity(snap, eid)
    assert me is not None and me["kind"] == "avatar" and me["player_id"] == pid
    assert find_entity(snap, 10**9) is None
    board = Meadow.leaderboard(snap, 5)
    energy = dict(zip(ents["id"].tolist(), ents["energy"].tolist(), strict=True))
    assert [b["rank"] for b in board] == [1, 2, 3, 4, 5]
    assert [b["score"] for b in board] == sorted(
        (round(e, 3) for e in energy.values()), reverse=True
    )[:5]
    assert all(energy[b["entity_id"]] == pytest.approx(b["score"], abs=1e-3) for b in board)
    # private keys never reach the serialized snapshot
    body = snap.to_json()
    assert b"token_hash" not in body and b"_auth" not in body and b"a" * 64 not in body


def test_pairs_within_matches_brute_force_for_many_centers() -> None:
    rng = np.random.default_rng(1)
    for w, h, bucket, r in [
        (300.0, 200.0, 25.0, 25.0),
        (60.0, 40.0, 25.0, 25.0),
        (500.0, 500.0, 10.0, 33.0),
    ]:
        pos = rng.uniform(0, 1, (3000, 2)) * [w, h]
        centers = rng.uniform(0, 1, (40, 2)) * [w, h]
        grid = SpatialGrid.build(pos, w, h, bucket)
        who, idx, d = grid.pairs_within(pos, centers, r)
        got = sorted(zip(who.tolist(), idx.tolist(), strict=True))
        want = []
        for c in range(len(centers)):
            dd = torus_delta(pos, centers[c], w, h)
            want += [(c, int(i)) for i in np.flatnonzero(np.hypot(dd[:, 0], dd[:, 1]) <= r)]
        assert got == sorted(want)
        # the very bits of the reference displacement (the state hash depends on them), in
        # center order (the order a sheep near two avatars is pushed in)
        assert np.array_equal(d, torus_delta(pos[idx], centers[who], w, h))
        assert (np.diff(who) >= 0).all()


def test_flee_pushes_by_the_same_bits_as_the_reference_formulation() -> None:
    """systems.flee works one axis at a time (a third of the time at 200 avatars among 100k
    sheep); the pushes must be the n x 2 formulation's, bit for bit, sheep near several
    avatars included, or a journal written before replays to another state."""
    world = create_world({"MEADOW_ENTITIES": 3000, "MEADOW_WIDTH": 300, "MEADOW_HEIGHT": 200})
    for i in range(40):  # crowded: many sheep are near two avatars or more
        join(world, name=f"p{i}")
    world.step([])
    avatars = world._avatars
    before = world.vel.copy()
    _who, near, d = world.grid.pairs_within(world.pos, world.pos[avatars], world.params.flee_radius)
    sheep = world.kind[near] == SHEEP
    near, d = near[sheep], d[sheep]
    assert len(near) > len(np.unique(near))  # some sheep are pushed twice
    dist = np.maximum(np.hypot(d[:, 0], d[:, 1]), 1e-6)
    want = before.copy()
    np.add.at(want, near, d * (world.params.flee_push / dist)[:, None])
    flee(world)
    assert np.array_equal(world.vel, want)


def test_the_demo_population_moves_and_stays_under_its_cap_for_a_minute() -> None:
    """Issue 16: the default ecology tells a story on the plot (no flat line at a cap)."""
    world = create_world({})
    counts = []
    for tick in range(1, 1201):  # one minute at the default 20 Hz
        world.step([])
        if tick % 100 == 0:
            counts.append(len(world.ids))
    assert max(counts) < world.max_creatures
    assert max(counts) > 1.5 * 200  # it grows...
    assert len(set(counts)) == len(counts)  # ...and never sits still
