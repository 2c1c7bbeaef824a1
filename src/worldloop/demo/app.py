"""The demo server: ``create_app()`` builds a Flask app running the meadow world."""

from __future__ import annotations

import logging
import os
import secrets
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from flask import Flask
from pydantic import BaseModel, ConfigDict, Field

from ..config import env_config
from ..extension import WorldLoop
from ..files import FILE_MODE, private_dir
from ..offload import ThreadSender
from .forecast import FORECAST_TASK, run_forecast
from .forecast_api import bp as forecast_bp
from .jobs import bp as leaderboard_bp
from .jobs import register_demo_jobs
from .meadow import Meadow, create_world


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
    if "CELERY" not in app.config and os.environ.get("CELERY_BROKER_URL"):
        app.config["CELERY"] = celery_config(os.environ)
    if "WORLDLOOP_ADMIN_TOKEN" not in app.config and not app.config.get("TESTING"):
        app.config["WORLDLOOP_ADMIN_TOKEN"] = _demo_admin_token(Path(app.instance_path))
    # The demo is an API server with its viewer at /: every error is JSON.
    ext = WorldLoop(world=create_world, viewer=True, json_errors="all")
    ext.kind("meadow")(meadow_kind(app.config))
    if _flag(app.config.get("MEADOW_DEMO_JOBS", True)):
        register_demo_jobs(ext, app.instance_path, app.config)
    state = ext.init_app(app)
    if app.config.get("CELERY"):
        # The forecast runs on Celery workers (celery -A worldloop.demo.celery_app worker).
        app.extensions["celery"].task(name=FORECAST_TASK)(run_forecast)
    else:  # no Celery: one worker thread in this process (shares the interpreter lock)
        state.use_offload(ThreadSender({FORECAST_TASK: run_forecast}, workers=1))
    app.register_blueprint(leaderboard_bp)
    app.register_blueprint(forecast_bp)
    return app


class MeadowConfig(BaseModel):
    """The config of a meadow created through ``POST /api/v1/worlds`` (kind ``meadow``)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    width: float = Field(1000.0, gt=0, le=100_000)
    height: float = Field(1000.0, gt=0, le=100_000)
    entities: int = Field(200, ge=0, le=20_000)
    seed: int = Field(0, ge=0)


def meadow_kind(app_config: Mapping[str, Any]) -> Callable[[Mapping[str, Any]], Meadow]:
    """The demo's world kind: more meadows, each sized by its own config (422 when bad)."""

    def factory(config: Mapping[str, Any]) -> Meadow:
        cfg = MeadowConfig.model_validate(dict(config))
        keys = {f"MEADOW_{k.upper()}": v for k, v in cfg.model_dump().items()}
        return create_world({**app_config, **keys})

    return factory


DEFAULT_BROKER = "amqp://guest:guest@127.0.0.1:5672//"


def celery_config(environ: Mapping[str, str]) -> dict[str, Any]:
    """The demo's Celery settings from the environment: ``CELERY_BROKER_URL`` (default: the
    local RabbitMQ), ``CELERY_RESULT_BACKEND`` (default ``rpc://``), ``CELERY_QUEUE``."""
    return {
        "broker_url": environ.get("CELERY_BROKER_URL") or DEFAULT_BROKER,
        "result_backend": environ.get("CELERY_RESULT_BACKEND") or "rpc://",
        "task_default_queue": environ.get("CELERY_QUEUE") or "worldloop",
    }


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
