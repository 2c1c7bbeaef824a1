"""The binary frame encoding (worldloop.frame_binary): keyframes and chains of deltas decode to
exactly the frame a keyframe of the same tick gives, and that frame is the scene, quantized."""

from __future__ import annotations

import math
import struct
from typing import Any

import numpy as np
import pytest

from worldloop import frame_binary as fb
from worldloop.frame import Grid, Layer, Panel, Scene, Series

W, H = 800.0, 600.0


def _scene(rng: np.random.Generator, ids: np.ndarray, grid: np.ndarray, talk: str) -> Scene:
    n = ids.size
    sheep = Layer(
        "sheep",
        rng.uniform(0, W, n),
        rng.uniform(0, H, n),
        id=ids,
        heading=rng.uniform(-4 * math.pi, 4 * math.pi, n),
        shade=rng.uniform(0, 1, n),
        color="#f2c14e",
        total=n + 5,
    )
    birds = Layer("bird", rng.uniform(0, W, 3), rng.uniform(0, H, 3), size=2.0)
    avatar = Layer("avatar", [10.0], [20.0], id=[7], label=["ann"], say=[talk], size=7.0)
    panel = Panel({"sheep": n}, (Series("sheep", float(n), "#fff"),), "population", "count")
    return Scene(W, H, (sheep, birds, avatar), Grid(grid, 10.0), panel, (0, 0, W, H))


def _frames(count: int) -> list[tuple[fb.FrameState, Scene]]:
    """A world in motion: everyone moves, some are born and some die, the grid changes now and
    then, and once it changes shape."""
    rng = np.random.default_rng(3)
    ids = np.arange(100, 400)
    grid = rng.integers(0, 256, (60, 80), dtype=np.uint8)
    out = []
    for tick in range(count):
        if tick % 3 == 1:  # deaths and births: the ids change
            ids = np.sort(
                np.concatenate(
                    [
                        rng.choice(ids, ids.size - 7, replace=False),
                        np.arange(1000 + 10 * tick, 1005 + 10 * tick),
                    ]
                )
            )
        if tick % 4 == 2:
            grid = grid.copy()
            grid[rng.integers(0, grid.shape[0], 30), rng.integers(0, grid.shape[1], 30)] += 1
        if tick == 9:
            grid = rng.integers(0, 256, (30, 40), dtype=np.uint8)
        scene = _scene(rng, ids, grid, f"hello {tick}")
        stats = {"rate_hz": 20.0, "ticks": tick}
        state = fb.frame_state(tick, tick * 0.05, {"tick": tick}, scene, stats)
        out.append((state, scene))
    return out


def _same(a: fb.FrameState, b: fb.FrameState) -> None:
    assert (a.tick, a.meta, a.bounds, a.bbox, a.grid_shape) == (
        b.tick,
        b.meta,
        b.bounds,
        b.bbox,
        b.grid_shape,
    )
    assert len(a.layers) == len(b.layers)
    for la, lb in zip(a.layers, b.layers, strict=True):
        for col in ("x", "y", "id", "heading", "shade"):
            va, vb = getattr(la, col), getattr(lb, col)
            assert (va is None) == (vb is None), col
            if va is not None:
                np.testing.assert_array_equal(va, vb, err_msg=col)
    np.testing.assert_array_equal(a.grid, b.grid)


def test_a_keyframe_gives_back_the_scene_quantized() -> None:
    state, scene = _frames(1)[0]
    got = fb.decode(fb.encode(state)).frame
    assert got["tick"] == 0 and got["summary"] == {"tick": 0} and got["stats"]["rate_hz"] == 20.0
    assert got["world"] == {"width": W, "height": H} and got["bbox"] == [0, 0, W, H]
    sheep, birds, avatar = got["layers"]
    src = scene.layers[0]
    assert (
        sheep["kind"] == "sheep" and sheep["total_in_view"] == 305 and sheep["color"] == "#f2c14e"
    )
    np.testing.assert_allclose(sheep["x"], src.x, atol=W / fb.Q)
    np.testing.assert_allclose(sheep["y"], src.y, atol=H / fb.Q)
    np.testing.assert_array_equal(sheep["id"], src.id)
    turn = np.angle(np.exp(1j * (sheep["heading"] - np.asarray(src.heading))))
    np.testing.assert_allclose(turn, 0, atol=2 * math.pi / fb.TURN)
    np.testing.assert_allclose(sheep["shade"], src.shade, atol=1 / 255)
    assert "id" not in birds and birds["size"] == 2.0
    assert avatar["label"] == ["ann"] and avatar["say"] == ["hello 0"]
    assert got["grid"]["rows"] == 60 and got["grid"]["cols"] == 80 and got["grid"]["kind"] == "grid"
    np.testing.assert_array_equal(got["grid"]["levels"], np.asarray(scene.grid.levels).ravel())  # type: ignore[union-attr]
    assert got["panel"]["plots"][0]["label"] == "sheep"


