"""Tickers for the clock tests: on a thread of their own, or on a shared loop pool.

The clock's contract is the same either way, so the clock tests take the ``on_pool`` fixture
and run twice (worldloop.looppool).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from worldloop import Ticker, TickInfo
from worldloop.clock import Clock
from worldloop.looppool import LoopPool


@pytest.fixture(params=["own-thread", "pool"])
def on_pool(request: pytest.FixtureRequest) -> bool:
    """False: the ticker runs its own thread; True: it runs on a loop pool of two threads."""
    return bool(request.param == "pool")


def new_ticker(
    on_tick: Callable[[TickInfo], None],
    rate_hz: float,
    on_pool: bool,
    clock: Clock | None = None,
    **kw: Any,
) -> Ticker:
    """A ticker on its own thread, or on a new loop pool of two threads on ``clock``."""
    if on_pool:
        return Ticker(on_tick, rate_hz, pool=LoopPool(2, clock=clock), **kw)
    return Ticker(on_tick, rate_hz, clock=clock, **kw)
