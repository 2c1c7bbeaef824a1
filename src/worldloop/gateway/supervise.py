"""Who runs the gateway: the runner process, as children it restarts when they die.

The runner starts ``python -m worldloop.gateway --gateway HOST:PORT`` once its world runs,
unless the gateway is off (worldloop.gateway.address), and watches it from a daemon thread: a
gateway that exits (a crash, kill -9) is started again, with a growing pause if it keeps dying
at once (a port in use). The gateway watches the runner too, so neither outlives the other for
long. The gateway tells its supervisor, through a pipe, once its port is bound: until one has,
and once none is left, :attr:`GatewaySupervisor.listening` is None, and the runner's feed says
so to the web workers (they serve the streams themselves meanwhile).

With ``WORLDLOOP_GATEWAY_PROCESSES`` above 1, that many gateway processes serve the one
address, each its own event loop on its own core: they bind it with ``SO_REUSEPORT`` and the
kernel spreads the connections among them (a player's keep-alive connection stays with one).
Each follows the runner's feed itself, so each answers the waits and streams of its own
connections; a command path that one event loop serializes (bench/gateway.py: about 1.6 ms of
CPU per waited command) gets as many loops as there are processes.
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


class _Slot:
    """One gateway process of the supervisor's: the process, its ready pipe, its restarts."""

    def __init__(self, index: int) -> None:
        self.index = index
        self.proc: subprocess.Popen[bytes] | None = None
        self.ready: int | None = None
        """The read end of the running gateway's ready pipe (until it reported)."""
        self.listening: subprocess.Popen[bytes] | None = None
        """The gateway process that reported its port bound."""
        self.failures = 0
        self.started_at = 0.0
        """When the running (or last) process was started (monotonic)."""
        self.not_before = 0.0
        """No process is started before this (monotonic): the restart pause."""

    def bound(self) -> bool:
        proc = self.listening
        return proc is not None and proc is self.proc and proc.poll() is None

    def close_ready(self) -> None:
        if self.ready is not None:
            os.close(self.ready)
            self.ready = None


class GatewaySupervisor:
    """Keeps ``processes`` gateway processes running for this runner (a daemon thread)."""

    def __init__(
        self,
        spec: str,
        cwd: str,
        address: str,
        *,
        watch_pid: int | None = None,
        processes: int = 1,
    ) -> None:
        self.spec = spec
        self.cwd = cwd
        self.address = address
        """``host:port`` the gateways are told to listen on."""
        self.watch_pid = os.getpid() if watch_pid is None else watch_pid
        self.started = 0
        """Gateway processes started (restarts included)."""
        self._slots = [_Slot(i) for i in range(max(1, processes))]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="worldloop-gateway", daemon=True)

    def start(self) -> None:
        self._thread.start()

    @property
    def listening(self) -> str | None:
        """The gateway's address while a gateway that bound it runs, else None."""
        return self.address if any(s.bound() for s in self._slots) else None

    def _look_ready(self, slot: _Slot) -> None:
        """Read the slot's ready pipe without blocking: the gateway writes its address once
        bound, or closes the pipe (exits) without."""
        fd = slot.ready
        if fd is None:
            return
        try:
            data = os.read(fd, 256)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        slot.close_ready()
        if data.strip():
            slot.listening = slot.proc
            log.info("worldloop: the gateway %s listens on %s", self._name(slot), self.address)

    def _name(self, slot: _Slot) -> str:
        pid = f"pid {slot.proc.pid}" if slot.proc is not None else "(not started)"
        return pid if len(self._slots) == 1 else f"{slot.index + 1}/{len(self._slots)} {pid}"

    def _run(self) -> None:
        while not self._stop.is_set():
            for slot in self._slots:
                self._look_ready(slot)
                if not self._keep(slot):
                    return
            self._stop.wait(POLL)

    def _keep(self, slot: _Slot) -> bool:
        """Start the slot's gateway if it is not running (after its pause when it keeps
        exiting at once); False once stopping."""
        proc = slot.proc
        if proc is not None and proc.poll() is None:
            return True
        if proc is not None:
            if slot.listening is proc:
                slot.listening = None
            lived = time.monotonic() - slot.started_at
            slot.failures = 0 if lived > STEADY else slot.failures + 1
            pause = min(MAX_PAUSE, 0.25 * 2**slot.failures) if slot.failures else 0.0
            why = (
                f"its address {self.address} is in use"
                if proc.returncode == BIND_FAILED
                else f"code {proc.returncode}"
            )
            streams = "streams stay in the web workers" if self.listening is None else ""
            log.warning(
                "worldloop: the gateway exited (%s), %s; %srestarting in %.2f s",
                why,
                self._name(slot),
                f"{streams}; " if streams else "",
                pause,
            )
            slot.proc = None
            slot.not_before = time.monotonic() + pause
        if time.monotonic() < slot.not_before:
            return not self._stop.is_set()
        try:
            self._spawn(slot)
        except OSError:
            log.exception("worldloop: cannot start the gateway")
        return not self._stop.is_set()

    def _spawn(self, slot: _Slot) -> None:
        """Start the slot's gateway process, with a fresh ready pipe."""
        slot.close_ready()
        read, write = os.pipe()
        os.set_blocking(read, False)
        slot.ready = read
        argv = [sys.executable, "-m", "worldloop.gateway", "--app", self.spec]
        argv += ["--watch", str(self.watch_pid), "--gateway", self.address]
        argv += ["--ready-fd", str(write)]
        if len(self._slots) > 1:
            argv.append("--reuse-port")
        env = dict(os.environ)
        path = [p for p in sys.path if p and os.path.isdir(p)]
        env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys([self.cwd, *path]))
        try:
            proc = subprocess.Popen(argv, cwd=self.cwd, env=env, pass_fds=(write,))
        finally:
            os.close(write)
        self.started += 1
        slot.proc, slot.started_at = proc, time.monotonic()
        log.info("worldloop: gateway %s started", self._name(slot))

    def stop(self) -> None:
        """Stop watching and end the gateways (SIGTERM, then SIGKILL past STOP_BOUND)."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(2.0)
        procs = []
        for slot in self._slots:
            slot.listening = None
            slot.close_ready()
            if slot.proc is not None and slot.proc.poll() is None:
                slot.proc.terminate()
                procs.append(slot.proc)
        deadline = time.monotonic() + STOP_BOUND
        for proc in procs:
            try:
                proc.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(STOP_BOUND)
