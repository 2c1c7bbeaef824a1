"""REST API v1 against the demo app with its loop running: every endpoint, bad input, auth."""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Iterator
from typing import Any

import jsonschema_rs
import pytest
from flask import Flask
from flask.testing import FlaskClient

import worldloop.snapshot
from worldloop.api.v1 import register_v1
from worldloop.demo import create_app
from worldloop.demo.docs import document
from worldloop.plugins import TickListener
from worldloop.runtime import WorldRuntime

from .support import wait_for

ADMIN = {"Authorization": "Bearer admin-secret-0123456"}


def make_app(tmp_path: Any, **config: Any) -> Flask:
    os.environ.pop("WERKZEUG_RUN_MAIN", None)
    base = {
        "TESTING": True,
        "WORLDLOOP_HANDLE_SIGNALS": False,
        "WORLDLOOP_ADMIN_TOKEN": "admin-secret-0123456",
        "WORLDLOOP_RATE_HZ": 50.0,
        "MEADOW_ENTITIES": 300,
        "MEADOW_WIDTH": 400.0,
        "MEADOW_HEIGHT": 300.0,
    }
    base.update(config)
    return create_app(base, instance_path=str(tmp_path / "instance"))


@pytest.fixture
def app(tmp_path: Any) -> Iterator[Flask]:
    flask_app = make_app(tmp_path)
    yield flask_app
    flask_app.extensions["worldloop"].stop()


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


def rt_of(app: Flask) -> WorldRuntime:
    runtime = app.extensions["worldloop"].runtime
    assert runtime is not None
    return runtime


def join(client: FlaskClient, name: str = "ann") -> dict[str, Any]:
    resp = client.post("/api/v1/players", json={"name": name})
    assert resp.status_code == 201, resp.json
    body: dict[str, Any] = resp.json
    return body


def bearer(player: dict[str, Any]) -> dict[str, str]:
    return {"Authorization": f"Bearer {player['token']}"}


def assert_error(resp: Any, status: int, code: str | None = None) -> dict[str, Any]:
    assert resp.status_code == status, (resp.status_code, resp.data[:300])
    assert resp.is_json
    err: dict[str, Any] = resp.json["error"]
    assert set(err) == {"code", "message", "details"}
    assert isinstance(err["message"], str) and err["message"]
    assert b"Traceback" not in resp.data
    if code is not None:
        assert err["code"] == code
    return err


# -- world ---------------------------------------------------------------------------------


def test_world_summary(client: FlaskClient) -> None:
    body = client.get("/api/v1/world").json
    for key in ("tick", "rate_hz", "paused", "entity_count", "creature_count", "player_count"):
        assert key in body
    assert body["rate_hz"] == 50.0 and body["paused"] is False
    assert body["creature_count"] == body["entity_count"] >= 1


# -- players -------------------------------------------------------------------------------


def test_join_returns_token_once_and_makes_an_avatar(app: Flask, client: FlaskClient) -> None:
    player = join(client, "  Ann  ")
    assert player["name"] == "Ann"
    assert len(player["player_id"]) == 32 and len(player["token"]) >= 40
    ent = client.get(f"/api/v1/entities/{player['entity_id']}").json
    assert ent["kind"] == "avatar" and ent["player_id"] == player["player_id"]
    assert ent["name"] == "Ann"
    # the token is kept only hashed: not in the live state nor any published byte
    rt = rt_of(app)
    state = rt.world.get_state()
    assert player["token"] not in str(state["players"])
    snap = client.get("/api/v1/world/snapshot")
    assert player["token"].encode() not in snap.data
    assert b"token_hash" not in snap.data
    assert client.get("/api/v1/world").json["player_count"] == 1


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"name": ""},
        {"name": "   "},
        {"name": "x" * 33},
        {"name": 5},
        {"name": None},
        {"name": "a\u0000b"},
        {"name": "\ud800"},
    ],
)
def test_join_rejects_bad_names(client: FlaskClient, body: dict[str, Any]) -> None:
    err = assert_error(client.post("/api/v1/players", json=body), 422, "invalid_command")
    assert err["details"]["field"] == "name"


