"""One app's worldloop: its settings, runtime, jobs and role, kept in ``app.extensions``.

The ``WorldLoop`` extension object holds no per-app state (one extension may serve several
apps, as Flask's own extensions do); everything that belongs to one app lives here, in
``app.extensions["worldloop"]``, and ``get_runtime()`` finds it through ``current_app``.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from flask import Flask, current_app, g, has_app_context

from ._loading import is_inspecting
from .bus import Bus, open_bus
from .config import Settings
from .errors import ConfigError, StoreError, WorldLockedError, WorldLoopError
from .hibernation import KindOptions
from .host import KindFactory, WorldHost
from .hosted import HostedWorld
from .jobs import (
    JobRegistrar,
    JobScheduler,
)
from .lease import Lease, default_lease_url, open_lease
from .lifecycle import after_fork, serving_role, stop_at_exit
from .looppool import LoopPool, default_size
from .offload import OffloadPlugin, TaskSender
from .preflight import holder_is_stranger, refuse
from .priority import lower_request_threads
from .runner.spawn import Spawner
from .runtime import WorldRuntime
from .store import Store, default_store_url, open_store
from .store.catalog import open_catalog
from .world import World

if TYPE_CHECKING:
    from .metrics import LoopObserver
    from .runner.ipc import Endpoints
    from .scaleout_worlds import ScaleoutWorlds

log = logging.getLogger("worldloop")

SERVER_ROLES = frozenset({"serve", "gunicorn-worker", "runner"})
"""Processes that load the app to serve it: a start failure there ends the process cleanly."""
WEB_ROLES = frozenset({"serve", "gunicorn-worker"})
"""Processes that serve HTTP: with WORLDLOOP_RUNNER=process they serve a runner's world."""


