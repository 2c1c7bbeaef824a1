"""Many worlds in one server: world kinds, and the worlds of those kinds an app hosts.

An app registers *kinds* (a factory per kind, ``factory(config) -> World``); worlds of a kind
are created with a name and a config at run time (``POST /api/v1/worlds``) and recorded in the
store's catalog (worldloop.store.catalog), so a restart brings each one back, recovered from
its own snapshot + journal. Every extra world is a whole :class:`~worldloop.runtime.WorldRuntime`
of its own (own clock schedule, queue, snapshots, journal under its name, jobs, state hash); the
loops of all of them run on the app's loop pool (worldloop.looppool: WORLDLOOP_LOOP_THREADS
threads however many worlds, one thread in a world at a time), so a world that fails or
overruns holds at most one of those threads and stops no other. The app's default world stays
what it was, on its own thread; it is listed here too, but is neither created nor deleted
through the host.

The host knows nothing of Flask: the app's state hands it a *builder* that makes a runtime for
a world with the app's settings and backends. In a web worker of a runner process the worlds
run in the runner: the host there only *resolves* a world the first time a request names it
(worldloop.runner.worlds.remote_world), and the runner serves each world it starts
(``on_start``). An idle world may sleep (worldloop.hibernation): it stays in the catalog and in
the list, unloaded, until :meth:`WorldHost.get` or its due job wakes it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any

from pydantic import ValidationError

from .errors import (
    WorldConfigInvalid,
    WorldExists,
    WorldLimit,
    WorldLoopError,
    WorldNotFound,
    WorldNotRunning,
    WorldsUnsupported,
)
from .hibernation import Hibernator, KindOptions, asleep_summary, revive
from .hosted import HostedWorld
from .jobs import JobScheduler
from .models import error_details, error_message
from .names import check_name, name_world
from .runtime import WorldRuntime
from .store.catalog import Catalog, CatalogEntry, Sleep, now
from .world import World

log = logging.getLogger("worldloop.host")

KindFactory = Callable[[Mapping[str, Any]], World]
"""Builds a world of one kind from the config its creator sent (a JSON object)."""

Builder = Callable[[World, bool], tuple[WorldRuntime, JobScheduler]]
"""Makes the runtime (and job scheduler) of a named world, paused or not, with the app's
settings and backends (worldloop.state.WorldLoopState.build_runtime)."""

RESOLVE_AGAIN = 3.0
"""Seconds a world served from elsewhere may be silent before a request asks about it again."""

NO_OPTIONS = KindOptions()


class WorldHost:
    """The worlds of one app: create, get, list, delete; limits; the catalog in the store."""

    def __init__(
        self,
        builder: Builder,
        default: Callable[[], HostedWorld],
        catalog: Callable[[], Catalog],
        *,
        kinds: Mapping[str, KindFactory] | None = None,
        max_worlds: int = 100,
        max_per_kind: int = 100,
        refuse: str | None = None,
        shutdown_timeout: float = 2.0,
        hibernate_after: float = 0.0,
        kind_options: Mapping[str, KindOptions] | None = None,
    ) -> None:
        """``default`` gives the app's default world (its runtime may be replaced after a
        fork); ``catalog`` opens the catalog on first use; ``refuse`` says why extra worlds
        cannot be hosted in this process (None: they can)."""
        self.kinds: dict[str, KindFactory] = dict(kinds or {})
        self.kind_options: dict[str, KindOptions] = dict(kind_options or {})
        """What each kind declares beyond its factory (catch-up policy, idle time, jobs)."""
        self.max_worlds = max_worlds
        self.max_per_kind = max_per_kind
        self.refuse = refuse
        self.shutdown_timeout = shutdown_timeout
        self._builder = builder
        self._default = default
        self._open_catalog = catalog
        self._catalog: Catalog | None = None
        self._worlds: dict[str, HostedWorld] = {}
        self._sleeping: dict[str, CatalogEntry] = {}
        """Hibernated worlds: their catalog record only (nothing of them is loaded)."""
        self._name_locks: dict[str, threading.Lock] = {}
        """One per world name: a world sleeps, wakes or is deleted by one thread at a time."""
        self._lock = threading.RLock()
        self.hibernator = Hibernator(self, hibernate_after)
        self.started = False
        self.on_delete: Callable[[str], None] | None = None
        """Called with a deleted world's name once it stopped (the app forgets its metrics)."""
        self.on_start: Callable[[HostedWorld], None] | None = None
        """Called with each world once it started (a runner process serves it to workers)."""
        self.on_stop: Callable[[str], None] | None = None
        """Called with a world's name before it is stopped for deletion."""
        self.on_remove: Callable[[str], None] | None = None
        """Told a deleted world's name once it left the catalog, before its data is dropped
        (the Redis mode fences the world's owner in another process there)."""
        self.resolve: Callable[[str], HostedWorld] | None = None
        """Finds a world this process does not run (a web worker asks its runner process)."""
        self.on_sleep: Callable[[str], None] | None = None
        """Called with a world's name once it hibernated (the app forgets its metrics)."""

    @property
    def catalog(self) -> Catalog:
        if self._catalog is None:
            self._catalog = self._open_catalog()
        return self._catalog

    def options(self, kind: str) -> KindOptions:
        """What ``kind`` declared beyond its factory (the defaults if nothing)."""
        return self.kind_options.get(kind, NO_OPTIONS)

    # -- reading ---------------------------------------------------------------------------

    def get(self, name: str) -> HostedWorld:
        """The world named ``name`` (the default world too), woken if it hibernates;
        WorldNotFound (404) otherwise."""
        default = self._default()
        if name == default.name:
            return default
        found = self._worlds.get(name)
        if found is None and name in self._sleeping:
            return self._wake(name)
        if found is not None and self.resolve is not None and self._gone(found):
            with self._lock:
                self._worlds.pop(name, None)
            found.runtime.stop()
            found = None
        if found is None:
            if self.resolve is None:
                raise WorldNotFound(f"no world named {name!r} here", details={"world": name})
            with self._lock:
                found = self._worlds.get(name)
                if found is None:
                    found = self._worlds[name] = self.resolve(name)
                    found.seen_at = time.monotonic()
        return found

    @staticmethod
    def _gone(hosted: HostedWorld) -> bool:
        """Whether a world served from elsewhere has been silent long enough to ask again
        (deleted, or its runner restarted): its feed is down past the first-feed wait."""
        if getattr(hosted.runtime, "gone", False):  # its runner stopped serving it
            return True
        up = bool(getattr(hosted.runtime, "runner_up", True))
        return not up and time.monotonic() - hosted.seen_at > RESOLVE_AGAIN

    def find(self, name: str) -> None:
        """WorldNotFound (404) unless a world ``name`` is here, awake or asleep (not woken);
        a world served from elsewhere that went silent is asked about again (get)."""
        found = self._worlds.get(name)
        if name == self._default().name or name in self._sleeping:
            return
        if found is None or (self.resolve is not None and self._gone(found)):
            self.get(name)

    def sleeping(self) -> list[CatalogEntry]:
        """The hibernated worlds' catalog records."""
        return list(self._sleeping.values())

    def summaries(self) -> list[dict[str, Any]]:
        """What ``GET /api/v1/worlds`` lists: the default world, then every other world,
        awake or asleep, oldest first."""
        awake = [(w.created_at, w.name, w.summary()) for w in self.worlds()[1:]]
        asleep = [(e.created_at, e.name, asleep_summary(e)) for e in self.sleeping()]
        return [self._default().summary(), *(s for *_, s in sorted(awake + asleep))]

    def worlds(self) -> list[HostedWorld]:
        """The default world, then the extra worlds oldest first."""
        extra = sorted(self._worlds.values(), key=lambda w: (w.created_at, w.name))
        return [self._default(), *extra]

    def __len__(self) -> int:
        """The number of extra worlds, asleep or not (the default world not counted)."""
        return len(self._worlds) + len(self._sleeping)

    # -- creating and deleting -------------------------------------------------------------

    def create(self, name: str, kind: str, config: Mapping[str, Any] | None = None) -> HostedWorld:
        """Create, record and (once the host runs) start a world of ``kind``.

        422 for a bad name, an unknown kind or a config the factory refuses; 409 for a taken
        name or a full host; 501 where extra worlds cannot be hosted.
        """
        if self.refuse is not None:
            raise WorldsUnsupported(self.refuse)
        check_name(name)
        config = dict(config or {})
        with self._lock:
            if name == self._default().name or name in self._worlds or name in self._sleeping:
                raise WorldExists(f"a world named {name!r} exists already", details={"world": name})
            if kind not in self.kinds:
                raise WorldConfigInvalid(
                    f"unknown world kind {kind!r}; known: {', '.join(sorted(self.kinds)) or '-'}",
                    details={"field": "kind", "known": sorted(self.kinds)},
                )
            if len(self) >= self.max_worlds:
                raise WorldLimit(
                    f"this server hosts {self.max_worlds} worlds already (WORLDLOOP_MAX_WORLDS)",
                    details={"limit": self.max_worlds},
                )
            kinds = [w.kind for w in self._worlds.values()]
            same = sum(1 for k in [*kinds, *(e.kind for e in self._sleeping.values())] if k == kind)
            if same >= self.max_per_kind:
                raise WorldLimit(
                    f"this server hosts {self.max_per_kind} worlds of kind {kind!r} already "
                    "(WORLDLOOP_MAX_WORLDS_PER_KIND)",
                    details={"limit": self.max_per_kind, "kind": kind},
                )
            entry = CatalogEntry(name, kind, config, paused=False, created_at=now())
            hosted = self.build(entry)
            self.catalog.add(entry)
            try:
                if self.started:
                    hosted.runtime.start()
            except BaseException:
                self.catalog.remove(name)
                raise
            self._worlds[name] = hosted
            if self.started and self.on_start is not None:
                self.on_start(hosted)
        log.info("world %r of kind %r created", name, kind)
        return hosted

    def delete(self, name: str, *, drop_journal: bool = False) -> int:
        """Stop a world (final snapshot; asleep: not woken), forget it in the catalog, and drop
        its journal and snapshots when asked (kept by default: creating the name again resumes
        them); returns its last tick."""
        if name == self._default().name:
            raise WorldExists(
                f"world {name!r} is the app's default world: it cannot be deleted",
                details={"world": name},
            )
        with self._name_lock(name):
            with self._lock:
                entry = self._sleeping.pop(name, None)
                if entry is None:
                    hosted = self.get(name)
                    del self._worlds[name]
            if entry is not None:  # asleep: nothing to stop
                tick = 0 if entry.asleep is None else entry.asleep.tick
            else:
                if self.on_stop is not None:
                    self.on_stop(name)
                hosted.runtime.stop()
                tick = hosted.runtime.tick
            self.hibernator.forget(name)
            self.catalog.remove(name)
            if self.on_remove is not None:
                self.on_remove(name)
            if drop_journal:
                self.catalog.drop_data(name)
        if self.on_delete is not None:
            self.on_delete(name)
        log.info("world %r deleted (journal %s)", name, "dropped" if drop_journal else "kept")
        return tick

    def _name_lock(self, name: str) -> threading.Lock:
        with self._lock:
            return self._name_locks.setdefault(name, threading.Lock())

    # -- hibernation (worldloop.hibernation) -------------------------------------------------

    def hibernate(self, name: str, wake_at: float | None = None) -> Sleep | None:
        """Put an awake extra world to sleep: stop it (final snapshot), mark it asleep in the
        catalog with its tick and its next job's due time ``wake_at``, and drop its runtime.
        None when no such world is awake here (or it has no journal: a ``memory://`` store).
        A request meanwhile waits, then wakes it."""
        with self._name_lock(name):
            with self._lock:
                hosted = self._worlds.get(name)
                if hosted is None or hosted.runtime.store is None:  # no journal to wake from
                    return None
                rt = self._worlds.pop(name).runtime
                paused, rate = rt.stats().paused, rt.stats().rate_hz
                sleep = Sleep(rt.tick, rate, self.hibernator.wall(), wake_at)
                entry = CatalogEntry(name, hosted.kind, hosted.config, paused, hosted.created_at)
                self._sleeping[name] = replace(entry, asleep=sleep)  # listed asleep from now
            self._record_sleep(name, sleep)  # first: a kill -9 from here on wakes it from disk
            if self.on_stop is not None:
                self.on_stop(name)
            if not rt.stop():
                log.error("world %r: loop did not stop within the bound as it hibernated", name)
            if rt.world.tick != sleep.tick:
                sleep = replace(sleep, tick=rt.world.tick)
                self._record_sleep(name, sleep)
            self._sleeping[name] = replace(entry, asleep=sleep)
            self.hibernator.forget(name)
        if self.on_sleep is not None:
            self.on_sleep(name)
        log.info("world %r hibernates at tick %d", name, sleep.tick)
        return sleep

    def _record_sleep(self, name: str, sleep: Sleep) -> None:
        try:
            self.catalog.set_asleep(name, sleep)
        except WorldLoopError as exc:  # asleep here; a restart would load it awake
            log.error("world %r: could not record its sleep: %s", name, exc.message)

    def _wake(self, name: str) -> HostedWorld:
        """Wake a hibernated world once, however many requests ask at the same time."""
        with self._name_lock(name):
            found = self._worlds.get(name)
            if found is not None:
                return found
            entry = self._sleeping.get(name)
            if entry is None:
                raise WorldNotFound(f"no world named {name!r} here", details={"world": name})
            if not self.started:
                raise WorldNotRunning(f"world {name!r} hibernates and this server is stopping")
            try:
                hosted = revive(self, entry)
            except WorldLoopError as exc:
                raise WorldNotRunning(
                    f"world {name!r} hibernates and cannot wake: {exc.message}",
                    details={"world": name, "reason": exc.code},
                ) from None
            try:
                self.catalog.set_asleep(name, None)
            except WorldLoopError as exc:  # awake here; a restart would bring it back asleep
                log.error("world %r: could not record its waking: %s", name, exc.message)
            with self._lock:
                self._sleeping.pop(name, None)
                self._worlds[name] = hosted
            self.hibernator.forget(name)
        if self.on_start is not None:
            self.on_start(hosted)
        return hosted

    def follow(self, entries: list[CatalogEntry], known: set[str]) -> None:
        """Serve the catalog's worlds that other processes created, and stop serving those
        they deleted (the Redis mode: every process serves every world). ``known``: the
        extra worlds served here before ``entries`` were read (one created since is kept)."""
        names = {e.name for e in entries}
        for entry in entries:
            with self._lock:
                if not self.started or entry.name in self._worlds:
                    continue
                self._restore(entry)
                hosted = self._worlds.get(entry.name)
            if hosted is not None:
                self._start_one(hosted)
        for name in known - names:
            with self._lock:
                gone = self._worlds.pop(name, None)
            if gone is not None:
                log.info("world %r was deleted by another process", name)
                gone.runtime.stop()
                if self.on_delete is not None:
                    self.on_delete(name)

    def record_pause(self, name: str, paused: bool) -> None:
        """Remember in the catalog that an extra world was paused or resumed."""
        if name in self._worlds:
            self.catalog.set_paused(name, paused)

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        """Bring back every world of the catalog (each from its own snapshot + journal) and
        start them; a world that cannot come back is logged and listed as failed, the others
        go on. Without kinds there is nothing to host: the catalog is not even opened."""
        with self._lock:
            if self.started:
                return
            self.started = True
            if not self.kinds:
                return
            if self.refuse is not None:
                log.warning("worldloop: extra worlds are not hosted here: %s", self.refuse)
                return
            for entry in self.catalog.entries():
                if entry.name in self._worlds:
                    continue
                if entry.asleep is not None:  # comes back asleep: nothing loaded
                    self._sleeping[entry.name] = entry
                    continue
                self._restore(entry)
            for hosted in list(self._worlds.values()):
                if hosted.failed is None and not hosted.runtime.running:
                    self._start_one(hosted)
            self.hibernator.start()

    def _restore(self, entry: CatalogEntry) -> None:
        try:
            hosted = self.build(entry)
        except WorldLoopError as exc:
            log.error("world %r cannot be rebuilt: %s", entry.name, exc.message)
            return
        self._worlds[entry.name] = hosted

    def _start_one(self, hosted: HostedWorld) -> None:
        try:
            hosted.runtime.start()
        except Exception as exc:
            hosted.failed = f"{type(exc).__name__}: {exc}"
            log.exception("world %r could not start; the other worlds go on", hosted.name)
            return
        if self.on_start is not None:
            self.on_start(hosted)

    def stop(self, timeout: float | None = None) -> bool:
        """Stop every extra world at once, within one bound (each writes its final snapshot);
        True if all ended in time."""
        bound = self.shutdown_timeout if timeout is None else timeout
        self.hibernator.stop(bound)
        with self._lock:
            hosted = list(self._worlds.values())
            self.started = False
        results: dict[str, bool] = {}
        threads = [
            threading.Thread(
                target=lambda w=w: results.__setitem__(w.name, w.runtime.stop(bound)),
                name=f"worldloop-stop-{w.name}",
                daemon=True,
            )
            for w in hosted
            if w.runtime.running
        ]
        deadline = time.monotonic() + bound + 1.0
        for t in threads:
            t.start()
        for t in threads:
            t.join(max(0.0, deadline - time.monotonic()))
        if self._catalog is not None:
            self._catalog.close()
        return len(results) == len(threads) and all(results.values())

    # -- building ------------------------------------------------------------------------

    def build(self, entry: CatalogEntry) -> HostedWorld:
        """A world of ``entry``'s kind and config, named, with its runtime (not started) and
        its kind's jobs."""
        factory = self.kinds.get(entry.kind)
        if factory is None:
            raise WorldConfigInvalid(f"unknown world kind {entry.kind!r}")
        try:
            world = factory(dict(entry.config))
        except WorldLoopError as exc:
            raise WorldConfigInvalid(exc.message, details=exc.details) from None
        except ValidationError as exc:
            raise WorldConfigInvalid(
                f"bad config for a world of kind {entry.kind!r}: {error_message(exc)}",
                details=error_details(exc),
            ) from None
        except (ValueError, TypeError, KeyError) as exc:
            raise WorldConfigInvalid(
                f"bad config for a world of kind {entry.kind!r}: {exc}",
                details={"field": "config"},
            ) from None
        if not isinstance(world, World):
            raise WorldConfigInvalid(f"the factory of kind {entry.kind!r} made no World")
        runtime, jobs = self._builder(name_world(world, entry.name), entry.paused)
        for spec in self.options(entry.kind).jobs:  # before the start: replay finds them
            jobs.add(spec)
        return HostedWorld(entry.name, entry.kind, entry.config, runtime, jobs, entry.created_at)
