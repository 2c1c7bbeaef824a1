"""The runners of one server, listed so that the server can wait for them when it stops.

A runner serves the gunicorn master (or ``flask run`` process) it watches, and stops when that
process is gone (worldloop.runner.child.Watched): by then the master has exited, and whatever
ends a server's leftovers when its first process exits (a container whose first process was the
master: the kernel kills the rest at once) may kill the runner before its final snapshot. So a
runner lists itself under its server's pid, and the shipped gunicorn config's ``on_exit`` hook
(worldloop.gunicorn_hooks), which runs in the master after its workers are gone and before it
exits, asks each listed runner to stop (SIGTERM: the runner's clean stop) and waits for it.

The list is a folder of empty files named by pid in the temporary directory, one folder per
server pid, private to its user; a folder someone else made, or a link, is not used.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import stat
import tempfile
import time
from pathlib import Path

from .child import Watched, started

log = logging.getLogger("worldloop")


def folder(server: int) -> Path:
    """Where the runners of server process ``server`` list themselves."""
    return Path(tempfile.gettempdir()) / f"worldloop-runners-{os.getuid()}-{server}"


def _ours(path: Path) -> bool:
    """Whether ``path`` is a real folder of this user, closed to others."""
    try:
        st = os.lstat(path)
    except OSError:
        return False
    return stat.S_ISDIR(st.st_mode) and st.st_uid == os.getuid() and not st.st_mode & 0o077


def add(server: int) -> Path | None:
    """List this process as a runner of ``server``; its entry, or None where it cannot be."""
    where = folder(server)
    with contextlib.suppress(FileExistsError, OSError):
        where.mkdir(mode=0o700)
    if not _ours(where):
        log.debug("worldloop: %s is not ours: the server will not wait for this runner", where)
        return None
    entry = where / str(os.getpid())
    try:
        entry.touch()
    except OSError:
        return None
    return entry


def _listed_by(pid: int, entry: Path) -> bool:
    """Whether process ``pid`` is the one that made ``entry``: it started before the entry
    was written (a runner killed with -9 leaves its entry, and its pid may be someone else's
    by now). False where that cannot be told (no /proc)."""
    at = started(pid)
    if at is None or not hasattr(time, "CLOCK_BOOTTIME"):
        return False
    try:
        age = time.time() - entry.stat().st_mtime
    except OSError:
        return False
    written = time.clock_gettime(time.CLOCK_BOOTTIME) - age  # on the start time's clock
    return at <= written + 1.0  # a second of slack for the two clocks read apart


def remove(entry: Path | None) -> None:
    """Take this runner off its server's list (at its exit), and the list with it once empty
    (a server without the hook, ``flask run`` or plain gunicorn, never removes it)."""
    if entry is not None:
        with contextlib.suppress(OSError):
            entry.unlink()
        with contextlib.suppress(OSError):  # not empty: another runner of the server is listed
            entry.parent.rmdir()


def stop_all(server: int, timeout: float) -> int:
    """From server process ``server`` as it exits: SIGTERM each runner listed under it and wait
    up to ``timeout`` s in all for them to be gone; the number still running after that (it is
    left to stop by itself when it sees the server gone)."""
    where = folder(server)
    if not _ours(where):
        return 0
    deadline = time.monotonic() + timeout
    left = 0
    for entry in sorted(where.iterdir()):
        if not entry.name.isdigit():
            continue
        pid = int(entry.name)
        if not _listed_by(pid, entry):
            continue
        watched = Watched(pid)
        try:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGTERM)
            if not watched.wait(max(0.0, deadline - time.monotonic())):
                log.warning("worldloop: runner %d still stopping as the server exits", pid)
                left += 1
        finally:
            watched.close()
    shutil.rmtree(where, ignore_errors=True)
    return left
