"""The gateway's streams of every world: one :class:`~worldloop.gateway.hub.Hub` per world.

The default world's hub is made at start (worldloop.gateway.main). Each extra world of the
runner gets its own hub on the first stream or WebSocket that names it
(``/api/v1/worlds/<name>/stream|ws``): the gateway resolves the name the way a web worker does
(the app's WorldHost asks the runner, worldloop.runner.worlds.remote_world; an unknown name is
WorldNotFound, 404), follows that world's own feed on its own endpoints, and fans its frames
out exactly as the default world's. A world deleted (or whose runner restarted) is found again
by the host once its feed has been silent for a while; its old hub is closed then, and a hub
whose world stopped is closed when its last client leaves.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ..runner.remote import FIRST_FEED_WAIT
from .hub import Hub

if TYPE_CHECKING:
    from ..runtime import WorldRuntime
    from ..state import WorldLoopState


class WorldHubs:
    """The hubs of one gateway, by world name (the default world's included)."""

    def __init__(self, state: WorldLoopState, default: Hub, *, keyframe_every: int) -> None:
        self.state = state
        self.default = default
        self.keyframe_every = keyframe_every
        self._hubs: dict[str, Hub] = {}

    @property
    def hubs(self) -> list[Hub]:
        """Every live hub: the default world's first."""
        return [self.default, *self._hubs.values()]

    async def find(self, name: str) -> Hub:
        """The hub of world ``name``, made on first use. Raises the host's errors: WorldNotFound
        (404) for a name the runner does not host, RunnerUnavailable (503) while it is down."""
        if name == self.default.runtime.name:
            return self.default
        loop = asyncio.get_running_loop()
        # The host may ask the runner (a blocking IPC request): off the event loop.
        hosted = await loop.run_in_executor(None, self.state.host.get, name)
        hub = self._hubs.get(name)
        if hub is None or hub.runtime is not hosted.runtime:
            if hub is not None:  # the host found the world again (deleted, or a new runner)
                hub.close()
            hub = self._hubs[name] = self._hub(hosted.runtime)
            hub.bind(loop)
        if not hub.runtime.running:
            # A world just connected to: its first feed message (a snapshot, the loop's
            # figures) before anyone asks whether it runs, as a web worker's first read waits.
            bus: Any = getattr(hub.runtime, "ipc", None)
            await loop.run_in_executor(None, bus.wait_after, -1, FIRST_FEED_WAIT)
        return hub

    def _hub(self, runtime: WorldRuntime) -> Hub:
        bus: Any = getattr(runtime, "ipc", None)
        if bus is None:  # not a runner's world: nothing to follow
            raise TypeError(f"world {runtime.name!r} is not served by a runner process")
        hub = Hub(runtime, lambda: bus.latest, keyframe_every=self.keyframe_every)
        follow(bus, hub)
        return hub

    def release(self, hub: Hub) -> None:
        """A client of ``hub`` left: an idle hub of a world that stopped is closed."""
        if hub is self.default or hub.clients or hub.runtime.running:
            return
        name = hub.runtime.name
        if self._hubs.get(name) is hub:
            del self._hubs[name]
        hub.close()

    def close(self) -> None:
        for hub in self._hubs.values():
            hub.close()
        self._hubs.clear()
        self.default.close()


def follow(bus: Any, hub: Hub) -> None:
    """Wake ``hub`` on each snapshot ``bus``'s feed announces (after the bus's own handler)."""
    before = bus.on_feed

    def feed(message: Mapping[str, Any]) -> None:
        if before is not None:
            before(message)
        if "file" in message:
            hub.feed(int(message["tick"]))

    bus.on_feed = feed
