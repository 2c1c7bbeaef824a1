"""The demo app's OpenAPI document without running it: its blueprints on a bare Flask app, the
meadow's commands and published models, the demo jobs. Equal to what the running demo serves
at /openapi.json (a test checks it), so tools can read it at import time."""

from __future__ import annotations

from typing import Any

from flask import Flask

from ..api import (
    admin,
    commands,
    entities,
    health,
    jobs,
    live,
    openapi,
    players,
    snapshot,
    stream,
    tasks,
    viewer,
    world,
    worlds,
)
from .forecast_api import bp as forecast_bp
from .jobs import DEMO_JOBS
from .jobs import bp as leaderboard_bp
from .meadow import Meadow

BLUEPRINTS = (
    world.bp,
    snapshot.bp,
    entities.bp,
    players.bp,
    commands.bp,
    admin.bp,
    openapi.bp,
    jobs.bp,
    tasks.bp,
    leaderboard_bp,
    forecast_bp,
    health.bp,
    stream.bp,
    live.bp,
    viewer.bp,
)
"""Every blueprint the demo app registers."""


def document() -> dict[str, Any]:
    """The OpenAPI document of the demo app (built fresh: it is small)."""
    app = Flask("worldloop.demo.docs")
    for bp in BLUEPRINTS:
        app.register_blueprint(bp)
    worlds.install_worlds(app)
    return openapi.build_document(app, world=Meadow, jobs=DEMO_JOBS)
