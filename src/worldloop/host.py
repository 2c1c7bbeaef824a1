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
(``on_start``).
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import ValidationError

from .errors import (
    WorldConfigInvalid,
    WorldExists,
    WorldLimit,
    WorldLoopError,
    WorldNotFound,
    WorldsUnsupported,
)
from .jobs import JobScheduler
from .models import error_details, error_message
from .runtime import WorldRuntime
from .store.catalog import Catalog, CatalogEntry, now
from .world import World

log = logging.getLogger("worldloop.host")

KindFactory = Callable[[Mapping[str, Any]], World]
"""Builds a world of one kind from the config its creator sent (a JSON object)."""

Builder = Callable[[World, bool], tuple[WorldRuntime, JobScheduler]]
"""Makes the runtime (and job scheduler) of a named world, paused or not, with the app's
settings and backends (worldloop.state.WorldLoopState.build_runtime)."""

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
NAME_RULE = "1 to 64 letters, digits, '-' or '_', starting with a letter or digit"
"""World names go into URLs, lease and store keys: kept short and plain."""

RESOLVE_AGAIN = 3.0
"""Seconds a world served from elsewhere may be silent before a request asks about it again."""

Status = Literal["running", "paused", "stopped", "failed"]


def check_name(name: str) -> str:
    """``name`` if it is a valid world name; WorldConfigInvalid (422) otherwise."""
    if not NAME_RE.match(name):
        raise WorldConfigInvalid(
            f"bad world name {name!r}: {NAME_RULE}", details={"field": "name", "rule": NAME_RULE}
        )
    return name


def name_world(world: World, name: str) -> World:
    """Give ``world`` (an instance) its hosted name: its journal, lease and snapshots go by it."""
    world.__dict__["name"] = name
    return world


@dataclass(slots=True)
class HostedWorld:
    """One world of the host: its kind and config, and the runtime that runs it."""

    name: str
    kind: str
    config: Mapping[str, Any]
    runtime: WorldRuntime
    jobs: JobScheduler | None = None
    created_at: float = 0.0
    default: bool = False
    failed: str | None = field(default=None)
    """Why the world could not be started here (its runtime is then not running)."""
    seen_at: float = 0.0
    """When a world served from elsewhere was looked up (monotonic; see WorldHost.get)."""

    @property
    def status(self) -> Status:
        if self.failed is not None:
            return "failed"
        if not self.runtime.running:
            return "stopped"
        return "paused" if self.runtime.stats().paused else "running"

    def summary(self) -> dict[str, Any]:
        """What ``GET /api/v1/worlds`` lists for this world."""
        rt = self.runtime
        snap = rt.latest
        extra = snap.summary if snap is not None else {}
        players = extra.get("player_count", extra.get("players"))
        return {
            "name": self.name,
            "kind": self.kind,
            "default": self.default,
            "status": self.status,
            "tick": snap.tick if snap is not None else rt.tick,
            "rate_hz": rt.stats().rate_hz,
            "players": players if isinstance(players, int) else None,
            "error": self.failed,
        }


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
    ) -> None:
        """``default`` gives the app's default world (its runtime may be replaced after a
        fork); ``catalog`` opens the catalog on first use; ``refuse`` says why extra worlds
        cannot be hosted in this process (None: they can)."""
        self.kinds: dict[str, KindFactory] = dict(kinds or {})
        self.max_worlds = max_worlds
        self.max_per_kind = max_per_kind
        self.refuse = refuse
        self.shutdown_timeout = shutdown_timeout
        self._builder = builder
        self._default = default
        self._open_catalog = catalog
        self._catalog: Catalog | None = None
        self._worlds: dict[str, HostedWorld] = {}
        self._lock = threading.RLock()
        self.started = False
        self.on_delete: Callable[[str], None] | None = None
        """Called with a deleted world's name once it stopped (the app forgets its metrics)."""
        self.on_start: Callable[[HostedWorld], None] | None = None
        """Called with each world once it started (a runner process serves it to workers)."""
        self.on_stop: Callable[[str], None] | None = None
        """Called with a world's name before it is stopped for deletion."""
        self.resolve: Callable[[str], HostedWorld] | None = None
        """Finds a world this process does not run (a web worker asks its runner process)."""

    @property
    def catalog(self) -> Catalog:
        if self._catalog is None:
            self._catalog = self._open_catalog()
        return self._catalog

    # -- reading ---------------------------------------------------------------------------

    def get(self, name: str) -> HostedWorld:
        """The world named ``name`` (the default world too); WorldNotFound (404) otherwise."""
        default = self._default()
        if name == default.name:
            return default
        found = self._worlds.get(name)
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
        up = bool(getattr(hosted.runtime, "runner_up", True))
        return not up and time.monotonic() - hosted.seen_at > RESOLVE_AGAIN

    def worlds(self) -> list[HostedWorld]:
        """The default world, then the extra worlds oldest first."""
        extra = sorted(self._worlds.values(), key=lambda w: (w.created_at, w.name))
        return [self._default(), *extra]

    def __len__(self) -> int:
        """The number of extra worlds (the default world not counted)."""
        return len(self._worlds)

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
            if name == self._default().name or name in self._worlds:
                raise WorldExists(f"a world named {name!r} exists already", details={"world": name})
            if kind not in self.kinds:
                raise WorldConfigInvalid(
                    f"unknown world kind {kind!r}; known: {', '.join(sorted(self.kinds)) or '-'}",
                    details={"field": "kind", "known": sorted(self.kinds)},
                )
            if len(self._worlds) >= self.max_worlds:
                raise WorldLimit(
                    f"this server hosts {self.max_worlds} worlds already (WORLDLOOP_MAX_WORLDS)",
                    details={"limit": self.max_worlds},
                )
            same = sum(1 for w in self._worlds.values() if w.kind == kind)
            if same >= self.max_per_kind:
                raise WorldLimit(
                    f"this server hosts {self.max_per_kind} worlds of kind {kind!r} already "
                    "(WORLDLOOP_MAX_WORLDS_PER_KIND)",
                    details={"limit": self.max_per_kind, "kind": kind},
                )
            entry = CatalogEntry(name, kind, config, paused=False, created_at=now())
            hosted = self._build(entry)
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

    def delete(self, name: str, *, drop_journal: bool = False) -> HostedWorld:
        """Stop a world (final snapshot), forget it in the catalog, and drop its journal and
        snapshots when asked (kept by default: creating the name again resumes them)."""
        with self._lock:
            if name == self._default().name:
                raise WorldExists(
                    f"world {name!r} is the app's default world: it cannot be deleted",
                    details={"world": name},
                )
            hosted = self.get(name)
            del self._worlds[name]
        if self.on_stop is not None:
            self.on_stop(name)
        hosted.runtime.stop()
        self.catalog.remove(name)
        if drop_journal:
            self.catalog.drop_data(name)
        if self.on_delete is not None:
            self.on_delete(name)
        log.info("world %r deleted (journal %s)", name, "dropped" if drop_journal else "kept")
        return hosted

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
                self._restore(entry)
            for hosted in list(self._worlds.values()):
                if hosted.failed is None and not hosted.runtime.running:
                    self._start_one(hosted)

    def _restore(self, entry: CatalogEntry) -> None:
        try:
            hosted = self._build(entry)
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

    def _build(self, entry: CatalogEntry) -> HostedWorld:
        """A world of ``entry``'s kind and config, named, with its runtime (not started)."""
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
        return HostedWorld(entry.name, entry.kind, entry.config, runtime, jobs, entry.created_at)
