"""A lease held in this process only (``memory://``): for in-memory worlds and tests.

Two runtimes of one process on the same world name exclude each other, as the file lease does
across processes; ``acquire`` waits on a condition (no polling) when asked to wait. The token
is a per-name counter shared by every MemoryLease of the process, so it is a real fencing token
within the process.
"""

from __future__ import annotations

import os
import threading
import time

from ..errors import WorldLockedError


class MemoryLease:
    """An in-process lease on ``name`` (the world's name by default)."""

    _holders: dict[str, str] = {}
    """name -> description of the holder, for every lease held in this process."""
    _epochs: dict[str, int] = {}
    _cond = threading.Condition()

    def __init__(self, name: str, wait: float = 0.0, *, world: str | None = None) -> None:
        self.name = name
        self.world = world or name
        self.wait = float(wait)
        self._mine = False
        self._token = 0

    def __repr__(self) -> str:
        return f"MemoryLease({self.name!r})"

    @property
    def url(self) -> str:
        return "memory://"

    @property
    def held(self) -> bool:
        return self._mine

    @property
    def token(self) -> int:
        return self._token

    def holder(self) -> str | None:
        with self._cond:
            return self._holders.get(self.name)

    def acquire(self, wait: float | None = None) -> None:
        if self._mine:
            return
        bound = self.wait if wait is None else float(wait)
        deadline = time.monotonic() + max(0.0, bound)
        me = f"pid {os.getpid()} thread {threading.current_thread().name!r}"
        with self._cond:
            while self.name in self._holders:
                left = deadline - time.monotonic()
                if left <= 0:
                    holder = self._holders[self.name]
                    raise WorldLockedError(
                        f"world {self.world!r} is already running in this process ({holder})",
                        details={"lease": self.url, "name": self.name, "holder": holder},
                    )
                self._cond.wait(left)
            self._holders[self.name] = me
            self._token = self._epochs[self.name] = self._epochs.get(self.name, 0) + 1
        self._mine = True

    def release(self) -> None:
        if not self._mine:
            return
        with self._cond:
            self._holders.pop(self.name, None)
            self._mine = False
            self._cond.notify_all()
