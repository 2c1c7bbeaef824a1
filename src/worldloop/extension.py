"""The Flask extension: configuration, one runtime per app, and a lifecycle that starts the loop
only in the process that serves (never in the reloader's parent, never in a pre-fork master).
"""

from __future__ import annotations

import atexit
import importlib
import logging
import os
import signal
import sys
import threading
import weakref
from collections.abc import Callable, Mapping
from pathlib import Path
from types import FrameType
from typing import Any

from flask import Flask, current_app

from .clock import OverrunPolicy
from .errors import ConfigError, WorldLockedError
from .jobs import JobContext, JobScheduler, load_config_jobs
from .lease import FileLease, Lease, MemoryLease
from .runtime import WorldRuntime
from .store import SqlStore, Store, default_store_url
from .world import World

log = logging.getLogger("worldloop")

WorldFactory = Callable[[Mapping[str, Any]], World]

DEFAULTS: dict[str, Any] = {
    "WORLDLOOP_WORLD": None,
    "WORLDLOOP_RATE_HZ": 20.0,
    "WORLDLOOP_OVERRUN": "catch_up",
    "WORLDLOOP_MAX_CATCH_UP": 5,
    "WORLDLOOP_QUEUE_SIZE": 10_000,
    "WORLDLOOP_MAX_COMMANDS_PER_TICK": 10_000,
    "WORLDLOOP_STORE_URL": None,
    "WORLDLOOP_STORE_SCHEMA": None,
    "WORLDLOOP_SNAPSHOT_EVERY": 1000,
    "WORLDLOOP_HASH_EVERY": 100,
    "WORLDLOOP_JOURNAL_RETENTION": 3000,
    "WORLDLOOP_STORE_RETRY_SECONDS": 5.0,
    "WORLDLOOP_AUTOSTART": "auto",
    "WORLDLOOP_START_PAUSED": False,
    "WORLDLOOP_SHUTDOWN_TIMEOUT": 2.0,
    "WORLDLOOP_LEASE_WAIT": None,
    "WORLDLOOP_HANDLE_SIGNALS": True,
    "WORLDLOOP_ADMIN_TOKEN": None,
    "WORLDLOOP_JOBS": None,
    "WORLDLOOP_JOB_WORKERS": 4,
}

# Extensions that must stop at exit; weak so tests that drop an app do not leak it.
_live: weakref.WeakSet[WorldLoop] = weakref.WeakSet()
_signals_installed = False


