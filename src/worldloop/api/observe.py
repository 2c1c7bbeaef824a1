"""Observation of one app's world: /healthz, /readyz, /metrics, HTTP latency, the stream and
the viewer, installed by ``init_app`` (``WORLDLOOP_OBSERVE``); and worldloop's logging set-up.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from flask import Flask, Response, request
from prometheus_client.metrics import Histogram

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
    _time_requests(app)
    app.after_request(_RequestObserver(obs))
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


STARTED = "worldloop.started"
"""The WSGI environ key of a request's start (``time.perf_counter()``), set by the middleware
that :func:`_time_requests` puts around the app."""

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


class _Timed:
    """WSGI middleware: notes when each request came in (the latency histogram's start).

    A middleware rather than a ``before_request`` hook: a plain dict write per request, where
    a hook costs Flask's per-hook dispatch and a context-local lookup (issue 11: the metrics
    hooks were a tenth of a read's cost). The latency now includes Flask's routing too."""

    def __init__(self, wsgi_app: WSGIApp) -> None:
        self.wsgi_app = wsgi_app

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        environ[STARTED] = time.perf_counter()
        return self.wsgi_app(environ, start_response)


def _time_requests(app: Flask) -> None:
    if not isinstance(app.wsgi_app, _Timed):
        app.wsgi_app = _Timed(app.wsgi_app)  # type: ignore[method-assign]


class _RequestObserver:
    """The ``after_request`` hook: refresh the loop gauges after a write, and observe the
    request's latency by method, route and status.

    Cheap on purpose (every read pays it): the request is looked up once, the observation
    state is this app's (bound here, not looked up), and the histogram's labelled child of each
    (method, route, status) is kept after its first use (prometheus_client's ``labels()``
    builds and checks the key and takes a lock on every call)."""

    MAX_CHILDREN = 4096
    """Bound on the children kept (methods come from clients: unknown ones are not kept)."""

    def __init__(self, obs: Observation, histogram: Histogram = HTTP_LATENCY) -> None:
        self.obs = obs
        self.histogram = histogram
        self.children: dict[tuple[str, str, int], Histogram] = {}

    def __call__(self, resp: Response) -> Response:
        req = request._get_current_object()  # type: ignore[attr-defined]
        method: str = req.method
        if method != "GET":
            self.obs.observer.refresh()  # a write may have paused, resumed or re-rated the world
            world = request_world()
            extra = None if world is None else state_of().observers.get(world)
            if extra is not None:
                extra.refresh()
        started = req.environ.get(STARTED)
        if started is not None:
            rule = req.url_rule
            endpoint = rule.rule if rule is not None else "<unmatched>"
            status = resp.status_code
            key = (method, endpoint, status)
            child = self.children.get(key)
            if child is None:
                child = self.histogram.labels(method, endpoint, str(status))
                if len(self.children) < self.MAX_CHILDREN:
                    self.children[key] = child
            child.observe(time.perf_counter() - started)
        return resp
