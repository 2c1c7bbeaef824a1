"""Gunicorn config hooks for several workers: ``gunicorn -c python:worldloop.gunicorn_hooks``.

With ``PROMETHEUS_MULTIPROC_DIR`` set, the master empties that folder at start (stale files of an
old run would be summed in) and forgets each worker's live gauges when it exits. In each worker,
SIGTERM first ends the open event streams at once (without the hooks they end within half a
second anyway: they watch the worker's ``alive`` flag). As the master exits, it stops this
server's runner processes and waits for their final snapshot (:func:`on_exit`). Streams need
a threaded worker (``-k gthread --threads N``); a sync worker refuses them with 503. The
complete production config, these hooks included, is worldloop.gunicorn_conf.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path
from types import FrameType
from typing import Any


def on_starting(server: Any) -> None:
    path = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if path:
        folder = Path(path)
        folder.mkdir(parents=True, exist_ok=True)
        for stale in folder.glob("*.db"):
            stale.unlink()


def child_exit(server: Any, worker: Any) -> None:
    from .metrics import mark_process_dead

    mark_process_dead(worker.pid)


def stop_bound() -> float:
    """The runner's stop bound, s (WORLDLOOP_SHUTDOWN_TIMEOUT, final snapshot included), as
    the master reads it from its environment: what the config's graceful timeout and
    :func:`on_exit` wait for."""
    return float(os.environ.get("WORLDLOOP_SHUTDOWN_TIMEOUT", "2") or 2)


def on_exit(server: Any) -> None:
    """In the master, its workers gone, before it exits: stop this server's runner processes
    and wait for them (worldloop.runner.registry), so the server is gone only once the
    runner's final snapshot is written, and nothing that ends a server's leftovers when its
    master exits (a container) cuts that short. Bounded by the runner's own stop bound."""
    from .runner import registry

    registry.stop_all(os.getpid(), stop_bound() + 5.0)


def post_worker_init(worker: Any) -> None:
    from .api.stream import close_streams

    previous = signal.getsignal(signal.SIGTERM)

    def on_term(signum: int, frame: FrameType | None) -> None:
        close_streams()
        if callable(previous):
            previous(signum, frame)

    signal.signal(signal.SIGTERM, on_term)
