"""The Flask extension: ``WorldLoop(app)`` or ``WorldLoop()`` + ``init_app(app)``.

Flask's own habits (as flask-sqlalchemy keeps them): the extension object holds what the
developer declared (the world factory, jobs) and no per-app state; ``init_app`` reads the
settings once, refuses a second registration, keeps the app's state in
``app.extensions["worldloop"]`` (a :class:`~worldloop.state.WorldLoopState`), installs what the
settings ask for (JSON errors, the API, health and metrics, docs, viewer) and starts the loop
only in the process that serves.
"""

from __future__ import annotations

import importlib
import logging
import weakref
from collections.abc import Callable, Mapping, Sequence
from typing import Any, cast

from flask import Flask, has_app_context

from ._loading import is_inspecting
from .config import Settings
from .errors import ConfigError
from .hibernation import CatchUp, KindOptions, kind_options
from .jobs import (
    JobContext,
    JobRegistrar,
    JobScheduler,
    JobSpec,
    load_config_jobs,
    make_spec,
)
from .lifecycle import serving_role
from .preflight import preflight
from .runtime import WorldRuntime
from .state import WorldLoopState, get_runtime, state_of
from .store import default_store_url
from .world import World

log = logging.getLogger("worldloop")

WorldFactory = Callable[[Mapping[str, Any]], World]

__all__ = ["WorldFactory", "WorldLoop", "WorldLoopState", "get_runtime", "serving_role"]


