"""Progress of long replays: a callback type, and a reporter that logs every few seconds."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

log = logging.getLogger("worldloop.durability")

ReplayProgress = Callable[[int, int], None]
"""Called during a replay with (ticks replayed, ticks to replay): a progress bar, a log."""


class ReplayLog:
    """A replay progress callback that logs when a replay starts and, every ``interval`` s, how
    far it has got.

    ``world 'x': replayed 4,000 of 10,000 ticks (800 ticks/s, ~8 s left)``, so a long recovery
    at start-up is not silence. ``clock`` is injectable so tests need not wait.
    """

    def __init__(
        self,
        world_name: str,
        *,
        interval: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
        logger: logging.Logger | None = None,
        snapshot_tick: int | None = None,
        loaded_in: float | None = None,
    ) -> None:
        self.world_name = world_name
        self.snapshot_tick = snapshot_tick
        """The tick of the snapshot the replay starts from (said in the first line)."""
        self.loaded_in = loaded_in
        """Seconds it took to read that snapshot and the journal from the store (idem)."""
        self.interval = float(interval)
        self.clock = clock
        self.log = logger or log
        self._started = clock()
        self._next = self._started + self.interval

    def __call__(self, done: int, total: int) -> None:
        if done >= total:
            return  # the caller logs the outcome
        now = self.clock()
        if done == 0:  # the snapshot is loaded: say what comes, however short it will be
            which = "" if self.snapshot_tick is None else f" of tick {self.snapshot_tick}"
            took = "" if self.loaded_in is None else f" in {self.loaded_in:.2f} s"
            self.log.info(
                "world %r: snapshot%s loaded%s, replaying %s journaled ticks",
                self.world_name,
                which,
                took,
                f"{total:,}",
            )
            return
        if now < self._next:
            return
        self._next = now + self.interval
        rate = done / max(now - self._started, 1e-9)
        left = (total - done) / rate if rate > 0 else float("inf")
        self.log.info(
            "world %r: replayed %s of %s ticks (%s ticks/s, ~%s left)",
            self.world_name,
            f"{done:,}",
            f"{total:,}",
            f"{rate:,.0f}",
            _duration(left),
        )


def _duration(seconds: float) -> str:
    if seconds == float("inf"):
        return "? s"
    s = round(seconds)
    if s < 120:
        return f"{s} s"
    if s < 7200:
        return f"{s // 60} min {s % 60} s"
    return f"{s // 3600} h {s % 3600 // 60} min"
