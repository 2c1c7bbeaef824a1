"""The live viewer in real headless Chromium (Playwright) against real server processes."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.browser import ARTIFACTS
from tests.frames import layer
from tests.support import ROOT, SRC, Server, flask_argv, running_server

pytestmark = [pytest.mark.browser, pytest.mark.slow]

sync_api = pytest.importorskip("playwright.sync_api")

ADMIN_TOKEN = "viewer-test-admin"
PLAYER_RGB = (255, 90, 122)  # COLORS.player in viewer.js

# Pixel of the canvas at a world point, read in the page (device pixels = CSS px * ratio).
PIXEL_AT = """([x, y]) => {
  const c = document.getElementById('map');
  const [sx, sy] = window.worldloopViewer.toScreen(x, y);
  const r = c.width / c.clientWidth;
  const px = c.getContext('2d').getImageData(Math.round(sx * r), Math.round(sy * r), 1, 1);
  return Array.from(px.data);
}"""


@pytest.fixture
def garden(tmp_path: Path) -> Iterator[Server]:
    """The contract-conforming garden world (grass, creatures, a walking player) served."""
    env = {
        "PYTHONPATH": os.pathsep.join([str(SRC), str(ROOT)]),
        "WORLDLOOP_RATE_HZ": "20",
    }
    argv = flask_argv()
    argv[argv.index("worldloop.demo:create_app")] = "tests.observe_world:create_app"
    with running_server(argv, tmp_path, env=env, name="garden") as srv:
        yield srv


@pytest.fixture
def demo(tmp_path: Path) -> Iterator[Server]:
    """The real demo game server with an admin token."""
    env = {"WORLDLOOP_ADMIN_TOKEN": ADMIN_TOKEN, "WORLDLOOP_RATE_HZ": "20"}
    with running_server(flask_argv(), tmp_path, env=env, name="demo") as srv:
        yield srv


AVATAR_OF = """(name) => {
  const a = window.worldloopViewer.layer('avatar');
  const i = a ? a.label.indexOf(name) : -1;
  return i < 0 ? null : {x: a.x[i], y: a.y[i], id: a.id[i]};
}"""
"""The avatar named ``name`` in the viewer's latest frame, or null."""


def open_viewer(page: Any, srv: Server) -> None:
    page.goto(srv.base + "/")
    page.wait_for_function("() => window.worldloopViewer && window.worldloopViewer.frame")


def current_tick(page: Any) -> int:
    return int(page.text_content("#tick"))


def near(rgba: list[int], rgb: tuple[int, int, int], tol: int = 30) -> bool:
    return all(abs(a - b) <= tol for a, b in zip(rgba[:3], rgb, strict=True))


def test_map_draws_and_the_tick_advances(page: Any, garden: Server) -> None:
    open_viewer(page, garden)
    first = current_tick(page)
    page.wait_for_function(f"() => Number(document.getElementById('tick').textContent) > {first}")
    # The canvas is really drawn: grass shading and creatures give many colors.
    colors = page.evaluate(
        """() => {
          const c = document.getElementById('map');
          const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
          const seen = new Set();
          for (let i = 0; i < d.length; i += 4 * 97) seen.add(d[i] + ',' + d[i+1] + ',' + d[i+2]);
          return seen.size;
        }"""
    )
    assert colors > 50
    frame = page.evaluate("() => window.worldloopViewer.frame")
    assert layer(frame, "creature")["total_in_view"] == 300
    assert page.text_content("#stat-creatures") == "300"
    assert page.text_content("#stat-players") == "1"
    assert page.text_content("#paused") == "running"
    page.wait_for_function("() => document.getElementById('world-name').textContent === 'garden'")
    assert "Hz" in page.text_content("#rate") and "ms" in page.text_content("#tick-ms")
    # The population plot has drawn its lines.
    page.wait_for_function(
        """() => {
          const p = document.getElementById('plot');
          const d = p.getContext('2d').getImageData(0, 0, p.width, p.height).data;
          for (let i = 3; i < d.length; i += 4) if (d[i] > 0) return true;
          return false;
        }"""
    )
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "viewer.png"))