class WorldLoopState:
    """Everything worldloop keeps for one app: read it as ``app.extensions["worldloop"]``."""

    def __init__(
        self,
        app: Flask,
        settings: Settings,
        world: World,
        jobs: JobScheduler,
        kinds: Mapping[str, KindFactory] | None = None,
        kind_options: Mapping[str, KindOptions] | None = None,
    ) -> None:
        self.settings = settings
        self._app = app
        self.instance_path = app.instance_path
        self.role = serving_role()
        """Which kind of process loaded the app (see worldloop.lifecycle.serving_role)."""
        self.jobs = jobs
        """This world's scheduled jobs (bound before any journal replay)."""
        self.spawner: Spawner | None = None
        """Web workers of a runner process: the watch that starts it (worldloop.runner)."""
        self._runner_spec: tuple[str, str] | None = None
        self._spawn_runner_early(world.name)
        jobs.bind(world)
        threads = default_size() if settings.loop_threads is None else settings.loop_threads
        self.loop_pool = LoopPool(threads, name="worldloop-pool") if threads else None
        self.scaleout_worlds: ScaleoutWorlds | None = None
        """The Redis mode's fleet and worlds (worldloop.scaleout_worlds); None otherwise."""
        """The loop threads of the extra worlds (WORLDLOOP_LOOP_THREADS; None: one each). The
        default world keeps a thread of its own: it is the heavy one (players, jobs, streams),
        and no batch of extra worlds' ticks may ever take its turn."""
        self.runtime = (
            self._make_scaleout(world)
            if settings.redis_url
            else self._runtime(world, self._make_lease(world.name), settings.start_paused)
        )
        jobs.attach(self.runtime)
        self.host = WorldHost(
            self.build_runtime,
            self._default_world,
            lambda: open_catalog(self.store_url, schema=self.settings.store_schema),
            kinds=kinds,
            max_worlds=settings.max_worlds,
            max_per_kind=settings.max_worlds_per_kind,
            shutdown_timeout=settings.shutdown_timeout,
            hibernate_after=settings.hibernate_after,
            kind_options=kind_options,
        )
        """The app's worlds: the default one and those of its kinds (worldloop.host)."""
        if self.scaleout_worlds is not None:
            self.scaleout_worlds.install()
        self.observers: dict[str, LoopObserver] = {}
        """The metrics observers of the extra worlds, by name (WORLDLOOP_OBSERVE)."""
        self.host.on_delete = self.host.on_sleep = self._forget_world
        self.offload: OffloadPlugin | None = None
        """Sends the world's task requests (worldloop.offload); None until a sender is set."""
        self._start_lock = threading.Lock()

    def _runtime(
        self, world: World, lease: Lease, paused: bool, pool: LoopPool | None = None
    ) -> WorldRuntime:
        settings = self.settings
        return WorldRuntime(
            world,
            rate_hz=settings.rate_hz,
            policy=settings.overrun,
            max_catch_up=settings.max_catch_up,
            queue_size=settings.queue_size,
            max_commands_per_tick=settings.max_commands_per_tick,
            lease=lease,
            bus=self._make_bus(world.name),
            start_paused=paused,
            shutdown_timeout=settings.shutdown_timeout,
            store=self._make_store(),
            snapshot_every=settings.snapshot_every,
            recovery_seconds=settings.recovery_seconds,
            snapshot_write_share=settings.snapshot_write_share,
            hash_every=settings.hash_every,
            retention_ticks=settings.journal_retention,
            store_retry_seconds=settings.store_retry_seconds,
            snapshot_cache_bytes=settings.snapshot_cache_bytes,
            pool=pool,
        )

    def build_runtime(self, world: World, paused: bool) -> tuple[WorldRuntime, JobScheduler]:
        """The runtime of an extra world (worldloop.host): the app's settings and store, its
        own bus, queue and jobs; its loop on the app's loop pool. Its lease is in-process:
        extra worlds run only where the default world runs, under the default world's lease
        on the store."""
        jobs = JobScheduler(workers=self.settings.job_workers)
        jobs.bind(world)
        runtime: WorldRuntime
        if self.scaleout_worlds is not None:  # any process may run it: the fleet places it
            runtime = self.scaleout_worlds.runtime(world, extra=True, paused=paused)
        else:
            lease = open_lease(f"memory://{self.store_url}#{world.name}", world.name, wait=0.0)
            runtime = self._runtime(world, lease, paused, self.loop_pool)
        jobs.attach(runtime)
        if self.offload is not None:  # its task requests go where the default world's go
            runtime.add_plugin(OffloadPlugin(self.offload.sender, timeout=self.offload.timeout))
        if self.settings.observe:  # its own series, labelled with its name
            from .metrics import LoopObserver

            self.observers[world.name] = LoopObserver(runtime).attach()
        return runtime, jobs

    def _forget_world(self, name: str) -> None:
        if self.scaleout_worlds is not None:
            self.scaleout_worlds.forget(name)
        observer = self.observers.pop(name, None)
        if observer is not None:
            from .metrics import forget_world

            observer.detach()
            forget_world(name)

    def _default_world(self) -> HostedWorld:
        rt = self.runtime
        return HostedWorld(rt.name, "default", {}, rt, self.jobs, default=True)

    def use_offload(self, sender: TaskSender) -> OffloadPlugin:
        """Send this world's task requests through ``sender`` (set once, before the start)."""
        if self.offload is not None:
            raise ConfigError("this world already has a task sender")
        self.offload = plugin = OffloadPlugin(sender, timeout=self.settings.task_timeout)
        self.runtime.add_plugin(plugin)

        def declare(
            name: str, task: Callable[[dict[str, Any]], Any], timeout: float | None
        ) -> None:
            sender.register(name, task)
            if timeout is not None:
                plugin.timeouts[name] = timeout

        self.jobs.use_task_sink(declare)  # the scheduled jobs that run on Celery
        return plugin

    @property
    def job(self) -> JobRegistrar:
        """Register a job on this app's world only (``WorldLoop.job`` reaches every app)."""
        return self.jobs.job

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        """Start the world loop in this process (idempotent)."""
        if is_inspecting():
            log.debug("worldloop: app loaded by the worldloop CLI: the world is not started")
            return
        with self._start_lock:
            if self.runtime.running:
                return
            lease = self.runtime.lease
            scaleout = self.settings.redis_url is not None  # the Redis lease decides
            if (
                self.role in SERVER_ROLES
                and not (lease.held or scaleout)
                and holder_is_stranger(lease)
            ):
                lease.acquire(wait=0)  # a second server, not a restarting sibling: no wait
            if self.scaleout_worlds is not None:
                self.scaleout_worlds.start()  # registered before any world stands by
            self.runtime.start()
            self.host.start()
        stop_at_exit(self, self.settings.handle_signals, server=self.role in SERVER_ROLES)

    def stop(self, timeout: float | None = None) -> bool:
        """Stop the loop (and the extra worlds' loops, at the same time) within the configured
        bound; True if it ended in time. A web worker of a runner process stops watching it
        and disconnects (the runner goes on)."""
        if self.spawner is not None:
            self.spawner.stop()
        if self.scaleout_worlds is not None:
            self.scaleout_worlds.stop()  # out of the registry first: the others take over
        extra = threading.Thread(target=self.host.stop, args=(timeout,), daemon=True)
        extra.start()
        ok = self.runtime.stop(timeout)
        extra.join((self.settings.shutdown_timeout if timeout is None else timeout) + 1.0)
        return ok

    def start_in_runner(self) -> None:
        """Start the world in the runner process (worldloop.runner.main, lock held)."""
        self.start()

    @property
    def splits(self) -> bool:
        """True when this process serves a world that runs in a runner process."""
        return self.settings.runner == "process" and self.role in WEB_ROLES and not self.scaleout

    @property
    def scaleout(self) -> bool:
        """The Redis mode: every worker serves, the Redis lease picks who runs (no one-host
        runner process: it would add a hop and a single host to a mode made for many)."""
        return self.settings.redis_url is not None

    def _spawn_runner_early(self, world_name: str) -> None:
        """A web worker that will serve a runner process's world starts that runner first,
        before the rest of its own start-up (store, routes, API): the runner's interpreter,
        app and recovery, the long part of a restart, run meanwhile on another core.
        Only where :meth:`start_by_policy` would start it anyway (``_start_web``)."""
        policy = self.settings.autostart
        if is_inspecting() or policy not in ("auto", "eager") or not self.splits:
            return
        from .runner.ipc import endpoints
        from .runner.spawn import app_spec

        found = app_spec(self.settings.runner_app)
        if found is None:
            return  # _start_web says why, and runs the world in this process
        self._runner_spec = found
        spec, cwd = found
        eps = endpoints(self.instance_path, world_name)
        self.spawner = self._spawner(spec, cwd, eps)
        if self.settings.runner_fork:
            self._fork_runner(spec)
        self.spawner.start()

    def _fork_runner(self, spec: str) -> None:
        """Fork the runner from this process, which has imported what it needs (its store
        backend imported first), when that is safe (worldloop.runner.fork.why_not)."""
        from .runner import fork

        reason = fork.why_not(spec)
        if reason is not None:
            log.debug("worldloop: a fresh runner interpreter, not a fork: %s", reason)
            return
        fork.preload(self.store_url)
        assert self.spawner is not None
        self.spawner.fork_now()

    def _spawner(self, spec: str, cwd: str, eps: Endpoints) -> Spawner:
        """The watch over the runner, which watches the gunicorn master or this ``flask run``
        and starts the gateway where this server puts it (worldloop.gateway.address)."""
        from .gateway.address import resolve

        pid = os.getppid() if self.role == "gunicorn-worker" else os.getpid()
        return Spawner(spec, cwd, eps, watch_pid=pid, gateway=resolve(self.settings.gateway))

    def _start_web(self, app: Flask) -> None:
        """Serve the world of this instance's runner process, and watch that it runs."""
        from .bus.ipc import IpcBus
        from .runner.ipc import endpoints
        from .runner.remote import RemoteRuntime
        from .runner.spawn import app_spec

        found = self._runner_spec or app_spec(self.settings.runner_app)
        if found is None:
            log.warning(
                "worldloop: cannot tell how to load this app in a runner process (set "
                "WORLDLOOP_RUNNER_APP=module:create_app()); the world runs in this process"
            )
            self.start()
            return
        spec, cwd = found
        local = self.runtime
        eps = endpoints(self.instance_path, local.name)
        bus = IpcBus(eps, local.name, cache_bytes=self.settings.snapshot_cache_bytes)
        remote = RemoteRuntime(local.world, bus, rate_hz=self.settings.rate_hz)
        remote.start()
        self.runtime = remote
        # The runner hosts the extra worlds; the world API's writes are forwarded to it.
        from .runner.worlds import remote_world

        self.host.resolve = lambda name: remote_world(self, name)
        self.host.refuse = "this web worker serves the runner's worlds: create them there"
        if self.spawner is None:  # not started early (a lazy start, a forked worker)
            self.spawner = self._spawner(spec, cwd, eps)
            self.spawner.start()
        stop_at_exit(self, self.settings.handle_signals, server=True)
        log.info(
            "worldloop: web worker pid %d serves world %r from its runner process",
            os.getpid(),
            local.name,
        )

    def start_by_policy(self, app: Flask) -> None:
        """Start now, after fork, on the first request, or never, as WORLDLOOP_AUTOSTART and
        the kind of process say."""
        policy = self.settings.autostart
        if is_inspecting():  # loaded by the worldloop CLI: never start, whatever the config
            return
        if self.role == "runner":
            return  # worldloop.runner.main starts it, once it holds the runner lock
        if self.role == "gateway":
            return  # worldloop.gateway serves the runner's feed: no world, no runner here
        split = self.settings.runner == "process" and not self.scaleout
        web = split and self.role in (*WEB_ROLES, "prefork-master")
        if web:
            from .runner.forward import install_forwarding

            install_forwarding(app, self)
        if policy == "lazy":
            app.before_request(self._start_lazily)
        if web:  # after the lazy start: the runner watch it starts keeps the runner's priority
            lower_request_threads(app, self.settings.web_nice)
        if policy in ("never", "lazy"):
            return
        if policy == "auto" and self.role == "reloader-parent":
            log.info(
                "worldloop: not starting in the reloader's watcher process (pid %d)", os.getpid()
            )
            return
        if policy == "auto" and self.role == "cli":
            log.debug("worldloop: a flask CLI command, not a server: the world is not started")
            return
        if policy == "auto" and self.role == "prefork-master":
            log.info(
                "worldloop: pre-fork master (pid %d); the world starts in the worker", os.getpid()
            )
            after_fork(self._start_in_forked_worker)
            return
        self._start_or_refuse()

    def _start_or_refuse(self) -> None:
        """Start; in a server process, what cannot be served is one line and an exit code
        (worldloop.preflight), never a traceback after the server said it was up."""
        if self.role not in SERVER_ROLES:
            self.start()
            return
        try:
            if self.splits:
                self._start_web(self._app)
            else:
                self.start()
        except WorldLoopError as exc:
            message = exc.message
            if isinstance(exc, StoreError):
                message += "; check WORLDLOOP_STORE_URL and that the database is up"
            refuse(message, self.role, quiet=bool(exc.details.get("quiet")))

    def _start_lazily(self) -> None:
        if self.splits:
            if self.spawner is None:
                with self._start_lock:
                    if self.spawner is None:
                        self._start_web(self._app)
            return
        if not self.runtime.running and not self.runtime.stats().running:
            try:
                self.start()
            except WorldLockedError:
                log.exception("worldloop: cannot start the world in this process")

    def _start_in_forked_worker(self) -> None:
        self.role = serving_role()
        if self.role not in WEB_ROLES:
            self.role = "gunicorn-worker"
        try:
            if self.splits:
                self._start_web(self._app)
            else:
                self.start()
        except WorldLoopError as exc:
            # Gunicorn treats exit code 3 as "worker failed to boot" and stops with the reason.
            log.error("worldloop: cannot serve: %s", exc.message)
            os._exit(3)

    # -- backends --------------------------------------------------------------------------

    @property
    def store_url(self) -> str:
        """WORLDLOOP_STORE_URL, or the embedded default ``sqlite:///<instance>/worldloop.db``."""
        url = self.settings.store_url
        return default_store_url(self.instance_path) if url is None else url

    def _make_scaleout(self, world: World) -> WorldRuntime:
        """The scale-out mode's runtime (WORLDLOOP_REDIS_URL; worldloop.scaleout)."""
        from .scaleout_worlds import ScaleoutWorlds

        self.scaleout_worlds = ScaleoutWorlds(self)
        return self.scaleout_worlds.runtime(world, extra=False)

    def _make_store(self) -> Store | None:
        """The journal + snapshot store, by URL (not connected yet); None for ``memory://``
        (the world lives in memory only; ``memory://NAME`` journals into process memory)."""
        url = self.store_url
        if url == "memory://":
            return None
        return open_store(
            url, schema=self.settings.store_schema, group_commit=self.settings.group_commit
        )

    def _make_lease(self, world_name: str) -> Lease:
        """The lease that goes with the store (worldloop.lease.default_lease_url)."""
        wait = self.settings.lease_wait
        if wait is None:
            # A gunicorn graceful restart boots the new worker before the old one has gone.
            wait = 10.0 if self.role in ("gunicorn-worker", "prefork-master") else 0.0
        url = default_lease_url(self.store_url, world_name, self.instance_path)
        return open_lease(url, world_name, wait=float(wait))

    def _make_bus(self, world_name: str) -> Bus:
        """How commands and snapshots travel between the API and the loop (WORLDLOOP_BUS_URL)."""
        cfg = self.settings
        return open_bus(
            cfg.bus_url,
            world_name,
            queue_size=cfg.queue_size,
            queue_bytes=cfg.queue_bytes,
            history_bytes=cfg.command_history_bytes,
            keys=cfg.idempotency_keys,
            key_seconds=cfg.idempotency_seconds,
        )


