"""REST API v1 in one call: ``register_v1(app)`` adds every blueprint, limits and error handlers."""

from __future__ import annotations

from flask import Flask

from . import admin, commands, entities, openapi, players, snapshot
from .common import CONFIG_DEFAULTS
from .errors import register_error_handlers
from .world import bp as world_bp


def register_v1(app: Flask, *, errors: bool = True) -> None:
    """Register the v1 blueprints (world, snapshot, entities, players, commands, admin, docs)."""
    for key, value in CONFIG_DEFAULTS.items():
        app.config.setdefault(key, value)
    if app.config.get("MAX_CONTENT_LENGTH") is None:
        app.config["MAX_CONTENT_LENGTH"] = int(app.config["WORLDLOOP_MAX_BODY_BYTES"])
    if errors:
        register_error_handlers(app)
    for bp in (
        world_bp,
        snapshot.bp,
        entities.bp,
        players.bp,
        commands.bp,
        admin.bp,
        openapi.bp,
    ):
        if bp.name not in app.blueprints:
            app.register_blueprint(bp)
