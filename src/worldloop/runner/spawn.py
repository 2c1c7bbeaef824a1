"""Who starts the runner: any web worker, whichever finds it missing first.

Every web worker watches the runner's lock (held by the runner for its whole life). When the
lock is free — at the first start, or after the runner died, kill -9 included — the worker that
wins a second, short "spawn" lock starts ``python -m worldloop.runner`` with the same app as
its own, and holds the spawn lock until the new runner holds its lock: so ``-w N`` starts one
runner, and a dead runner is replaced within about a second plus its start-up and recovery.
The first runner a web worker starts while it loads the app is a fork of it (it has imported
everything the runner needs and runs no thread yet: worldloop.runner.fork), so a restart does
not wait for a second interpreter to import it all again; any later one (a dead runner's
replacement, started from the watching thread) and any the fork cannot be made safely for is a
fresh interpreter (never a fork of a worker with threads). The runner watches the server that
started it: the gunicorn master, or the ``flask run`` process; when that one is gone it
stops cleanly (final snapshot). Nothing here needs a gunicorn config file or hook.
"""

from __future__ import annotations

import fcntl
import logging
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Protocol

from ..hosting import gunicorn_worker
from . import ipc

log = logging.getLogger("worldloop.runner")

POLL = 0.5
"""Seconds between a worker's looks at the runner lock."""
START_BOUND = 120.0
"""Seconds a new runner may take to hold its lock before another try."""


def app_spec(explicit: str | None) -> tuple[str, str] | None:
    """How to load this process's app in the runner: (spec, working folder), or None.

    ``explicit`` (WORLDLOOP_RUNNER_APP) first; else gunicorn's app URI (``module:create_app()``),
    else ``flask --app``'s (empty: Flask's own discovery of app.py / wsgi.py), else None.
    """
    if explicit:
        return explicit, os.getcwd()
    worker = gunicorn_worker()
    if worker is not None:
        uri = getattr(getattr(worker, "app", None), "app_uri", None)
        if uri:
            chdir = getattr(getattr(worker, "cfg", None), "chdir", None) or os.getcwd()
            return str(uri), str(chdir)
    uri = _on_stack()
    if uri is not None:
        return uri, os.getcwd()
    try:
        import click
        from flask.cli import ScriptInfo

        ctx = click.get_current_context(silent=True)
    except Exception:  # pragma: no cover - Flask always has click
        return None
    info = ctx.find_object(ScriptInfo) if ctx is not None else None
    if info is not None:
        return info.app_import_path or "", os.getcwd()
    return None


def _on_stack() -> str | None:
    """A gunicorn application's URI on the stack (``--preload``: the arbiter loads the app)."""
    if "gunicorn" not in sys.modules:
        return None
    frame = sys._getframe(1)
    while frame is not None:
        for value in frame.f_locals.values():
            for obj in (value, getattr(value, "app", None)):
                uri = getattr(obj, "app_uri", None)
                if isinstance(uri, str) and uri:
                    return uri
        frame = frame.f_back  # type: ignore[assignment]
    return None


