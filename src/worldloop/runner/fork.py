"""Start the runner as a fork of the web process that is loading the app (issue 17).

A fresh ``python -m worldloop.runner`` spends most of a restart importing what the web process
has just imported (NumPy, Flask, SQLAlchemy, pydantic, the app) before it can even start
recovering. The first runner is therefore forked from the web process while that one loads the
app — at a moment when it has imported everything the runner needs and runs no thread but its
main one — and the child builds the app again (a few tens of milliseconds once the modules are
there), takes the runner lock and recovers, while the parent goes on with its own start-up.

The child keeps nothing of the parent's I/O but stdin, stdout, stderr and regular files (log
files): every inherited socket (a gunicorn worker's listeners, any client connection) and pipe
is replaced by ``/dev/null`` under the same number, as ``close_fds`` would have dropped them,
without freeing the number for reuse by the child while a stale Python object still names it.
Signal handlers go back to the defaults of a fresh interpreter. Where any of this cannot be
said safely — a thread already running, the app's module still being imported (``flask --app
module`` whose module builds the app at import), a spec that is a file path, no ``fork`` — the
caller starts a fresh interpreter as before (:func:`why_not`); so does every respawn of a dead
runner, which happens on the watching thread.
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib
import logging
import os
import signal
import stat
import sys
import threading
import traceback
from typing import NoReturn

log = logging.getLogger("worldloop.runner")

PRELOAD = (
    "worldloop.runner.main",
    "worldloop.runner.server",
    "worldloop.runner.worlds",
    "worldloop.durability",
)
"""Modules only the runner uses, imported before the fork so the child finds them loaded."""


def why_not(spec: str) -> str | None:
    """Why the runner of ``spec`` cannot be forked from this process now; None: it can."""
    if not hasattr(os, "fork") or not os.path.isdir("/proc/self/fd"):
        return "no fork() with /proc here"
    if threading.active_count() != 1 or threading.current_thread() is not threading.main_thread():
        return "threads are running"
    module = spec.split(":", 1)[0].strip()
    if not module or "/" in module or module.endswith(".py") or not _is_dotted(module):
        return f"the app spec {spec!r} names no importable module"
    parts = module.split(".")
    for i in range(1, len(parts) + 1):
        loaded = sys.modules.get(".".join(parts[:i]))
        if loaded is None:
            return f"module {module!r} is not imported"
        if getattr(getattr(loaded, "__spec__", None), "_initializing", False):
            return f"module {module!r} is still being imported"
    return None


def _is_dotted(name: str) -> bool:
    return all(part.isidentifier() for part in name.split("."))


SQL_SCHEMES = ("sqlite", "postgresql")
"""Store URL schemes served by worldloop.store.sql (SQLAlchemy, the longest import)."""


def preload(store_url: str) -> None:
    """Import what the runner will need and the fork point has not imported yet: the runner's
    own modules and, for a SQL ``store_url``, the SQL store (SQLAlchemy), which the web process
    imports a moment later anyway."""
    scheme = store_url.partition("://")[0].partition("+")[0].lower()
    sql = ("worldloop.store.sql",) if scheme in SQL_SCHEMES else ()
    for name in (*PRELOAD, *sql):
        importlib.import_module(name)


class ForkedRunner:
    """The parent's handle on a forked runner: ``poll()`` and ``returncode`` as a Popen's."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.returncode: int | None = None

    def poll(self) -> int | None:
        """The exit code once the child has exited (reaped here), else None."""
        if self.returncode is not None:
            return self.returncode
        try:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
        except ChildProcessError:  # reaped elsewhere: gone all the same
            self.returncode = -1
            return self.returncode
        if pid == 0:
            return None
        self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode


def fork_runner(argv: list[str], cwd: str, drop: tuple[int, ...] = ()) -> ForkedRunner:
    """Fork; the child runs ``worldloop.runner.main.main(argv)`` in ``cwd`` and never returns
    into the parent's stack (it ends with ``os._exit``). ``drop``: more inherited descriptors
    the child must not keep (the parent's spawn lock)."""
    _flush()  # nothing buffered is written twice
    pid = os.fork()
    if pid == 0:
        _child(argv, cwd, drop)
    return ForkedRunner(pid)


def _child(argv: list[str], cwd: str, drop: tuple[int, ...]) -> NoReturn:
    code = 1
    try:
        _default_signals()
        _drop_inherited_io(drop)
        _name_process()
        os.chdir(cwd)
        from .main import main

        code = main(argv)
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BaseException:
        traceback.print_exc()
    finally:
        logging.shutdown()
        _flush()
    os._exit(code)


def _flush() -> None:
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(AttributeError, OSError, ValueError):
            stream.flush()


COMM = "wl-runner"
"""The forked runner's process name (``ps -e``, ``top``, ``/proc/PID/comm``): its command line
stays the web process's, so this is how to tell it apart."""


def _name_process() -> None:
    """Set this process's name to :data:`COMM` (Linux ``prctl(PR_SET_NAME)``; best effort)."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(15, COMM.encode(), 0, 0, 0)  # 15: PR_SET_NAME


def _default_signals() -> None:
    """The signal handlers of a fresh interpreter: the server's own (gunicorn's) are not ours."""
    with contextlib.suppress(ValueError):
        signal.set_wakeup_fd(-1)
    for sig in signal.valid_signals():
        try:
            handler = signal.getsignal(sig)
        except (ValueError, OSError):
            continue
        if callable(handler):
            fresh = signal.default_int_handler if sig == signal.SIGINT else signal.SIG_DFL
            with contextlib.suppress(ValueError, OSError):
                signal.signal(sig, fresh)


def _drop_inherited_io(drop: tuple[int, ...]) -> None:
    """Every inherited socket and pipe above stderr, and every descriptor in ``drop``, becomes
    ``/dev/null`` under its number (a listener must not stay bound by the runner; a connection
    must not be shared; the parent's spawn lock must go when the parent lets it go: flock
    follows the open file, not the process). Regular files stay: the server's log files."""
    null = os.open(os.devnull, os.O_RDWR)
    try:
        for name in os.listdir("/proc/self/fd"):
            fd = int(name)
            if fd <= 2 or fd == null:
                continue
            try:
                mode = os.fstat(fd).st_mode
            except OSError:
                continue  # the listing's own descriptor, already closed
            if fd in drop or stat.S_ISSOCK(mode) or stat.S_ISFIFO(mode):
                os.dup2(null, fd)
    finally:
        os.close(null)