class WorldLoop:
    """Run a world behind Flask apps: declare the world and its jobs here, once."""

    def __init__(
        self,
        app: Flask | None = None,
        world: WorldFactory | None = None,
        *,
        kinds: Mapping[str, WorldFactory] | None = None,
        **settings: Any,
    ) -> None:
        """``settings`` are defaults for this extension's apps, by field name
        (``WorldLoop(app, viewer=True, rate_hz=30)``); ``app.config`` keys win over them.
        ``kinds`` are the world kinds whose worlds the API creates (see :meth:`kind`)."""
        self.world_factory = world
        self.kinds: dict[str, WorldFactory] = dict(kinds or {})
        self.kind_options: dict[str, KindOptions] = {}
        self.defaults = {Settings.key(k): v for k, v in settings.items()}
        self._job_specs: list[JobSpec] = []
        # A weak index of the apps this extension serves (for `job` added late and for
        # `start()`/`stop()`/`runtime` outside an app context); their state is in the apps.
        self._states: weakref.WeakSet[WorldLoopState] = weakref.WeakSet()
        if app is not None:
            self.init_app(app)

    def init_app(self, app: Flask, world: WorldFactory | None = None) -> WorldLoopState:
        """Install worldloop on ``app``; a second registration on one app is a ConfigError."""
        if "worldloop" in app.extensions:
            raise ConfigError(
                "worldloop is already registered on this app: call WorldLoop(app) or "
                "init_app(app) once per app (a second one would run a second world)"
            )
        unknown = [k for k in self.defaults if k not in Settings.defaults()]
        if unknown:
            raise ConfigError(f"unknown worldloop settings: {', '.join(sorted(unknown))}")
        for key, value in {**Settings.defaults(), **self.defaults}.items():
            app.config.setdefault(key, value)
        settings = Settings.from_config(app.config)
        from .api.install import announce_server, install_api, install_logging

        install_logging(app, settings)  # before the loop starts: its first lines are formatted
        if not is_inspecting():  # what this server cannot serve is refused before any work
            preflight(
                settings.store_url or default_store_url(app.instance_path),
                settings.autostart,
                serving_role(),
                split=settings.runner == "process" or settings.redis_url is not None,
            )
        factory = world or self.world_factory or import_factory(settings.world)
        built = factory(app.config)
        if not isinstance(built, World):
            raise ConfigError("the world factory must return a worldloop.World")
        # Jobs first: the world must know their commands before any journal replay.
        jobs = JobScheduler(workers=settings.job_workers)
        for spec in [*self._job_specs, *load_config_jobs(settings.jobs)]:
            jobs.add(spec)
        state = WorldLoopState(
            app, settings, built, jobs, kinds=self.kinds, kind_options=self.kind_options
        )
        app.extensions["worldloop"] = state
        self._states.add(state)
        install_api(app, state)
        if app.config.get("CELERY"):
            # Flask's Celery pattern, only when configured: the core never imports celery.
            from .offload.celery import CelerySender, celery_init_app

            state.use_offload(CelerySender(celery_init_app(app)))
        state.start_by_policy(app)
        announce_server(app, state)
        return state

    def kind(
        self,
        name: str,
        *,
        catch_up: CatchUp = "skip",
        max_simulate: int = 1000,
        hibernate_after: float | None = None,
        jobs: Sequence[JobSpec] = (),
    ) -> Callable[[WorldFactory], WorldFactory]:
        """Register a world kind: ``@loop.kind("arena")`` on a ``factory(config) -> World``.
        Worlds of it are made by ``POST /api/v1/worlds {"name", "kind": "arena", "config"}``
        with that config (the factory raises ValueError, TypeError or a pydantic
        ValidationError for a config it refuses: 422). Declared after ``init_app``, it
        reaches the apps already served at once.

        Hibernation (worldloop.hibernation): a world of the kind idle ``hibernate_after`` s
        (None: WORLDLOOP_HIBERNATE_AFTER; 0: never) sleeps; woken, it ``skip``s the time it
        slept or ``simulate``s its ticks (at most ``max_simulate``). ``jobs``
        (``worldloop.jobs.make_spec``) run in every world of the kind; a due one wakes it."""
        check_kind = name.strip()
        if not check_kind or check_kind != name:
            raise ConfigError(f"bad world kind name {name!r}")
        options = kind_options(catch_up, max_simulate, hibernate_after, jobs)

        def decorate(factory: WorldFactory) -> WorldFactory:
            self.kinds[name] = factory
            self.kind_options[name] = options
            for state in list(self._states):
                state.host.kinds[name] = factory
                state.host.kind_options[name] = options
                if state.host.started:
                    state.host.hibernator.start()
            return factory

        return decorate

    @property
    def job(self) -> JobRegistrar:
        """Register a scheduled job: ``@loop.job(every=60)`` or ``(cron=..., tz=...)``, typed by
        :class:`~worldloop.jobs.JobRegistrar`. Declared before ``init_app`` it reaches every
        app; declared later, the apps already served learn it at once."""
        return cast(JobRegistrar, self._declare_job)

    def _declare_job(
        self, name: str | None = None, **options: Any
    ) -> Callable[[Callable[[Any, JobContext], Any]], Callable[[Any, JobContext], Any]]:

        def decorate(func: Callable[[Any, JobContext], Any]) -> Callable[[Any, JobContext], Any]:
            spec = make_spec(name or func.__name__, func, **options)
            self._job_specs.append(spec)
            for state in list(self._states):
                state.jobs.add(spec)
            return func

        return decorate

    # -- conveniences for one app ----------------------------------------------------------

    def state(self, app: Flask | None = None) -> WorldLoopState:
        """The state of ``app``; else the current app's; else the only app this extension
        serves (a script with one app needs no app context)."""
        if app is not None or has_app_context():
            return state_of(app)
        states = list(self._states)
        if len(states) != 1:
            raise ConfigError(
                f"this WorldLoop serves {len(states)} apps: pass the app, or use an app context"
            )
        return states[0]

    @property
    def runtime(self) -> WorldRuntime:
        """The runtime of :meth:`state`'s app."""
        return self.state().runtime

    @property
    def jobs(self) -> JobScheduler:
        return self.state().jobs

    def start(self, app: Flask | None = None) -> None:
        """Start the world loop of ``app`` (see :meth:`state`) in this process (idempotent)."""
        self.state(app).start()

    def stop(self, app: Flask | None = None, timeout: float | None = None) -> bool:
        """Stop the loop of ``app`` within the configured bound; True if it ended in time."""
        return self.state(app).stop(timeout)


def import_factory(spec: Any) -> WorldFactory:
    """The world factory named by WORLDLOOP_WORLD (a callable, or ``"module:function"``)."""
    if spec is None:
        raise ConfigError("no world: pass WorldLoop(app, world=factory) or set WORLDLOOP_WORLD")
    if callable(spec):
        return spec  # type: ignore[no-any-return]
    module_name, _, attr = str(spec).partition(":")
    try:
        obj = getattr(importlib.import_module(module_name), attr or "create_world")
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"WORLDLOOP_WORLD={spec!r} cannot be imported: {exc}") from exc
    return obj  # type: ignore[no-any-return]
