"""Many worlds in one app (issue 13), in process: /api/v1/worlds, the per-world routes under
/api/v1/worlds/<world>/..., names, kinds, limits, delete, and the catalog that brings the worlds
back when the app starts again on the same store."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from worldloop.demo import create_app
from worldloop.store import MemoryStore

from .frames import layer
from .support import wait_for
from .test_observe_stream import SSE

TOKEN = "admin-secret-0123456"
ADMIN = {"Authorization": f"Bearer {TOKEN}"}


def make_app(tmp_path: Path, **config: Any) -> Flask:
    os.environ.pop("WERKZEUG_RUN_MAIN", None)
    base = {
        "TESTING": True,
        "WORLDLOOP_HANDLE_SIGNALS": False,
        "WORLDLOOP_ADMIN_TOKEN": TOKEN,
        "WORLDLOOP_RATE_HZ": 50.0,
        "WORLDLOOP_STORE_URL": f"memory://{tmp_path.name}",
        "MEADOW_ENTITIES": 60,
        "MEADOW_WIDTH": 300.0,
        "MEADOW_HEIGHT": 300.0,
        "MEADOW_DEMO_JOBS": False,
    }
    base.update(config)
    return create_app(base, instance_path=str(tmp_path / "instance"))


@pytest.fixture
def app(tmp_path: Path) -> Iterator[Flask]:
    flask_app = make_app(tmp_path)
    yield flask_app
    flask_app.extensions["worldloop"].stop()


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


def create(client: FlaskClient, name: str, kind: str = "meadow", **config: Any) -> Any:
    return client.post(
        "/api/v1/worlds", json={"name": name, "kind": kind, "config": config}, headers=ADMIN
    )


def error_code(resp: Any, status: int) -> str:
    assert resp.status_code == status, resp.get_data(as_text=True)
    body = resp.get_json()
    assert set(body["error"]) == {"code", "message", "details"}
    return str(body["error"]["code"])


def test_the_list_holds_the_default_world_and_the_kinds(client: FlaskClient) -> None:
    body = client.get("/api/v1/worlds").get_json()
    assert body["kinds"] == ["meadow"]
    [default] = body["worlds"]
    assert default["name"] == "meadow" and default["default"] and default["status"] == "running"
    # the default world is also reachable by its name, and the old routes still mean it
    assert client.get("/api/v1/worlds/meadow").get_json()["world"] == "meadow"
    assert client.get("/api/v1/world").get_json()["world"] == "meadow"


def test_create_a_world_and_use_its_routes(app: Flask, client: FlaskClient) -> None:
    resp = create(client, "arena-1", entities=25, seed=3)
    assert resp.status_code == 201, resp.get_json()
    assert resp.headers["Location"] == "/api/v1/worlds/arena-1"
    info = resp.get_json()
    assert (info["name"], info["kind"], info["default"]) == ("arena-1", "meadow", False)
    wait_for(lambda: client.get("/api/v1/worlds/arena-1").get_json()["tick"] > 2)

    summary = client.get("/api/v1/worlds/arena-1").get_json()
    assert (summary["world"], summary["entity_count"]) == ("arena-1", 25)
    assert client.get("/api/v1/world").get_json()["entity_count"] == 60  # the default: its own
    snap = client.get("/api/v1/worlds/arena-1/snapshot")
    assert snap.status_code == 200 and snap.get_json()["world"] == "arena-1"
    page = client.get("/api/v1/worlds/arena-1/entities?limit=100").get_json()
    assert len(page["items"]) == 25
    assert client.get("/api/v1/worlds/arena-1/frame").status_code == 200
    sse = SSE(app, "/api/v1/worlds/arena-1/stream")
    try:
        frame = sse.frames(1)[0]
        assert frame["tick"] >= 2 and len(layer(frame, "sheep")["x"]) == 25
    finally:
        sse.close()

    joined = client.post("/api/v1/worlds/arena-1/players", json={"name": "ann"})
    assert joined.status_code == 201, joined.get_json()
    player = {"Authorization": f"Bearer {joined.get_json()['token']}"}
    # a player of one world is nobody in another
    cmd = {"type": "move_to", "x": 10, "y": 10}
    assert client.post("/api/v1/commands", json=cmd, headers=player).status_code == 401
    sent = client.post("/api/v1/worlds/arena-1/commands", json=cmd, headers=player)
    assert sent.status_code in (200, 202), sent.get_json()
    cid = sent.get_json()["command_id"]
    got = client.get(f"/api/v1/worlds/arena-1/commands/{cid}", headers=player)
    assert got.status_code == 200 and got.get_json()["command_id"] == cid

    status = client.get("/api/v1/worlds/arena-1/admin/status", headers=ADMIN).get_json()
    assert status["world"] == "arena-1"
    assert client.post("/api/v1/worlds/arena-1/admin/pause", headers=ADMIN).get_json()["paused"]
    assert not client.get("/api/v1/world").get_json()["paused"]  # only that world paused
    tick = client.get("/api/v1/worlds/arena-1/admin/status", headers=ADMIN).get_json()["tick"]
    stepped = client.post("/api/v1/worlds/arena-1/admin/step", json={"n": 3}, headers=ADMIN)
    assert stepped.get_json()["tick"] == tick + 3
    listed = {w["name"]: w for w in client.get("/api/v1/worlds").get_json()["worlds"]}
    assert listed["arena-1"]["status"] == "paused" and listed["arena-1"]["players"] == 1
    resumed = client.post("/api/v1/worlds/arena-1/admin/resume", headers=ADMIN)
    assert not resumed.get_json()["paused"]


@pytest.mark.parametrize(
    "path",
    [
        "/api/v1/worlds/nowhere",
        "/api/v1/worlds/nowhere/snapshot",
        "/api/v1/worlds/nowhere/entities",
        "/api/v1/worlds/nowhere/frame",
        "/api/v1/worlds/nowhere/admin/status",
    ],
)
def test_an_unknown_world_is_404_json(client: FlaskClient, path: str) -> None:
    resp = client.get(path, headers=ADMIN)
    assert error_code(resp, 404) == "world_not_found"
    assert resp.get_json()["error"]["details"] == {"world": "nowhere"}


def test_creation_is_refused_with_a_clear_error(client: FlaskClient) -> None:
    assert create(client, "taken").status_code == 201
    assert error_code(create(client, "taken"), 409) == "world_exists"
    assert error_code(create(client, "meadow"), 409) == "world_exists"  # the default's name
    assert error_code(create(client, "x", kind="chess"), 422) == "invalid_world"
    bad = create(client, "x", entities=-1)
    assert error_code(bad, 422) == "invalid_world"
    assert bad.get_json()["error"]["details"]["field"] == "entities"
    assert error_code(create(client, "x", colour="red"), 422) == "invalid_world"
    for name in ("", "a b", "-lead", "x" * 65, "é", "a/b", "a.b"):
        assert create(client, name).status_code == 422, name
    assert create(client, "x" * 64).status_code == 201
    body = {"name": "y", "kind": "meadow"}
    assert error_code(client.post("/api/v1/worlds", json=body), 401) == "unauthorized"
    wrong = {"Authorization": "Bearer wrong-token-0123456789"}
    assert error_code(client.post("/api/v1/worlds", json=body, headers=wrong), 403) == "forbidden"


def test_limits_per_server_and_per_kind(tmp_path: Path) -> None:
    app = make_app(tmp_path, WORLDLOOP_MAX_WORLDS=3, WORLDLOOP_MAX_WORLDS_PER_KIND=2)
    try:
        client = app.test_client()
        assert create(client, "a").status_code == 201
        assert create(client, "b").status_code == 201
        refused = create(client, "c")
        assert error_code(refused, 409) == "world_limit"
        assert "WORLDLOOP_MAX_WORLDS_PER_KIND" in refused.get_json()["error"]["message"]
        app.extensions["worldloop"].host.kinds["other"] = app.extensions["worldloop"].host.kinds[
            "meadow"
        ]
        assert create(client, "c", kind="other").status_code == 201
        full = create(client, "d", kind="other")
        assert error_code(full, 409) == "world_limit"
        assert "(WORLDLOOP_MAX_WORLDS)" in full.get_json()["error"]["message"]
        assert client.delete("/api/v1/worlds/a", headers=ADMIN).status_code == 200
        assert create(client, "d", kind="other").status_code == 201  # room again
    finally:
        app.extensions["worldloop"].stop()


def test_delete_keeps_or_drops_the_journal(app: Flask, client: FlaskClient) -> None:
    store = MemoryStore(app.extensions["worldloop"].store_url)
    for name in ("kept", "dropped"):
        assert create(client, name).status_code == 201
    wait_for(lambda: store.head("kept") is not None and store.head("dropped") is not None)
    assert error_code(client.delete("/api/v1/worlds/kept"), 401) == "unauthorized"
    gone = client.delete("/api/v1/worlds/kept", headers=ADMIN)
    assert gone.status_code == 200 and gone.get_json()["journal"] == "keep"
    assert error_code(client.get("/api/v1/worlds/kept"), 404) == "world_not_found"
    assert store.head("kept") == gone.get_json()["tick"]  # the final tick is in the journal
    assert store.snapshots("kept")[-1].tick == gone.get_json()["tick"]  # final snapshot
    dropped = client.delete("/api/v1/worlds/dropped?journal=drop", headers=ADMIN)
    assert dropped.status_code == 200
    assert store.head("dropped") is None and store.snapshots("dropped") == []
    assert create(client, "other").status_code == 201
    burn = client.delete("/api/v1/worlds/other?journal=burn", headers=ADMIN)
    assert error_code(burn, 400) == "bad_request"
    assert client.delete("/api/v1/worlds/other", headers=ADMIN).status_code == 200
    assert error_code(client.delete("/api/v1/worlds/meadow", headers=ADMIN), 409) == "world_exists"
    assert error_code(client.delete("/api/v1/worlds/nope", headers=ADMIN), 404) == (
        "world_not_found"
    )
    names = [w["name"] for w in client.get("/api/v1/worlds").get_json()["worlds"]]
    assert names == ["meadow"]


@pytest.mark.parametrize("store", ["memory", "sqlite"])
def test_the_catalog_brings_every_world_back(tmp_path: Path, store: str) -> None:
    url = (
        f"memory://catalog-{tmp_path.name}"
        if store == "memory"
        else f"sqlite:///{tmp_path / 'w.db'}"
    )
    first = make_app(tmp_path, WORLDLOOP_STORE_URL=url)
    client = first.test_client()
    assert create(client, "east", entities=10, seed=1).status_code == 201
    assert create(client, "west", entities=20, seed=2).status_code == 201
    client.post("/api/v1/worlds/west/admin/pause", headers=ADMIN)
    wait_for(lambda: client.get("/api/v1/worlds/east").get_json()["tick"] > 5)
    first.extensions["worldloop"].stop()
    host = first.extensions["worldloop"].host
    ticks = {name: host.get(name).runtime.tick for name in ("east", "west")}
    hashes = {name: host.get(name).runtime.world.state_hash() for name in ("east", "west")}

    second = make_app(tmp_path, WORLDLOOP_STORE_URL=url, WORLDLOOP_START_PAUSED=True)
    try:
        client = second.test_client()
        listed = {w["name"]: w for w in client.get("/api/v1/worlds").get_json()["worlds"]}
        assert list(listed) == ["meadow", "east", "west"]
        assert (listed["east"]["status"], listed["west"]["status"]) == ("running", "paused")
        again = second.extensions["worldloop"].host
        west = again.get("west").runtime
        assert west.tick == ticks["west"] and west.world.state_hash() == hashes["west"]
        east = again.get("east")
        assert east.config == {"entities": 10, "seed": 1}
        assert client.get("/api/v1/worlds/east").get_json()["entity_count"] == 10
        assert east.runtime.tick >= ticks["east"]
    finally:
        second.extensions["worldloop"].stop()


def test_the_document_describes_the_worlds_routes(client: FlaskClient) -> None:
    doc = client.get("/openapi.json").get_json()
    paths = doc["paths"]
    assert {"get", "post"} <= set(paths["/api/v1/worlds"])
    assert {"get", "delete"} <= set(paths["/api/v1/worlds/{world}"])
    for path in (
        "/api/v1/worlds/{world}/snapshot",
        "/api/v1/worlds/{world}/entities",
        "/api/v1/worlds/{world}/players",
        "/api/v1/worlds/{world}/commands",
        "/api/v1/worlds/{world}/commands/{command_id}",
        "/api/v1/worlds/{world}/frame",
        "/api/v1/worlds/{world}/stream",
        "/api/v1/worlds/{world}/admin/status",
        "/api/v1/worlds/{world}/admin/pause",
        "/api/v1/worlds/{world}/admin/resume",
        "/api/v1/worlds/{world}/admin/step",
    ):
        for op in paths[path].values():
            assert "404" in op["responses"], path
            assert {"name": "world", "in": "path"}.items() <= op["parameters"][0].items()
    create_op = paths["/api/v1/worlds"]["post"]
    assert {"201", "409", "422", "501"} <= set(create_op["responses"])
    assert create_op["security"] == [{"adminToken": []}]


def test_each_world_has_its_metrics_until_it_is_deleted(client: FlaskClient) -> None:
    name = f"metered-{os.getpid()}"
    assert create(client, name).status_code == 201
    series = f'worldloop_ticks_total{{world="{name}"}}'
    wait_for(lambda: series in client.get("/metrics").get_data(as_text=True))
    client.post(f"/api/v1/worlds/{name}/admin/pause", headers=ADMIN)
    text = client.get("/metrics").get_data(as_text=True)
    assert f'worldloop_paused{{world="{name}"}} 1.0' in text
    assert 'worldloop_paused{world="meadow"} 0.0' in text
    assert client.delete(f"/api/v1/worlds/{name}", headers=ADMIN).status_code == 200
    assert f'world="{name}"' not in client.get("/metrics").get_data(as_text=True)


def test_creation_is_rate_limited_server_wide(tmp_path: Path) -> None:
    app = make_app(tmp_path, WORLDLOOP_WORLD_CREATE_RATE=0.01, WORLDLOOP_WORLD_CREATE_BURST=2)
    try:
        client = app.test_client()
        assert create(client, "one").status_code == 201
        assert create(client, "two").status_code == 201
        refused = create(client, "three")
        assert error_code(refused, 429) == "rate_limited"
        assert int(refused.headers["Retry-After"]) >= 1
        names = [w["name"] for w in client.get("/api/v1/worlds").get_json()["worlds"]]
        assert names == ["meadow", "one", "two"]
    finally:
        app.extensions["worldloop"].stop()


def test_readyz_lists_a_worlds_trouble_without_failing_the_server(
    app: Flask, client: FlaskClient
) -> None:
    assert create(client, "sick").status_code == 201
    assert create(client, "well").status_code == 201
    wait_for(lambda: client.get("/readyz").get_json()["status"] == "ok")
    app.extensions["worldloop"].host.get("sick").runtime.stop()  # as if its loop had died
    resp = client.get("/readyz")
    body = resp.get_json()
    assert resp.status_code == 200 and body["ready"] and body["status"] == "degraded"
    assert body["reasons"] == []  # the default world is fine
    assert list(body["worlds"]) == ["sick"]
    assert body["worlds"]["sick"][0]["code"] == "not_running"


def test_a_kind_declared_after_init_app_reaches_the_app(tmp_path: Path) -> None:
    from tests.durability_app import Drift
    from worldloop import WorldLoop
    from worldloop.state import get_world

    app = Flask("late", instance_path=str(tmp_path / "late"))
    app.config.update(
        TESTING=True,
        WORLDLOOP_HANDLE_SIGNALS=False,
        WORLDLOOP_ADMIN_TOKEN=TOKEN,
        WORLDLOOP_STORE_URL="memory://",
    )
    loop = WorldLoop(app, world=lambda config: Drift(4))

    @app.get("/which")
    def which() -> dict[str, Any]:
        hosted = get_world()
        return {"name": hosted.name, "kind": hosted.kind}

    try:
        client = app.test_client()
        assert error_code(create(client, "d1", kind="drift"), 422) == "invalid_world"

        @loop.kind("drift")
        def drift(config: Any) -> Drift:
            return Drift(int(config.get("particles", 8)))

        assert create(client, "d1", kind="drift", particles=3).status_code == 201
        summary = client.get("/api/v1/worlds/d1").get_json()
        assert (summary["world"], summary["particles"]) == ("d1", 3)
        assert client.get("/which").get_json() == {"name": "drift", "kind": "default"}
    finally:
        app.extensions["worldloop"].stop()
