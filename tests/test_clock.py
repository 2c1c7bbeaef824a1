"""The fixed-rate ticker: deadlines, overrun policies, controls and bounded stop.

Time is driven by hand (ManualClock): tests advance it and wait for the loop to catch up.
Every test runs twice: the ticker on a thread of its own, and on a shared loop pool
(worldloop.looppool), whose semantics must be the same.
"""

from __future__ import annotations

import threading

import pytest

from worldloop import ManualClock, OverrunPolicy, Ticker, TickInfo
from worldloop.clock import ClockStateError

from .clock_support import new_ticker
from .support import wait_for

PERIOD = 0.0625  # 16 Hz: a binary fraction, so manual time adds up exactly


class Recorder:
    """Records every tick; optionally burns clock time inside the tick to simulate its cost."""

    def __init__(self, clock: ManualClock | None = None, cost: float = 0.0) -> None:
        self.infos: list[TickInfo] = []
        self.clock = clock
        self.cost = cost
        self.lock = threading.Lock()

    def __call__(self, info: TickInfo) -> None:
        with self.lock:
            self.infos.append(info)
        if self.clock is not None and self.cost:
            self.clock.advance(self.cost)

    def count(self) -> int:
        with self.lock:
            return len(self.infos)


@pytest.fixture
def make_ticker(manual_clock: ManualClock, on_pool: bool):
    tickers: list[Ticker] = []

    def make(on_tick, **kw) -> Ticker:
        t = new_ticker(on_tick, kw.pop("rate_hz", 1 / PERIOD), on_pool, manual_clock, **kw)
        tickers.append(t)
        t.start()
        return t

    yield make
    for t in tickers:
        assert t.stop(2.0)


def advance_ticks(clock: ManualClock, ticker: Ticker, n: int, step: float = PERIOD) -> None:
    """Advance one period at a time, waiting for each tick to run."""
    for _ in range(n):
        target = ticker.stats().ticks + 1
        clock.advance(step)
        assert ticker.wait_for_ticks(target, 5.0)


def test_ticks_are_due_at_t0_plus_k_periods_whatever_they_cost(manual_clock, make_ticker):
    rec = Recorder(manual_clock, cost=0.25 * PERIOD)  # each tick "takes" a quarter period
    t = make_ticker(rec)
    assert t.wait_for_ticks(1, 5.0)
    t0 = rec.infos[0].scheduled
    for _ in range(200):
        target = t.stats().ticks + 1
        manual_clock.advance(PERIOD - 0.25 * PERIOD)
        assert t.wait_for_ticks(target, 5.0)
    assert rec.count() == 201
    for k, info in enumerate(rec.infos):
        assert info.slot == k
        assert info.scheduled == pytest.approx(t0 + k * PERIOD, abs=1e-9)  # no drift
    assert t.stats().overruns == 0


def test_no_tick_runs_before_its_deadline(manual_clock, make_ticker):
    rec = Recorder()
    t = make_ticker(rec)
    assert t.wait_for_ticks(1, 5.0)
    manual_clock.advance(PERIOD * 0.999)
    assert not t.wait_for_ticks(2, 0.2)
    manual_clock.advance(PERIOD * 0.001)
    assert t.wait_for_ticks(2, 5.0)
    assert all(i.started >= i.scheduled for i in rec.infos)


def test_catch_up_is_bounded_and_the_rest_is_skipped(manual_clock, make_ticker):
    rec = Recorder()
    t = make_ticker(rec, policy=OverrunPolicy.CATCH_UP, max_catch_up=3)
    assert t.wait_for_ticks(1, 5.0)
    manual_clock.advance(10 * PERIOD)  # the loop was stalled for ten periods
    # due now: slots 1..10; 3 are caught up beyond the current one, 6 are dropped
    assert t.wait_for_ticks(5, 5.0)
    assert not t.wait_for_ticks(6, 0.2)
    stats = t.stats()
    assert stats.ticks == 5
    assert stats.skipped == 6
    assert stats.overruns >= 1
    slots = [i.slot for i in rec.infos]
    assert slots == [0, 7, 8, 9, 10]


def test_skip_policy_drops_every_missed_slot(manual_clock, make_ticker):
    rec = Recorder()
    t = make_ticker(rec, policy="skip")
    assert t.wait_for_ticks(1, 5.0)
    manual_clock.advance(10.5 * PERIOD)
    assert t.wait_for_ticks(2, 5.0)
    assert not t.wait_for_ticks(3, 0.2)
    assert t.stats().skipped == 9
    assert rec.infos[-1].slot == 10
    # the schedule is unchanged: the next tick is due at the original grid point
    manual_clock.advance(0.5 * PERIOD)
    assert t.wait_for_ticks(3, 5.0)
    assert rec.infos[-1].scheduled == pytest.approx(rec.infos[0].scheduled + 11 * PERIOD)


def test_pause_stops_ticks_and_step_runs_exactly_n(manual_clock, make_ticker):
    rec = Recorder()
    t = make_ticker(rec)
    advance_ticks(manual_clock, t, 3)
    t.pause()
    before = t.stats().ticks
    manual_clock.advance(100 * PERIOD)
    assert not t.wait_for_ticks(before + 1, 0.2)
    assert t.step(5).result(5.0) == before + 5
    assert t.stats().ticks == before + 5
    assert all(i.manual for i in rec.infos[-5:])


def test_step_needs_pause(make_ticker):
    t = make_ticker(Recorder())
    with pytest.raises(ClockStateError):
        t.step(1)


