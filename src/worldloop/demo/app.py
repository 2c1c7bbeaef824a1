"""The demo server: ``create_app()`` builds a Flask app running the meadow world."""

from __future__ import annotations

import logging
import os
import secrets
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from flask import Flask

from ..config import env_config
from ..extension import WorldLoop
from ..files import FILE_MODE, private_dir
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
    app.config.update(env_config(os.environ, ("WORLDLOOP_", "MEADOW_")))
    if config:
        app.config.update(config)
    if "WORLDLOOP_ADMIN_TOKEN" not in app.config and not app.config.get("TESTING"):
        app.config["WORLDLOOP_ADMIN_TOKEN"] = _demo_admin_token(Path(app.instance_path))
    # The demo is an API server with its viewer at /: every error is JSON.
    ext = WorldLoop(world=create_world, viewer=True, json_errors="all")
    if _flag(app.config.get("MEADOW_DEMO_JOBS", True)):
        register_demo_jobs(ext, app.instance_path, app.config)
    ext.init_app(app)
    app.register_blueprint(leaderboard_bp)
    return app


def _demo_admin_token(instance: Path) -> str:
    """The demo's admin token when none is configured: made once, kept in instance/admin-token
    (mode 0600) so restarts and the reloader's child agree, and never written to the logs."""
    path = instance / "admin-token"
    private_dir(instance)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
    except FileExistsError:
        return path.read_text().strip()
    os.fchmod(fd, FILE_MODE)  # whatever the umask
    token = secrets.token_urlsafe(24)
    with os.fdopen(fd, "w") as f:
        f.write(token + "\n")
    logging.getLogger("worldloop.demo").warning(
        "no WORLDLOOP_ADMIN_TOKEN set: made one for the demo in %s", path
    )
    return token


def _flag(value: Any) -> bool:
    """A boolean setting given as a Python value or as an environment string."""
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "yes", "on")
    return bool(value)
