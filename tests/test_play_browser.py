"""Playing from the browser (real headless Chromium against the real demo server): join by
name, click the map to walk there, say something, see yourself; and the page on a phone."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.browser import ARTIFACTS
from tests.support import Server, flask_argv, running_server
from tests.test_viewer_browser import AVATAR_OF, open_viewer

pytestmark = [pytest.mark.browser, pytest.mark.slow]


@pytest.fixture
def demo(tmp_path: Path) -> Iterator[Server]:
    env = {"WORLDLOOP_ADMIN_TOKEN": "play-test-admin-token-0123", "WORLDLOOP_RATE_HZ": "20"}
    with running_server(flask_argv(), tmp_path, env=env, name="demo") as srv:
        yield srv


def test_a_player_joins_walks_and_talks_from_the_browser(page: Any, demo: Server) -> None:
    open_viewer(page, demo)
    page.fill("#player-name", "zoe")
    page.click("#join")
    page.wait_for_selector("#play-controls", state="visible")
    assert "zoe" in page.text_content("#me-name")
    page.wait_for_function(AVATAR_OF, arg="zoe")
    start = page.evaluate(AVATAR_OF, "zoe")
    assert page.evaluate("() => window.worldloopViewer.me.entity_id") == start["id"]
    world = page.evaluate("() => window.worldloopViewer.frame.world")
    target = [min(start["x"] + 60, world["width"] - 5), min(start["y"] + 40, world["height"] - 5)]
    if target[0] - start["x"] < 20:
        target[0] = start["x"] - 60
    sx, sy = page.evaluate("([x, y]) => window.worldloopViewer.toScreen(x, y)", target)
    box = page.locator("#map").bounding_box()
    page.mouse.click(box["x"] + sx, box["y"] + sy)  # a click (no drag) walks there
    page.wait_for_function(
        "([tx, ty]) => { const a = window.worldloopViewer.layer('avatar');"
        " const i = a ? a.label.indexOf('zoe') : -1;"
        " return i >= 0 && Math.hypot(a.x[i] - tx, a.y[i] - ty) < 4; }",
        arg=target,
        timeout=30_000,
    )
    assert "move_to: sent" in page.text_content("#play-msg")
    page.fill("#say-text", "hello from the browser")
    page.click("#say")
    page.wait_for_function(
        "() => { const a = window.worldloopViewer.layer('avatar');"
        " const i = a.label.indexOf('zoe'); return a.say[i] === 'hello from the browser'; }"
    )
    # The server agrees: the avatar stands where it was sent, and said it.
    status, _, ent = demo.get(f"/api/v1/entities/{start['id']}")
    assert status == 200 and abs(ent["x"] - target[0]) < 4 and abs(ent["y"] - target[1]) < 4
    # Itself highlighted: the ring colour (SELF in viewer.js) is drawn around the avatar.
    ring = page.evaluate(
        """([x, y]) => {
          const c = document.getElementById('map');
          const [sx, sy] = window.worldloopViewer.toScreen(x, y);
          const r = c.width / c.clientWidth;
          const px = Math.round(sx * r) - 16, py = Math.round(sy * r) - 16;
          const d = c.getContext('2d').getImageData(px, py, 32, 32).data;
          let n = 0;
          for (let i = 0; i < d.length; i += 4) {
            if (d[i] < 160 && d[i + 1] > 210 && d[i + 2] > 210) n++;
          }
          return n;
        }""",
        [ent["x"], ent["y"]],
    )
    assert ring > 10
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "viewer-play.png"))


def test_the_viewer_fits_a_phone(phone: Any, demo: Server) -> None:
    open_viewer(phone, demo)
    width = phone.evaluate("() => document.documentElement.scrollWidth")
    assert width <= 390  # nothing wider than the screen
    mapbox = phone.locator("#map").bounding_box()
    panel = phone.locator("#panel").bounding_box()
    assert mapbox["width"] > 350 and mapbox["height"] > 300
    assert panel["y"] >= mapbox["y"] + mapbox["height"] - 1  # the panel under the map
    for field in ("player-name", "rate-hz", "step-n", "token", "hz", "limit"):
        assert phone.locator(f"label[for='{field}']").count() == 1, field
    assert phone.get_attribute("#rate-hz", "min") == "0.01"
    assert phone.get_attribute("#rate-hz", "max") == "1000"
    ARTIFACTS.mkdir(exist_ok=True)
    phone.screenshot(path=str(ARTIFACTS / "viewer-phone.png"), full_page=True)
