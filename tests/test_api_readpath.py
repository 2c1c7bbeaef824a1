"""The hot reads' shortcuts keep their answers: the world summary rendered once per snapshot
and loop state, the request observer's kept histogram children, the PlayerWorld check made
once per class (issue 11: the web workers' per-request cost)."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest
from flask import Flask

from worldloop.api import common
from worldloop.api import world as world_api
from worldloop.api.errors import Unsupported
from worldloop.api.world import summary_of
from worldloop.metrics import REGISTRY
from worldloop.runtime import WorldRuntime

from .test_api_v1 import ADMIN, make_app, rt_of


@pytest.fixture
def app(tmp_path: Path) -> Iterator[Flask]:
    flask_app = make_app(tmp_path)
    yield flask_app
    flask_app.extensions["worldloop"].stop()


def test_the_summary_is_the_json_providers_rendering_of_the_snapshot(app: Flask) -> None:
    client = app.test_client()
    assert client.post("/api/v1/admin/pause", headers=ADMIN).status_code == 200
    rt = rt_of(app)
    first = client.get("/api/v1/world")
    again = client.get("/api/v1/world")
    with app.app_context():
        expected = app.json.response(summary_of(rt.snapshot, rt.stats(), rt.running))
    assert first.status_code == again.status_code == 200
    assert first.data == again.data == expected.get_data()
    assert first.headers["Content-Type"] == expected.headers["Content-Type"]
    assert first.headers["Content-Length"] == str(len(expected.get_data()))
    assert "ETag" not in first.headers  # no new caching semantics on the summary
    assert first.json["paused"] is True and first.json["tick"] == rt.snapshot.tick


def test_the_summary_follows_the_loop_state_without_a_new_snapshot(app: Flask) -> None:
    client = app.test_client()
    assert client.post("/api/v1/admin/pause", headers=ADMIN).status_code == 200
    before = client.get("/api/v1/world").json
    assert before["paused"] is True and before["rate_hz"] == 50.0
    resp = client.post("/api/v1/admin/rate", json={"rate_hz": 10.0}, headers=ADMIN)
    assert resp.status_code == 200
    changed = client.get("/api/v1/world").json
    assert changed["tick"] == before["tick"] and changed["rate_hz"] == 10.0
    assert client.post("/api/v1/admin/resume", headers=ADMIN).status_code == 200
    assert client.get("/api/v1/world").json["paused"] is False
    rt_of(app).stop()
    stopped = client.get("/api/v1/world").json
    assert stopped["running"] is False


def test_the_summary_cache_lets_a_superseded_snapshot_go(
    app: Flask, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The rendered summary keeps nothing alive: once the runtime publishes a newer snapshot
    the one it was rendered from is collectable, and the newer one is rendered once."""
    client = app.test_client()
    assert client.post("/api/v1/admin/pause", headers=ADMIN).status_code == 200
    rt = rt_of(app)
    assert client.get("/api/v1/world").json["tick"] == rt.snapshot.tick
    superseded = weakref.ref(rt.snapshot)
    rt.step(1)
    assert rt.snapshot is not superseded()
    gc.collect()
    assert superseded() is None, gc.get_referrers(superseded())

    renders: list[int] = []

    def counted(snap: Any, stats: Any, running: bool) -> dict[str, Any]:
        renders.append(snap.tick)
        return summary_of(snap, stats, running)

    monkeypatch.setattr(world_api, "summary_of", counted)
    first, again = client.get("/api/v1/world"), client.get("/api/v1/world")
    assert first.data == again.data and first.json["tick"] == rt.snapshot.tick
    assert renders == [rt.snapshot.tick]  # rendered once for the current snapshot


def latency_count(endpoint: str, status: str) -> float:
    value = REGISTRY.get_sample_value(
        "worldloop_http_request_duration_seconds_count",
        {"method": "GET", "endpoint": endpoint, "status": status},
    )
    return value or 0.0


def test_each_request_is_observed_once_by_route_and_status(app: Flask) -> None:
    client = app.test_client()
    world, missing = latency_count("/api/v1/world", "200"), latency_count("<unmatched>", "404")
    entity = latency_count("/api/v1/entities/<int:entity_id>", "404")
    for _ in range(3):
        assert client.get("/api/v1/world").status_code == 200
    assert client.get("/nowhere").status_code == 404
    assert client.get("/api/v1/entities/999999").status_code == 404
    assert latency_count("/api/v1/world", "200") == world + 3
    assert latency_count("<unmatched>", "404") == missing + 1
    assert latency_count("/api/v1/entities/<int:entity_id>", "404") == entity + 1


class Hooked:
    """Every PlayerWorld hook, on the class."""

    def join_command(self, *a: Any) -> Any: ...
    def player_for_token(self, *a: Any) -> Any: ...
    def avatar_of(self, *a: Any) -> Any: ...
    def find_entity(self, *a: Any) -> Any: ...
    def page_entities(self, *a: Any) -> Any: ...


class Partly:
    """One hook short on the class; an instance may carry it itself."""

    def join_command(self, *a: Any) -> Any: ...
    def player_for_token(self, *a: Any) -> Any: ...
    def avatar_of(self, *a: Any) -> Any: ...
    def find_entity(self, *a: Any) -> Any: ...


def runtime_of(world: object) -> WorldRuntime:
    return cast(WorldRuntime, SimpleNamespace(world=world, name="w"))


def test_the_player_world_check_is_kept_per_class_only_when_the_class_has_every_hook() -> None:
    hooked = Hooked()
    assert common.player_world(runtime_of(hooked)) is hooked
    assert Hooked in common._PLAYER_CLASSES
    assert common.player_world(runtime_of(Hooked())) is not hooked
    carried = Partly()
    carried.page_entities = lambda *a: None  # type: ignore[attr-defined]
    assert common.player_world(runtime_of(carried)) is carried
    assert Partly not in common._PLAYER_CLASSES  # another instance may not carry it
    with pytest.raises(Unsupported):
        common.player_world(runtime_of(Partly()))
    with pytest.raises(Unsupported):
        common.player_world(runtime_of(object()))


def test_entity_pages_hold_each_entitys_own_record(app: Flask) -> None:
    """Pages gathered a column at a time are the single-entity records, in id order, with
    and without a box, across cursors, owners (avatars) included."""
    from worldloop.demo.views import entity_dict, in_bbox, page_entities

    client = app.test_client()
    for name in ("ann", "bob"):
        assert client.post("/api/v1/players", json={"name": name}).status_code == 201
    assert client.post("/api/v1/admin/pause", headers=ADMIN).status_code == 200
    snap = rt_of(app).snapshot
    n = len(snap.data["entities"]["id"])
    for bbox in (None, (0.0, 0.0, 200.0, 150.0)):
        rows = list(range(n)) if bbox is None else in_bbox(snap, bbox).tolist()
        expected = [entity_dict(snap, r) for r in rows]
        assert any(e["player_id"] for e in expected) or bbox is not None
        got: list[dict[str, Any]] = []
        cursor = 0
        while True:
            items, cursor_next = page_entities(snap, bbox, 37, cursor)
            got += items
            if cursor_next is None:
                break
            assert cursor_next == items[-1]["id"]
            cursor = cursor_next
        assert got == expected
        assert [type(v) for v in got[0].values()] == [type(v) for v in expected[0].values()]
    ids = snap.data["entities"]["id"]
    assert page_entities(snap, None, 10, int(ids[-1])) == ([], None)
    assert page_entities(snap, None, 5, int(ids[-6])) == (
        [entity_dict(snap, r) for r in range(n - 5, n)],
        None,
    )
