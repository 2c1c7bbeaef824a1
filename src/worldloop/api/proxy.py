"""The real client address behind a reverse proxy (werkzeug's ProxyFix, by a setting).

Behind nginx every request comes from 127.0.0.1, so rate limits keyed by ``remote_addr`` would
put every client in one bucket. ``WORLDLOOP_TRUSTED_PROXIES=N`` wraps the app in
``ProxyFix(x_for=N, x_proto=N, x_host=N)``: the address the N-th proxy saw becomes
``remote_addr``. Trusting headers no proxy of yours sets would let any client pick its own
address, so it is off by default, and a request that carries ``X-Forwarded-For`` while it is
off is logged once, naming the setting.
"""

from __future__ import annotations

import logging
import threading

from flask import Flask, request
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
    app.before_request(_warn_untrusted_forwarding)


def _warn_untrusted_forwarding() -> None:
    if _warned.is_set() or "X-Forwarded-For" not in request.headers:
        return
    _warned.set()
    log.warning(
        "worldloop: requests carry X-Forwarded-For but WORLDLOOP_TRUSTED_PROXIES=0: every "
        "client behind the proxy shares one rate-limit bucket (set it to the number of "
        "proxies in front, e.g. 1 behind nginx)"
    )