class WorldLoop:
    """Run a world behind a Flask app: ``WorldLoop(app)`` or ``WorldLoop()`` + ``init_app(app)``."""

    def __init__(self, app: Flask | None = None, world: WorldFactory | None = None) -> None:
        self.world_factory = world
        self.runtime: WorldRuntime | None = None
        self.role = "unknown"
        self.jobs = JobScheduler()
        """Scheduled jobs of this world; register with :meth:`job` before the world starts."""
        self._start_lock = threading.Lock()
        if app is not None:
            self.init_app(app)

    def init_app(self, app: Flask, world: WorldFactory | None = None) -> None:
        for key, value in DEFAULTS.items():
            app.config.setdefault(key, value)
        cfg = app.config
        factory = world or self.world_factory or _import_factory(cfg["WORLDLOOP_WORLD"])
        self.world_factory = factory
        built = factory(cfg)
        if not isinstance(built, World):
            raise ConfigError("the world factory must return a worldloop.World")
        self.role = serving_role()
        # Jobs first: the world must know their commands before any journal replay.
        self.jobs.workers = int(cfg["WORLDLOOP_JOB_WORKERS"])
        for spec in load_config_jobs(cfg["WORLDLOOP_JOBS"]):
            self.jobs.add(spec)
        self.jobs.bind(built)
        self.runtime = WorldRuntime(
            built,
            rate_hz=float(cfg["WORLDLOOP_RATE_HZ"]),
            policy=OverrunPolicy(cfg["WORLDLOOP_OVERRUN"]),
            max_catch_up=int(cfg["WORLDLOOP_MAX_CATCH_UP"]),
            queue_size=int(cfg["WORLDLOOP_QUEUE_SIZE"]),
            max_commands_per_tick=int(cfg["WORLDLOOP_MAX_COMMANDS_PER_TICK"]),
            lease=self._make_lease(app, built.name),
            start_paused=bool(cfg["WORLDLOOP_START_PAUSED"]),
            shutdown_timeout=float(cfg["WORLDLOOP_SHUTDOWN_TIMEOUT"]),
            store=self._make_store(app),
            snapshot_every=int(cfg["WORLDLOOP_SNAPSHOT_EVERY"]),
            hash_every=int(cfg["WORLDLOOP_HASH_EVERY"]),
            retention_ticks=int(cfg["WORLDLOOP_JOURNAL_RETENTION"]),
            store_retry_seconds=float(cfg["WORLDLOOP_STORE_RETRY_SECONDS"]),
        )
        self.jobs.attach(self.runtime)
        app.extensions["worldloop"] = self
        if "world" not in app.cli.commands:
            from .cli import flask_group

            app.cli.add_command(flask_group())
        _live.add(self)
        self._start_by_policy(app)

    def job(
        self, name: str | None = None, **options: Any
    ) -> Callable[[Callable[[Any, JobContext], Any]], Callable[[Any, JobContext], Any]]:
        """Register a scheduled job: ``@worldloop.job(every=60)`` or ``(cron=..., tz=...)``.

        Options: kind ("world" | "background"), every / every_ticks / cron (+ tz), misfire
        ("run_late" | "skip" | "coalesce"), max_concurrent, timeout, grace. See worldloop.jobs.
        """
        return self.jobs.job(name, **options)

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        """Start the world loop in this process (idempotent)."""
        rt = self._rt()
        with self._start_lock:
            if rt.running:
                return
            rt.start()
        _install_exit_handlers(self._handle_signals)

    def stop(self, timeout: float | None = None) -> bool:
        """Stop the loop within the configured bound; True if it ended in time."""
        return self.runtime.stop(timeout) if self.runtime is not None else True

    def _rt(self) -> WorldRuntime:
        if self.runtime is None:
            raise ConfigError("WorldLoop.init_app(app) has not been called")
        return self.runtime

    def _start_by_policy(self, app: Flask) -> None:
        policy = app.config["WORLDLOOP_AUTOSTART"]
        self._handle_signals = bool(app.config["WORLDLOOP_HANDLE_SIGNALS"])
        if policy in (False, None, "never", "manual"):
            return
        if policy not in (True, "auto", "lazy", "eager"):
            raise ConfigError(
                f"WORLDLOOP_AUTOSTART must be auto, eager, lazy or never, not {policy!r}"
            )
        if policy == "lazy":
            app.before_request(self._start_lazily)
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
            os.register_at_fork(after_in_child=self._start_in_forked_worker)
            return
        self.start()

    def _start_lazily(self) -> None:
        rt = self._rt()
        if not rt.running and not rt.ticker.stats().running:
            try:
                self.start()
            except WorldLockedError:
                log.exception("worldloop: cannot start the world in this process")

    def _start_in_forked_worker(self) -> None:
        try:
            self.start()
        except WorldLockedError as exc:
            # Gunicorn treats exit code 3 as "worker failed to boot" and stops with the reason.
            log.error("worldloop: %s", exc.message)
            os._exit(3)

    def _make_lease(self, app: Flask, world_name: str) -> Lease:
        lock_path = self._lock_path(app, world_name)
        if lock_path is None:
            return MemoryLease(world_name)
        wait = app.config["WORLDLOOP_LEASE_WAIT"]
        if wait is None:
            # A gunicorn graceful restart boots the new worker before the old one has gone.
            wait = 10.0 if self.role in ("gunicorn-worker", "prefork-master") else 0.0
        return FileLease(lock_path, world_name, wait=float(wait))

    @staticmethod
    def store_url(app: Flask) -> str:
        """WORLDLOOP_STORE_URL, or the embedded default ``sqlite:///<instance>/worldloop.db``."""
        url = app.config["WORLDLOOP_STORE_URL"]
        return default_store_url(app.instance_path) if url is None else str(url)

    def _make_store(self, app: Flask) -> Store | None:
        """The journal + snapshot store (not connected yet); None for ``memory://``."""
        url = self.store_url(app)
        if url == "memory://":
            return None
        return SqlStore(url, schema=app.config["WORLDLOOP_STORE_SCHEMA"])

    @staticmethod
    def _lock_path(app: Flask, world_name: str) -> Path | None:
        url = WorldLoop.store_url(app)
        if url.startswith("sqlite:///") and url != "sqlite:///:memory:":
            return Path(url.removeprefix("sqlite:///") + ".lock")
        if url in ("memory://", "sqlite://", "sqlite:///:memory:"):
            return None
        return Path(app.instance_path) / f"worldloop-{world_name}.lock"


