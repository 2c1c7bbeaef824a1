"""Who runs the gateway: the runner process, as a child it restarts when it dies.

The runner starts ``python -m worldloop.gateway --gateway HOST:PORT`` once its world runs,
unless the gateway is off (worldloop.gateway.address), and watches it from a daemon thread: a
gateway that exits (a crash, kill -9) is started again, with a growing pause if it keeps dying
at once (a port in use). The gateway watches the runner too, so neither outlives the other for
long. The gateway tells its supervisor, through a pipe, once its port is bound: until then, and
from its exit on, :attr:`GatewaySupervisor.listening` is None, and the runner's feed says so to
the web workers (they serve the streams themselves meanwhile).
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
import time

from ..errors import ConfigError

log = logging.getLogger("worldloop.gateway")

POLL = 0.25
"""Seconds between looks at the gateway process."""
STOP_BOUND = 5.0
"""Seconds a stopping gateway gets after SIGTERM before SIGKILL."""
BIND_FAILED = 3
"""A gateway's exit code when its address is in use (worldloop.gateway.main)."""
STEADY = 10.0
"""A gateway that lived this long resets the restart pause."""
MAX_PAUSE = 30.0
"""Longest pause before starting a gateway that keeps exiting at once again."""


def parse_address(value: str) -> tuple[str, int]:
    """``host:port`` (``:port`` or ``port`` alone: 127.0.0.1) as (host, port)."""
    host, _, port = value.strip().rpartition(":")
    try:
        number = int(port)
    except ValueError:
        number = -1
    if not 0 < number < 65536:
        raise ConfigError(
            f"WORLDLOOP_GATEWAY={value!r}: expected host:port, e.g. 127.0.0.1:5001",
            details={"key": "WORLDLOOP_GATEWAY"},
        )
    return host.strip("[]") or "127.0.0.1", number


class GatewaySupervisor:
    """Keeps one gateway process running for this runner (a daemon thread)."""

    def __init__(self, spec: str, cwd: str, address: str, *, watch_pid: int | None = None) -> None:
        self.spec = spec
        self.cwd = cwd
        self.address = address
        """``host:port`` the gateway is told to listen on."""
        self.watch_pid = os.getpid() if watch_pid is None else watch_pid
        self.started = 0
        """Gateway processes started (restarts included)."""
        self.proc: subprocess.Popen[bytes] | None = None
        self._ready: int | None = None
        """The read end of the running gateway's ready pipe (until it reported)."""
        self._listening: subprocess.Popen[bytes] | None = None
        """The gateway process that reported its port bound."""
        self._failures = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="worldloop-gateway", daemon=True)

    def start(self) -> None:
        self._thread.start()

    @property
    def listening(self) -> str | None:
        """The gateway's address while a gateway that bound it runs, else None."""
        proc = self._listening
        if proc is None or proc is not self.proc or proc.poll() is not None:
            return None
        return self.address

    def _look_ready(self) -> None:
        """Read the ready pipe without blocking: the gateway writes its address once bound, or
        closes the pipe (exits) without."""
        fd = self._ready
        if fd is None:
            return
        try:
            data = os.read(fd, 256)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        os.close(fd)
        self._ready = None
        if data.strip():
            self._listening = self.proc
            log.info("worldloop: the gateway listens on %s", self.address)

    def _run(self) -> None:
        started_at = 0.0
        while not self._stop.is_set():
            self._look_ready()
            proc = self.proc
            if proc is None or proc.poll() is not None:
                if proc is not None:
                    lived = time.monotonic() - started_at
                    self._failures = 0 if lived > STEADY else self._failures + 1
                    pause = min(MAX_PAUSE, 0.25 * 2**self._failures) if self._failures else 0.0
                    why = (
                        f"its address {self.address} is in use"
                        if proc.returncode == BIND_FAILED
                        else f"code {proc.returncode}"
                    )
                    log.warning(
                        "worldloop: the gateway exited (%s); streams stay in the web workers; "
                        "restarting in %.2f s",
                        why,
                        pause,
                    )
                    if self._stop.wait(pause):
                        return
                try:
                    self.proc = self._spawn()
                    started_at = time.monotonic()
                except OSError:
                    log.exception("worldloop: cannot start the gateway")
            self._stop.wait(POLL)

    def _spawn(self) -> subprocess.Popen[bytes]:
        if self._ready is not None:
            os.close(self._ready)
        read, write = os.pipe()
        os.set_blocking(read, False)
        self._ready = read
        argv = [sys.executable, "-m", "worldloop.gateway", "--app", self.spec]
        argv += ["--watch", str(self.watch_pid), "--gateway", self.address]
        argv += ["--ready-fd", str(write)]
        env = dict(os.environ)
        path = [p for p in sys.path if p and os.path.isdir(p)]
        env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys([self.cwd, *path]))
        try:
            proc = subprocess.Popen(argv, cwd=self.cwd, env=env, pass_fds=(write,))
        finally:
            os.close(write)
        self.started += 1
        log.info("worldloop: gateway pid %d started", proc.pid)
        return proc

    def stop(self) -> None:
        """Stop watching and end the gateway (SIGTERM, then SIGKILL past STOP_BOUND)."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(2.0)
        self._listening = None
        if self._ready is not None:
            os.close(self._ready)
            self._ready = None
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(STOP_BOUND)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(STOP_BOUND)
