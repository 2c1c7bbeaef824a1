"""Many worlds live (issue 13, parts 2 and 6): the stream gateway serves every world's stream
and WebSocket, and the viewer in real headless Chromium picks the world it shows.

One real server in the default mode for the module: gunicorn, its runner process (which hosts
the extra worlds) and the gateway the runner starts. A second meadow, ``room``, is created
through the API; the viewer lists it, switches to it (its frames, its players, its commands),
opens it from a link, says so for a world that is not there, and (admin) creates and deletes
one from the page.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.browser import ARTIFACTS
from tests.support import (
    Server,
    flask_argv,
    free_port,
    gunicorn_argv,
    http,
    running_server,
    wait_for,
)
from tests.test_viewer_browser import AVATAR_OF
from worldloop import frame_binary as fb

pytestmark = [pytest.mark.slow]

TOKEN = "worlds-viewer-admin-0123"
ADMIN = {"Authorization": f"Bearer {TOKEN}"}
ROOM = {"width": 400, "height": 300, "entities": 30, "seed": 7}
"""The second world: a small meadow, told apart from the default one by its bounds."""


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, str]]:
    tmp: Path = tmp_path_factory.mktemp("worlds-viewer")
    gport = free_port()
    argv = gunicorn_argv("-w", "1", "-k", "gthread", "--threads", "8")
    env = {
        "WORLDLOOP_GATEWAY": f"127.0.0.1:{gport}",
        "WORLDLOOP_RUNNER": "process",
        "WORLDLOOP_ADMIN_TOKEN": TOKEN,
        "WORLDLOOP_RATE_HZ": "20",
    }
    with running_server(argv, tmp, env=env) as srv:
        gateway = f"http://127.0.0.1:{gport}"

        def ready() -> bool:
            status, _, body = http("GET", gateway + "/healthz", timeout=2)
            return status == 200 and bool(body["running"])

        try:
            wait_for(ready, 90, 0.2, "the gateway to serve")
            body = {"name": "room", "kind": "meadow", "config": ROOM}
            status, _, made = srv.post("/api/v1/worlds", body, headers=ADMIN, timeout=30)
            assert status == 201, made
            wait_for(lambda: _world(srv, "room")["status"] == "running", 60, 0.2, "room to run")
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n--- server log ---\n{srv.log}") from None
        yield srv, gateway


def _world(srv: Server, name: str) -> dict[str, Any]:
    status, _, body = srv.get("/api/v1/worlds", timeout=10)
    assert status == 200, body
    found = {w["name"]: w for w in body["worlds"]}
    return found.get(name) or {"status": "absent"}


def _default_name(srv: Server) -> str:
    status, _, body = srv.get("/api/v1/world", timeout=10)
    assert status == 200
    return str(body["world"])


# ---- the gateway serves each world -----------------------------------------------------------


async def _sse_frames(url: str, count: int) -> list[dict[str, Any]]:
    """``count`` frame events of the stream at ``url`` (redirects followed), decoded."""
    import json

    frames: list[dict[str, Any]] = []
    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(timeout=timeout) as session, session.get(url) as resp:
        assert resp.status == 200, await resp.text()
        event = ""
        async for raw in resp.content:
            line = raw.decode().rstrip("\n")
            if line.startswith("event: "):
                event = line[7:]
            elif line.startswith("data: ") and event == "frame":
                frames.append(json.loads(line[6:]))
                if len(frames) >= count:
                    break
    return frames


async def _ws_frames(url: str, count: int) -> list[fb.Decoded]:
    got: list[fb.Decoded] = []
    held: fb.Decoded | None = None
    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(timeout=timeout) as session, session.ws_connect(url) as ws:
        async for msg in ws:
            if msg.type == aiohttp.WSMsgType.BINARY:
                held = fb.decode(msg.data, held)
                got.append(held)
                if len(got) >= count:
                    break
    return got


def test_the_gateway_serves_each_worlds_stream_and_websocket(
    served: tuple[Server, str],
) -> None:
    srv, gateway = served
    # A web worker sends a world's stream to the gateway, path and query kept ...
    assert srv.redirect("/api/v1/worlds/room/stream?limit=5") == (
        307,
        gateway + "/api/v1/worlds/room/stream?limit=5",
    )
    # ... and names the world's own WebSocket to the viewer.
    status, _, live = srv.get("/api/v1/worlds/room/live", timeout=10)
    assert status == 200
    assert live == {
        "stream": "/api/v1/worlds/room/stream",
        "websocket": "ws" + gateway[4:] + "/api/v1/worlds/room/ws",
    }
    status, _, missing = srv.get("/api/v1/worlds/nowhere/live", timeout=10)
    assert status == 404 and missing["error"]["code"] == "world_not_found"

    # The gateway serves room's frames (its bounds), the default world's beside them.
    room = asyncio.run(_sse_frames(srv.base + "/api/v1/worlds/room/stream?limit=50", 3))
    assert [f["world"] for f in room] == [{"width": 400.0, "height": 300.0}] * 3
    assert room[0]["tick"] < room[-1]["tick"]
    default = asyncio.run(_sse_frames(gateway + "/api/v1/stream?limit=50", 2))
    assert default[0]["world"]["width"] != 400.0
    by_name = asyncio.run(_sse_frames(gateway + f"/api/v1/worlds/{_default_name(srv)}/stream", 1))
    assert by_name[0]["world"] == default[0]["world"]
    decoded = asyncio.run(_ws_frames(live["websocket"] + "?limit=50", 4))
    assert all(d.frame["world"] == {"width": 400.0, "height": 300.0} for d in decoded)
    assert decoded[0].frame["tick"] < decoded[-1].frame["tick"]

    # A world the runner does not host: the API's 404, as JSON, on both routes.
    for path in ("/api/v1/worlds/nowhere/stream", "/api/v1/worlds/nowhere/ws"):
        status, _, body = http("GET", gateway + path, timeout=10)
        assert status == 404, body
        assert body["error"]["code"] == "world_not_found"
        assert body["error"]["details"] == {"world": "nowhere"}
    status, _, health = http("GET", gateway + "/healthz", timeout=5)
    assert status == 200 and health["worlds"] >= 2


# ---- the viewer's picker ---------------------------------------------------------------------

WIDTH = "() => { const f = window.worldloopViewer.frame; return f && f.world && f.world.width; }"


def _listed(page: Any) -> list[str]:
    return list(
        page.eval_on_selector_all(
            "#worlds-table tbody tr", "rows => rows.map(r => r.dataset.world)"
        )
    )


@pytest.mark.browser
def test_the_picker_lists_the_worlds_and_switches_stream_and_play(
    page: Any, served: tuple[Server, str]
) -> None:
    srv, _ = served
    default = _default_name(srv)
    page.goto(srv.base + "/")
    page.wait_for_function("() => window.worldloopViewer.transport === 'websocket'")
    page.wait_for_function("() => document.querySelector('#worlds-table tr[data-world=\"room\"]')")
    assert _listed(page)[:2] == [default, "room"]
    picker = page.eval_on_selector_all("#world-pick option", "os => os.map(o => o.textContent)")
    assert picker[0].startswith(default + " (default)") and picker[1].startswith("room")
    row = page.locator('#worlds-table tr[data-world="room"]')
    assert row.get_attribute("data-status") == "running"
    assert page.get_attribute(f'#worlds-table tr[data-world="{default}"]', "aria-current") == "true"
    first_width = page.evaluate(WIDTH)
    assert first_width and first_width != 400

    # Choosing room: its frames (its bounds, its entities), the URL names it.
    page.select_option("#world-pick", "room")
    page.wait_for_function(f"() => ({WIDTH})() === 400")
    assert page.url.endswith("/?world=room")
    assert page.evaluate("() => window.worldloopViewer.transport") == "websocket"
    assert page.evaluate("() => window.worldloopViewer.world") == "room"
    assert page.text_content("#world-name") == "room"
    assert row.get_attribute("aria-current") == "true"
    tick_room = int(page.text_content("#tick"))
    status, _, summary = srv.get("/api/v1/worlds/room", timeout=10)
    assert status == 200 and abs(summary["tick"] - tick_room) < 100

    # Joining in room: the player is room's, and its commands go to room.
    players_before = _world(srv, default)["players"]
    page.fill("#player-name", "ann")
    page.click("#join")
    page.wait_for_selector("#play-controls", state="visible")
    page.wait_for_function(AVATAR_OF, arg="ann")
    me = page.evaluate(AVATAR_OF, "ann")
    wait_for(lambda: _world(srv, "room")["players"] == 1, 10, 0.2, "room's player count")
    assert _world(srv, default)["players"] == players_before
    target = [
        me["x"] + 40 if me["x"] < 300 else me["x"] - 40,
        me["y"] + 30 if me["y"] < 200 else me["y"] - 30,
    ]
    sx, sy = page.evaluate("([x, y]) => window.worldloopViewer.toScreen(x, y)", target)
    box = page.locator("#map").bounding_box()
    page.mouse.click(box["x"] + sx, box["y"] + sy)
    page.wait_for_function(
        "() => document.getElementById('play-msg').textContent === 'move_to: sent'"
    )

    def arrived() -> bool:
        status, _, ent = srv.get(f"/api/v1/worlds/room/entities/{me['id']}", timeout=10)
        return status == 200 and abs(ent["x"] - target[0]) < 4 and abs(ent["y"] - target[1]) < 4

    wait_for(arrived, 30, 0.2, "ann to walk to the clicked spot in room")
    page.fill("#say-text", "hello room")
    page.click("#say")
    page.wait_for_function(
        "() => { const a = window.worldloopViewer.layer('avatar');"
        " const i = a.label.indexOf('ann'); return a.say[i] === 'hello room'; }"
    )
    page.wait_for_function(
        "() => document.querySelector('#worlds-table tr[data-world=\"room\"] .players')"
        ".textContent === '1'"
    )

    # Back to the default world by the list: its frames again, and no player of room's there.
    page.click(f'#worlds-table tr[data-world="{default}"] .world-open')
    page.wait_for_function(f"() => ({WIDTH})() === {first_width}")
    assert "world=" not in page.url
    assert page.is_visible("#join-form") and page.is_hidden("#play-controls")
    # The browser's back button returns to room, where ann still plays.
    page.go_back()
    page.wait_for_function(f"() => ({WIDTH})() === 400")
    page.wait_for_selector("#play-controls", state="visible")
    assert "ann" in page.text_content("#me-name")
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "viewer-worlds.png"))


@pytest.mark.browser
def test_a_link_opens_its_world_and_an_unknown_one_is_said(
    page: Any, served: tuple[Server, str]
) -> None:
    srv, _ = served
    page.goto(srv.base + "/?world=room")
    page.wait_for_function(f"() => ({WIDTH})() === 400")
    assert page.eval_on_selector("#world-pick", "s => s.value") == "room"
    page.wait_for_function(
        "() => document.querySelector('#worlds-table tr[data-world=\"room\"]')"
        ".getAttribute('aria-current') === 'true'"
    )
    page.goto(srv.base + "/?world=nowhere")
    page.wait_for_selector("#world-msg", state="visible")
    assert "no world named “nowhere”" in page.text_content("#world-msg")
    assert page.text_content("#conn") == "unknown world"
    assert page.evaluate("() => window.worldloopViewer.frame") is None
    page.wait_for_function(
        "() => document.querySelector('#world-pick').selectedOptions[0].textContent"
        " === 'nowhere (unknown)'"
    )
    # Picking a world from the list leaves the message behind.
    page.select_option("#world-pick", "room")
    page.wait_for_function(f"() => ({WIDTH})() === 400")
    assert page.is_hidden("#world-msg")


@pytest.mark.browser
def test_an_admin_creates_and_deletes_a_world_from_the_viewer(
    page: Any, served: tuple[Server, str]
) -> None:
    srv, _ = served
    page.goto(srv.base + "/")
    page.wait_for_function("() => window.worldloopViewer.frame")
    assert page.is_hidden("#world-create")
    page.fill("#token", TOKEN)
    page.click("#token-use")
    page.wait_for_selector("#world-create", state="visible")
    assert page.eval_on_selector_all("#new-world-kind option", "os => os.map(o => o.value)") == [
        "meadow"
    ]
    # A config the kind refuses: the API's reason, nothing made.
    page.fill("#new-world-name", "field")
    page.fill("#new-world-config", '{"entities": -1}')
    page.click("#world-create-btn")
    page.wait_for_function(
        "() => document.getElementById('worlds-msg').textContent.includes('422')"
    )
    assert _world(srv, "field")["status"] == "absent"
    # A good one: made, listed, shown.
    page.fill("#new-world-config", '{"width": 250, "height": 200, "entities": 5}')
    page.click("#world-create-btn")
    page.wait_for_function(f"() => ({WIDTH})() === 250", timeout=60_000)
    assert page.url.endswith("/?world=field")
    assert "field" in _listed(page)
    assert _world(srv, "field")["kind"] == "meadow"
    # The admin panel acts on the world shown: pausing field pauses field only.
    page.click("#btn-pause")
    page.wait_for_function("() => document.getElementById('paused').textContent === 'paused'")
    assert _world(srv, "field")["status"] == "paused"
    assert _world(srv, "room")["status"] == "running"
    # Deleting asks once more, then the world goes and the viewer shows the default world.
    page.click('#worlds-table button.world-delete[data-world="field"]')
    assert page.text_content('#worlds-table button.world-delete[data-world="field"]') == "sure?"
    assert _world(srv, "field")["status"] == "paused"
    page.click('#worlds-table button.world-delete[data-world="field"]')
    page.wait_for_function(
        "() => document.getElementById('worlds-msg').textContent.startsWith('deleted field')"
    )
    assert _world(srv, "field")["status"] == "absent"
    page.wait_for_function(
        "() => !document.querySelector('#worlds-table tr[data-world=\"field\"]')"
    )
    page.wait_for_function(f"() => ({WIDTH})() !== 250 && ({WIDTH})() > 0")
    assert "world=" not in page.url
    # The default world has no delete button: it cannot be deleted.
    default = _default_name(srv)
    assert (
        page.locator(f'#worlds-table tr[data-world="{default}"] button.world-delete').count() == 0
    )


@pytest.mark.browser
def test_a_world_deleted_elsewhere_is_said_on_the_page(
    page: Any, served: tuple[Server, str]
) -> None:
    srv, _ = served
    body = {"name": "brief", "kind": "meadow", "config": {"width": 220, "height": 220}}
    status, _, made = srv.post("/api/v1/worlds", body, headers=ADMIN, timeout=30)
    assert status == 201, made
    page.goto(srv.base + "/?world=brief")
    page.wait_for_function(f"() => ({WIDTH})() === 220")
    status, _, gone = http(
        "DELETE", srv.base + "/api/v1/worlds/brief?journal=drop", headers=ADMIN, timeout=30
    )
    assert status == 200, gone
    # Its stream ends once its feed is silent; the page asks again and says the world is gone.
    page.wait_for_selector("#world-msg", state="visible", timeout=60_000)
    assert "no world named “brief”" in page.text_content("#world-msg")
    page.wait_for_function("() => !document.querySelector('#worlds-table [data-world=\"brief\"]')")


@pytest.fixture
def single(tmp_path: Path) -> Iterator[Server]:
    """The demo under ``flask run`` in the single-process mode: no gateway, SSE streams."""
    env = {"WORLDLOOP_ADMIN_TOKEN": TOKEN, "WORLDLOOP_RATE_HZ": "20"}
    with running_server(flask_argv(), tmp_path, env=env, name="single") as srv:
        body = {"name": "room", "kind": "meadow", "config": ROOM}
        status, _, made = srv.post("/api/v1/worlds", body, headers=ADMIN, timeout=30)
        assert status == 201, made
        yield srv


@pytest.mark.browser
def test_without_a_gateway_the_picker_streams_each_world_over_sse(
    page: Any, single: Server
) -> None:
    page.goto(single.base + "/?world=room")
    page.wait_for_function(f"() => ({WIDTH})() === 400")
    assert page.evaluate("() => window.worldloopViewer.transport") == "sse"
    first = int(page.text_content("#tick"))
    page.wait_for_function(f"() => Number(document.getElementById('tick').textContent) > {first}")
    page.select_option("#world-pick", "")  # the default world's entry
    page.wait_for_function(f"() => ({WIDTH})() !== 400 && ({WIDTH})() > 0")
    assert page.evaluate("() => window.worldloopViewer.world") is None
    assert page.evaluate("() => window.worldloopViewer.transport") == "sse"


@pytest.mark.browser
def test_the_picker_fits_a_phone(phone: Any, served: tuple[Server, str]) -> None:
    srv, _ = served
    phone.goto(srv.base + "/?world=room")
    phone.wait_for_function(f"() => ({WIDTH})() === 400")
    phone.wait_for_function("() => document.querySelectorAll('#worlds-table tbody tr').length >= 2")
    got = phone.evaluate(
        """() => {
          const r = document.getElementById('world-pick').getBoundingClientRect();
          const t = document.getElementById('worlds-table').getBoundingClientRect();
          return {pick: [r.left, r.right, r.height], table: [t.left, t.right],
                  width: window.innerWidth, scroll: document.documentElement.scrollWidth};
        }"""
    )
    assert 0 <= got["pick"][0] < got["pick"][1] <= got["width"] and got["pick"][2] >= 20
    assert 0 <= got["table"][0] < got["table"][1] <= got["width"]
    assert got["scroll"] <= got["width"]  # nothing wider than the screen
    ARTIFACTS.mkdir(exist_ok=True)
    phone.screenshot(path=str(ARTIFACTS / "viewer-worlds-phone.png"), full_page=True)
