"""When a job's slots fall: intervals in seconds or in ticks, and cron in a time zone.

Slots are pure functions of the schedule and a clock reading (wall seconds or world tick), so
every process computes the same slots, which is what running a slot exactly once needs, and
tests drive them with hand-set clocks.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime
from typing import Literal, Protocol
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import CroniterError, croniter

from ..errors import ConfigError

Basis = Literal["wall", "tick"]
"""The scale a schedule counts on: unix seconds of wall time, or world ticks."""

MAX_COUNTED_MISSES = 10_000
"""Counting missed slots stops here (a cron job down for years must not stall a tick)."""


class Schedule(Protocol):
    """When a job's slots fall, on a wall-clock (unix seconds) or a world-tick scale."""

    @property
    def basis(self) -> Basis: ...

    def next_after(self, t: float) -> float:
        """The first slot strictly after ``t``."""
        ...

    def latest_at_or_before(self, t: float) -> float:
        """The last slot at or before ``t``."""
        ...

    def describe(self) -> str: ...


@dataclass(frozen=True, slots=True)
class Every:
    """Every ``seconds`` of wall time, on slots aligned to the unix epoch (plus ``offset``).

    Alignment makes slots the same in every process, which is what exactly-once needs.
    """

    seconds: float
    offset: float = 0.0

    def __post_init__(self) -> None:
        if not (isinstance(self.seconds, int | float) and math.isfinite(self.seconds)):
            raise ConfigError("a job's interval must be a finite number of seconds")
        if self.seconds <= 0:
            raise ConfigError("a job's interval must be > 0 seconds")

    @property
    def basis(self) -> Basis:
        return "wall"

    def _at(self, k: int) -> float:
        return self.offset + k * self.seconds

    def next_after(self, t: float) -> float:
        k = math.floor((t - self.offset) / self.seconds)
        while self._at(k) <= t:
            k += 1
        return self._at(k)

    def latest_at_or_before(self, t: float) -> float:
        k = math.floor((t - self.offset) / self.seconds)
        while self._at(k) > t:
            k -= 1
        return self._at(k)

    def describe(self) -> str:
        return f"every {self.seconds:g}s"


@dataclass(frozen=True, slots=True)
class EveryTicks:
    """Every ``ticks`` world ticks: slots are the ticks ``offset + k * ticks``."""

    ticks: int
    offset: int = 0

    def __post_init__(self) -> None:
        if not isinstance(self.ticks, int) or isinstance(self.ticks, bool) or self.ticks < 1:
            raise ConfigError("a job's tick interval must be an integer >= 1")

    @property
    def basis(self) -> Basis:
        return "tick"

    def next_after(self, t: float) -> float:
        k = math.floor((t - self.offset) / self.ticks) + 1
        return float(self.offset + k * self.ticks)

    def latest_at_or_before(self, t: float) -> float:
        k = math.floor((t - self.offset) / self.ticks)
        return float(self.offset + k * self.ticks)

    def describe(self) -> str:
        return f"every {self.ticks} ticks"


@dataclass(frozen=True, slots=True)
class Cron:
    """A cron expression (5 fields, or 6 with seconds last) in an IANA time zone, via croniter."""

    expr: str
    tz: str = "UTC"

    def __post_init__(self) -> None:
        try:
            zone = ZoneInfo(self.tz)
        except (ZoneInfoNotFoundError, ValueError, TypeError) as exc:
            raise ConfigError(f"unknown time zone {self.tz!r}") from exc
        if not isinstance(self.expr, str) or not croniter.is_valid(self.expr):
            raise ConfigError(f"invalid cron expression {self.expr!r}")
        try:
            croniter(self.expr, datetime.fromtimestamp(0, zone)).get_next(float)
        except (CroniterError, ValueError) as exc:  # valid syntax that never matches
            raise ConfigError(f"cron expression {self.expr!r} has no slots: {exc}") from exc

    @property
    def basis(self) -> Basis:
        return "wall"

    def _iter(self, t: int) -> croniter:
        return croniter(self.expr, datetime.fromtimestamp(t, ZoneInfo(self.tz)))

    # Cron slots are whole seconds: working from floor(t) keeps croniter off fractions.
    def next_after(self, t: float) -> float:
        return float(self._iter(math.floor(t)).get_next(float))

    def latest_at_or_before(self, t: float) -> float:
        return float(self._iter(math.floor(t) + 1).get_prev(float))

    def describe(self) -> str:
        return f"cron {self.expr!r} {self.tz}"


def count_slots(schedule: Schedule, first: float, latest: float) -> int:
    """How many slots lie from ``first`` to ``latest`` (both slots), capped at
    :data:`MAX_COUNTED_MISSES`."""
    n, s = 1, first
    while s < latest and n < MAX_COUNTED_MISSES:
        s = schedule.next_after(s)
        n += 1
    return n
