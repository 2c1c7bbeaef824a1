"""The embedded lease (``file:///path.lock``): an OS file lock, one process per store."""

from __future__ import annotations

import fcntl
import os
import time
from pathlib import Path

from ..errors import WorldLockedError
from ..files import private_fd


class FileLease:
    """An exclusive ``flock`` on a lock file beside the store.

    The kernel drops the lock when the holding process dies (even by kill -9), so a crashed
    runner never blocks its successor. The file records the holder's pid for the error message.
    The token counts this object's acquisitions; fencing across processes is the job of the
    store epoch of the scale-out mode (SCALEOUT.md), not of a file lock.
    """

    def __init__(
        self, path: str | os.PathLike[str], world: str = "world", wait: float = 0.0
    ) -> None:
        self.path = Path(path)
        self.world = world
        self.wait = float(wait)
        self._fd: int | None = None
        self._token = 0

    def __repr__(self) -> str:
        return f"FileLease({str(self.path)!r})"

    @property
    def url(self) -> str:
        return f"file://{self.path}"

    @property
    def held(self) -> bool:
        return self._fd is not None

    @property
    def token(self) -> int:
        return self._token

    def holder(self) -> str | None:
        """Probed with a shared lock for an instant (an ``acquire`` racing it without a wait
        may then be refused: use it for messages and checks, not in a loop)."""
        if self._fd is not None:
            return f"pid {os.getpid()}"
        try:
            fd = os.open(self.path, os.O_RDWR)
        except FileNotFoundError:
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return f"pid {self._pid_in(fd)}"
        else:
            fcntl.flock(fd, fcntl.LOCK_UN)
            return None
        finally:
            os.close(fd)

    @staticmethod
    def _pid_in(fd: int) -> str:
        return os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"

    def acquire(self, wait: float | None = None) -> None:
        if self._fd is not None:
            return
        bound = self.wait if wait is None else float(wait)
        fd = private_fd(self.path)  # 0600 in a 0700 folder when it is new
        deadline = time.monotonic() + bound
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() < deadline:
                    time.sleep(0.05)
                    continue
                holder = self._pid_in(fd)
                os.close(fd)
                raise WorldLockedError(
                    f"world {self.world!r} is already running in another process (pid {holder}) "
                    f"on this store; the embedded mode runs one process per store: stop that "
                    f"server first, or give this one its own store (WORLDLOOP_STORE_URL or "
                    f"another instance folder).",
                    details={
                        "lock_file": str(self.path),
                        "holder_pid": holder,
                        "holder": f"pid {holder}",
                    },
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
