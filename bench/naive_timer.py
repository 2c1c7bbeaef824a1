"""The baseline: the recipe everyone finds first.

A ``threading.Timer`` that re-arms itself after each tick, a module-global dict for the world,
and one global ``Lock`` shared by the tick and every reader. Kept here only to be measured.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

WORLD: dict[str, float] = {"tick": 0}
LOCK = threading.Lock()


class NaiveLoop:
    """Re-arming Timer: each tick schedules the next one ``period`` after it *finishes*."""

    def __init__(self, rate_hz: float, work: Callable[[], None]) -> None:
        self.period = 1.0 / rate_hz
        self.work = work
        self.starts: list[float] = []
        self._timer: threading.Timer | None = None
        self._running = False

    def _tick(self) -> None:
        if not self._running:
            return
        self.starts.append(time.monotonic())
        with LOCK:
            self.work()
            WORLD["tick"] += 1
        self._timer = threading.Timer(self.period, self._tick)
        self._timer.daemon = True
        self._timer.start()

    def start(self) -> None:
        self._running = True
        self._tick()

    def stop(self) -> None:
        self._running = False
        if self._timer is not None:
            self._timer.cancel()