@pytest.mark.parametrize(
    "data",
    [b"", b"not json", b"[1, 2]", b'"ann"', b"{" * 5000, b'{"name": "a"'],
)
def test_join_rejects_bodies_that_are_not_json_objects(client: FlaskClient, data: bytes) -> None:
    resp = client.post("/api/v1/players", data=data, content_type="application/json")
    assert_error(resp, 400, "bad_request")


def test_request_size_limit(client: FlaskClient) -> None:
    resp = client.post("/api/v1/players", json={"name": "a", "pad": "x" * 20_000})
    assert_error(resp, 413)


def test_join_rate_limit_per_address(tmp_path: Any) -> None:
    app = make_app(tmp_path, WORLDLOOP_JOIN_RATE_LIMIT=0.01, WORLDLOOP_JOIN_RATE_BURST=2)
    try:
        c = app.test_client()
        join(c, "a")
        join(c, "b")
        resp = c.post("/api/v1/players", json={"name": "c"})
        err = assert_error(resp, 429, "rate_limited")
        assert int(resp.headers["Retry-After"]) >= 1
        assert err["details"]["retry_after"] > 0
        other = c.post(
            "/api/v1/players", json={"name": "d"}, environ_base={"REMOTE_ADDR": "10.0.0.9"}
        )
        assert other.status_code == 201
    finally:
        app.extensions["worldloop"].stop()


def test_join_while_paused_is_refused(client: FlaskClient) -> None:
    assert client.post("/api/v1/admin/pause", headers=ADMIN).status_code == 200
    assert_error(client.post("/api/v1/players", json={"name": "ann"}), 409, "clock_state")


# -- commands ------------------------------------------------------------------------------


def test_commands_need_a_valid_player_token(client: FlaskClient) -> None:
    cmd = {"type": "stop"}
    resp = client.post("/api/v1/commands", json=cmd)
    assert_error(resp, 401, "unauthorized")
    assert resp.headers["WWW-Authenticate"].startswith("Bearer")
    for header in ("Basic abc", "Bearer", "Bearer    ", "Token x", "Bearer " + "x" * 300):
        assert_error(
            client.post("/api/v1/commands", json=cmd, headers={"Authorization": header}), 401
        )
    resp = client.post("/api/v1/commands", json=cmd, headers={"Authorization": "Bearer nope"})
    assert_error(resp, 401, "unauthorized")
    # the admin token is not a player token
    assert_error(client.post("/api/v1/commands", json=cmd, headers=ADMIN), 401)


def test_move_to_waits_for_the_result_and_the_avatar_walks(client: FlaskClient) -> None:
    p = join(client)
    resp = client.post(
        "/api/v1/commands?wait=true", json={"type": "move_to", "x": 20, "y": 30}, headers=bearer(p)
    )
    assert resp.status_code == 200, resp.json
    body = resp.json
    assert body["status"] == "applied" and body["type"] == "move_to"
    assert body["result"]["target"] == {"x": 20.0, "y": 30.0}
    assert body["result"]["entity_id"] == p["entity_id"]

    def arrived() -> bool:
        e = client.get(f"/api/v1/entities/{p['entity_id']}").json
        return bool(e["x"] == 20.0 and e["y"] == 30.0)

    wait_for(arrived, timeout=20, what="the avatar to reach its target")


def test_queued_command_can_be_looked_up_until_applied(client: FlaskClient) -> None:
    p = join(client)
    resp = client.post("/api/v1/commands", json={"type": "say", "text": "baa"}, headers=bearer(p))
    assert resp.status_code == 202
    body = resp.json
    assert body["status"] == "queued" and isinstance(body["tick"], int)
    cid = body["command_id"]
    assert resp.headers["Location"] == f"/api/v1/commands/{cid}"

    def applied() -> dict[str, Any] | None:
        got = client.get(f"/api/v1/commands/{cid}", headers=bearer(p)).json
        return got if got["status"] == "applied" else None

    got = wait_for(applied, timeout=10, what="the command to apply")
    assert got["result"]["text"] == "baa" and got["tick"] > body["tick"]
    frame_players = client.get("/api/v1/world/snapshot").json["data"]["chat"]
    assert frame_players[-1]["text"] == "baa"


