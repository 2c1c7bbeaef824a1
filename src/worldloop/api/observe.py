"""Observation of one app's world: /healthz, /readyz, /metrics, HTTP latency, the stream and
the viewer, installed by ``init_app`` (``WORLDLOOP_OBSERVE``); and worldloop's logging set-up.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from flask import Flask, Response, current_app, g, request

from ..config import Settings
from ..hosting import gunicorn_worker
from ..lifecycle import after_fork
from ..logs import configure_logging, host_configured_logging, is_configured
from ..metrics import HTTP_LATENCY, LoopObserver
from ..state import WorldLoopState, request_world, state_of
from .health import StoreProbe
from .health import bp as health_bp
from .live import bp as live_bp
from .stream import StreamSlots
from .stream import bp as stream_bp
from .viewer import bp as viewer_bp

log = logging.getLogger("worldloop")


@dataclass(slots=True)
class Observation:
    """Per-app observation state, kept in ``app.extensions["worldloop_observe"]``."""

    observer: LoopObserver
    store_probe: StoreProbe
    stream_slots: StreamSlots


def install(app: Flask, state: WorldLoopState, *, viewer: bool = True) -> Observation:
    """Register health, metrics, stream (and the viewer at ``/``) for ``state``'s world."""
    cfg = state.settings
    obs = Observation(
        observer=LoopObserver(state.runtime).attach(),
        store_probe=StoreProbe(cfg.ready_store_check_ttl),
        stream_slots=StreamSlots(cfg.stream_max_clients, cfg.stream_reserve_threads),
    )
    app.extensions["worldloop_observe"] = obs
    app.register_blueprint(health_bp)
    app.register_blueprint(stream_bp)
    app.register_blueprint(live_bp)
    if viewer:
        app.register_blueprint(viewer_bp)
    app.before_request(_start_timer)
    app.after_request(_observe_request)
    return obs


def announce_capacity(app: Flask, state: WorldLoopState) -> None:
    """Once the world is started (or refused), say which server was found and what it means
    for streams: in a gunicorn worker now, or after the fork under ``--preload``."""
    obs: Observation | None = app.extensions.get("worldloop_observe")
    if obs is None:
        return
    slots = obs.stream_slots

    def announce() -> None:
        if gunicorn_worker() is not None:
            log.info("worldloop: %s", slots.resolve(True).describe())

    if state.role == "prefork-master":
        after_fork(announce)
    else:
        announce()


def setup_logging(app: Flask, settings: Settings) -> None:
    """Configure worldloop logging once per process (before the loop starts, so its first
    lines are formatted too); WORLDLOOP_CONFIGURE_LOGGING=False opts out. Where the host has
    configured logging already (root handlers, e.g. gunicorn --log-config or
    logging.config.fileConfig), worldloop adds nothing: its records reach the host's handlers
    once."""
    if settings.configure_logging and not is_configured() and not host_configured_logging():
        configure_logging(json_lines=settings.log_json, level=settings.log_level)


def _start_timer() -> None:
    g._worldloop_started = time.perf_counter()


def _observe_request(resp: Response) -> Response:
    obs: Observation | None = current_app.extensions.get("worldloop_observe")
    if obs is not None and request.method != "GET":
        obs.observer.refresh()  # a write may have paused, resumed or re-rated the world
        world = request_world()
        extra = None if world is None else state_of().observers.get(world)
        if extra is not None:
            extra.refresh()
    started = g.get("_worldloop_started")
    if started is not None:
        rule = request.url_rule
        endpoint = rule.rule if rule is not None else "<unmatched>"
        HTTP_LATENCY.labels(request.method, endpoint, str(resp.status_code)).observe(
            time.perf_counter() - started
        )
    return resp
