"""Ticker.call runs work on the loop thread between ticks, paused or running (on a thread of
its own, and on a loop pool)."""

from __future__ import annotations

import threading
from concurrent.futures import CancelledError

import pytest

from worldloop import ManualClock, TickInfo
from worldloop.clock import ClockStateError

from .clock_support import new_ticker
from .support import wait_for


def test_call_runs_on_the_loop_thread_between_ticks(
    manual_clock: ManualClock, on_pool: bool
) -> None:
    seen: list[str] = []
    loop_thread: list[threading.Thread] = []

    def on_tick(info: TickInfo) -> None:
        loop_thread[:] = [threading.current_thread()]
        seen.append("tick")

    ticker = new_ticker(on_tick, 10.0, on_pool, manual_clock)
    ticker.start()
    try:
        assert ticker.wait_for_ticks(1, 5)
        fut = ticker.call(lambda: (seen.append("call"), threading.current_thread())[1])
        assert fut.result(5) is loop_thread[0]
        assert seen == ["tick", "call"]  # ran without waiting for the next due tick
        ticker.pause()
        ticks = ticker.stats().ticks
        assert ticker.call(lambda: 42).result(5) == 42  # paused: still served, no tick
        assert ticker.stats().ticks == ticks
        with pytest.raises(ZeroDivisionError):
            ticker.call(lambda: 1 / 0).result(5)
        manual_clock.advance(1.0)
        assert ticker.step(2).result(5) == ticks + 2  # the loop lives on after a failed call
    finally:
        assert ticker.stop(5)
    with pytest.raises(ClockStateError):
        ticker.call(lambda: None)


def test_pending_calls_are_cancelled_at_stop(manual_clock: ManualClock, on_pool: bool) -> None:
    gate = threading.Event()
    entered = threading.Event()

    def on_tick(info: TickInfo) -> None:
        entered.set()
        gate.wait(5)

    ticker = new_ticker(on_tick, 10.0, on_pool, manual_clock)
    ticker.start()
    assert entered.wait(5)
    fut = ticker.call(lambda: "never")
    stopper = threading.Thread(target=ticker.stop, args=(5,))
    stopper.start()
    wait_for(lambda: not ticker.running, timeout=5, what="stop to be requested")
    gate.set()
    stopper.join(10)
    with pytest.raises(CancelledError):
        fut.result(5)
