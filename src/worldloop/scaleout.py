"""The scale-out mode for one world: every worker serves it, the holder of its lease runs it.

:class:`ScaleoutRuntime` is what the API of every worker (any ``-w``, any host) talks to. Its
bus is the world's Redis bus (worldloop.bus.redis): commands are validated here and appended to
the world's stream, reads and waits are served from the feed. A standby thread tries the world's
Redis lease every ``poll`` seconds; the worker that wins builds an *owner*: a plain
:class:`~worldloop.runtime.WorldRuntime` on the same world object and bus, a fenced store
(worldloop.store.epoch) and a :class:`ClaimingLease`, which claims a new epoch and moves the
bus to the journaled stream offset before recovery. When the owner is fenced (another runner
claimed the world while this one was paused) or loses its lease, the standby thread stops it
(nothing more commits, nothing is acknowledged) and goes back to standing by.

Failover bound: a dead owner's lease expires after ``ttl``; a standby notices within ``poll``;
then recovery (snapshot + journal replay, hash-checked) and the stream from the journaled offset.
While Redis or the store does not answer this worker, or it gave the world up and no owner has
published since, /readyz says which (worldloop.scaleout_probe); it stands by and resumes alone.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any, TypeVar

from .bus.redis import RedisBus
from .clock import TickerStats
from .errors import ConfigError, StoreError, WorldLockedError, WorldNotRunning
from .fleet import runner_info
from .lease.redis import RedisLease
from .runtime import WorldRuntime
from .scaleout_probe import ServiceProbe
from .store.epoch import EpochFence
from .store.sql import SqlStore
from .world import World

if TYPE_CHECKING:
    from .config import Settings
    from .fleet import Fleet

log = logging.getLogger("worldloop.scaleout")

T = TypeVar("T")


class ClaimingLease:
    """A Redis lease that, once won, claims the world's epoch in the store and points the bus
    at the journaled stream offset (the :class:`~worldloop.lease.base.Lease` protocol)."""

    def __init__(self, lease: RedisLease, fence: EpochFence, bus: RedisBus) -> None:
        self.lease, self.fence, self.bus = lease, fence, bus
        self.world = lease.world
        self.wait = lease.wait
        self._epoch = 0

    @property
    def url(self) -> str:
        return self.lease.url

    @property
    def held(self) -> bool:
        return self.lease.held

    @property
    def token(self) -> int:
        """The epoch this owner claimed in the store (the fencing token that counts)."""
        return self._epoch

    def holder(self) -> str | None:
        return self.lease.holder()

    def acquire(self, wait: float | None = None) -> None:
        if self.lease.held and self.fence.epoch(self.world) is not None:
            return
        if not self.lease.held:
            self.lease.acquire(wait)
        try:
            claim = self.fence.claim(self.world)
        except BaseException:
            self.lease.release()
            raise
        self._epoch = claim.epoch
        self.bus.on_taken = lambda cursor: self.fence.stage(self.world, cursor)
        self.bus.start_at(claim.cursor, claim.epoch)
        log.info(
            "world %r: lease won by %s, epoch %d, commands from offset %s",
            self.world,
            self.fence.owner,
            claim.epoch,
            claim.cursor,
        )

    def release(self) -> None:
        self.bus.on_taken = None
        self.fence.forget(self.world)
        self.lease.release()


class ScaleoutRuntime(WorldRuntime):
    """One world in one worker of the scale-out mode; see the module docstring."""

    def __init__(
        self,
        world: World,
        bus: RedisBus,
        *,
        make_lease: Callable[[], RedisLease],
        make_store: Callable[[], SqlStore],
        lookup_store: SqlStore | None = None,
        poll: float = 0.5,
        owner_options: Mapping[str, Any] | None = None,
        probe_every: float = 1.0,
        own_lookup: bool = True,
    ) -> None:
        options = dict(owner_options or {})
        super().__init__(
            world,
            bus=bus,
            rate_hz=float(options.get("rate_hz", 20.0)),
            shutdown_timeout=float(options.get("shutdown_timeout", 2.0)),
        )
        self.redis_bus = bus
        self.store = lookup_store  # idempotency keys and command look-ups (read only)
        self._own_lookup = own_lookup  # False: shared by the process's worlds, closed by it
        self.lease_redis = make_lease()
        """The world's Redis lease, tried every ``poll`` s and reused by each owner."""
        self.make_store = make_store
        self.poll = float(poll)
        self.owner_options = options
        self.me = f"{socket.gethostname()} pid {os.getpid()}"
        self.owner: WorldRuntime | None = None
        """This worker's running owner of the world, while it holds the lease."""
        self.takeovers = 0
        self.given_up: str | None = None
        """Why this worker last gave the world up (fenced, lease lost), for /readyz and logs."""
        self.given_up_epoch = 0
        """The epoch this worker served when it gave the world up (lease_lost until a newer
        one is served)."""
        self.probe = ServiceProbe(
            bus.client,
            lookup_store,
            lambda: None if self.given_up is None else (self.given_up, self.given_up_epoch),
            lambda: self.redis_bus.position[0],
            every=probe_every,
        )
        self._standby_stop = threading.Event()
        self._wake = threading.Event()
        self._standby: threading.Thread | None = None
        self._owner_lock = threading.Lock()
        self.fleet: Fleet | None = None
        """The process's placement of worlds over runners (worldloop.fleet; set by
        :meth:`Fleet.attach`). None: every worker tries the lease, the first wins."""
        self.still_wanted: Callable[[], bool] | None = None
        """Asked after the lease is won, before taking the world over: False (a world deleted
        from the catalog meanwhile) releases it instead."""

    def __repr__(self) -> str:
        return f"ScaleoutRuntime({self.name!r}, {self.me})"

    # -- lifecycle -------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self._running

    @property
    def owning(self) -> bool:
        owner = self.owner
        return owner is not None and owner.running and not owner.degraded

    @property
    def degraded(self) -> str | None:
        owner = self.owner
        return None if owner is None else owner.degraded

    def start(self) -> None:
        """Serve now; stand by for the lease on a thread of its own."""
        with self._state_lock:
            if self._running:
                return
            if self._stopped:
                raise WorldNotRunning("a stopped runtime cannot be started again; make a new one")
            self._running = True
            self._standby_stop.clear()
            self._standby = threading.Thread(
                target=self._stand_by, name=f"standby-{self.name}", daemon=True
            )
            self._standby.start()
        self._emit("started")
        log.info("world %r served by %s (standing by for its lease)", self.name, self.me)

    def stop(self, timeout: float | None = None) -> bool:
        """Stop standing by, hand the world over if this worker owns it (final snapshot,
        release: another worker takes it within its poll), and stop reading the feed."""
        with self._state_lock:
            if not self._running:
                return True
            self._running = False
            self._stopped = True
        self._standby_stop.set()
        self._wake.set()
        standby = self._standby
        if standby is not None and standby is not threading.current_thread():
            standby.join(max(self.poll * 2, 1.0))
        owned = self.owner is not None
        ok = self._give_up(None, timeout)
        if owned and self.fleet is not None:  # the next owner takes it now, not at its poll
            self.fleet.handed_over(self.name)
        self._emit("stopping")
        self.redis_bus.close()
        if self.store is not None and self._own_lookup:
            self.store.close()
        return ok

    def wake(self) -> None:
        """Look at the world now rather than at the next poll (its lease was just released)."""
        self._wake.set()

    def _stand_by(self) -> None:
        while not self._standby_stop.is_set():
            owner, fleet = self.owner, self.fleet
            if owner is None:
                if fleet is None or fleet.wants(self.name):
                    self._try_to_own()
            elif owner.degraded or not owner.running:
                self._give_up(owner.degraded or "the owner stopped")
            elif fleet is not None and fleet.hands_over(self.name):
                self._hand_over(fleet)
            self._wake.wait(self.poll)
            self._wake.clear()

    def _hand_over(self, fleet: Fleet) -> None:
        """A rebalance: stop running the world here (final snapshot, release) for the runner
        it is placed on, and tell it so."""
        log.info(
            "world %r: %s hands the world over to runner %s",
            self.name,
            self.me,
            fleet.placed.get(self.name),
        )
        owner = self.owner
        if owner is not None and owner.durability is not None:  # the next owner waits on it
            owner.durability.hand_over = True
        self._give_up(None, self.shutdown_timeout)
        fleet.handed_over(self.name)

    def _try_to_own(self) -> None:
        options = {
            k: v for k, v in self.owner_options.items() if k not in ("rate_hz", "shutdown_timeout")
        }
        try:
            self.lease_redis.acquire(wait=0)
        except WorldLockedError:
            return
        except Exception as exc:  # Redis unreachable: keep serving what was read, retry
            log.warning("world %r: trying the lease failed: %s", self.name, exc)
            return
        if self.still_wanted is not None and not self._wanted():
            self.lease_redis.release()
            return
        store = self.make_store()
        fence = EpochFence(store, self.me)
        lease = ClaimingLease(self.lease_redis, fence, self.redis_bus)
        owner = WorldRuntime(
            self.world,
            bus=self.redis_bus,
            store=store,
            lease=lease,
            rate_hz=self.ticker.rate_hz,
            shutdown_timeout=self.shutdown_timeout,
            **options,
        )
        for plugin in self._plugins:
            owner.add_plugin(plugin)
        try:
            owner.start()  # claims the epoch, recovers, publishes, ticks
        except Exception as exc:
            if isinstance(exc, StoreError):  # the store down (readyz: store_unreachable)
                log.warning("world %r: taking the world over failed: %s", self.name, exc)
            else:
                log.exception("world %r: taking the world over failed; standing by", self.name)
            lease.release()
            store.close()
            return
        with self._owner_lock:
            if self._standby_stop.is_set():  # stopped meanwhile: hand it straight back
                owner.stop(self.shutdown_timeout)
                return
            self.owner = owner
            self.takeovers += 1

    def _wanted(self) -> bool:
        try:
            return self.still_wanted is None or self.still_wanted()
        except Exception as exc:  # the catalog does not answer: do not take it now
            log.warning("world %r: is it still in the catalog? %s", self.name, exc)
            return False

    def ownership(self) -> dict[str, Any]:
        """Who runs the world (``{"host", "pid"}`` or None) and the newest epoch served."""
        if self.fleet is not None:
            runner = self.fleet.runner_of(self.name)
        else:
            runner = runner_info(self.lease_holder())
        epoch = self.redis_bus.position[0]
        return {"runner": runner, "epoch": epoch if epoch > 0 else None}

    def _give_up(self, why: str | None, timeout: float | None = None) -> bool:
        with self._owner_lock:
            owner, self.owner = self.owner, None
        if owner is None:
            return True
        if why is not None:
            self.given_up_epoch = max(self.redis_bus.position[0], self.redis_bus.epoch)
            self.given_up = why
            log.error("world %r: %s gives the world up: %s", self.name, self.me, why)
        return owner.stop(timeout)

    def command_status(self, command_id: str) -> dict[str, Any] | None:
        """A ticket this worker put that the feed has not resolved yet (its entry may have
        been missed: the feed is capped) is looked up in the journal too."""
        ticket = self.bus.ticket(command_id)
        if ticket is not None and ticket.done:
            return {**ticket.to_dict(), "actor": ticket.command.actor}
        found = None if self.store is None else self.store.find_command(self.name, command_id)
        if found is None and ticket is not None:
            return {**ticket.to_dict(), "actor": ticket.command.actor}
        return found

    # -- what only the owner can do ----------------------------------------------------------

    def _owner(self) -> WorldRuntime:
        owner = self.owner
        if owner is None or not owner.running:
            raise WorldNotRunning(
                f"world {self.name!r} runs on another worker ({self.lease_holder()}); "
                "clock controls act on its owner"
            )
        return owner

    def lease_holder(self) -> str | None:
        """Who runs the world now, as its lease names it (None: nobody, or unknown)."""
        try:
            return self.lease_redis.holder()
        except Exception:
            return None

    def pause(self) -> None:
        self._owner().pause()

    def resume(self) -> None:
        self._owner().resume()

    def step(self, n: int = 1, timeout: float | None = 10.0) -> int:
        return self._owner().step(n, timeout)

    def set_rate(self, rate_hz: float) -> None:
        self._owner().set_rate(rate_hz)

    def stats(self) -> TickerStats:
        owner = self.owner
        return self.ticker.stats() if owner is None else owner.stats()

    def call(self, fn: Callable[[], T]) -> Future[T]:
        return self._owner().call(fn)

    def checkpoint(self, timeout: float) -> dict[str, Any]:
        return self._owner().checkpoint(timeout)

    def check_writable(self) -> None:
        """Nothing: the store is checked by :meth:`service_problems` (store_unreachable)."""

    def service_problems(self) -> list[tuple[str, str]]:
        """Why this worker cannot serve the world now (redis_unreachable, store_unreachable,
        lease_lost), as ``(code, message)`` for /readyz; empty when its services answer."""
        return self.probe.problems()