def test_rejected_command_reports_its_reason(client: FlaskClient) -> None:
    p = join(client)
    h = bearer(p)
    # planting adds 0.5 to the avatar's cell; once it is full grown the world refuses
    for _ in range(10):
        r = client.post("/api/v1/commands?wait=1", json={"type": "plant"}, headers=h)
        if r.status_code != 200:
            break
        assert r.json["result"]["grass"] > 0
    err = assert_error(r, 409, "command_rejected")
    assert err["details"]["reason"] == "cell_full"
    assert "command_id" in err["details"] and "tick" in err["details"]


def test_a_player_cannot_act_on_another_avatar(client: FlaskClient) -> None:
    ann, bob = join(client, "ann"), join(client, "bob")
    for target in (bob["entity_id"], 1):
        resp = client.post(
            "/api/v1/commands?wait=true",
            json={"type": "move_to", "x": 1, "y": 1, "entity_id": target},
            headers=bearer(ann),
        )
        err = assert_error(resp, 403, "forbidden")
        assert err["details"]["own_entity_id"] == ann["entity_id"]
    own = client.post(
        "/api/v1/commands?wait=true",
        json={"type": "stop", "entity_id": ann["entity_id"]},
        headers=bearer(ann),
    )
    assert own.status_code == 200
    # nor read another player's command
    cid = client.post("/api/v1/commands", json={"type": "stop"}, headers=bearer(bob)).json[
        "command_id"
    ]
    # issue 10 finding 3: "not found", like an unknown id (a 403 would confirm it exists)
    assert_error(client.get(f"/api/v1/commands/{cid}", headers=bearer(ann)), 404, "not_found")
    assert client.get(f"/api/v1/commands/{cid}", headers=bearer(bob)).status_code == 200


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({"type": "fly"}, 422),
        ({"type": "join", "player_id": "a" * 32, "name": "x", "token_hash": "b" * 64}, 422),
        ({"type": "move", "entity_id": 1, "vx": 1, "vy": 1}, 422),
        ({"x": 1, "y": 2}, 422),
        ({"type": ["move_to"]}, 422),
        ({"type": "move_to", "x": 1}, 422),
        ({"type": "move_to", "x": "1", "y": 2}, 422),
        ({"type": "move_to", "x": 1, "y": 1e300}, 422),
        ({"type": "move_to", "x": 1, "y": 2, "entity_id": "me"}, 422),
        ({"type": "say"}, 422),
        ({"type": "say", "text": "x" * 201}, 422),
        ({"type": "say", "text": "\udfff"}, 422),
    ],
)
def test_bad_commands_are_refused(client: FlaskClient, body: dict[str, Any], status: int) -> None:
    p = join(client)
    assert_error(client.post("/api/v1/commands", json=body, headers=bearer(p)), status)


def test_command_bad_query_and_unknown_ids(client: FlaskClient) -> None:
    p = join(client)
    h = bearer(p)
    resp = client.post("/api/v1/commands?wait=maybe", json={"type": "stop"}, headers=h)
    assert_error(resp, 400, "bad_request")
    assert_error(client.post("/api/v1/commands", data=b"[]", headers=h), 400)
    assert_error(client.get("/api/v1/commands/" + "0" * 32, headers=h), 404, "not_found")
    assert_error(client.get("/api/v1/commands/" + "z" * 500, headers=h), 404)
    assert_error(client.get("/api/v1/commands/abc"), 401)


def test_per_token_rate_limit(tmp_path: Any) -> None:
    app = make_app(tmp_path, WORLDLOOP_RATE_LIMIT=0.01, WORLDLOOP_RATE_BURST=3)
    try:
        c = app.test_client()
        ann, bob = join(c, "ann"), join(c, "bob")
        statuses = [
            c.post("/api/v1/commands", json={"type": "stop"}, headers=bearer(ann)).status_code
            for _ in range(5)
        ]
        assert statuses == [202, 202, 202, 429, 429]
        resp = c.post("/api/v1/commands", json={"type": "stop"}, headers=bearer(ann))
        assert_error(resp, 429, "rate_limited")
        assert int(resp.headers["Retry-After"]) >= 1
        # another token has its own bucket
        assert (
            c.post("/api/v1/commands", json={"type": "stop"}, headers=bearer(bob)).status_code
            == 202
        )
    finally:
        app.extensions["worldloop"].stop()


