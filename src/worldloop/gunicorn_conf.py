"""A ready gunicorn config: ``gunicorn -c python:worldloop.gunicorn_conf 'app:create_app()'``.

Every value is explained beside it; anything given on gunicorn's command line wins over this
file (``-b 0.0.0.0:8000``, ``--threads 128``). It includes worldloop's hooks
(worldloop.gunicorn_hooks): the multi-process metrics folder is emptied at start, a dead
worker's gauges are forgotten, SIGTERM ends open streams at once, and the master exits only
once the runner process has stopped (its final snapshot written).
"""

from __future__ import annotations

from worldloop.gunicorn_hooks import child_exit, on_exit, on_starting, post_worker_init, stop_bound

__all__ = ["child_exit", "on_exit", "on_starting", "post_worker_init"]

bind = "127.0.0.1:8000"
"""Loopback: put nginx (or another proxy) in front, see docs/deploy.md. ``-b`` overrides."""

workers = 1
"""One process runs the world on the embedded store (a second one is refused at start)."""

worker_class = "gthread"
"""Threads in one process: readers share the published snapshot, and a stream holds one
thread for as long as a viewer watches (a ``sync`` worker would stall on the first viewer)."""

threads = 64
"""Request threads: up to ``threads - WORLDLOOP_STREAM_RESERVE_THREADS`` (62) viewers' streams
at once, the rest always kept for the API and the probes. About 8 MB of address space (not
resident memory) per thread; see docs/deploy.md, sizing."""

worker_connections = 1000
"""Open connections per worker (kept-alive ones wait in the poller, not in a thread)."""

keepalive = 5
"""Seconds an idle kept-alive connection stays open (behind nginx, keep it above nginx's
``keepalive_timeout`` to the upstream, or leave both at a few seconds)."""


graceful_timeout = int(stop_bound() + 8)
"""Seconds a stopping worker gets before the master kills it: the loop's stop bound
(WORLDLOOP_SHUTDOWN_TIMEOUT, final snapshot included) plus room for the streams to end (they
end within half a second) and for requests in flight."""

timeout = 30
"""A worker silent this long is killed and replaced (its heartbeat comes from the main
thread, which never waits on a tick or a stream)."""

max_requests = 0
"""Never recycle the worker: a recycle would stop and restart the world (a final snapshot,
then a recovery), for no gain; worldloop's memory is bounded by its settings."""

preload_app = False
"""Load the app in the worker: the loop starts where it runs (``--preload`` works too: the
world then starts after the fork)."""

accesslog = "-"
"""Access log to stdout (journald or the container runtime collects it)."""

access_log_format = '%(h)s "%(r)s" %(s)s %(B)s %(M)sms "%(a)s" pid=%(p)s'
"""Client, request line, status, body bytes, duration in ms, user agent, worker pid; behind a
proxy ``%(h)s`` is the proxy (worldloop sees the client with WORLDLOOP_TRUSTED_PROXIES)."""

errorlog = "-"
"""Gunicorn's own lines to stderr; worldloop's lines go there too, one per event."""

forwarded_allow_ips = "127.0.0.1,::1"
"""Trust X-Forwarded-Proto from a proxy on this host only (for https URLs in redirects)."""

proc_name = "worldloop"
"""The name ``ps`` and ``top`` show."""
