"""One running world: ties the ticker, the world, the bus, the store and the lease.

The loop thread is the only writer. Each tick it takes the waiting commands from the bus in
arrival order, steps the world (commands, then systems), makes the tick durable, and publishes
an immutable snapshot with that tick's outcomes, which is when the submitters' tickets resolve.
The runtime knows its backends only by their protocols (worldloop.bus, .store, .lease).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, TypeVar

from .bus import Bus, open_bus
from .clock import Clock, OverrunPolicy, Ticker, TickerStats, TickInfo
from .commands import Command, CommandTicket, IdempotencyKey, Outcome
from .config import SNAPSHOT_WRITE_SHARE
from .durability import Durability, replay_cost
from .errors import StoreError, WorldNotRunning
from .lease import Lease, open_lease
from .looppool import LoopPool
from .plugins import HOOKS, RuntimePlugin, overridden
from .snapshot import DEFAULT_CACHE_BYTES, Snapshot, freeze_arrays
from .store import Store
from .world import World

log = logging.getLogger("worldloop.runtime")

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class TickReport:
    """What one tick did, handed to after-tick listeners (metrics, jobs, streams)."""

    tick: int
    info: TickInfo
    outcomes: tuple[Outcome, ...]
    duration: float
    queue_depth: int
    snapshot: Snapshot


class WorldRuntime:
    """Runs one world on its own loop thread, or on a shared loop pool's (``pool``: one of its
    threads at a time); the public face the API and extension use."""

    def __init__(
        self,
        world: World,
        *,
        rate_hz: float = 20.0,
        clock: Clock | None = None,
        policy: OverrunPolicy | str = OverrunPolicy.CATCH_UP,
        max_catch_up: int = 5,
        queue_size: int = 10_000,
        max_commands_per_tick: int = 10_000,
        lease: Lease | None = None,
        store: Store | None = None,
        bus: Bus | None = None,
        start_paused: bool = False,
        shutdown_timeout: float = 2.0,
        snapshot_every: int = 1000,
        recovery_seconds: float = 0.25,
        snapshot_write_share: float = SNAPSHOT_WRITE_SHARE,
        hash_every: int = 100,
        retention_ticks: int = 3000,
        store_retry_seconds: float = 5.0,
        snapshot_cache_bytes: int = DEFAULT_CACHE_BYTES,
        pool: LoopPool | None = None,
    ) -> None:
        self.world = world
        if world.tick == 0:
            world.use_rate(rate_hz)  # a new world's dt; a recovered state brings its own
        self.name = world.name
        self.bus: Bus = bus or open_bus("local://", world.name, queue_size=queue_size)
        self.lease: Lease = lease or open_lease("memory://", world.name)
        self.store = store
        self.durability: Durability | None = None
        if store is not None:
            self.durability = Durability(
                store,
                snapshot_every=snapshot_every,
                recovery_seconds=recovery_seconds,
                write_share=snapshot_write_share,
                hash_every=hash_every,
                retention_ticks=retention_ticks,
                retry_seconds=store_retry_seconds,
            )
            self.durability.notify = self._store_event
        self.max_commands_per_tick = max_commands_per_tick
        self.snapshot_cache_bytes = snapshot_cache_bytes
        self.shutdown_timeout = shutdown_timeout
        self.ticker = Ticker(
            self._on_tick,
            rate_hz,
            clock=clock,
            policy=policy,
            max_catch_up=max_catch_up,
            name=f"worldloop-{world.name}",
            start_paused=start_paused,
            pool=pool,
        )
        self._plugins: list[RuntimePlugin] = []
        self._hooks: dict[str, list[Callable[..., None]]] = {name: [] for name in HOOKS}
        self.applied: Counter[str] = Counter()
        self.rejected: Counter[str] = Counter()
        self.hook_errors = 0
        self.last_tick_duration = 0.0
        self.last_tick_at: float | None = None
        self._state_lock = threading.Lock()
        self._running = False
        self._stopped = False
        self._stop_deadline: float | None = None
        self._lost: str | None = None
        """Why this runtime stopped ticking on its own: its lease may have expired."""

    # -- lifecycle -------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self._running and self.ticker.running

    def why_not_running(self) -> tuple[str, str]:
        """(code, message) for /readyz when :attr:`running` is False."""
        return "not_running", "the world loop is not running in this process"

    @property
    def degraded(self) -> str | None:
        """Why the world cannot go on (the journal failed or was fenced, the lease was lost),
        or None when healthy."""
        return self._lost or (None if self.durability is None else self.durability.failed)

    def start(self) -> None:
        """Take the lease, publish the current state, and start ticking."""
        with self._state_lock:
            if self._running:
                return
            if self._stopped:
                raise WorldNotRunning("a stopped runtime cannot be started again; make a new one")
            self.lease.acquire()
            try:
                if self.durability is not None:
                    self.durability.recover(self.world, self.bus)
                else:  # in memory only: every start is a new world
                    self.world.outbox.begin()
                self._publish()
                tick = self.world.tick  # the log's, before the loop thread can move it on
                self.ticker.start()
            except BaseException:
                self.lease.release()
                raise
            self._running = True
        self._emit("started")
        log.info(
            "world %r started at tick %d, %.3g Hz, in pid %d",
            self.name,
            tick,
            self.ticker.rate_hz,
            os.getpid(),
        )

    def stop(self, timeout: float | None = None) -> bool:
        """Stop within ``timeout`` s (default: ``shutdown_timeout``), refuse what is still
        queued, write a final snapshot if the bound allows, close the store, release the lease.

        The bound covers the whole stop, not each part: the loop gets what it needs first,
        then the stop hooks, and the final snapshot gets the rest (best effort: the journal
        already holds every acknowledged tick, see ``Durability.final_snapshot``).
        """
        with self._state_lock:
            if not self._running:
                return True
            self._running = False
            self._stopped = True
        bound = max(0.0, self.shutdown_timeout if timeout is None else float(timeout))
        self._stop_deadline = time.monotonic() + bound
        # The loop gets three quarters of the bound; the rest is kept for the store, so that
        # an abandoned loop's journal write in flight can still be waited out (see close()).
        ok = self.ticker.stop(0.75 * bound)
        if not ok:
            log.error("world %r: loop did not stop within the bound; abandoning it", self.name)
        self.bus.refuse_waiting(
            "world_stopped", "the world stopped before this command ran", self.world.tick
        )
        self._emit("stopping")
        if self.durability is not None:
            try:
                if ok:
                    self.durability.final_snapshot(self.world, self.stop_time_left())
                self.durability.close(self.stop_time_left())
            except Exception:
                log.exception("world %r: closing the store failed", self.name)
        self.lease.release()
        log.info(
            "world %r stopped at tick %d in pid %d (%.3f s of a %.3g s bound)",
            self.name,
            self.world.tick,
            os.getpid(),
            bound - self.stop_time_left(),
            bound,
        )
        return ok

    def stop_time_left(self) -> float:
        """Seconds left of the bound of a stop under way (stop hooks size their waits by it);
        ``shutdown_timeout`` when no stop is under way."""
        if self._stop_deadline is None:
            return self.shutdown_timeout
        return max(0.0, self._stop_deadline - time.monotonic())

    # -- plug-ins ---------------------------------------------------------------------------

    def add_plugin(self, plugin: RuntimePlugin) -> RuntimePlugin:
        """Follow this world's life with ``plugin`` (see worldloop.plugins); returns it."""
        if plugin in self._plugins:
            return plugin
        self._plugins.append(plugin)
        self._index_hooks()
        if self.running:
            self._emit("started")
        return plugin

    def remove_plugin(self, plugin: RuntimePlugin) -> None:
        if plugin in self._plugins:
            self._plugins.remove(plugin)
            self._index_hooks()

    def _index_hooks(self) -> None:
        # Rebuilt, never mutated: the loop thread iterates the old lists without a lock.
        hooks: dict[str, list[Callable[..., None]]] = {name: [] for name in HOOKS}
        for plugin in self._plugins:
            for name in HOOKS:
                method = overridden(plugin, name)
                if method is not None:
                    hooks[name].append(method)
        self._hooks = hooks

    def _emit(self, hook: str, *args: Any) -> None:
        """Call ``hook`` on every plug-in that has it; a failure is logged and counted."""
        for method in self._hooks[hook]:
            try:
                method(self, *args)
            except Exception:
                self.hook_errors += 1
                log.exception(
                    "world %r: plug-in %s.%s failed at tick %d",
                    self.name,
                    type(getattr(method, "__self__", method)).__name__,
                    hook,
                    self.world.tick,
                )

    def _store_event(self, event: str, tick: int, seconds: float) -> None:
        self._emit(event, tick, seconds)

    # -- commands and snapshots ------------------------------------------------------------

    def submit(
        self,
        type_: str,
        payload: Mapping[str, Any],
        actor: str | None = None,
        key: IdempotencyKey | None = None,
    ) -> CommandTicket:
        """Validate (in the caller's thread) and queue a command; raises on invalid or full.

        With an idempotency ``key`` already used, the first command's ticket comes back (in
        flight, or resolved: from memory, else from the journal) and nothing new is queued;
        IdempotencyKeyReused if that key first came with a different request.
        """
        first = self._admit(key)
        if first is not None:
            return first
        return self._queue(type_, self.world.validate(type_, payload, actor), actor, key)

    def accept(
        self,
        type_: str,
        normalized: Mapping[str, Any],
        actor: str | None = None,
        key: IdempotencyKey | None = None,
        *,
        command_id: str | None = None,
    ) -> CommandTicket:
        """Queue a command already validated (by a web worker of the runner process): the
        same checks and idempotency as :meth:`submit`; ``command_id``: the id the submitter
        chose (the stream gateway's), else a new one."""
        first = self._admit(key)
        if first is not None:
            return first
        return self._queue(type_, normalized, actor, key, command_id)

    def _admit(self, key: IdempotencyKey | None) -> CommandTicket | None:
        """Refuse when not running; the first command's ticket of a key already used."""
        if not self._running:
            raise WorldNotRunning(f"world {self.name!r} is not running in this process")
        return None if key is None else self.keyed(key)

    def _queue(
        self,
        type_: str,
        normalized: Mapping[str, Any],
        actor: str | None,
        key: IdempotencyKey | None,
        command_id: str | None = None,
    ) -> CommandTicket:
        if self.degraded:
            raise StoreError(f"world {self.name!r} halted: {self.degraded}")
        ticket = self.bus.put(type_, normalized, actor, key, command_id=command_id)
        halted = self.degraded
        if halted:
            # The loop halted while this command was being validated, after it drained the
            # queue: refuse it now, or (paused, or stopping) nothing would ever resolve it.
            self._refuse([], halted)
            raise StoreError(f"world {self.name!r} halted: {halted}")
        return ticket

    def keyed(self, key: IdempotencyKey) -> CommandTicket | None:
        """The command first submitted with ``key``: its ticket from the bus (recent keys),
        else rebuilt from the journal (resolved), else None; IdempotencyKeyReused if the
        request differs. The journal answers after a restart: keys are journaled with their
        command, so a retry after kill -9 finds what was acknowledged."""
        ticket = self.bus.keyed(key.scope)
        if ticket is None and self.store is not None:
            found = self.store.find_key(self.name, key.scope)
            if found is not None:
                ticket = CommandTicket.from_journal(*found)
        if ticket is not None:
            first = ticket.command.key
            key.check(None if first is None else first.fingerprint)
        return ticket

    def command_status(self, command_id: str) -> dict[str, Any] | None:
        """A command as GET /commands/{id} shows it, plus its ``actor``: a recent ticket, else
        the journal, else None.

        The journal answers for commands applied before a restart (or evicted from history).
        """
        ticket = self.bus.ticket(command_id)
        if ticket is not None:
            return {**ticket.to_dict(), "actor": ticket.command.actor}
        if self.store is not None:
            return self.store.find_command(self.name, command_id)
        return None

    @property
    def snapshot(self) -> Snapshot:
        snap = self.bus.latest
        if snap is None:
            raise WorldNotRunning(f"world {self.name!r} has not published a snapshot yet")
        return snap

    def wait_for_snapshot(self, after_tick: int, timeout: float) -> Snapshot:
        """The first snapshot newer than ``after_tick``, or the latest one after ``timeout`` s."""
        self.bus.wait_after(after_tick, timeout)
        return self.snapshot

    @property
    def latest(self) -> Snapshot | None:
        """The last published snapshot, or None before the first one (never raises)."""
        return self.bus.latest

    def wait_after(self, after_tick: int, timeout: float) -> Snapshot | None:
        """The first snapshot newer than ``after_tick``, else the latest after ``timeout`` s."""
        return self.bus.wait_after(after_tick, timeout)

    @property
    def tick(self) -> int:
        """The tick of the last published snapshot (the world's own tick before any)."""
        snap = self.bus.latest
        return self.world.tick if snap is None else snap.tick

    @property
    def queue_depth(self) -> int:
        return self.bus.depth

    def enqueue(
        self, type_: str, payload: Mapping[str, Any], actor: str | None = None
    ) -> CommandTicket:
        """Queue a command that was built by the engine itself (jobs), without validation."""
        return self.bus.put(type_, payload, actor)

    def call(self, fn: Callable[[], T]) -> Future[T]:
        """Run ``fn`` on the loop thread between two ticks (works paused too)."""
        return self.ticker.call(fn)

    def checkpoint(self, timeout: float) -> dict[str, Any]:
        """Hash (and store, with a store) the full state between two ticks; works paused."""
        return self.call(self._checkpoint).result(timeout)

    def _checkpoint(self) -> dict[str, Any]:
        world = self.world
        state = world.full_state()
        digest = world.state_hash()
        if self.store is not None:
            self.store.save_snapshot(self.name, world.tick, state, digest)
        return {"tick": world.tick, "state_hash": digest, "stored": self.store is not None}

    def check_writable(self) -> None:
        """Raise when the store refuses writes (a cheap probe for /readyz); no store: no-op."""
        if self.store is not None:
            self.store.check_writable()

    # -- clock controls --------------------------------------------------------------------

    def pause(self) -> None:
        self.ticker.pause()

    def resume(self) -> None:
        self.ticker.resume()

    def step(self, n: int = 1, timeout: float | None = 10.0) -> int:
        """Run ``n`` ticks while paused and return the world tick after them."""
        self.ticker.step(n).result(timeout)
        return self.world.tick

    def set_rate(self, rate_hz: float) -> None:
        self.ticker.set_rate(rate_hz)

    def stats(self) -> TickerStats:
        return self.ticker.stats()

    # -- the tick --------------------------------------------------------------------------

    def _on_tick(self, info: TickInfo) -> None:
        if self.degraded:  # halted: the journal failed, so no tick may run un-journaled
            self._refuse([], self.degraded)
            return
        if not self.lease.held:  # self-fence: an expiring lease may be someone else's by now
            self._lost = f"the lease of world {self.name!r} was lost; this runner stopped ticking"
            log.critical("%s at tick %d", self._lost, self.world.tick)
            self._refuse([], self._lost)
            return
        self._emit("before_tick", info)
        started, cpu = time.perf_counter(), time.process_time()
        commands = self.bus.take(self.max_commands_per_tick)
        outcomes = self.world.step(commands)
        stepped = replay_cost(time.perf_counter() - started, time.process_time() - cpu)
        tick = self.world.tick
        if self.durability is not None:
            try:
                self.durability.record(self.world, outcomes)
            except StoreError as exc:
                self._halt(commands, exc)
                return
        for outcome in outcomes:  # counted before the tickets resolve, as callers expect
            (self.applied if outcome.ok else self.rejected)[outcome.command.type] += 1
        snap = self._publish(outcomes)
        if self.durability is not None:
            self.durability.after_tick(self.world, stepped)
        self.last_tick_duration = time.perf_counter() - started
        self.last_tick_at = time.time()
        if self._hooks["after_tick"]:
            report = TickReport(
                tick, info, tuple(outcomes), self.last_tick_duration, self.bus.depth, snap
            )
            self._emit("after_tick", report)

    def _halt(self, commands: list[Command], exc: StoreError) -> None:
        """The tick could not be journaled: refuse its commands and everything queued."""
        log.critical(
            "world %r halted at tick %d: %s. Nothing un-journaled was acknowledged; "
            "restart to recover the last durable tick.",
            self.name,
            self.world.tick - 1,
            exc.message,
        )
        self._refuse(commands, exc.message)

    def _refuse(self, taken: list[Command], reason: str) -> None:
        """Refuse the commands taken for a tick that cannot be journaled, then every waiting one."""
        code = "store_unavailable"
        message = "the journal could not be written; the command was not applied"
        details = {"reason": reason}
        tick = self.world.tick - 1
        if taken:
            self.bus.settle([Outcome(c, False, None, code, message, details) for c in taken], tick)
        self.bus.refuse_waiting(code, message, tick, details)

    def _publish(self, outcomes: list[Outcome] | None = None) -> Snapshot:
        """Publish the world's current view, resolving ``outcomes``' tickets after it."""
        w = self.world
        snap = Snapshot(
            self.name,
            w.tick,
            w.sim_time,
            freeze_arrays(w.view()),
            w.summary(),
            cache_bytes=self.snapshot_cache_bytes,
        )
        self.bus.publish(snap, outcomes or ())
        return snap
