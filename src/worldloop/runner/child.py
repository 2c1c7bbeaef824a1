"""What the runner and gateway processes share: their command line, the app, the watched server.

Both are started by the server they serve (``--watch PID``: the gunicorn master or the ``flask
run`` process, resp. the runner) with the app as gunicorn or ``flask --app`` were told
(``--app SPEC``), and both end when the watched process is gone.
"""

from __future__ import annotations

import argparse
import os
import select
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from flask import Flask

WATCH_EVERY = 0.5
"""Seconds between looks at the watched process where it cannot be waited on (no pidfd)."""


def parse_args(prog: str, argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog=prog)
    parser.add_argument("--app", default="", help="the app, as gunicorn or flask --app name it")
    parser.add_argument("--watch", type=int, default=os.getppid(), help="stop when it exits")
    parser.add_argument(
        "--gateway",
        default="",
        help="host:port of the stream gateway (worldloop.gateway.address), as the web server "
        "worked it out; empty: WORLDLOOP_GATEWAY's own",
    )
    parser.add_argument(
        "--ready-fd", type=int, default=-1, help="(gateway) a pipe told the address once bound"
    )
    parser.add_argument(
        "--reuse-port",
        action="store_true",
        help="(gateway) bind with SO_REUSEPORT: one of WORLDLOOP_GATEWAY_PROCESSES gateways",
    )
    return parser.parse_args(argv)


def load_app(spec: str) -> Flask:
    """The app named by ``spec`` (``module:create_app()``; empty: Flask's own discovery)."""
    from flask.cli import ScriptInfo

    return ScriptInfo(app_import_path=spec or None).load_app()


def alive(pid: int) -> bool:
    """True while process ``pid`` exists (one we may not signal counts as alive)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


_IMPORTED = time.monotonic()


def started(pid: int | str = "self") -> float | None:
    """When process ``pid`` started, s since boot (CLOCK_BOOTTIME), from Linux's /proc; None
    where that cannot be read."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
            return int(f.read().rsplit(")", 1)[1].split()[19]) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


def since_start() -> float:
    """Seconds since this process started (Linux: its start time in /proc; elsewhere: since
    this module was imported), for the start-up log lines that say where start-up time goes."""
    at = started()
    if at is None or not hasattr(time, "CLOCK_BOOTTIME"):
        return time.monotonic() - _IMPORTED
    return max(0.0, time.clock_gettime(time.CLOCK_BOOTTIME) - at)


class Watched:
    """The watched process, waited on: through a pidfd where Linux has one (its exit is seen
    the moment it happens, and a reused pid never fools it), else by looking every
    WATCH_EVERY s. A runner that polled saw its server gone up to a second late: the gunicorn
    master had exited, and a supervisor that then ends what is left (a container whose first
    process was the master) could stop the runner before its final snapshot."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self._fd: int | None = None
        self._gone = False
        if hasattr(os, "pidfd_open"):
            try:
                self._fd = os.pidfd_open(pid)
            except ProcessLookupError:
                self._gone = True
            except OSError:  # not allowed, or no pidfd in this kernel: look instead
                self._fd = None

    def wait(self, timeout: float) -> bool:
        """Wait up to ``timeout`` s for the process to end; True once it has."""
        if self._gone:
            return True
        if self._fd is not None:
            ready, _, _ = select.select([self._fd], [], [], timeout)
            self._gone = bool(ready)
        elif alive(self.pid):
            time.sleep(timeout)
            self._gone = not alive(self.pid)
        else:
            self._gone = True
        return self._gone

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