def scaleout_runtime(
    world: World,
    *,
    redis_url: str,
    store_url: str,
    schema: str | None = None,
    prefix: str = "wl:",
    ttl: float = 5.0,
    poll: float = 0.5,
    queue_size: int = 10_000,
    owner_options: Mapping[str, Any] | None = None,
    group_commit: bool = True,
    probe_every: float = 1.0,
    lookup_store: SqlStore | None = None,
) -> ScaleoutRuntime:
    """The scale-out runtime of ``world``: Redis at ``redis_url`` (lease, streams), the SQL
    store at ``store_url`` (journal, snapshots, epoch); keys start with ``prefix``;
    ``group_commit``: journal with the process's other worlds on that store (store/group.py);
    /readyz asks both services at most every ``probe_every`` seconds; ``lookup_store``: a
    store for command look-ups that the process's worlds share (None: one of its own)."""
    if not store_url.startswith(("postgresql", "sqlite")):
        raise ConfigError(
            f"the Redis mode needs a SQL store (PostgreSQL across hosts), not {store_url!r}"
        )
    from .lease.redis import connect

    bus = RedisBus(connect(redis_url), world.name, prefix=prefix, queue_size=queue_size)
    return ScaleoutRuntime(
        world,
        bus,
        make_lease=lambda: RedisLease(connect(redis_url), world.name, prefix=prefix, ttl=ttl),
        make_store=lambda: SqlStore(
            store_url, schema=schema, group_commit=group_commit, share_engine=True
        ),
        lookup_store=lookup_store or SqlStore(store_url, schema=schema, share_engine=True),
        poll=poll,
        owner_options=owner_options,
        probe_every=probe_every,
        own_lookup=lookup_store is None,
    )


