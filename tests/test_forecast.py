"""The demo's forecast: asked by POST /api/v1/forecast, run off the tick from a copy of the
state (a worker thread without Celery; the demo's own ``celery -A worldloop.demo.celery_app
worker`` with RabbitMQ), its result in the world's state and at GET /api/v1/forecast."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest
from flask import Flask

from tests.support import wait_for
from tests.test_offload_celery import AMQP, require_broker, start_worker
from worldloop.demo import create_app


def demo_app(tmp_path: Path, **config: Any) -> Flask:
    conf = {
        "TESTING": True,
        "WORLDLOOP_STORE_URL": f"memory://forecast-{uuid.uuid4().hex}",
        "WORLDLOOP_HANDLE_SIGNALS": False,
        "WORLDLOOP_AUTOSTART": "eager",
        "MEADOW_DEMO_JOBS": False,
        **config,
    }
    return create_app(conf, instance_path=str(tmp_path / "instance"))


def forecast_cycle(app: Flask) -> dict[str, Any]:
    client = app.test_client()
    assert client.get("/api/v1/forecast").status_code == 404
    r = client.post("/api/v1/forecast", json={"ticks": 200})
    assert r.status_code == 202, r.get_json()
    task_id = r.get_json()["task_id"]
    busy = client.post("/api/v1/forecast", json={"ticks": 200})
    if busy.status_code != 202:  # the first one may be back already
        assert busy.status_code == 409
        assert busy.get_json()["error"]["code"] == "forecast_busy"
    assert client.post("/api/v1/forecast", json={"ticks": 0}).status_code in (400, 422)

    def done() -> dict[str, Any] | None:
        r = client.get("/api/v1/forecast")
        return r.get_json() if r.status_code == 200 else None

    view = wait_for(done, 60, 0.1, "the forecast")
    assert view["task_id"] == task_id and view["status"] == "succeeded", view
    series = view["series"]
    assert len(series["tick"]) == len(series["sheep"]) == len(series["grass"]) == 50
    assert series["tick"][-1] == view["from_tick"] + 200
    return dict(view)


def test_forecast_in_a_worker_thread_without_celery(tmp_path: Path) -> None:
    app = demo_app(tmp_path)
    try:
        assert "celery" not in app.extensions
        forecast_cycle(app)
    finally:
        app.extensions["worldloop"].stop()


@pytest.mark.slow
def test_forecast_on_the_demo_celery_worker(tmp_path: Path) -> None:
    require_broker(AMQP)
    queue = f"forecast-{uuid.uuid4().hex[:12]}"
    worker = start_worker(
        tmp_path,
        {"CELERY_BROKER_URL": AMQP, "CELERY_QUEUE": queue, "OFFLOAD_QUEUE": queue},
        "worker",
        app_module="worldloop.demo.celery_app",
    )
    try:
        celery = {"broker_url": AMQP, "result_backend": "rpc://", "task_default_queue": queue}
        app = demo_app(tmp_path, CELERY=celery)
        try:
            view = forecast_cycle(app)
        finally:
            app.extensions["worldloop"].stop()
        assert f"Task meadow.forecast[{view['task_id']}] succeeded" in worker.log
    finally:
        worker.stop()
