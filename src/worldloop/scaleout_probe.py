"""Why a worker of the scale-out mode cannot serve its world, named for /readyz.

In the Redis mode a stalled world has a handful of causes an operator must tell apart at once:
this worker does not reach Redis (it can neither queue commands nor read the feed:
``redis_unreachable``), it does not reach the store (``store_unreachable``: its owner, if any,
halts and gives the world up; command look-ups fail), or it ran the world and gave it up (lease
lost, fenced, journal failed) and no owner has published since (``lease_lost``). Every one is
fatal while it lasts and clears by itself when the fault does. The checks hit the services, so
their answers are kept for ``every`` seconds: a probe storm never becomes a Redis or PostgreSQL
load.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Protocol

from .errors import StoreError


class _Redis(Protocol):
    def ping(self) -> object: ...


class _Store(Protocol):
    def check_writable(self, timeout: float = 0.25) -> None: ...


class ServiceProbe:
    """The service problems of one scale-out worker as ``(code, message)`` pairs."""

    def __init__(
        self,
        redis_client: _Redis,
        store: _Store | None,
        gave_up: Callable[[], tuple[str, int] | None],
        served_epoch: Callable[[], int],
        *,
        every: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.redis_client = redis_client
        self.store = store
        self.gave_up = gave_up
        """Why this worker last gave the world up and the epoch it then served, or None."""
        self.served_epoch = served_epoch
        self.every = every
        self._clock = clock
        self._lock = threading.Lock()
        self._at = -1e18
        self._services: list[tuple[str, str]] = []

    def problems(self) -> list[tuple[str, str]]:
        with self._lock:
            now = self._clock()
            if now - self._at >= self.every:
                self._services = self._check_services()
                self._at = self._clock()
            found = list(self._services)
        given = self.gave_up()
        if given is not None and self.served_epoch() <= given[1]:
            found.append(
                (
                    "lease_lost",
                    f"this worker gave the world up ({given[0]}); no owner has published "
                    "since (it resumes once one takes the world over)",
                )
            )
        return found

    def _check_services(self) -> list[tuple[str, str]]:
        found: list[tuple[str, str]] = []
        try:
            self.redis_client.ping()
        except Exception as exc:  # redis-py raises many kinds; each means the same here
            found.append(
                (
                    "redis_unreachable",
                    f"Redis does not answer this worker ({type(exc).__name__}: {exc}): no "
                    "commands queued, no new snapshots read",
                )
            )
        if self.store is not None:
            try:
                self.store.check_writable()
            except StoreError as exc:
                found.append(
                    ("store_unreachable", f"the store does not take writes from here: {exc}")
                )
        return found
