"""Refuse what cannot be served before serving it: one line naming the way out, no traceback,
a non-zero exit.

A server that cannot run its world (a second server on the same embedded store, several
gunicorn workers each about to run a world of their own, a worker class that cannot host a
loop thread, a store that cannot be reached) must not boot, answer ``/readyz`` for a while and
then fail with pages of tracebacks: it is refused while the app loads, before any worker
reports ready. Under gunicorn the worker exits with code 3, which the master reads as "worker
failed to boot" and stops on; under ``flask run`` the process exits with 1 (3 would make the
reloader start it again).
"""

from __future__ import annotations

import logging
import os
import re
import time
from typing import Any, NoReturn

from .errors import WorldLoopError
from .hosting import GREEN_CLASSES, gunicorn_worker, parent_pid_of, worker_class_name
from .lease import Lease, default_lease_url

log = logging.getLogger("worldloop")

GUNICORN_BOOT_ERROR = 3
"""Gunicorn's WORKER_BOOT_ERROR: the master halts with "Worker failed to boot"."""

ONE_PROCESS = (
    "run one worker with threads: gunicorn -w 1 -k gthread --threads 16, or "
    "gunicorn -c python:worldloop.gunicorn_conf"
)


class Refused(WorldLoopError, code="cannot_serve", status=500):
    """This process cannot serve its world as deployed (the message names the way out)."""


SIBLING_WAIT = 30.0
"""Longest a quiet sibling waits for the master to stop it (see :func:`refuse`)."""


def refuse(message: str, role: str, *, quiet: bool = False) -> NoReturn:
    """Log ``message`` as one error line and exit without a traceback.

    ``quiet``: a sibling gunicorn worker that found the same fault as the first one. It says
    nothing and waits for the master, which stops every worker once the first exits with
    code 3; exiting with 3 as well would make gunicorn's master halt twice (a traceback).
    """
    gunicorn = role.startswith(("gunicorn", "prefork"))
    if quiet and gunicorn:
        worker = gunicorn_worker()
        deadline = time.monotonic() + SIBLING_WAIT
        while worker is not None and worker.alive and time.monotonic() < deadline:
            time.sleep(0.05)
        raise SystemExit(0 if worker is not None and not worker.alive else GUNICORN_BOOT_ERROR)
    log.error("worldloop: cannot serve: %s", message)
    for handler in logging.getLogger().handlers:
        handler.flush()
    raise SystemExit(GUNICORN_BOOT_ERROR if gunicorn else 1)


def preflight(store_url: str, autostart: str, role: str, *, split: bool = False) -> None:
    """Before the world is even built: refuse a gunicorn set-up this store cannot serve
    (``split``: the world runs in a runner process, so any number of workers serve it)."""
    if role != "gunicorn-worker" or autostart == "never":
        return
    try:
        check_gunicorn(default_lease_url(store_url, "world", "."), autostart, split=split)
    except Refused as exc:
        refuse(exc.message, role, quiet=bool(exc.details.get("quiet")))


def check_gunicorn(
    lease_url: str, autostart: str, worker: Any = None, *, split: bool = False
) -> None:
    """Refuse a gunicorn worker set-up the chosen mode cannot serve (Refused says why).

    ``quiet`` in the details: every worker of the set-up finds the same fault; only the first
    one spawned (age 1) says it, so it is said once.
    """
    worker = worker if worker is not None else gunicorn_worker()
    if worker is None:
        return
    cfg = worker.cfg
    first = int(getattr(worker, "age", 1)) <= 1
    klass = worker_class_name(cfg)
    if klass in GREEN_CLASSES:
        raise Refused(
            f"gunicorn -k {klass} cannot host the world's loop thread on its clock; {ONE_PROCESS}",
            details={"quiet": not first},
        )
    workers = int(getattr(cfg, "workers", 1) or 1)
    scheme = lease_url.partition("://")[0]
    process_local = scheme == "memory"
    embedded = scheme == "file" and autostart in ("auto", "eager")
    if workers > 1 and (process_local or embedded) and not split:
        store = "in-memory" if process_local else "embedded (SQLite)"
        raise Refused(
            f"gunicorn -w {workers} on the {store} store would run {workers} worlds or leave "
            f"{workers - 1} workers without one; {ONE_PROCESS}",
            details={"quiet": not first},
        )


_PID = re.compile(r"pid (\d+)")


def holder_is_stranger(lease: Lease) -> bool:
    """True when the lease is held by a process that is not a sibling of this one.

    A gunicorn restart boots the new worker before the old one has gone, so a worker waits
    for the lease (WORLDLOOP_LEASE_WAIT); a holder with another parent is a second server on
    the same store, and waiting for it would only delay the refusal.
    """
    try:
        holder = lease.holder()
    except Exception:
        return False
    match = _PID.fullmatch(holder or "")
    if match is None:
        return False
    parent = parent_pid_of(int(match.group(1)))
    if parent is None:
        return False
    ours = os.getppid()
    return parent not in (ours, parent_pid_of(ours))