def test_a_moving_player_is_drawn_where_it_is(page: Any, garden: Server) -> None:
    open_viewer(page, garden)

    def scout() -> tuple[int, list[float], list[int]]:
        out = page.evaluate(
            "(pixelAt) => { const v = window.worldloopViewer; const p = v.layer('player');"
            " const f = v.frame; return [f.tick, [p.x[0], p.y[0]],"
            " (new Function('return ' + pixelAt))()([p.x[0], p.y[0]])]; }",
            PIXEL_AT,
        )
        return out[0], out[1], out[2]

    tick0, pos0, px0 = scout()
    assert near(px0, PLAYER_RGB), px0
    page.wait_for_function(f"() => window.worldloopViewer.frame.tick >= {tick0 + 10}")
    _, pos1, px1 = scout()
    assert abs(pos1[0] - pos0[0]) + abs(pos1[1] - pos0[1]) > 5  # it walked
    assert near(px1, PLAYER_RGB), px1  # and the marker moved with it


def test_zooming_streams_only_the_viewport(page: Any, garden: Server) -> None:
    open_viewer(page, garden)
    page.evaluate("() => window.worldloopViewer.setView([0, 0, 200, 150])")
    view = page.evaluate("() => window.worldloopViewer.view")
    # The view is widened to the canvas's shape around the asked region.
    assert view[0] <= 0 and view[1] <= 0 and view[2] >= 200 and view[3] >= 150
    assert view[2] - view[0] < 400 and view[3] - view[1] < 300
    clipped = [max(0.0, view[0]), max(0.0, view[1]), min(400.0, view[2]), min(300.0, view[3])]
    page.wait_for_function(  # the frame's bbox is the view clipped to the world (400 x 300)
        "(v) => { const b = window.worldloopViewer.frame.bbox;"
        " return b.every((x, i) => Math.abs(x - v[i]) < 1e-6); }",
        arg=clipped,
    )
    frame = page.evaluate("() => window.worldloopViewer.frame")
    xs, ys = layer(frame, "creature")["x"], layer(frame, "creature")["y"]
    assert 0 < len(xs) < 300
    assert all(view[0] <= x < view[2] for x in xs) and all(view[1] <= y < view[3] for y in ys)
    page.dblclick("#map")  # back to the whole world
    page.wait_for_function("() => window.worldloopViewer.frame.bbox[2] === 400")


def admin_available(srv: Server) -> bool:
    status, _, _ = srv.post(
        "/api/v1/admin/pause", {}, headers={"Authorization": "Bearer not-the-token"}
    )
    return status != 404


def test_admin_controls_pause_step_and_resume(page: Any, demo: Server) -> None:
    if not admin_available(demo):
        pytest.xfail("POST /api/v1/admin/* (issue 3) is not on this branch yet")
    open_viewer(page, demo)
    assert page.is_hidden("#admin-controls")
    page.fill("#token", ADMIN_TOKEN)
    page.click("#token-use")
    page.wait_for_selector("#admin-controls", state="visible")  # once the server took it
    page.click("#btn-pause")
    page.wait_for_function("() => document.getElementById('paused').textContent === 'paused'")
    paused_at = current_tick(page)
    seen = page.evaluate("() => window.worldloopViewer.statsSeen")
    page.wait_for_function(f"() => window.worldloopViewer.statsSeen >= {seen + 2}")
    assert current_tick(page) == paused_at  # nothing moved while paused
    page.fill("#step-n", "3")
    page.click("#btn-step")
    page.wait_for_function(
        f"() => Number(document.getElementById('tick').textContent) === {paused_at + 3}"
    )
    page.click("#btn-resume")
    page.wait_for_function(
        f"() => Number(document.getElementById('tick').textContent) > {paused_at + 5}"
    )
    assert page.text_content("#paused") == "running"