# -- entities ------------------------------------------------------------------------------


def test_entities_bbox_and_paging_agree_with_the_snapshot(app: Flask, client: FlaskClient) -> None:
    client.post("/api/v1/admin/pause", headers=ADMIN)
    snap = client.get("/api/v1/world/snapshot").json
    pos = snap["data"]["entities"]["pos"]
    ids = snap["data"]["entities"]["id"]
    want = [i for i, (x, y) in zip(ids, pos, strict=True) if 100 <= x < 250 and 50 <= y < 200]
    got: list[int] = []
    cursor = None
    pages = 0
    while True:
        url = "/api/v1/entities?bbox=100,50,250,200&limit=7" + (
            f"&cursor={cursor}" if cursor else ""
        )
        page = client.get(url).json
        assert page["tick"] == snap["tick"]
        assert len(page["items"]) <= 7
        for item in page["items"]:
            assert 100 <= item["x"] < 250 and 50 <= item["y"] < 200
        got += [item["id"] for item in page["items"]]
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert got == want and pages >= 2
    everyone = client.get("/api/v1/entities?limit=1000").json
    assert [e["id"] for e in everyone["items"]] == ids[:1000]


@pytest.mark.parametrize(
    "query",
    [
        "bbox=1,2,3",
        "bbox=a,b,c,d",
        "bbox=0,0,1,10,5",
        "bbox=0,0,10,nan",
        "bbox=0,0,inf,10",
        "limit=0",
        "limit=1001",
        "limit=ten",
        "cursor=-1",
        "cursor=abc",
        "cursor=1.5",
    ],
)
def test_entities_bad_queries(client: FlaskClient, query: str) -> None:
    assert_error(client.get(f"/api/v1/entities?{query}"), 400, "bad_request")


def test_single_entity(client: FlaskClient) -> None:
    ent = client.get("/api/v1/entities/1").json
    assert ent["id"] == 1 and ent["kind"] == "sheep" and ent["player_id"] is None
    assert_error(client.get("/api/v1/entities/999999999"), 404, "not_found")
    assert_error(client.get("/api/v1/entities/" + "9" * 40), 404)
    assert_error(client.get("/api/v1/entities/sheep"), 404)


# -- snapshot ------------------------------------------------------------------------------


def test_snapshot_etag_and_304(client: FlaskClient) -> None:
    client.post("/api/v1/admin/pause", headers=ADMIN)
    resp = client.get("/api/v1/world/snapshot")
    assert resp.status_code == 200
    etag = resp.headers["ETag"]
    tick = resp.json["tick"]
    assert etag == f'"meadow-{tick}"'
    assert resp.json["data"]["entities"]["id"]
    again = client.get("/api/v1/world/snapshot", headers={"If-None-Match": etag})
    assert again.status_code == 304 and again.data == b""
    other = client.get("/api/v1/world/snapshot", headers={"If-None-Match": '"meadow-0", "x"'})
    assert other.status_code == 200 or tick == 0


def test_snapshot_long_poll(client: FlaskClient) -> None:
    client.post("/api/v1/admin/pause", headers=ADMIN)
    tick = client.get("/api/v1/world/snapshot").json["tick"]
    # paused: the long poll times out and returns the same snapshot
    resp = client.get(f"/api/v1/world/snapshot?after_tick={tick}&timeout=0.2")
    assert resp.json["tick"] == tick
    result: dict[str, Any] = {}

    def poll() -> None:
        result["r"] = client.get(f"/api/v1/world/snapshot?after_tick={tick}&timeout=20")

    t = threading.Thread(target=poll)
    t.start()
    assert client.post("/api/v1/admin/step", json={"n": 1}, headers=ADMIN).status_code == 200
    t.join(25)
    assert not t.is_alive()
    assert result["r"].json["tick"] == tick + 1


@pytest.mark.parametrize(
    "query", ["after_tick=x", "after_tick=-5", "timeout=-1", "timeout=31", "timeout=nan"]
)
def test_snapshot_bad_queries(client: FlaskClient, query: str) -> None:
    assert_error(client.get(f"/api/v1/world/snapshot?{query}"), 400, "bad_request")