def test_resume_restarts_the_schedule_without_catching_up_the_pause(manual_clock, make_ticker):
    rec = Recorder()
    t = make_ticker(rec)
    advance_ticks(manual_clock, t, 2)
    t.pause()
    manual_clock.advance(50 * PERIOD)
    n = t.stats().ticks
    t.resume()
    assert t.wait_for_ticks(n + 1, 5.0)
    assert not t.wait_for_ticks(n + 2, 0.2)
    assert t.stats().skipped == 0
    advance_ticks(manual_clock, t, 3)
    assert t.stats().ticks == n + 4


def test_set_rate_changes_the_period_from_the_next_due_tick(manual_clock, make_ticker):
    rec = Recorder()
    t = make_ticker(rec)
    advance_ticks(manual_clock, t, 2)
    t.set_rate(8.0)  # 0.125 s period
    assert t.rate_hz == 8.0
    manual_clock.advance(PERIOD)  # the already-due slot keeps its time
    assert t.wait_for_ticks(4, 5.0)
    manual_clock.advance(0.0625)
    assert not t.wait_for_ticks(5, 0.2)
    manual_clock.advance(0.0625)
    assert t.wait_for_ticks(5, 5.0)
    assert rec.infos[-1].scheduled - rec.infos[-2].scheduled == pytest.approx(0.125)


def test_raising_the_rate_after_a_very_slow_one_takes_effect_at_once(manual_clock, make_ticker):
    # issue 10 finding 5: after 0.01 Hz the loop sleeps towards a tick 100 s away; a new
    # rate must wake it and count its next deadline from now, not from the old schedule
    rec = Recorder()
    t = make_ticker(rec, rate_hz=0.01)
    assert t.wait_for_ticks(1, 5.0)  # the first tick is due at once
    manual_clock.advance(1.0)
    t.set_rate(1 / PERIOD)
    manual_clock.advance(PERIOD)
    assert t.wait_for_ticks(2, 5.0)
    assert rec.infos[1].scheduled == pytest.approx(rec.infos[0].scheduled + 1.0 + PERIOD)
    advance_ticks(manual_clock, t, 3)
    assert t.stats().ticks == 5


def test_lowering_the_rate_keeps_the_next_due_tick(manual_clock, make_ticker):
    rec = Recorder()
    t = make_ticker(rec)
    assert t.wait_for_ticks(1, 5.0)
    t.set_rate(0.01)
    manual_clock.advance(PERIOD)  # the slot already due at the old rate still runs
    assert t.wait_for_ticks(2, 5.0)
    manual_clock.advance(PERIOD)
    assert not t.wait_for_ticks(3, 0.2)


def test_real_clock_a_raised_rate_ticks_within_its_new_period(on_pool):
    t = new_ticker(lambda info: None, 0.01, on_pool)  # real clock, next tick due in 100 s
    t.start()
    try:
        assert t.wait_for_ticks(1, 5.0)
        t.set_rate(50.0)
        assert t.wait_for_ticks(6, 5.0)  # ~0.1 s at 50 Hz; the bound is only a safety net
    finally:
        assert t.stop(2.0)


@pytest.mark.parametrize(
    "bad", [0, -1, float("nan"), float("inf"), 10_000, True, "5", 5e-324, 1e-11, 0.009]
)
def test_rates_out_of_range_are_refused(make_ticker, bad):
    t = make_ticker(Recorder())
    with pytest.raises(ValueError):
        t.set_rate(bad)


def test_an_exception_in_a_tick_is_counted_and_the_loop_goes_on(manual_clock, make_ticker, caplog):
    calls: list[int] = []

    def flaky(info: TickInfo) -> None:
        calls.append(info.slot)
        if info.slot % 2 == 1:
            raise RuntimeError("boom")

    t = make_ticker(flaky)
    advance_ticks(manual_clock, t, 6)
    assert t.stats().errors == 3
    assert t.stats().ticks == 7
    assert "boom" in caplog.text


def test_stop_returns_within_the_bound_while_waiting_for_a_far_deadline(on_pool):
    t = new_ticker(lambda info: None, 0.01, on_pool)  # real clock, next tick due in 100 s
    t.start()
    assert t.wait_for_ticks(1, 5.0)
    stopped = threading.Event()

    def stop() -> None:
        if t.stop(2.0):
            stopped.set()

    threading.Thread(target=stop).start()
    assert stopped.wait(2.5)
    assert not t.running


def test_stop_cancels_pending_steps(manual_clock, on_pool):
    gate, entered = threading.Event(), threading.Event()

    def slow(info: TickInfo) -> None:
        entered.set()
        gate.wait(5)

    t = new_ticker(slow, 20, on_pool, manual_clock, start_paused=True)
    t.start()
    fut = t.step(3)
    assert entered.wait(5)
    assert t.stop(0.2) is False  # the running tick holds it beyond the bound
    gate.set()
    wait_for(lambda: not t.stats().running, 5, what="loop to end")
    wait_for(fut.done, 5, what="pending step to be cancelled")
    assert fut.cancelled()


def test_real_clock_deadlines_are_exact_multiples_of_the_period(on_pool):
    rec = Recorder()
    t = new_ticker(rec, 200.0, on_pool)
    t.start()
    try:
        assert t.wait_for_ticks(40, 10.0)
    finally:
        assert t.stop(2.0)
    t0 = rec.infos[0].scheduled
    for info in rec.infos:
        if not info.manual:
            assert info.scheduled == pytest.approx(t0 + info.slot / 200.0, abs=1e-9)
            assert info.started >= info.scheduled
