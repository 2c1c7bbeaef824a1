"""CPU priority for the tick: the web side yields a core to the runner's loop (issue 11).

On a small host the runner's loop thread, the web workers' request threads and the stream
gateway compete for the same cores; under saturating reads the tick then waits for a core and
overruns (bench/runner_prio.py). WORLDLOOP_WEB_NICE lowers the priority of the threads that
serve requests — never the runner's — with ``setpriority``, which any user may do to raise
a nice value (only lowering one needs privileges): the default works without them.

On Linux a nice value belongs to a thread, and a thread or a forked child starts with its
creator's. So a web worker renices each request thread on its first request, not the whole
process: its main thread (which forks the first runner), the thread that respawns a dead runner
and the one that receives the runner's feed keep the priority they started with, and a runner
they start never inherits a raised nice (a runner cannot take it back without privileges). The
gateway has no children: it lowers all its threads at start. Elsewhere (no per-thread nice,
or refused) this does nothing, quietly.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import threading

from flask import Flask

log = logging.getLogger("worldloop")

MAX_NICE = 19
"""The lowest priority there is (Linux and the BSDs)."""


def supported() -> bool:
    """True where a nice value can be set per thread (Linux: ``setpriority`` on a thread id)."""
    return sys.platform.startswith("linux") and hasattr(os, "setpriority")


def nice_of(tid: int) -> int:
    """The nice value of thread (or process) ``tid``."""
    return os.getpriority(os.PRIO_PROCESS, tid)


def lower_thread(step: int, tid: int | None = None) -> int | None:
    """Raise the nice value of thread ``tid`` (default: the calling one) by ``step``, at most
    to MAX_NICE; the new value, or None where nothing was done (``step`` 0, unsupported,
    refused, the thread gone)."""
    if step <= 0 or not supported():
        return None
    tid = threading.get_native_id() if tid is None else tid
    try:
        now = nice_of(tid)
        target = min(MAX_NICE, now + step)
        if target != now:
            os.setpriority(os.PRIO_PROCESS, tid, target)
    except OSError as exc:
        log.debug("worldloop: cannot lower the priority of thread %d: %s", tid, exc)
        return None
    return target


def lower_process(step: int) -> int:
    """Lower every thread of this process by ``step`` (threads started later inherit it from
    their creator); the number of threads lowered. For a process that starts no runner."""
    if step <= 0 or not supported():
        return 0
    done = 0
    with contextlib.suppress(OSError):
        for name in os.listdir("/proc/self/task"):
            if lower_thread(step, int(name)) is not None:
                done += 1
    return done


def lower_request_threads(app: Flask, step: int) -> None:
    """Each thread that serves ``app``'s requests lowers its own priority by ``step`` on its
    first request (once per thread: a thread-local flag); nothing when ``step`` is 0.

    Register it after any hook that may start threads which must keep their priority (the
    lazy start's runner watch, worldloop.state): hooks run in the order registered."""
    if step <= 0 or not supported():
        return
    done = threading.local()

    def lower() -> None:
        if not getattr(done, "flag", False):
            done.flag = True
            lower_thread(step)

    app.before_request(lower)
