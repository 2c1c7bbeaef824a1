"""Worlds other than meadow in the viewer (real headless Chromium): the boids example drawn
through the frame protocol, and a world that draws nothing still showing its loop."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.browser import ARTIFACTS
from tests.support import ROOT, SRC, Server, flask_argv, running_server
from tests.test_viewer_browser import open_viewer

pytestmark = [pytest.mark.browser, pytest.mark.slow]

COUNT_COLORS = """() => {
  const c = document.getElementById('map');
  const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
  let n = 0;
  for (let i = 0; i < d.length; i += 4) if (d[i] > 200 && d[i + 1] > 150 && d[i + 2] < 120) n++;
  return n;
}"""
"""Pixels in the default first-layer colour (#f2c14e, a warm yellow) on the map."""


def serve(app: str, tmp_path: Path, name: str) -> Any:
    env = {"PYTHONPATH": os.pathsep.join([str(SRC), str(ROOT)]), "WORLDLOOP_RATE_HZ": "20"}
    argv = flask_argv()
    argv[argv.index("worldloop.demo:create_app")] = app
    return running_server(argv, tmp_path, env=env, name=name)


@pytest.fixture
def boids(tmp_path: Path) -> Iterator[Server]:
    with serve("examples.boids:create_app", tmp_path, "boids") as srv:
        yield srv


@pytest.fixture
def bare(tmp_path: Path) -> Iterator[Server]:
    with serve("tests.bare_world:create_app", tmp_path, "bare") as srv:
        yield srv


def test_the_boids_example_is_drawn_and_kicked(page: Any, boids: Server) -> None:
    open_viewer(page, boids)
    frame = page.evaluate("() => window.worldloopViewer.frame")
    flock = next(lay for lay in frame["layers"] if lay["kind"] == "boid")
    assert flock["total_in_view"] == 150 == len(flock["x"]) == len(flock["heading"])
    assert frame["world"] == {"width": 600.0, "height": 600.0}
    page.wait_for_function("() => window.worldloopViewer.framesDrawn > 5")
    # Every boid is an arrow in the first layer's default colour: many such pixels.
    assert page.evaluate(COUNT_COLORS) > 150 * 10
    assert page.text_content("#stat-boids") == "150"
    assert page.is_visible("#plot-wrap")
    # No meadow labels on a foreign world.
    assert "sheep" not in page.text_content("#panel") and "grass" not in page.text_content("#panel")
    page.fill("#player-name", "ann")  # boids has no players: joining says so
    page.click("#join")
    page.wait_for_function(
        "() => document.getElementById('play-msg').textContent.includes('no players')"
    )
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "viewer-boids.png"))


def test_a_world_without_a_scene_still_shows_its_loop(page: Any, bare: Server) -> None:
    open_viewer(page, bare)
    first = int(page.text_content("#tick"))
    page.wait_for_function(f"() => Number(document.getElementById('tick').textContent) > {first}")
    assert "Hz" in page.text_content("#rate") and "ms" in page.text_content("#tick-ms")
    assert page.text_content("#paused") == "running"
    assert page.is_hidden("#plot-wrap")
    panel = page.text_content("#panel")
    assert "sheep" not in panel and "creatures" not in panel and "grass" not in panel
    assert page.evaluate(COUNT_COLORS) == 0
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "viewer-bare.png"))
