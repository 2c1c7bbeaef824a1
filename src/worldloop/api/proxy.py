"""The real client address behind a reverse proxy (werkzeug's ProxyFix, by a setting).

Behind nginx every request comes from 127.0.0.1, so rate limits keyed by ``remote_addr`` would
put every client in one bucket. ``WORLDLOOP_TRUSTED_PROXIES=N`` wraps the app in
``ProxyFix(x_for=N, x_proto=N, x_host=N)``: the address the N-th proxy saw becomes
``remote_addr``. Trusting headers no proxy of yours sets would let any client pick its own
address, so it is off by default, and a request that carries ``X-Forwarded-For`` while it is
off is logged once, naming the setting (a WSGI middleware, as ProxyFix is: a dict lookup per
request rather than a Flask hook's dispatch and header parsing).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from typing import Any

from flask import Flask
from werkzeug.middleware.proxy_fix import ProxyFix

log = logging.getLogger("worldloop")

_warned = threading.Event()


def trust_proxies(app: Flask, count: int) -> None:
    """Trust ``count`` proxies' forwarding headers (0: none, and warn once if they come)."""
    if count > 0:
        if not isinstance(app.wsgi_app, ProxyFix):
            app.wsgi_app = ProxyFix(  # type: ignore[method-assign]
                app.wsgi_app, x_for=count, x_proto=count, x_host=count
            )
        return
    if not isinstance(app.wsgi_app, _WarnUntrusted):
        app.wsgi_app = _WarnUntrusted(app.wsgi_app)  # type: ignore[method-assign]


class _WarnUntrusted:
    """WSGI middleware: says once that forwarding headers arrive while none are trusted."""

    def __init__(
        self, wsgi_app: Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]
    ) -> None:
        self.wsgi_app = wsgi_app

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        if "HTTP_X_FORWARDED_FOR" in environ and not _warned.is_set():
            _warn_untrusted_forwarding()
        return self.wsgi_app(environ, start_response)


def _warn_untrusted_forwarding() -> None:
    _warned.set()
    log.warning(
        "worldloop: requests carry X-Forwarded-For but WORLDLOOP_TRUSTED_PROXIES=0: every "
        "client behind the proxy shares one rate-limit bucket (set it to the number of "
        "proxies in front, e.g. 1 behind nginx)"
    )
