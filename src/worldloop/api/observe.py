"""One call wires observation into an app: logging, /healthz, /readyz, /metrics, HTTP latency,
the stream and the viewer. ``install(app)`` after ``WorldLoop(app)``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from flask import Flask, Response, current_app, g, request

from ..logs import configure_logging, is_configured
from ..metrics import HTTP_LATENCY, LoopObserver
from .health import READY_DEFAULTS, StoreProbe
from .health import bp as health_bp
from .stream import STREAM_DEFAULTS, StreamSlots
from .stream import bp as stream_bp
from .viewer import bp as viewer_bp

DEFAULTS = {
    "WORLDLOOP_LOG_JSON": None,
    "WORLDLOOP_LOG_LEVEL": None,
    "WORLDLOOP_CONFIGURE_LOGGING": True,
    **READY_DEFAULTS,
    **STREAM_DEFAULTS,
}


@dataclass(slots=True)
class Observation:
    """Per-app observation state, kept in ``app.extensions["worldloop_observe"]``."""

    observer: LoopObserver
    store_probe: StoreProbe
    stream_slots: StreamSlots


def install(app: Flask, *, viewer: bool = True) -> Observation:
    """Register health, metrics, stream (and the viewer at ``/``) on an app with a WorldLoop."""
    setup_logging(app)
    cfg = app.config
    rt = app.extensions["worldloop"].runtime
    obs = Observation(
        observer=LoopObserver(rt).attach(),
        store_probe=StoreProbe(float(cfg["WORLDLOOP_READY_STORE_CHECK_TTL"])),
        stream_slots=StreamSlots(int(cfg["WORLDLOOP_STREAM_MAX_CLIENTS"])),
    )
    app.extensions["worldloop_observe"] = obs
    app.register_blueprint(health_bp)
    app.register_blueprint(stream_bp)
    if viewer:
        app.register_blueprint(viewer_bp)
    app.before_request(_start_timer)
    app.after_request(_observe_request)
    return obs


def setup_logging(app: Flask) -> None:
    """Configure worldloop logging once per process from the app's config (before the loop
    starts, so its first lines are formatted too); WORLDLOOP_CONFIGURE_LOGGING=False opts out.
    """
    for key, value in DEFAULTS.items():
        app.config.setdefault(key, value)
    cfg = app.config
    if cfg["WORLDLOOP_CONFIGURE_LOGGING"] and not is_configured():
        json_lines = cfg["WORLDLOOP_LOG_JSON"]
        configure_logging(
            json_lines=None if json_lines is None else _truthy(json_lines),
            level=cfg["WORLDLOOP_LOG_LEVEL"],
        )


def _truthy(value: object) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "yes", "on")
    return bool(value)


def _start_timer() -> None:
    g._worldloop_started = time.perf_counter()


def _observe_request(resp: Response) -> Response:
    obs: Observation | None = current_app.extensions.get("worldloop_observe")
    if obs is not None and request.method != "GET":
        obs.observer.refresh()  # a write may have paused, resumed or re-rated the world
    started = g.get("_worldloop_started")
    if started is not None:
        rule = request.url_rule
        endpoint = rule.rule if rule is not None else "<unmatched>"
        HTTP_LATENCY.labels(request.method, endpoint, str(resp.status_code)).observe(
            time.perf_counter() - started
        )
    return resp
