"""The viewer in real headless Chromium draws from the gateway's WebSocket of binary frames
(gunicorn, its runner and the gateway the runner starts, as in tests/test_gateway.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.browser import ARTIFACTS
from tests.support import Server, gateway_server

pytestmark = [pytest.mark.browser, pytest.mark.slow]

sync_api = pytest.importorskip("playwright.sync_api")


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Server]:
    env = {"WORLDLOOP_FRAME_KEYFRAME_EVERY": "10"}
    with gateway_server(tmp_path, workers=1, env=env) as (srv, _):
        yield srv


def test_the_viewer_draws_binary_frames_from_the_websocket(page: Any, served: Server) -> None:
    page.goto(served.base + "/")
    page.wait_for_function(
        "() => window.worldloopViewer && window.worldloopViewer.transport === 'websocket'"
    )
    # Past a periodic keyframe (every 10 frames here): deltas applied on keyframes and deltas.
    page.wait_for_function(
        "() => { const s = window.worldloopViewer.binaryStats;"
        " return s && s.frames >= 25 && s.keyframes >= 2; }",
        timeout=60_000,
    )
    got = page.evaluate(
        """() => {
          const v = window.worldloopViewer, f = v.frame, s = v.binaryStats;
          const sheep = v.layer('sheep');
          const c = document.getElementById('map');
          const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
          const seen = new Set();
          for (let i = 0; i < d.length; i += 4 * 97) seen.add(d[i] + ',' + d[i+1] + ',' + d[i+2]);
          return {
            typed: sheep.x instanceof Float32Array && sheep.id instanceof Int32Array,
            n: sheep.x.length, ids: sheep.id.length, total: sheep.total_in_view,
            inside: Array.from(sheep.x).every((x) => x >= 0 && x <= f.world.width),
            grid: f.grid.levels.length === f.grid.rows * f.grid.cols,
            frames: s.frames, keyframes: s.keyframes, drawn: v.framesDrawn,
            colors: seen.size, tick: Number(document.getElementById('tick').textContent),
            frameTick: f.tick, running: document.getElementById('paused').textContent,
          };
        }"""
    )
    assert got["typed"] and got["inside"] and got["grid"]
    assert 0 < got["n"] == got["ids"] <= got["total"]
    assert got["frames"] > got["keyframes"]  # deltas were decoded, not only keyframes
    assert got["drawn"] >= got["frames"] - 1
    assert got["colors"] > 50  # grass shades and sheep drawn on the canvas
    assert got["tick"] == got["frameTick"] and got["running"] == "running"
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "viewer-websocket.png"))
