"""The baseline a worldloop read is compared with: a trivial Flask GET served the same way.

``gunicorn --pythonpath bench 'trivial_app:create_app()'`` answers ``GET /api/v1/world`` with a
small constant JSON body (about the size of the world summary): what Flask and gunicorn cost
per request on this machine, with no world behind them (bench/runner_split.py).
"""

from __future__ import annotations

from typing import Any

from flask import Flask

BODY: dict[str, Any] = {
    "world": "meadow",
    "tick": 1,
    "sim_time": 0.05,
    "rate_hz": 20.0,
    "paused": False,
    "running": True,
    "creatures": 100_000,
    "grass": 0,
    "players": 0,
}


def create_app() -> Flask:
    app = Flask(__name__)

    @app.get("/api/v1/world")
    def world() -> dict[str, Any]:
        return BODY

    @app.get("/readyz")
    def readyz() -> dict[str, Any]:
        return {"status": "ok", "ready": True}

    return app