def runtime_from_settings(
    world: World,
    settings: Settings,
    store_url: str,
    *,
    lookup_store: SqlStore | None = None,
    **extra: Any,
) -> ScaleoutRuntime:
    """The scale-out runtime an app's settings describe (WORLDLOOP_REDIS_URL is set);
    ``extra``: more options of its owners (``pool``, ``start_paused``)."""
    assert settings.redis_url is not None
    return scaleout_runtime(
        world,
        redis_url=settings.redis_url,
        store_url=store_url,
        schema=settings.store_schema,
        prefix=settings.redis_prefix,
        ttl=settings.lease_ttl,
        poll=settings.standby_poll,
        queue_size=settings.queue_size,
        group_commit=settings.group_commit,
        probe_every=settings.ready_store_check_ttl,
        lookup_store=lookup_store,
        owner_options={
            "rate_hz": settings.rate_hz,
            "policy": settings.overrun,
            "max_catch_up": settings.max_catch_up,
            "max_commands_per_tick": settings.max_commands_per_tick,
            "start_paused": settings.start_paused,
            "shutdown_timeout": settings.shutdown_timeout,
            "snapshot_every": settings.snapshot_every,
            "recovery_seconds": settings.recovery_seconds,
            "snapshot_write_share": settings.snapshot_write_share,
            "hash_every": settings.hash_every,
            "retention_ticks": settings.journal_retention,
            "store_retry_seconds": settings.store_retry_seconds,
            "snapshot_cache_bytes": settings.snapshot_cache_bytes,
            **extra,
        },
    )
