"""The runner process's life: load the app, hold the runner lock, run the world, serve workers.

Started by a web worker (worldloop.runner.spawn) as ``python -m worldloop.runner --app SPEC
--watch PID``. It loads the same app the web workers serve (the world, its jobs, its plugins,
its store), takes the runner lock of the world (one runner per world and instance folder, the
``memory://`` store included), starts the world as the single-process mode does (lease,
recovery), starts the stream gateway unless it is off (``--gateway``: where the web server put
it, worldloop.gateway.address; the runner's feed tells the workers once it listens),
and serves the web workers until SIGTERM/SIGINT or until the watched server process
is gone; then it stops the world within its bound (final snapshot).
"""

from __future__ import annotations

import fcntl
import logging
import os
import signal
import threading
import time
from types import FrameType
from typing import TYPE_CHECKING

from . import registry
from .child import WATCH_EVERY, Watched, alive, load_app, parse_args, since_start

if TYPE_CHECKING:
    from ..gateway.supervise import GatewaySupervisor

log = logging.getLogger("worldloop.runner")

LOCK_WAIT = 30.0
"""Seconds a new runner waits for an old one (stopping) to let go of the lock."""


def _lock(path: str, watch: int) -> int | None:
    """Hold the runner lock (an fd kept for life), waiting for a stopping runner; None when
    another runner keeps it or the server went away meanwhile."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    deadline = time.monotonic() + LOCK_WAIT
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
            return fd
        except BlockingIOError:
            if time.monotonic() > deadline or not alive(watch):
                os.close(fd)
                return None
            time.sleep(0.1)


def main(argv: list[str] | None = None) -> int:
    args = parse_args("python -m worldloop.runner", argv)

    from .. import lifecycle

    lifecycle.RUNNER_PROCESS = True  # serving_role() is "runner": start here, serve workers
    from ..state import state_of
    from . import ipc
    from .server import RunnerServer
    from .worlds import WorldServers

    app = load_app(args.app)
    state = state_of(app)
    endpoints = ipc.endpoints(state.instance_path, state.runtime.name)
    log.info(
        "worldloop: runner pid %d loaded the app in %.2f s since its start",
        os.getpid(),
        since_start(),
    )
    fd = _lock(str(endpoints.lock), args.watch)
    if fd is None:
        log.info("worldloop: another runner serves world %r; exiting", state.runtime.name)
        return 0
    listed = registry.add(args.watch)  # the server's on_exit hook waits for what it lists
    server = RunnerServer(app, state.runtime, endpoints)
    extra = WorldServers(app, state)  # the catalog's worlds, each served on its own endpoints
    state.host.on_start = extra.add
    state.host.on_stop = extra.remove

    def stop(signum: int, frame: FrameType | None) -> None:
        server.halt()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)

    watched = Watched(args.watch)

    def watch() -> None:
        while not server.halted:
            if watched.wait(WATCH_EVERY):
                log.info("worldloop: server process %d is gone: the runner stops", args.watch)
                server.halt()
                return

    gateway: GatewaySupervisor | None = None
    try:
        server.bind()  # workers connect while the world recovers: they hear its first feed at once
        log.info("worldloop: runner recovering world %r", state.runtime.name)
        state.start_in_runner()
        threading.Thread(target=watch, name="worldloop-runner-watch", daemon=True).start()
        log.info(
            "worldloop: runner pid %d serves world %r (tick %d) to web workers, %.2f s "
            "after its start",
            os.getpid(),
            state.runtime.name,
            state.runtime.tick,
            since_start(),
        )
        from ..gateway.address import explicit

        address = args.gateway or explicit(state.settings.gateway)
        if address:  # streams only: readiness does not wait for it
            from ..gateway.supervise import GatewaySupervisor

            gateway = GatewaySupervisor(
                args.app, os.getcwd(), address, processes=state.settings.gateway_processes
            )
            server.gateway = gateway
            gateway.start()
        server.serve()
    finally:
        if gateway is not None:
            gateway.stop()
        server.stop()
        extra.stop()
        state.stop()
        watched.close()
        registry.remove(listed)
        os.close(fd)
    return 0