def state_of(app: Flask | None = None) -> WorldLoopState:
    """The worldloop state of ``app`` (default: the current app); ConfigError if it has none."""
    target = app if app is not None else current_app
    state = target.extensions.get("worldloop")
    if not isinstance(state, WorldLoopState):
        raise ConfigError("this app has no worldloop: call WorldLoop(app) or init_app(app)")
    return state


WORLD_KEY = "worldloop_world"
"""Where a request's world name is kept in ``flask.g`` (from the ``world`` URL value of the
routes under ``/api/v1/worlds/<world>``, see worldloop.api.worlds)."""


def request_world() -> str | None:
    """The world named by the current request's URL, or None (the default world)."""
    if not has_app_context():
        return None
    name = g.get(WORLD_KEY)
    return name if isinstance(name, str) else None


def get_world() -> HostedWorld:
    """The world of the current request: the one its URL names, else the default world;
    WorldNotFound (404) for a name this app does not host."""
    state = state_of()
    name = request_world()
    return state._default_world() if name is None else state.host.get(name)


def get_runtime() -> WorldRuntime:
    """The runtime of the current app's world of this request (inside a request or app
    context): the world named by the URL (``/api/v1/worlds/<world>/...``), else the default."""
    state = state_of()
    name = request_world()
    return state.runtime if name is None else state.host.get(name).runtime


def current_settings() -> Settings:
    """The settings of the current app's worldloop (inside a request or app context)."""
    return state_of().settings
