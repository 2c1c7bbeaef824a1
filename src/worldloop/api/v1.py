"""REST API v1: ``register_v1(app, settings)`` adds its blueprints and the body size limit."""

from __future__ import annotations

from flask import Flask

from ..config import Settings
from . import admin, commands, entities, openapi, players, snapshot
from .world import bp as world_bp


def register_v1(app: Flask, settings: Settings | None = None, *, docs: bool = True) -> None:
    """Register the v1 blueprints (world, snapshot, entities, players, commands, admin, docs)
    and the request body limit (unless the app set its own ``MAX_CONTENT_LENGTH``)."""
    if app.config.get("MAX_CONTENT_LENGTH") is None:
        app.config["MAX_CONTENT_LENGTH"] = (settings or Settings()).max_body_bytes
    blueprints = [world_bp, snapshot.bp, entities.bp, players.bp, commands.bp, admin.bp]
    if docs:
        blueprints.append(openapi.bp)
    for bp in blueprints:
        if bp.name not in app.blueprints:
            app.register_blueprint(bp)
