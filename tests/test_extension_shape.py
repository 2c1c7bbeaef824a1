"""The extension the Flask way: per-app state, one registration per app, one extension for
many apps, and the README's own example answering bad input with JSON (issue 9)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask

from worldloop import (
    CommandInvalid,
    ConfigError,
    System,
    World,
    WorldLoop,
    WorldLoopState,
    get_runtime,
)
from worldloop.demo.meadow import create_world


class Counter(World):
    """The README's "Use it in your app" world, unchanged."""

    name = "counter"

    def __init__(self) -> None:
        super().__init__()
        self.n = 0

    def validate(self, type_: str, payload: Any, actor: str | None) -> dict[str, Any]:
        if type_ != "add" or not isinstance(payload.get("by"), int):
            raise CommandInvalid("send {type: add, by: int}")
        return {"by": payload["by"]}

    def apply(self, command: Any) -> Any:
        self.n += command.payload["by"]
        return {"n": self.n}

    def systems(self) -> list[System]:
        return [System("decay", lambda: setattr(self, "n", self.n * 0.99))]

    def get_state(self) -> dict[str, Any]:
        return {"n": self.n}

    def set_state(self, state: Any) -> None:
        self.n = state["n"]

    def view(self) -> dict[str, Any]:
        return {"n": self.n}


def counter_app(tmp_path: Any, **config: Any) -> tuple[Flask, WorldLoop]:
    """The README's app, verbatim but for the instance folder and test-friendly settings."""
    app = Flask("counter", instance_path=str(tmp_path))
    app.config["WORLDLOOP_RATE_HZ"] = 30
    app.config["WORLDLOOP_HANDLE_SIGNALS"] = False
    app.config.update(config)
    loop = WorldLoop(app, world=lambda config: Counter())

    @app.post("/add")
    def add() -> dict[str, Any]:
        body = dict(__import__("flask").request.get_json(silent=True) or {"by": 1})
        ticket = get_runtime().submit("add", body)
        ticket.wait(1.0)
        return ticket.to_dict()

    @app.get("/n")
    def n() -> dict[str, Any]:
        return dict(get_runtime().snapshot.data)

    return app, loop


@pytest.fixture
def counter(tmp_path: Any) -> Iterator[tuple[Flask, WorldLoop]]:
    app, loop = counter_app(tmp_path)
    yield app, loop
    app.extensions["worldloop"].stop()


def test_a_second_worldloop_on_one_app_is_refused(counter: tuple[Flask, WorldLoop]) -> None:
    app, _loop = counter
    first = app.extensions["worldloop"]
    with pytest.raises(ConfigError, match="already registered"):
        WorldLoop(app, world=lambda config: Counter())
    assert app.extensions["worldloop"] is first and first.runtime.running


def test_one_worldloop_serves_two_apps_each_with_its_own_world(tmp_path: Any) -> None:
    loop = WorldLoop(world=create_world, handle_signals=False)
    seen: list[str] = []

    @loop.job("census", every_ticks=1, kind="world")
    def census(world: Any, ctx: Any) -> None:
        seen.append(ctx.name)

    apps = []
    for name in ("a", "b"):
        app = Flask(name, instance_path=str(tmp_path / name))
        app.config.update(MEADOW_ENTITIES=5)  # each app: its own SQLite store
        loop.init_app(app)
        apps.append(app)
    try:
        a, b = (app.extensions["worldloop"] for app in apps)
        assert isinstance(a, WorldLoopState) and a is not b
        assert a.runtime is not b.runtime and a.jobs is not b.jobs
        assert a.jobs.names == b.jobs.names == ["census"]
        for app in apps:
            assert app.test_client().get("/api/v1/world").status_code == 200
        with pytest.raises(ConfigError, match="serves 2 apps"):
            loop.state()
        with apps[1].app_context():
            assert loop.runtime is b.runtime
    finally:
        for app in apps:
            app.extensions["worldloop"].stop()


def test_the_readme_pattern_answers_bad_input_with_json_422(
    counter: tuple[Flask, WorldLoop],
) -> None:
    app, _loop = counter
    client = app.test_client()
    resp = client.post("/add", json={"by": "lots"})
    assert resp.status_code == 422
    assert resp.get_json()["error"]["code"] == "invalid_command"
    assert client.post("/add", json={"by": 2}).get_json()["status"] == "applied"


def test_the_readme_pattern_answers_a_full_queue_with_503_and_retry_after(
    tmp_path: Any,
) -> None:
    app, _loop = counter_app(tmp_path, WORLDLOOP_QUEUE_SIZE=1, WORLDLOOP_START_PAUSED=True)
    try:
        client = app.test_client()
        client.post("/add", json={"by": 1})  # queued: the clock is paused
        resp = client.post("/add", json={"by": 1})
        assert resp.status_code == 503
        assert resp.get_json()["error"]["code"] == "queue_full"
        assert int(resp.headers["Retry-After"]) >= 1
    finally:
        app.extensions["worldloop"].stop()


def test_the_host_apps_own_error_pages_stay_its_own(counter: tuple[Flask, WorldLoop]) -> None:
    app, _loop = counter

    @app.get("/boom")
    def boom() -> str:
        raise RuntimeError("the host app's bug")

    app.config["PROPAGATE_EXCEPTIONS"] = False
    client = app.test_client()
    page = client.get("/no/such/page")
    assert page.status_code == 404 and page.mimetype == "text/html"
    assert client.get("/boom").mimetype == "text/html"
    # ... while worldloop's routes answer JSON, found or not
    assert client.get("/api/v1/no-such").get_json()["error"]["code"] == "not_found"
    assert client.get("/api/v1/world").get_json()["world"] == "counter"


def test_settings_are_read_once_and_a_bad_value_names_its_key(tmp_path: Any) -> None:
    app = Flask("t", instance_path=str(tmp_path))
    app.config.update(WORLDLOOP_RATE_HZ="fast", WORLDLOOP_AUTOSTART="never")
    with pytest.raises(ConfigError, match="WORLDLOOP_RATE_HZ"):
        WorldLoop(app, world=create_world)
    app = Flask("t", instance_path=str(tmp_path))
    app.config.update(WORLDLOOP_RATE_HZ="30", WORLDLOOP_AUTOSTART="never")
    state = WorldLoop(app, world=create_world).state(app)
    assert state.settings.rate_hz == 30.0 and state.runtime.stats().rate_hz == 30.0


def test_unknown_extension_defaults_are_refused(tmp_path: Any) -> None:
    app = Flask("t", instance_path=str(tmp_path))
    with pytest.raises(ConfigError, match="WORLDLOOP_RATEHZ"):
        WorldLoop(app, world=create_world, ratehz=20)
