"""The extra worlds of a runner process (worldloop.host), each served to the web workers.

In the runner-process mode the runner hosts the catalog's worlds as the single-process mode
does, and serves each one on its own endpoint pair (worldloop.runner.ipc.endpoints of its
name) with a :class:`~worldloop.runner.server.RunnerServer` of its own, on a thread. Web
workers forward the world API's writes (create, delete, admin) to the runner, and reach each
world's reads and commands through a :class:`~worldloop.runner.remote.RemoteRuntime` made on
the first request that names it (:func:`remote_world`).
"""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING

from ..hosted import HostedWorld
from ..names import name_world
from .ipc import endpoints

if TYPE_CHECKING:
    from flask import Flask

    from ..state import WorldLoopState
    from .server import RunnerServer

log = logging.getLogger("worldloop.runner")

RESOLVE_TIMEOUT = 2.0
"""Seconds a web worker waits for the runner to say what a world is."""


class WorldServers:
    """The runner's servers of its extra worlds, started and stopped with the worlds."""

    def __init__(self, app: Flask, state: WorldLoopState) -> None:
        self.app = app
        self.state = state
        self._servers: dict[str, tuple[RunnerServer, threading.Thread]] = {}
        self._lock = threading.Lock()

    def add(self, hosted: HostedWorld) -> None:
        """Serve a world that just started (the host calls this)."""
        from .server import RunnerServer

        with self._lock:
            if hosted.name in self._servers:
                return
            server = RunnerServer(
                self.app, hosted.runtime, endpoints(self.state.instance_path, hosted.name)
            )
            thread = threading.Thread(
                target=server.serve, name=f"worldloop-runner-{hosted.name}", daemon=True
            )
            self._servers[hosted.name] = (server, thread)
        thread.start()
        log.info("worldloop: runner serves world %r to web workers", hosted.name)

    def remove(self, name: str, farewell: bool = True) -> None:
        """Stop serving a world being deleted or put to sleep (before its runtime stops): the
        workers hear it is gone and ask again on their next request (which wakes it)."""
        with self._lock:
            found = self._servers.pop(name, None)
        if found is not None:
            server, thread = found
            server.stop(farewell=farewell)
            thread.join(2.0)

    def stop(self) -> None:
        for name in list(self._servers):
            self.remove(name, farewell=False)  # the runner stops: workers serve the last snapshot


def remote_world(state: WorldLoopState, name: str) -> HostedWorld:
    """A web worker's view of the runner's world ``name``: asks the runner what it is (its
    WorldNotFound travels back: 404), builds the world's declarations locally from the same
    kind and config (commands are validated here), and connects to its endpoints."""
    from ..bus.ipc import IpcBus
    from ..errors import WorldNotFound
    from .remote import RemoteRuntime

    default = state.runtime
    if not isinstance(default, RemoteRuntime):
        raise WorldNotFound(f"no world named {name!r} here", details={"world": name})
    info = default.ipc.request({"op": "world", "name": name}, timeout=RESOLVE_TIMEOUT)
    factory = state.host.kinds.get(str(info["kind"]))
    if factory is None:
        raise WorldNotFound(f"world {name!r} is of a kind this worker does not know")
    world = name_world(factory(dict(info["config"])), name)
    bus = IpcBus(
        endpoints(state.instance_path, name), name, cache_bytes=state.settings.snapshot_cache_bytes
    )
    remote = RemoteRuntime(world, bus, rate_hz=state.settings.rate_hz)
    remote.start()
    return HostedWorld(name, str(info["kind"]), dict(info["config"]), remote)
