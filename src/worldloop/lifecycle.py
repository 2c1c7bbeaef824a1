"""Where a process stands: which kind of process is loading the app, and a clean exit.

The loop must start only in the process that serves (never the reloader's watcher, never a
pre-fork master, never a ``flask`` command other than ``run``), and stop within its bound at
SIGTERM, SIGINT or interpreter exit.
"""

from __future__ import annotations

import atexit
import logging
import os
import signal
import sys
import threading
import weakref
from collections.abc import Callable
from types import FrameType
from typing import Any, Protocol

log = logging.getLogger("worldloop")


class Stoppable(Protocol):
    def stop(self, timeout: float | None = None) -> bool: ...


RUNNER_PROCESS = False
"""True in ``python -m worldloop.runner``: the process that runs the world for web workers."""
GATEWAY_PROCESS = False
"""True in ``python -m worldloop.gateway``: it serves streams only, never starts a world."""

# Everything that must stop at exit; weak so tests that drop an app do not leak it.
_live: weakref.WeakSet[Stoppable] = weakref.WeakSet()
_installed = False


def serving_role() -> str:
    """Which kind of process is loading the app.

    ``serve`` (start here), ``reloader-parent`` (the watcher of ``flask run --debug``),
    ``prefork-master`` (gunicorn --preload: start after fork), ``gunicorn-worker``, ``cli`` (a
    ``flask`` command other than ``run``: never started), ``runner`` (the runner process of
    web workers, worldloop.runner), ``gateway`` (the stream gateway, worldloop.gateway) or
    ``unknown``.
    """
    if RUNNER_PROCESS:
        return "runner"
    if GATEWAY_PROCESS:
        return "gateway"
    if os.environ.get("WERKZEUG_RUN_MAIN") == "true":
        return "serve"
    try:
        import click

        ctx = click.get_current_context(silent=True)
    except Exception:  # pragma: no cover - click is always there with Flask
        ctx = None
    if ctx is not None and ctx.info_name == "run" and "reload" in ctx.params:
        from flask.helpers import get_debug_flag

        reload = ctx.params["reload"]
        if reload is None:
            reload = get_debug_flag()
        return "reloader-parent" if reload else "serve"
    if _flask_cli_command():
        return "cli"  # `flask shell`, `flask routes`, `flask world ...`: not a server
    if "gunicorn" in sys.modules:
        frame: FrameType | None = sys._getframe(1)
        while frame is not None:
            filename = frame.f_code.co_filename.replace(os.sep, "/")
            if "/gunicorn/workers/" in filename:
                return "gunicorn-worker"
            if filename.endswith("/gunicorn/arbiter.py"):
                return "prefork-master"
            frame = frame.f_back
    return "unknown"


def _flask_cli_command() -> bool:
    """True inside the ``flask`` command when it runs anything but ``run`` (handled above)."""
    if os.environ.get("FLASK_RUN_FROM_CLI") != "true" or "gunicorn" in sys.modules:
        return False
    argv0 = sys.argv[0].replace(os.sep, "/") if sys.argv else ""
    return argv0.rsplit("/", 1)[-1] == "flask" or argv0.endswith("/flask/__main__.py")


STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGQUIT)
_stopping = False
_said_stopping = False


def stop_at_exit(item: Stoppable, handle_signals: bool, *, server: bool = False) -> None:
    """Stop ``item`` at interpreter exit; turn a default SIGTERM into a clean exit.

    In a server process (``server``: flask run, a gunicorn worker) every stop signal means
    "exit", so only the first one is acted on: a second Ctrl-C or SIGTERM while the process
    stops is quiet and the stop still finishes within its bound (see :func:`quiet_repeats`).
    """
    global _installed
    _live.add(item)
    if _installed:
        return
    _installed = True
    atexit.register(stop_all)
    if not handle_signals or threading.current_thread() is not threading.main_thread():
        return
    if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _exit_on_signal)
    if server:
        quiet_repeats()


def quiet_repeats() -> None:
    """Let each stop signal's handler run once; repeats are logged once and ignored.

    Chained to whatever handler is there (Python's KeyboardInterrupt, gunicorn's worker
    handlers, ours): the first signal starts the exit as it always did; a second one would
    otherwise raise inside the exit (a traceback from atexit, the final snapshot skipped).
    """
    for sig in STOP_SIGNALS:
        previous = signal.getsignal(sig)
        if callable(previous) and not getattr(previous, "_worldloop_once", False):
            signal.signal(sig, _once(previous))


def _once(previous: Callable[[int, FrameType | None], Any]) -> Callable[..., None]:
    def handler(signum: int, frame: FrameType | None) -> None:
        global _stopping
        if _stopping:
            _already_stopping(signum, frame)
            return
        _stopping = True
        previous(signum, frame)

    handler._worldloop_once = True  # type: ignore[attr-defined]
    return handler


def _already_stopping(signum: int, frame: FrameType | None) -> None:
    global _said_stopping
    if not _said_stopping:
        _said_stopping = True
        log.warning(
            "worldloop: already stopping; %s ignored (the stop ends within its bound)",
            signal.Signals(signum).name,
        )


def stop_all() -> None:
    """Stop everything registered with :func:`stop_at_exit` (each within its own bound).

    From the main thread, stop signals that come meanwhile are logged and ignored: the stop
    is bounded already, and cutting it short would skip the final snapshot.
    """
    global _stopping
    _stopping = True
    if threading.current_thread() is threading.main_thread():
        for sig in STOP_SIGNALS:
            signal.signal(sig, _already_stopping)
    for item in list(_live):
        try:
            item.stop()
        except Exception:
            log.exception("worldloop: stop at exit failed")
    if threading.current_thread() is threading.main_thread():
        # Stopped. What is left is the interpreter's own finalization, which puts Python-level
        # handlers back to the default: a Ctrl-C then would kill a cleanly stopped process
        # with SIGINT. An ignore set at the OS level outlives it.
        for sig in STOP_SIGNALS:
            signal.signal(sig, signal.SIG_IGN)


def _exit_on_signal(signum: int, frame: FrameType | None) -> None:
    stop_all()
    raise SystemExit(128 + signum)


def after_fork(fn: Callable[[], None]) -> None:
    """Run ``fn`` in every child forked from now on (gunicorn --preload's workers)."""
    os.register_at_fork(after_in_child=fn)
