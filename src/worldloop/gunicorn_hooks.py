"""Gunicorn config hooks for several workers: ``gunicorn -c python:worldloop.gunicorn_hooks``.

With ``PROMETHEUS_MULTIPROC_DIR`` set, the master empties that folder at start (stale files of an
old run would be summed in) and forgets each worker's live gauges when it exits.
"""

from __future__ import annotations

import os
from pathlib import Path
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
