"""This process among the runners of a scale-out deployment: who should run which world.

One :class:`Fleet` per process in the Redis mode (SCALEOUT.md, "many worlds over many
runners"). It registers the process as a runner (worldloop.registry: expiring entry, weight
``WORLDLOOP_RUNNER_CAPACITY``), and every ``poll`` seconds, on one thread for all the worlds
of the process, it lists the live runners, reads every world's lease holder in one ``MGET``,
and places the worlds (worldloop.placement: weighted rendezvous, bounded and sticky loads).
Each world's :class:`~worldloop.scaleout.ScaleoutRuntime` asks it:

- :meth:`wants`: try the lease now? Yes when the world is placed here; also when it has been
  free for ``grace`` seconds whoever it is placed on (a placed runner that cannot take it must
  not strand it: the lease, not the placement, is what makes ownership exclusive);
- :meth:`hands_over`: the world runs here but has been placed elsewhere, on a live runner,
  for ``settle`` seconds (not on a passing disagreement between processes that see a new
  runner at different moments): stop it gracefully (final snapshot, release) and announce
  the release, so the next owner takes it at once instead of at its next poll.

A process whose store does not answer leaves the registry until it does (``healthy``), so the
others place its worlds elsewhere rather than hand them back to a runner that cannot run them.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .placement import Runner, place
from .registry import RunnerRegistry

if TYPE_CHECKING:
    import redis

    from .scaleout import ScaleoutRuntime

log = logging.getLogger("worldloop.fleet")


def holder_key(holder: str) -> tuple[str, int] | None:
    """``(host, pid)`` of a lease holder value (``"<host> pid <pid> …"``), or None."""
    host, sep, rest = holder.partition(" pid ")
    if not sep:
        return None
    try:
        return host, int(rest.split()[0])
    except (ValueError, IndexError):
        return None


def runner_info(holder: str | None) -> dict[str, Any] | None:
    """``{"host", "pid"}`` of a lease holder value, None for none (or one not understood)."""
    found = None if holder is None else holder_key(holder)
    return None if found is None else {"host": found[0], "pid": found[1]}


class Fleet:
    """This process's view of the deployment's runners and worlds; see the module docstring."""

    def __init__(
        self,
        client: redis.Redis,
        *,
        prefix: str = "wl:",
        ttl: float = 5.0,
        poll: float = 0.5,
        capacity: float = 1.0,
        healthy: Callable[[], bool] | None = None,
        sync: Callable[[], None] | None = None,
        sync_every: float = 1.0,
    ) -> None:
        host, pid = socket.gethostname(), os.getpid()
        self.me = Runner(f"{host}:{pid}:{uuid.uuid4().hex[:8]}", host, pid, float(capacity))
        self.client = client
        self.prefix = prefix
        self.poll = float(poll)
        self.grace = float(ttl) + 2 * self.poll
        """Seconds a world may stay free before any runner takes it, placed there or not."""
        self.settle = max(2.0, 4 * self.poll)
        """Seconds a world must stay placed elsewhere before its owner hands it over."""
        self.registry = RunnerRegistry(client, self.me, prefix=prefix, ttl=ttl)
        self._check_health = healthy
        self._healthy = True
        """The last answer of ``healthy``, asked on a thread of its own: a check that hangs
        (a store behind a blackhole) must never hold up the registry's renewals."""
        self.registry.healthy = lambda: self._healthy
        self.sync = sync
        """Called every ``sync_every`` s: follows the catalog (worlds created or deleted by
        other processes)."""
        self.sync_every = float(sync_every)
        self.runtimes: dict[str, ScaleoutRuntime] = {}
        self.runners: list[Runner] = []
        self.placed: dict[str, str] = {}
        self.holders: dict[str, str | None] = {}
        self._free_since: dict[str, float] = {}
        self._elsewhere_since: dict[str, float] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._synced = 0.0

    def __repr__(self) -> str:
        return f"Fleet({self.me.id!r}, {len(self.runtimes)} worlds)"

    # -- the worlds of this process ------------------------------------------------------------

    def attach(self, runtime: ScaleoutRuntime) -> None:
        """Place ``runtime``'s world with the others (it asks :meth:`wants` from now on)."""
        with self._lock:
            self.runtimes[runtime.name] = runtime
        runtime.fleet = self

    def detach(self, name: str) -> None:
        with self._lock:
            self.runtimes.pop(name, None)
            self.placed.pop(name, None)

    # -- lifecycle -----------------------------------------------------------------------------

    def start(self) -> None:
        """Join the registry, place once, then keep placing every ``poll`` s."""
        if self._thread is not None:
            return
        try:
            self.registry.join()
        except Exception as exc:  # Redis away: the registry's thread joins once it answers
            log.warning("runner %s: joining the registry failed: %s", self.me.id, exc)
        self.registry.listen(self._released)
        self.refresh()
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="worldloop-fleet", daemon=True)
        self._thread.start()
        if self._check_health is not None:
            threading.Thread(
                target=self._health_loop, name="worldloop-fleet-health", daemon=True
            ).start()
        log.info(
            "runner %s joined (capacity %g): %d runners",
            self.me.id,
            self.me.capacity,
            len(self.runners),
        )

    def stop(self) -> None:
        """Leave the registry first (the others place this process's worlds at once), then
        stop placing; the worlds themselves are stopped (handed over) by their runtimes."""
        self.registry.leave()
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None and thread is not threading.current_thread():
            thread.join(2.0)

    def _loop(self) -> None:
        while not self._stop.wait(self.poll):
            try:
                self.refresh()
            except Exception as exc:  # Redis away: keep the last view; the leases decide
                log.debug("runner %s: placing failed: %s", self.me.id, exc)
            if self.sync is not None and time.monotonic() - self._synced >= self.sync_every:
                self._synced = time.monotonic()
                try:
                    self.sync()
                except Exception:
                    log.exception("runner %s: following the catalog failed", self.me.id)

    def _health_loop(self) -> None:
        assert self._check_health is not None
        while not self._stop.wait(self.registry.ttl / 3):
            try:
                self._healthy = bool(self._check_health())
            except Exception as exc:
                log.warning("runner %s: health check failed: %s", self.me.id, exc)
                self._healthy = False

    def _released(self, world: str) -> None:
        """A runner handed ``world`` over: its next owner takes it now. A runner that left
        releases its worlds right after leaving the registry, so a placement read before
        that still names it: read it again first, or the world waits a poll or two."""
        runtime = self.runtimes.get(world)
        if runtime is None:
            return
        if not self.wants(world):
            try:
                self.refresh()
            except Exception as exc:  # Redis away: the standby polls the lease anyway
                log.debug("runner %s: placing after a release failed: %s", self.me.id, exc)
        runtime.wake()

    # -- placing -------------------------------------------------------------------------------

    def refresh(self) -> None:
        """List the runners, read the lease holders, place the worlds."""
        with self._lock:
            names = sorted(self.runtimes)
        runners = self.registry.runners()
        keys = [f"{self.prefix}{name}:lease" for name in names]
        raw: list[Any] = list(self.client.mget(keys)) if keys else []
        holders: dict[str, str | None] = {}
        for name, value in zip(names, raw, strict=True):
            text = value.decode(errors="replace") if isinstance(value, bytes) else value
            holders[name] = None if text is None else str(text).rsplit(" ", 1)[0]
        by_key = {(r.host, r.pid): r.id for r in runners}
        held: dict[str, str] = {}
        for name, holder in holders.items():
            found = None if holder is None else by_key.get(holder_key(holder) or ("", 0))
            if found is not None:
                held[name] = found
        placed = place(names, runners, held)
        now = time.monotonic()
        with self._lock:
            self.runners, self.placed, self.holders = runners, placed, holders
            for name in names:
                if holders.get(name) is None:
                    self._free_since.setdefault(name, now)
                else:
                    self._free_since.pop(name, None)
                if placed.get(name, self.me.id) != self.me.id:
                    self._elsewhere_since.setdefault(name, now)
                else:
                    self._elsewhere_since.pop(name, None)
        # A free world placed here (its runner died or left): its standby tries the lease now,
        # not a poll of its own later (the failover bound is ttl + poll + recovery).
        for name in names:
            runtime = self.runtimes.get(name)
            if runtime is None or runtime.owner is not None or holders.get(name) is not None:
                continue
            if placed.get(name) == self.me.id:
                runtime.wake()

    def wants(self, name: str) -> bool:
        """Whether this process should try ``name``'s lease now."""
        if self.me.capacity <= 0:
            return False
        if self.placed.get(name) == self.me.id:
            return True
        free = self._free_since.get(name)
        return free is not None and time.monotonic() - free >= self.grace

    def hands_over(self, name: str) -> bool:
        """Whether this process, running ``name``, should hand it to the runner it is placed on."""
        since = self._elsewhere_since.get(name)
        target = self.placed.get(name)
        if since is None or target is None or target == self.me.id:
            return False
        if not self.registry.joined:  # unhealthy here: the world fails over, not hands over
            return False
        return time.monotonic() - since >= self.settle

    def handed_over(self, name: str) -> None:
        """``name`` was released here: tell every process (its next owner takes it at once)."""
        with self._lock:
            self._elsewhere_since.pop(name, None)
        self.registry.announce_release(name)

    def runner_of(self, name: str) -> dict[str, Any] | None:
        """Who runs ``name`` as last read (``{"host", "pid"}``), None when nobody does."""
        return runner_info(self.holders.get(name))

    def describe(self) -> dict[str, Any]:
        """This process, the live runners and how many worlds each is placed with."""
        counts: dict[str, int] = {r.id: 0 for r in self.runners}
        for rid in self.placed.values():
            counts[rid] = counts.get(rid, 0) + 1
        return {
            "me": self.me.describe(),
            "runners": [{**r.describe(), "placed": counts.get(r.id, 0)} for r in self.runners],
        }
