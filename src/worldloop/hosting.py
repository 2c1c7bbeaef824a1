"""Which server hosts this process, and what that means for streams and for shutdown.

A stream holds one request thread for as long as a viewer watches, so how many streams a
process may take depends on the server: gunicorn's ``sync`` worker has one thread (a stream
would stall everything), ``gthread`` has ``--threads`` of them (some must stay free for the API
and the probes), Werkzeug's dev server starts a thread per request. Gunicorn tells none of this
to the app, but its worker object is on the stack while it loads the app and serves requests:
it is found there once per process and kept (:func:`gunicorn_worker`). Its ``alive`` flag also
says when the worker was asked to stop (SIGTERM, SIGINT, SIGQUIT), whatever signal hooks the
deployment has, which is how streams end promptly on shutdown (:func:`shutting_down`).
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from types import FrameType
from typing import Any

_found: tuple[int, Any] | None = None
"""(pid, gunicorn worker) once found in this process; a forked child looks again."""

THREADED_CLASSES = frozenset({"gthread"})
"""Gunicorn worker classes that serve several requests at once with OS threads."""
SINGLE_CLASSES = frozenset({"sync"})
"""Gunicorn worker classes that give each request the whole worker."""
GREEN_CLASSES = frozenset({"gevent", "eventlet", "tornado"})
"""Worker classes whose event loop or monkey-patching cannot host a loop thread on a clock."""


@dataclass(frozen=True, slots=True)
class Capacity:
    """What this process's server can give to streams.

    ``threads`` is the number of requests served at once (None: a thread per request, as
    Werkzeug's dev server does, or unknown); ``streams`` how many of them may be streams.
    """

    server: str
    worker_class: str | None
    workers: int | None
    threads: int | None
    streams: int
    reserve: int

    def describe(self) -> str:
        """One line for the start-up log: what was found and what it means for streams."""
        if self.server != "gunicorn":
            return f"{self.server} server: up to {self.streams} streams per process"
        where = f"gunicorn {self.worker_class} worker"
        if self.worker_class in SINGLE_CLASSES:
            return (
                f"{where} (one request at a time): event streams are refused with 503 "
                f"too_many_streams; for live viewers run -k gthread --threads 16 or "
                f"-c python:worldloop.gunicorn_conf"
            )
        return (
            f"{where} with {self.threads} threads: up to {self.streams} streams per process, "
            f"{self.threads - self.streams if self.threads is not None else self.reserve} "
            f"threads kept for the API and probes"
        )


def _worker_in(frame: FrameType | None) -> Any:
    """The gunicorn worker object on the stack above ``frame``, if any.

    While a worker loads the app or serves a request, one of its own methods is on the stack
    (``self``); in a child just forked by the master (``--preload``), the master's
    ``spawn_worker`` frame holds it as ``worker``.
    """
    while frame is not None:
        filename = frame.f_code.co_filename.replace(os.sep, "/")
        if "/gunicorn/" in filename:
            for name in ("self", "worker"):
                obj = frame.f_locals.get(name)
                if _looks_like_worker(obj) and getattr(obj, "pid", None) == os.getpid():
                    return obj
        frame = frame.f_back
    return None


def _looks_like_worker(obj: Any) -> bool:
    return hasattr(obj, "alive") and hasattr(obj, "cfg") and hasattr(obj, "age")


def gunicorn_worker() -> Any:
    """This process's gunicorn worker, found on the stack once and remembered; else None."""
    global _found
    pid = os.getpid()
    if _found is not None and _found[0] == pid:
        return _found[1]
    if "gunicorn" not in sys.modules:
        return None
    worker = _worker_in(sys._getframe(1))
    if worker is not None:
        _found = (pid, worker)
    return worker


def shutting_down() -> bool:
    """True once this process's gunicorn worker was told to stop (its ``alive`` flag)."""
    found = _found
    if found is None or found[0] != os.getpid():
        return False
    return not bool(getattr(found[1], "alive", True))


def capacity(
    *, max_streams: int, reserve: int, multithread: bool | None = None, worker: Any = None
) -> Capacity:
    """The stream capacity of this process: ``max_streams`` capped by the server's threads
    minus ``reserve`` (kept for the API and the probes), 0 on a one-request worker."""
    worker = worker if worker is not None else gunicorn_worker()
    if worker is None:
        name = "werkzeug" if multithread is not False else "single-threaded"
        return Capacity(name, None, None, None, max_streams, reserve)
    cfg = worker.cfg
    klass = worker_class_name(cfg)
    workers = int(getattr(cfg, "workers", 1) or 1)
    if klass in SINGLE_CLASSES:
        return Capacity("gunicorn", klass, workers, 1, 0, reserve)
    if klass in THREADED_CLASSES:
        threads = int(getattr(cfg, "threads", 1) or 1)
        streams = max(0, min(max_streams, threads - reserve))
        return Capacity("gunicorn", klass, workers, threads, streams, reserve)
    return Capacity("gunicorn", klass, workers, None, max_streams, reserve)


def worker_class_name(cfg: Any) -> str:
    """``sync``, ``gthread``, ``gevent``…: gunicorn's worker class as a short name.

    Gunicorn turns ``sync --threads 4`` into gthread; the class it resolved says which.
    """
    klass = getattr(cfg, "worker_class", None)
    module = getattr(klass, "__module__", "") or ""
    short = module.rsplit(".", 1)[-1]
    known = {"sync": "sync", "gthread": "gthread", "ggevent": "gevent", "geventlet": "eventlet"}
    if short in known:
        return known[short]
    text = str(getattr(cfg, "worker_class_str", "") or "").lower()
    return text.rsplit(".", 1)[-1] or "unknown"


def parent_pid_of(pid: int) -> int | None:
    """The parent of process ``pid`` (Linux /proc), or None when it cannot be read."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
            stat = f.read()
    except OSError:
        return None
    try:
        return int(stat.rsplit(")", 1)[1].split()[1])
    except (IndexError, ValueError):
        return None
