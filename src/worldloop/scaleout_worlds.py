"""The Redis mode's worlds in one app: every process serves every world, the fleet places them.

In the Redis mode (WORLDLOOP_REDIS_URL) each process of the deployment, whatever its host,
serves the app's default world *and* every world of the catalog (PostgreSQL): each one as a
:class:`~worldloop.scaleout.ScaleoutRuntime` that reads the world's feed and stands by for its
lease. Which process runs which world is the :class:`~worldloop.fleet.Fleet`'s placement
(weighted rendezvous over the registered runners, sticky and balanced within one world); the
lease and the epoch fence make it exclusive.

This module wires that into the app (worldloop.state): the runtimes, one command look-up store
shared by all the process's worlds (a PostgreSQL connection per process, not per world), the
catalog followed every second (worlds created or deleted by other processes, or asked for by
name before that), and deletion: the deleting process bumps the world's epoch once it left the
catalog, so whichever process runs it commits nothing more, and no process takes it again.
Hibernation is off in this mode: waking a world is the placement's job here.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from .errors import WorldNotFound
from .fleet import Fleet
from .hosted import HostedWorld
from .lease.redis import connect
from .scaleout import ScaleoutRuntime, runtime_from_settings
from .store.epoch import bump_epoch
from .store.sql import SqlStore

if TYPE_CHECKING:
    from .state import WorldLoopState
    from .world import World

log = logging.getLogger("worldloop.scaleout")


class ScaleoutWorlds:
    """The Redis mode's part of one app's state; see the module docstring."""

    def __init__(self, state: WorldLoopState) -> None:
        settings = state.settings
        assert settings.redis_url is not None
        self.state = state
        self.lookup = SqlStore(state.store_url, schema=settings.store_schema, share_engine=True)
        """Command and idempotency-key look-ups of every world of this process."""
        self.fleet = Fleet(
            connect(settings.redis_url),
            prefix=settings.redis_prefix,
            ttl=settings.lease_ttl,
            poll=settings.standby_poll,
            capacity=settings.runner_capacity,
            healthy=self._healthy,
            sync=self.follow,
        )
        self.default: ScaleoutRuntime | None = None

    def runtime(self, world: World, *, extra: bool, paused: bool = False) -> ScaleoutRuntime:
        """A world's runtime in this process, placed with the others; an extra world's loop
        runs on the app's loop pool and is taken over only while it is in the catalog."""
        state = self.state
        options = {"pool": state.loop_pool, "start_paused": paused} if extra else {}
        rt = runtime_from_settings(
            world, state.settings, state.store_url, lookup_store=self.lookup, **options
        )
        if extra:
            name = world.name
            rt.still_wanted = lambda: any(e.name == name for e in state.host.catalog.entries())
        else:
            self.default = rt
        self.fleet.attach(rt)
        return rt

    def _healthy(self) -> bool:
        """Whether this process can run worlds: its store answers (else it leaves the
        registry, and its worlds are placed on the others)."""
        rt = self.default
        return rt is None or all(code != "store_unreachable" for code, _ in rt.service_problems())

    # -- the host ----------------------------------------------------------------------------

    def install(self) -> None:
        """Hook the host: no hibernation, deletion fenced, unknown names looked up."""
        host = self.state.host
        host.hibernator.off = True
        host.on_remove = self.fence
        host.resolve = self.resolve

    def resolve(self, name: str) -> HostedWorld:
        """A world another process created a moment ago (before :meth:`follow` saw it)."""
        host = self.state.host
        entry = next((e for e in host.catalog.entries() if e.name == name), None)
        if entry is None or not host.started:
            raise WorldNotFound(f"no world named {name!r} here", details={"world": name})
        hosted = host.build(entry)
        hosted.runtime.start()
        return hosted

    def follow(self) -> None:
        """Serve the worlds the catalog has, stop serving the ones it lost."""
        host = self.state.host
        if not host.started or not host.kinds:
            return
        known = {w.name for w in host.worlds() if not w.default}
        host.follow(host.catalog.entries(), known)

    def fence(self, name: str) -> None:
        """A deleted world: bump its epoch, so the process running it (any host) commits
        nothing more and gives it up; it left the catalog, so no one takes it again."""
        self.fleet.detach(name)
        try:
            bump_epoch(self.lookup, name, f"deleted by {self.fleet.me.id}")
        except Exception as exc:
            log.error("world %r: fencing its owner after the deletion failed: %s", name, exc)

    def forget(self, name: str) -> None:
        self.fleet.detach(name)

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        self.fleet.start()

    def stop(self) -> None:
        """Leave the registry first: the others place this process's worlds at once, and
        take each one as its runtime here hands it over."""
        self.fleet.stop()

    def close(self) -> None:
        self.lookup.close()
