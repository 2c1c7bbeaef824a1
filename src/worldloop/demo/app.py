"""The demo server: ``create_app()`` builds a Flask app running the meadow world."""

from __future__ import annotations

import logging
import os
import secrets
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from flask import Flask

from ..api import jobs_bp, register_error_handlers, world_bp
from ..api.observe import install as install_observation
from ..api.observe import setup_logging
from ..api.v1 import register_v1
from ..extension import WorldLoop
from .jobs import bp as leaderboard_bp
from .jobs import register_demo_jobs
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
    if "WORLDLOOP_ADMIN_TOKEN" not in app.config and not app.config.get("TESTING"):
        app.config["WORLDLOOP_ADMIN_TOKEN"] = _demo_admin_token(Path(app.instance_path))
    register_error_handlers(app)
    app.register_blueprint(world_bp)
    register_v1(app, errors=False)
    app.register_blueprint(jobs_bp)
    app.register_blueprint(leaderboard_bp)
    setup_logging(app)
    ext = WorldLoop(world=create_world)
    if app.config.get("MEADOW_DEMO_JOBS", True):
        register_demo_jobs(ext, app.instance_path, app.config)
    ext.init_app(app)
    install_observation(app)
    return app


def _demo_admin_token(instance: Path) -> str:
    """The demo's admin token when none is configured: made once, kept in instance/admin-token
    (mode 0600) so restarts and the reloader's child agree, and never written to the logs."""
    path = instance / "admin-token"
    instance.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_text().strip()
    token = secrets.token_urlsafe(24)
    with os.fdopen(fd, "w") as f:
        f.write(token + "\n")
    logging.getLogger("worldloop.demo").warning(
        "no WORLDLOOP_ADMIN_TOKEN set: made one for the demo in %s", path
    )
    return token


def _loads(value: str) -> Any:
    import json

    try:
        return json.loads(value)
    except ValueError:
        return value


def _prefixed_env() -> dict[str, Any]:
    """WORLDLOOP_* and MEADOW_* environment variables, JSON-decoded when they parse."""
    return {k: _loads(v) for k, v in os.environ.items() if k.startswith(("WORLDLOOP_", "MEADOW_"))}
