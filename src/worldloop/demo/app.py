"""The demo server: ``create_app()`` builds a Flask app running the meadow world."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from flask import Flask

from ..api import register_error_handlers, world_bp
from ..api.observe import install as install_observation
from ..api.observe import setup_logging
from ..extension import WorldLoop
from .meadow import create_world


def create_app(config: Mapping[str, Any] | None = None, instance_path: str | None = None) -> Flask:
    """App factory. Config comes from defaults, then WORLDLOOP_*/MEADOW_* env vars, then ``config``.

    State files live in ``instance_path`` (default: $WORLDLOOP_INSTANCE_PATH, else ./instance).
    """
    instance = (
        instance_path or os.environ.get("WORLDLOOP_INSTANCE_PATH") or os.path.abspath("instance")
    )
    app = Flask(__name__, instance_path=instance)
    app.config.update(_prefixed_env())
    if config:
        app.config.update(config)
    register_error_handlers(app)
    app.register_blueprint(world_bp)
    setup_logging(app)
    WorldLoop(app, world=create_world)
    install_observation(app)
    return app


def _loads(value: str) -> Any:
    import json

    try:
        return json.loads(value)
    except ValueError:
        return value


def _prefixed_env() -> dict[str, Any]:
    """WORLDLOOP_* and MEADOW_* environment variables, JSON-decoded when they parse."""
    return {k: _loads(v) for k, v in os.environ.items() if k.startswith(("WORLDLOOP_", "MEADOW_"))}
