"""Embedded leases: an OS file lock (one process per store), or an in-memory one for tests."""

from __future__ import annotations

import fcntl
import os
import threading
import time
from pathlib import Path

from ..errors import WorldLockedError


class FileLease:
    """An exclusive ``flock`` on a lock file beside the store.

    The kernel drops the lock when the holding process dies (even by kill -9), so a crashed
    runner never blocks its successor. The file records the holder's pid for the error message.
    """

    def __init__(
        self, path: str | os.PathLike[str], world: str = "world", wait: float = 0.0
    ) -> None:
        self.path = Path(path)
        self.world = world
        self.wait = wait
        """Seconds to keep trying when held (a graceful restart hands over within this)."""
        self._fd: int | None = None
        self._token = 0

    @property
    def held(self) -> bool:
        return self._fd is not None

    @property
    def token(self) -> int:
        return self._token

    def acquire(self) -> None:
        if self._fd is not None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        deadline = time.monotonic() + self.wait
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() < deadline:
                    time.sleep(0.05)
                    continue
                holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
                os.close(fd)
                raise WorldLockedError(
                    f"world {self.world!r} is already running in another process (pid {holder}) "
                    f"on this store; the embedded mode runs one process per store. Serve it from "
                    f"one process (e.g. gunicorn -w 1 --threads 8) or use the redis mode "
                    "to scale out.",
                    details={"lock_file": str(self.path), "holder_pid": holder},
                ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        self._fd = fd
        self._token += 1

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            try:
                os.ftruncate(fd, 0)
                fcntl.flock(fd, fcntl.LOCK_UN)
            finally:
                os.close(fd)


class MemoryLease:
    """A lease held in this process only, keyed by name (for tests and in-memory worlds)."""

    _held: set[str] = set()
    _lock = threading.Lock()

    def __init__(self, name: str) -> None:
        self.name = name
        self._mine = False
        self._token = 0

    @property
    def held(self) -> bool:
        return self._mine

    @property
    def token(self) -> int:
        return self._token

    def acquire(self) -> None:
        if self._mine:
            return
        with self._lock:
            if self.name in self._held:
                raise WorldLockedError(f"world {self.name!r} is already running in this process")
            self._held.add(self.name)
        self._mine = True
        self._token += 1

    def release(self) -> None:
        if self._mine:
            with self._lock:
                self._held.discard(self.name)
            self._mine = False
