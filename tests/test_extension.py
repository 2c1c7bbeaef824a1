"""The Flask extension in-process: config, app.extensions, the world endpoint, JSON errors."""

from __future__ import annotations

import pytest
from flask import Flask

from worldloop import ConfigError, WorldLoop, WorldLoopError, WorldLoopState
from worldloop.api import register_error_handlers, world_bp
from worldloop.demo.meadow import create_world
from worldloop.extension import serving_role

from .support import wait_for


def test_world_summary_advances_on_its_own(client):
    first = client.get("/api/v1/world").get_json()
    assert {"tick", "rate_hz", "paused", "entity_count"} <= first.keys()
    assert first["rate_hz"] == 20.0 and first["paused"] is False
    wait_for(
        lambda: client.get("/api/v1/world").get_json()["tick"] > first["tick"] + 2,
        10,
        what="ticks to advance",
    )


def test_state_lives_in_app_extensions_with_prefixed_defaults(app):
    ext = app.extensions["worldloop"]
    assert isinstance(ext, WorldLoopState)  # per-app state; the WorldLoop object holds none
    assert app.config["WORLDLOOP_RATE_HZ"] == 20.0
    assert app.config["WORLDLOOP_QUEUE_SIZE"] == 10_000
    assert ext.runtime is not None and ext.runtime.running


def test_init_app_pattern_and_manual_start(tmp_path):
    ext = WorldLoop(world=create_world)
    app = Flask("t", instance_path=str(tmp_path))
    app.config.update(WORLDLOOP_AUTOSTART="never", WORLDLOOP_RATE_HZ=50, MEADOW_ENTITIES=10)
    register_error_handlers(app)
    app.register_blueprint(world_bp)
    ext.init_app(app)
    client = app.test_client()
    resp = client.get("/api/v1/world")
    assert resp.status_code == 503
    assert resp.get_json()["error"]["code"] == "world_not_running"
    ext.start()
    try:
        body = client.get("/api/v1/world").get_json()
        assert body["entity_count"] == 10 and body["rate_hz"] == 50
    finally:
        assert ext.stop()


def test_lazy_start_waits_for_the_first_request(tmp_path):
    app = Flask("t", instance_path=str(tmp_path))
    app.config.update(WORLDLOOP_AUTOSTART="lazy")
    app.register_blueprint(world_bp)
    ext = WorldLoop(app, world=create_world)
    assert not ext.runtime.running
    assert app.test_client().get("/api/v1/world").status_code == 200
    assert ext.runtime.running
    ext.stop()


def test_world_from_config_import_path(tmp_path):
    app = Flask("t", instance_path=str(tmp_path))
    app.config.update(
        WORLDLOOP_WORLD="worldloop.demo.meadow:create_world", WORLDLOOP_AUTOSTART="never"
    )
    ext = WorldLoop(app)
    assert ext.runtime.world.name == "meadow"


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"WORLDLOOP_WORLD": "no.such.module:f"}, "cannot be imported"),
        ({}, "no world"),
        (
            {"WORLDLOOP_WORLD": create_world, "WORLDLOOP_AUTOSTART": "sometimes"},
            "WORLDLOOP_AUTOSTART",
        ),
    ],
)
def test_bad_configuration_is_a_clear_error(tmp_path, config, message):
    app = Flask("t", instance_path=str(tmp_path))
    app.config.update(config)
    with pytest.raises(ConfigError, match=message):
        WorldLoop(app)


def test_a_second_app_on_the_same_instance_is_refused(app, tmp_path):
    from worldloop.demo import create_app

    with pytest.raises(WorldLoopError, match="already running"):
        create_app({"WORLDLOOP_HANDLE_SIGNALS": False}, instance_path=app.instance_path)


def test_errors_are_json_never_html(client):
    resp = client.get("/no/such/page")
    assert resp.status_code == 404
    assert resp.get_json()["error"]["code"] == "not_found"
    resp = client.post("/api/v1/world")
    assert resp.status_code == 405
    assert resp.get_json()["error"]["code"] == "method_not_allowed"
    assert "GET" in resp.headers["Allow"]


def test_unexpected_exceptions_become_a_json_500(tmp_path):
    app = Flask("t", instance_path=str(tmp_path))
    register_error_handlers(app)

    @app.get("/bug")
    def bug() -> str:
        raise RuntimeError("secret internals")

    resp = app.test_client().get("/bug")
    assert resp.status_code == 500
    assert resp.get_json() == {
        "error": {"code": "internal_error", "message": "internal server error", "details": {}}
    }
    assert b"secret internals" not in resp.data


def test_serving_role_outside_any_server_is_unknown(monkeypatch):
    monkeypatch.delenv("WERKZEUG_RUN_MAIN", raising=False)
    assert serving_role() == "unknown"
    monkeypatch.setenv("WERKZEUG_RUN_MAIN", "true")
    assert serving_role() == "serve"