def test_admin_controls_report_a_wrong_token(page: Any, demo: Server) -> None:
    """Issue 16: the token is checked when entered; a wrong one is refused, never kept."""
    if not admin_available(demo):
        pytest.xfail("POST /api/v1/admin/* (issue 3) is not on this branch yet")
    open_viewer(page, demo)
    page.fill("#token", "wrong")
    page.click("#token-use")
    page.wait_for_function("() => document.getElementById('admin-msg').textContent.includes('403')")
    assert "wrong token" in page.text_content("#admin-msg")
    assert page.is_hidden("#admin-controls") and page.is_visible("#token-form")
    assert page.evaluate("() => sessionStorage.getItem('worldloop-admin-token')") is None
    status, _, body = demo.get("/api/v1/world")
    assert status == 200 and body["paused"] is False


def test_a_players_move_shows_on_the_demo_map(page: Any, demo: Server) -> None:
    status, _, joined = demo.post("/api/v1/players", {"name": "ann"})
    if status == 404:
        pytest.xfail("POST /api/v1/players and /commands (issue 3) are not on this branch yet")
    assert status in (200, 201), joined
    open_viewer(page, demo)
    page.wait_for_function(AVATAR_OF, arg="ann")
    start = page.evaluate(AVATAR_OF, "ann")
    world = page.evaluate("() => window.worldloopViewer.frame.world")
    target = ((start["x"] + 40) % world["width"], (start["y"] + 30) % world["height"])
    status, _, body = demo.post(
        "/api/v1/commands",
        {"type": "move_to", "x": target[0], "y": target[1]},
        headers={"Authorization": f"Bearer {joined['token']}"},
    )
    assert status == 202, body
    page.wait_for_function(
        "([tx, ty]) => { const a = window.worldloopViewer.layer('avatar');"
        " const i = a ? a.label.indexOf('ann') : -1;"
        " return i >= 0 && Math.hypot(a.x[i] - tx, a.y[i] - ty) < 3; }",
        arg=list(target),
        timeout=30_000,
    )
    pixel = page.evaluate(
        f"(pixelAt) => (new Function('return ' + pixelAt))()([{target[0]}, {target[1]}])",
        PIXEL_AT,
    )
    assert near(pixel, PLAYER_RGB), pixel


def test_jobs_panel_lists_runs_and_pauses_jobs(page: Any, demo: Server) -> None:
    """Issue 6: jobs appear in the viewer (admin panel: next/last run, counts, run, pause)."""
    if not admin_available(demo):
        pytest.xfail("POST /api/v1/admin/* (issue 3) is not on this branch yet")
    open_viewer(page, demo)
    assert page.is_hidden("#jobs")  # the jobs API needs the admin token
    page.fill("#token", ADMIN_TOKEN)
    page.click("#token-use")
    row = '#jobs-table tr[data-job="leaderboard"]'
    page.wait_for_selector(row)
    assert page.is_visible("#jobs")
    assert page.is_visible('#jobs-table tr[data-job="reseed-grass"]')
    runs = int(page.text_content(f"{row} td.runs"))
    page.click(f'{row} button[data-action="run"]')
    page.wait_for_function(
        f"() => Number(document.querySelector('{row} td.runs').textContent) > {runs}"
    )
    assert "ok" in page.text_content(row)
    page.click(f'{row} button[data-action="pause"]')
    page.wait_for_function(f"() => document.querySelector('{row}').textContent.includes('paused')")
    auth = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    status, _, body = demo.get("/api/v1/admin/jobs/leaderboard", headers=auth)
    assert status == 200 and body["job"]["paused"] is True
    page.click(f'{row} button[data-action="resume"]')
    page.wait_for_function(f"() => !document.querySelector('{row}').textContent.includes('paused')")
    # Offloaded tasks (issue 15) show below the jobs: the demo's forecast, until it is back.
    assert page.is_hidden("#tasks-table")
    status, _, body = demo.post("/api/v1/forecast", {"ticks": 200})
    assert status == 202, body
    task = f'#tasks-table tr[data-task="{body["task_id"]}"]'
    page.wait_for_selector(f'{task}[data-state="succeeded"]', timeout=30_000)
    assert page.is_visible("#tasks-table")
    assert "meadow.forecast" in page.text_content(task) and "ok" in page.text_content(task)
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "viewer-jobs.png"))
