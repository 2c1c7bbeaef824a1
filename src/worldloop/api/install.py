"""What ``init_app`` installs, as the settings ask: JSON errors, the API, observation, docs,
the viewer. One place, so an app gets all of it from one call and in the right order.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from flask import Flask

from . import v1
from .errors import register_error_handlers, register_worldloop_errors
from .jobs import bp as jobs_bp
from .observe import announce_capacity, setup_logging
from .observe import install as install_observation
from .proxy import trust_proxies
from .tasks import bp as tasks_bp

if TYPE_CHECKING:
    from ..config import Settings
    from ..state import WorldLoopState


def install_logging(app: Flask, settings: Settings) -> None:
    """worldloop's log lines, formatted before the loop's first ones (unless opted out)."""
    setup_logging(app, settings)


def install_api(app: Flask, state: WorldLoopState) -> None:
    """Register what ``state.settings`` switches on.

    Worldloop's own errors are JSON wherever they are raised (the host app's views too);
    HTTP errors are JSON on worldloop's routes (``json_errors="worldloop"``) or on every route
    of the app (``"all"``, for API-only servers such as the demo).
    """
    settings = state.settings
    trust_proxies(app, settings.trusted_proxies)
    if settings.json_errors == "all":
        register_error_handlers(app)
    else:
        register_worldloop_errors(app)
    if settings.api:
        v1.register_v1(app, settings, docs=settings.docs)
        app.register_blueprint(jobs_bp)
        app.register_blueprint(tasks_bp)
    if settings.observe:
        install_observation(app, state, viewer=settings.viewer)
    elif settings.viewer:
        from .viewer import bp as viewer_bp

        app.register_blueprint(viewer_bp)
    if settings.api:
        from .worlds import install_worlds

        install_worlds(app)  # last: it routes the blueprints above again under each world


def announce_server(app: Flask, state: WorldLoopState) -> None:
    """The start-up line that says which server hosts the app and what it means for streams."""
    announce_capacity(app, state)