def test_snapshot_is_serialized_once_per_tick(
    client: FlaskClient, app: Flask, monkeypatch: pytest.MonkeyPatch
) -> None:
    client.post("/api/v1/admin/pause", headers=ADMIN)
    calls: list[int] = []
    real = worldloop.snapshot.dumps

    def counting(data: Any) -> bytes:
        calls.append(data["tick"])
        return real(data)

    monkeypatch.setattr(worldloop.snapshot, "dumps", counting)
    bodies: list[bytes] = []
    lock = threading.Lock()

    def read() -> None:
        c = app.test_client()
        for _ in range(5):
            data = c.get("/api/v1/world/snapshot").data
            with lock:
                bodies.append(data)

    threads = [threading.Thread(target=read) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert len(bodies) == 40 and len(set(bodies)) == 1
    assert len(calls) == 1
    client.post("/api/v1/admin/step", json={"n": 1}, headers=ADMIN)
    for _ in range(3):
        client.get("/api/v1/world/snapshot")
    assert len(calls) == 2 and calls[1] == calls[0] + 1


# -- admin ---------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["pause", "resume", "step", "rate", "snapshot"])
def test_admin_needs_the_admin_token(client: FlaskClient, path: str) -> None:
    url = f"/api/v1/admin/{path}"
    assert_error(client.post(url, json={}), 401, "unauthorized")
    assert_error(client.post(url, json={}, headers={"Authorization": "Bearer wrong"}), 403)
    p = join(client)
    assert_error(client.post(url, json={}, headers=bearer(p)), 403, "forbidden")
    assert_error(client.get("/api/v1/admin/status"), 401)


def test_admin_disabled_without_a_token(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WORLDLOOP_ADMIN_TOKEN", raising=False)
    app = make_app(tmp_path, WORLDLOOP_ADMIN_TOKEN=None)
    try:
        resp = app.test_client().post("/api/v1/admin/pause", headers=ADMIN)
        assert_error(resp, 403, "forbidden")
    finally:
        app.extensions["worldloop"].stop()


def test_admin_token_from_the_environment(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WORLDLOOP_ADMIN_TOKEN", "from-env-0123456789")
    app = make_app(tmp_path, WORLDLOOP_ADMIN_TOKEN=None)
    try:
        c = app.test_client()
        assert c.get(
            "/api/v1/admin/status", headers={"Authorization": "Bearer from-env-0123456789"}
        ).json["running"]
    finally:
        app.extensions["worldloop"].stop()


def test_admin_clock_controls(app: Flask, client: FlaskClient) -> None:
    rt = rt_of(app)
    body = client.post("/api/v1/admin/pause", headers=ADMIN).json
    assert body["paused"] is True
    tick = rt.wait_for_snapshot(-1, 0).tick
    assert rt.wait_for_snapshot(tick, 0.3).tick == tick  # no tick while paused
    stepped = client.post("/api/v1/admin/step", json={"n": 3}, headers=ADMIN).json
    assert stepped["tick"] == tick + 3 and stepped["stepped"] == 3
    assert client.get("/api/v1/world").json["tick"] == tick + 3
    assert (
        client.post("/api/v1/admin/rate", json={"rate_hz": 12.5}, headers=ADMIN).json["rate_hz"]
        == 12.5
    )
    assert rt.stats().rate_hz == 12.5
    paused_snap = client.post("/api/v1/admin/snapshot", headers=ADMIN).json
    assert paused_snap["tick"] == tick + 3  # taken between ticks, paused or not
    assert paused_snap["state_hash"] == rt.world.state_hash()
    body = client.post("/api/v1/admin/resume", headers=ADMIN).json
    assert body["paused"] is False
    wait_for(lambda: rt.snapshot.tick > tick + 3, timeout=10, what="ticking again")
    assert_error(
        client.post("/api/v1/admin/step", json={"n": 1}, headers=ADMIN), 409, "clock_state"
    )
    snap = client.post("/api/v1/admin/snapshot", headers=ADMIN).json
    assert len(snap["state_hash"]) == 64 and snap["tick"] >= tick + 3
    assert snap["stored"] is True  # the demo app journals to its SQLite store


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("step", {"n": 0}),
        ("step", {"n": 1001}),
        ("step", {"n": "3"}),
        ("step", {"n": True}),
        ("rate", {}),
        ("rate", {"rate_hz": 0}),
        ("rate", {"rate_hz": -5}),
        ("rate", {"rate_hz": 5000}),
        ("rate", {"rate_hz": 0.009}),
        ("rate", {"rate_hz": "fast"}),
    ],
)
def test_admin_bad_bodies(client: FlaskClient, path: str, body: dict[str, Any]) -> None:
    client.post("/api/v1/admin/pause", headers=ADMIN)
    assert_error(client.post(f"/api/v1/admin/{path}", json=body, headers=ADMIN), 422)
    assert_error(client.post(f"/api/v1/admin/{path}", data=b"{oops", headers=ADMIN), 400)


@pytest.mark.parametrize("rate", [5e-324, 1e-300, 1e-11, 1e-5])
def test_a_tiny_rate_is_refused_and_the_loop_lives_on(
    app: Flask, client: FlaskClient, rate: float
) -> None:
    """Found by fuzzing: a tiny positive rate made the loop's next wait overflow (or its period
    infinite), killing the loop thread, or stalled the world long after the rate was reset."""
    assert_error(client.post("/api/v1/admin/rate", json={"rate_hz": rate}, headers=ADMIN), 422)
    tick = client.get("/api/v1/world").json["tick"]
    wait_for(lambda: client.get("/api/v1/world").json["tick"] > tick + 2, 10.0, what="ticks")
    assert rt_of(app).running


# -- errors and docs -----------------------------------------------------------------------


def test_unknown_routes_and_methods_are_json(client: FlaskClient) -> None:
    assert_error(client.get("/api/v1/nothing"), 404)
    resp = client.delete("/api/v1/world")
    assert_error(resp, 405)
    assert "GET" in resp.headers["Allow"]


def test_openapi_document_covers_every_route_of_the_demo_app(
    app: Flask, client: FlaskClient
) -> None:
    """Every route the demo app registers (static files aside) is documented, and nothing else:
    a new undocumented route fails here."""
    doc = client.get("/openapi.json").json
    assert doc["openapi"].startswith("3.")
    routes = set()
    for rule in app.url_map.iter_rules():
        if rule.endpoint == "static" or rule.endpoint.endswith(".static"):
            continue  # Flask's and the viewer's static files
        path = re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", rule.rule)
        for method in rule.methods - {"HEAD", "OPTIONS"}:
            routes.add((path, method.lower()))
    assert {"/api/v1/stream", "/healthz", "/metrics", "/api/v1/admin/jobs/{name}/run"} <= {
        p for p, _ in routes
    }
    documented = {(p, m) for p, item in document()["paths"].items() for m in item}
    assert routes == documented
    assert doc == document()  # the demo app routes everything, so it serves the whole document
    page = client.get("/docs")
    assert page.status_code == 200 and page.mimetype == "text/html"
    assert b"/openapi.json" in page.data


def test_openapi_document_is_valid_openapi_3_1() -> None:
    # the OAS 3.1 meta-schema as shipped (and pinned) with schemathesis
    from schemathesis.specs.openapi.definitions import OPENAPI_31

    errors = [
        f"{e.instance_path}: {e.message[:200]}"
        for e in jsonschema_rs.validator_for(OPENAPI_31).iter_errors(document())
    ]
    assert errors == []


def test_served_document_lists_only_the_routes_an_app_has() -> None:
    """An app with only REST API v1 (no observation, jobs or demo) is not promised the rest."""
    bare = Flask("bare")
    register_v1(bare)
    doc = bare.test_client().get("/api/v1/openapi.json").json
    assert "/api/v1/world" in doc["paths"] and "/api/v1/admin/step" in doc["paths"]
    for absent in ("/metrics", "/readyz", "/api/v1/stream", "/api/v1/admin/jobs", "/"):
        assert absent not in doc["paths"]
    # built from its routes: the schemas they use (no world, so no commands), nothing else
    demo = document()["components"]
    assert doc["components"]["securitySchemes"] == demo["securitySchemes"]
    assert {"Error", "WorldSummary", "AdminStatus"} <= set(doc["components"]["schemas"])
    assert set(doc["components"]["schemas"]) < set(demo["schemas"])
    assert not {"Frame", "Job", "Leaderboard", "MoveToCommand"} & set(doc["components"]["schemas"])


def test_journal_replay_of_api_commands_reproduces_the_state_hash(tmp_path: Any) -> None:
    """Same state + same commands => same state: replay what the loop applied, tick by tick."""
    from worldloop import Command
    from worldloop.demo.meadow import create_world

    config = {"WORLDLOOP_START_PAUSED": True, "MEADOW_SEED": 42}
    app = make_app(tmp_path, **config)
    try:
        rt = rt_of(app)
        journal: list[tuple[int, list[dict[str, Any]]]] = []
        rt.add_plugin(
            TickListener(
                lambda rep: journal.append(
                    (rep.tick, [o.command.to_record() for o in rep.outcomes])
                )
            )
        )
        c = app.test_client()
        assert c.post("/api/v1/admin/resume", headers=ADMIN).status_code == 200
        ann, bob = join(c, "ann"), join(c, "bob")
        for i in range(5):
            c.post(
                "/api/v1/commands?wait=true",
                json={"type": "move_to", "x": 10 * i, "y": 7 * i},
                headers=bearer(ann),
            )
            c.post("/api/v1/commands", json={"type": "plant"}, headers=bearer(bob))
            c.post(
                "/api/v1/commands?wait=true",
                json={"type": "say", "text": f"hi {i}"},
                headers=bearer(bob),
            )
        c.post("/api/v1/admin/pause", headers=ADMIN)
        live_tick = rt.snapshot.tick
        wait_for(lambda: journal and journal[-1][0] == live_tick, timeout=5)
        live_hash = rt.world.state_hash()  # paused: the loop thread is idle

        fresh = create_world({**app.config, **config})
        fresh.use_rate(app.extensions["worldloop"].settings.rate_hz)  # as the runtime made it
        fresh.outbox.nonce = rt.world.outbox.nonce  # drawn by the runtime for a new world
        assert fresh.tick == 0 and journal[0][0] == 1
        for tick, records in journal:
            fresh.step([Command.from_record(r) for r in records])
            assert fresh.tick == tick
        assert sum(len(r) for _, r in journal) >= 17
        assert fresh.state_hash() == live_hash
    finally:
        app.extensions["worldloop"].stop()


def test_many_players_at_once(app: Flask, client: FlaskClient) -> None:
    """Concurrent players (bounded: 8 threads x 20 commands): every command is answered
    with its own result, never a 5xx, and each avatar ends where its last move_to sent it."""
    players = [join(client, f"p{i}") for i in range(8)]
    errors: list[Any] = []
    finals: dict[str, tuple[float, float]] = {}

    def play(p: dict[str, Any], seed: int) -> None:
        c = app.test_client()
        for k in range(20):
            x, y = float((seed * 37 + k * 11) % 400), float((seed * 17 + k * 7) % 300)
            body = (
                {"type": "move_to", "x": x, "y": y}
                if k % 4
                else {"type": "say", "text": f"{p['name']} {k}"}
            )
            r = c.post("/api/v1/commands?wait=true", json=body, headers=bearer(p))
            if r.status_code != 200 or r.json["result"]["entity_id"] != p["entity_id"]:
                errors.append((r.status_code, r.json))
            if body["type"] == "move_to":
                finals[p["player_id"]] = (x, y)

    threads = [threading.Thread(target=play, args=(p, i)) for i, p in enumerate(players)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors
    rt = rt_of(app)

    def all_arrived() -> bool:
        snap = rt.snapshot
        world = rt.world
        for p in players:
            e = world.find_entity(snap, p["entity_id"])  # type: ignore[attr-defined]
            if e is None or (e["x"], e["y"]) != finals[p["player_id"]]:
                return False
        return True

    wait_for(all_arrived, timeout=30, what="every avatar at its last target")
    chat = client.get("/api/v1/world/snapshot").json["data"]["chat"]
    assert len(chat) == 40 and {line["name"] for line in chat} == {p["name"] for p in players}
