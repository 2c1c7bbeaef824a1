"""Where the stream gateway listens: ``WORLDLOOP_GATEWAY`` read, ``auto`` worked out.

``auto`` (the default) puts the gateway on the port after the web server's own, on the same
host: plain ``gunicorn -w N 'app:create_app()'`` (127.0.0.1:8000) gets its gateway on :8001,
``flask run`` (:5000) on :5001, with nothing to configure. The web process that starts the
runner works it out (only it knows where the server listens: gunicorn's worker, or ``flask
run``'s command line) and hands it to the runner (``--gateway``), which starts the gateway
there. Since that port may be someone else's, web workers send viewers to an ``auto`` gateway
only once the runner reports it listening (its feed's ``gateway``); until then, or if the port is
taken, they serve the streams themselves, as with no gateway. ``off`` (or empty) turns it off; an
explicit ``host:port`` is used as given.
"""

from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger("worldloop.gateway")

AUTO = "auto"
OFF = frozenset({"", "off", "none", "no", "false", "0"})


def mode(value: str | None) -> str | None:
    """``"auto"``, an explicit ``host:port``, or None (off), from WORLDLOOP_GATEWAY's value."""
    if value is None:
        return None
    value = value.strip()
    if value.lower() in OFF:
        return None
    return AUTO if value.lower() == AUTO else value


def explicit(value: str | None) -> str | None:
    """The configured ``host:port`` when one is given outright, else None (auto or off)."""
    found = mode(value)
    return None if found in (None, AUTO) else found


def join(host: str, port: int) -> str:
    """``host:port`` as WORLDLOOP_GATEWAY spells it (an IPv6 host in brackets)."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def resolve(value: str | None) -> str | None:
    """Where this server's gateway listens: the explicit address, the port after the web
    server's own for ``auto`` (None when this process is not such a server, or it listens on a
    Unix socket only), or None (off)."""
    found = mode(value)
    if found != AUTO:
        return found
    listening = server_address()
    if listening is None:
        log.info(
            "worldloop: no stream gateway: this server's TCP address is unknown "
            "(WORLDLOOP_GATEWAY=host:port names one)"
        )
        return None
    host, port = listening
    if not 0 < port < 65535:
        return None
    return join(host, port + 1)


def server_address() -> tuple[str, int] | None:
    """The first TCP address this web server listens on: gunicorn's (its worker's bound
    sockets, else its ``--bind``), or ``flask run``'s ``--host``/``--port``; else None."""
    from ..hosting import gunicorn_worker

    worker = gunicorn_worker()
    if worker is not None:
        return _gunicorn_address(worker)
    return _flask_run_address()


def _gunicorn_address(worker: Any) -> tuple[str, int] | None:
    for listener in getattr(worker, "sockets", None) or ():
        try:
            name = listener.getsockname()
        except OSError:
            continue
        if isinstance(name, tuple) and len(name) >= 2:
            return str(name[0]), int(name[1])
    for address in getattr(getattr(worker, "cfg", None), "address", None) or ():
        if isinstance(address, tuple) and len(address) >= 2:
            return str(address[0]), int(address[1])
    return None


def _flask_run_address() -> tuple[str, int] | None:
    try:
        import click
    except ImportError:  # pragma: no cover - Flask always has click
        return None
    ctx = click.get_current_context(silent=True)
    while ctx is not None:
        params = ctx.params
        if ctx.info_name == "run" and "port" in params and "host" in params:
            return str(params["host"]), int(params["port"])
        ctx = ctx.parent
    return None