def lock_free(path: Path) -> bool:
    """True when nobody holds an exclusive lock on ``path`` (probed, not kept)."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    finally:
        os.close(fd)
    return True


class Child(Protocol):
    """A started runner: a ``subprocess.Popen`` or a forked one (worldloop.runner.fork)."""

    def poll(self) -> int | None: ...


class Spawner:
    """A web worker's watch over its world's runner (a daemon thread)."""

    def __init__(
        self,
        spec: str,
        cwd: str,
        endpoints: ipc.Endpoints,
        *,
        watch_pid: int,
        env: dict[str, str] | None = None,
        gateway: str | None = None,
    ) -> None:
        self.spec = spec
        self.gateway = gateway
        """Where the runner starts the stream gateway, as this web server worked it out
        (worldloop.gateway.address); None: as the runner's own settings say."""
        self.cwd = cwd
        self.endpoints = endpoints
        self.watch_pid = watch_pid
        self.env = env
        self.started = 0
        """Runners this worker started."""
        self.forked = False
        """True when this worker forked the runner it started first (worldloop.runner.fork)."""
        self._proc: Child | None = None
        self._forked: int | None = None
        self._failures = 0
        self._not_before = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="worldloop-spawner", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._check()
            except Exception:  # contained: the next look tries again
                log.exception("worldloop: watching the runner failed")
            self._stop.wait(POLL)

    def _check(self) -> None:
        if self._forked is not None:  # the first runner, forked at start-up: see it hold
            forked, self._forked = self._forked, None
            try:
                if self._proc is not None:
                    self._await(self._proc)
            finally:
                os.close(forked)
        if self._proc is not None and self._proc.poll() is not None:
            self._proc = None  # reaped
        if not lock_free(self.endpoints.lock) or time.monotonic() < self._not_before:
            return
        held = self._spawn_lock()
        if held is None:
            return
        try:
            self._spawn()
        finally:
            os.close(held)

    def _spawn_lock(self) -> int | None:
        """The spawn lock's fd, held, when no runner holds its lock; None: nothing to start."""
        spawn_lock = self.endpoints.folder / "spawn.lock"
        fd = os.open(spawn_lock, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None  # another worker is starting it
        if not lock_free(self.endpoints.lock):
            os.close(fd)
            return None
        return fd

    def _argv(self) -> list[str]:
        gateway = ["--gateway", self.gateway] if self.gateway else []
        return ["--app", self.spec, "--watch", str(self.watch_pid), *gateway]

    def fork_now(self) -> bool:
        """Start the runner now as a fork of this process (worldloop.runner.fork), before
        :meth:`start`, from the main thread of a web process loading the app; True if forked.
        The watching thread then waits for it to hold its lock, as for a spawned one."""
        if self.env is not None or self._thread.is_alive():
            return False
        if not lock_free(self.endpoints.lock):
            return False  # a runner runs (a sibling's, or the last server's, stopping)
        fd = self._spawn_lock()
        if fd is None:
            return False
        from .fork import fork_runner

        log.info(
            "worldloop: starting the runner: a fork of pid %d, %s (in %s)",
            os.getpid(),
            " ".join(self._argv()),
            self.cwd,
        )
        try:
            self._proc = fork_runner(self._argv(), self.cwd, drop=(fd,))
        except OSError:
            os.close(fd)
            log.exception("worldloop: cannot fork the runner; starting a fresh one instead")
            return False
        self._forked = fd
        self.forked = True
        self.started += 1
        return True

    def _spawn(self) -> None:
        argv = [sys.executable, "-m", "worldloop.runner", *self._argv()]
        log.info("worldloop: starting the runner: %s (in %s)", " ".join(argv[1:]), self.cwd)
        env = dict(os.environ if self.env is None else self.env)
        path = [p for p in sys.path if p and os.path.isdir(p)]
        env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys([self.cwd, *path]))
        proc = subprocess.Popen(argv, cwd=self.cwd, env=env)
        self._proc = proc
        self.started += 1
        self._await(proc)

    def _await(self, proc: Child) -> None:
        """Wait (at most START_BOUND) until ``proc`` holds the runner lock or has exited."""
        deadline = time.monotonic() + START_BOUND
        while time.monotonic() < deadline and not self._stop.is_set():
            if proc.poll() is not None:
                self._failures += 1
                delay = min(30.0, 0.5 * 2**self._failures)
                self._not_before = time.monotonic() + delay
                log.error(
                    "worldloop: the runner exited at start (code %s); next try in %.1f s",
                    proc.poll(),
                    delay,
                )
                return
            if not lock_free(self.endpoints.lock):
                self._failures = 0
                return
            time.sleep(0.05)

    def describe(self) -> dict[str, Any]:
        return {
            "spec": self.spec,
            "started": self.started,
            "forked": self.forked,
            "watch_pid": self.watch_pid,
        }