def get_runtime() -> WorldRuntime:
    """The runtime of the current app (inside a request or app context)."""
    ext: WorldLoop = current_app.extensions["worldloop"]
    return ext._rt()


def serving_role() -> str:
    """Which kind of process is loading the app.

    ``serve`` (start here), ``reloader-parent`` (the watcher of ``flask run --debug``),
    ``prefork-master`` (gunicorn --preload: start after fork), ``gunicorn-worker``, ``cli`` (a
    ``flask`` command other than ``run``: never started) or ``unknown``.
    """
    if os.environ.get("WERKZEUG_RUN_MAIN") == "true":
        return "serve"
    try:
        import click

        ctx = click.get_current_context(silent=True)
    except Exception:  # pragma: no cover - click is always there with Flask
        ctx = None
    if ctx is not None and ctx.info_name == "run" and "reload" in ctx.params:
        from flask.helpers import get_debug_flag

        reload = ctx.params["reload"]
        if reload is None:
            reload = get_debug_flag()
        return "reloader-parent" if reload else "serve"
    if _flask_cli_command():
        return "cli"  # `flask shell`, `flask routes`, `flask world ...`: not a server
    if "gunicorn" in sys.modules:
        frame: FrameType | None = sys._getframe(1)
        while frame is not None:
            filename = frame.f_code.co_filename.replace(os.sep, "/")
            if "/gunicorn/workers/" in filename:
                return "gunicorn-worker"
            if filename.endswith("/gunicorn/arbiter.py"):
                return "prefork-master"
            frame = frame.f_back
    return "unknown"


def _flask_cli_command() -> bool:
    """True inside the ``flask`` command when it runs anything but ``run`` (handled above)."""
    if os.environ.get("FLASK_RUN_FROM_CLI") != "true" or "gunicorn" in sys.modules:
        return False
    argv0 = sys.argv[0].replace(os.sep, "/") if sys.argv else ""
    return argv0.rsplit("/", 1)[-1] == "flask" or argv0.endswith("/flask/__main__.py")


def _import_factory(spec: Any) -> WorldFactory:
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


def _stop_all() -> None:
    for ext in list(_live):
        try:
            ext.stop()
        except Exception:
            log.exception("worldloop: stop at exit failed")


def _install_exit_handlers(handle_signals: bool) -> None:
    """Stop every world at interpreter exit; turn a default SIGTERM into a clean exit."""
    global _signals_installed
    if _signals_installed:
        return
    _signals_installed = True
    atexit.register(_stop_all)
    if not handle_signals or threading.current_thread() is not threading.main_thread():
        return
    if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _exit_on_signal)


def _exit_on_signal(signum: int, frame: FrameType | None) -> None:
    _stop_all()
    raise SystemExit(128 + signum)