@pytest.mark.parametrize("deflate", [True, False])
def test_a_chain_of_deltas_reproduces_every_keyframe(deflate: bool) -> None:
    frames = _frames(14)
    held = fb.decode(fb.encode(frames[0][0], deflate=deflate))
    for state, _ in frames[1:]:
        delta = fb.encode(state, held.state, deflate=deflate)
        assert fb.body_of(delta)[0] == fb.DELTA
        held = fb.decode(delta, held)
        _same(held.state, fb.decode(fb.encode(state)).state)


def test_deltas_skip_frames_and_leave_out_an_unchanged_grid() -> None:
    frames = _frames(8)
    base = fb.decode(fb.encode(frames[2][0]))
    later = fb.decode(fb.encode(frames[5][0], base.state), base)  # a client that skipped 3, 4
    _same(later.state, frames[5][0])
    same_grid = fb.body_of(fb.encode(frames[4][0], frames[3][0]))  # grid changed at 2 and 6
    assert same_grid.endswith(struct.pack("<BBHII", fb.GRID_SAME, 0, 0, 60, 80))
    changed = fb.body_of(fb.encode(frames[6][0], frames[5][0]))
    assert changed[-12 - 60 * 80 :][:12] == struct.pack("<BBHII", fb.GRID_DIFF, 0, 0, 60, 80)
    assert np.count_nonzero(np.frombuffer(changed[-60 * 80 :], np.uint8)) <= 30


def test_a_delta_needs_its_base() -> None:
    frames = _frames(3)
    delta = fb.encode(frames[2][0], frames[1][0])
    with pytest.raises(fb.DeltaBaseError):
        fb.decode(delta)
    with pytest.raises(fb.DeltaBaseError):
        fb.decode(delta, fb.decode(fb.encode(frames[0][0])))


def test_deflate_pays_on_deltas_of_a_slow_world() -> None:
    rng = np.random.default_rng(1)
    ids = np.arange(2000)
    x, y = rng.uniform(0, W, 2000), rng.uniform(0, H, 2000)
    grid = rng.integers(0, 256, (60, 80), dtype=np.uint8)
    states = []
    for tick in range(2):
        x = np.clip(x + rng.normal(0, 0.02, 2000), 0, W)
        y = np.clip(y + rng.normal(0, 0.02, 2000), 0, H)
        scene = Scene(W, H, (Layer("sheep", x, y, id=ids),), Grid(grid, 10.0))
        states.append(fb.frame_state(tick, 0.0, {}, scene))
    raw = fb.encode(states[1], states[0], deflate=False)
    packed = fb.encode(states[1], states[0])
    assert fb.decode(packed, fb.decode(fb.encode(states[0]))).state.tick == 1
    assert len(packed) < len(raw) / 2, (len(packed), len(raw))


def test_a_world_without_a_scene_still_has_its_tick_and_summary() -> None:
    state = fb.frame_state(5, 0.25, {"count": 3}, None)
    got: dict[str, Any] = fb.decode(fb.encode(state)).frame
    assert got == {"tick": 5, "sim_time": 0.25, "summary": {"count": 3}}


def test_ids_beyond_int32_are_refused() -> None:
    scene = Scene(W, H, (Layer("big", [1.0], [1.0], id=[2**40]),))
    with pytest.raises(ValueError, match="int32"):
        fb.frame_state(0, 0.0, {}, scene)
