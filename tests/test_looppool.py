"""The loop pool: many tickers on a bounded number of threads, each on its own schedule.

Schedules are checked on a clock driven by hand; the one-writer guard and the thread bound are
checked on the real clock, with real threads racing.
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict

import pytest

from worldloop import ManualClock, Ticker, TickInfo
from worldloop.looppool import LoopPool, default_size

from .support import wait_for

PERIOD = 0.0625


class Guarded:
    """A world's tick that proves no second thread is inside it: a lock taken without waiting
    (a second thread would fail to take it and count a violation)."""

    def __init__(self, fail_every: int = 0, hold: float = 0.0) -> None:
        self.hold = hold
        """Seconds each tick stays inside (sleeping: other threads run meanwhile)."""
        self.guard = threading.Lock()
        self.violations = 0
        self.infos: list[TickInfo] = []
        self.threads: set[str] = set()
        self.fail_every = fail_every

    def __call__(self, info: TickInfo) -> None:
        if not self.guard.acquire(blocking=False):
            self.violations += 1
            return
        try:
            self.infos.append(info)
            self.threads.add(threading.current_thread().name)
            if self.hold:
                time.sleep(self.hold)
            if self.fail_every and len(self.infos) % self.fail_every == 0:
                raise RuntimeError("this world's system fails")
        finally:
            self.guard.release()


def stop_all(tickers: list[Ticker]) -> None:
    for t in tickers:
        assert t.stop(5.0)


def test_many_tickers_on_two_threads_each_tick_on_its_own_schedule(manual_clock):
    pool = LoopPool(2, clock=manual_clock)
    rates = [16.0, 8.0, 4.0, 2.0, 1.0] * 4  # periods 1/16 .. 1 s: binary fractions, exact
    worlds = [Guarded() for _ in rates]
    tickers = []
    for i, (rate, world) in enumerate(zip(rates, worlds, strict=True)):
        manual_clock.advance(PERIOD / 4 if i % 3 == 0 else 0.0)  # different phases too
        t = Ticker(world, rate, pool=pool, name=f"w{i}")
        t.start()
        tickers.append(t)
        assert t.wait_for_ticks(1, 5.0)
    try:
        for _ in range(32):  # 2 s of manual time, one sixteenth at a time
            targets = [t.stats().ticks for t in tickers]
            manual_clock.advance(PERIOD)
            for t, w, before in zip(tickers, worlds, targets, strict=True):
                due = int((manual_clock.now() - w.infos[0].scheduled) * t.rate_hz + 1e-9) + 1
                assert t.wait_for_ticks(due, 5.0), (t.rate_hz, before, due)
        for t, w in zip(tickers, worlds, strict=True):
            t0 = w.infos[0].scheduled
            assert [i.slot for i in w.infos] == list(range(len(w.infos)))
            for info in w.infos:
                assert info.scheduled == pytest.approx(t0 + info.slot / t.rate_hz, abs=1e-9)
                assert info.started >= info.scheduled
            assert t.stats().overruns == 0 and t.stats().skipped == 0
            assert len(w.infos) == int((manual_clock.now() - t0) * t.rate_hz + 1e-9) + 1
        assert pool.stats().threads <= 2
    finally:
        stop_all(tickers)


def test_never_two_threads_in_one_world_at_once():
    pool = LoopPool(4)
    worlds = [Guarded(hold=0.0005) for _ in range(12)]  # ticks long enough to overlap
    tickers = [Ticker(w, 100.0, pool=pool, name=f"w{i}") for i, w in enumerate(worlds)]
    for t in tickers:
        t.start()
    calls: dict[int, list[str]] = defaultdict(list)
    stop = threading.Event()

    def controls(i: int) -> None:
        """Races every control against the pool's threads: calls, rate changes, pause/step."""
        t, w = tickers[i], worlds[i]
        n = 0
        while not stop.is_set():
            n += 1

            def inside(w: Guarded = w) -> None:
                if not w.guard.acquire(blocking=False):
                    w.violations += 1
                    return
                calls[i].append(threading.current_thread().name)
                time.sleep(0.0005)
                w.guard.release()

            t.call(inside).result(5.0)
            t.set_rate(50.0 if n % 2 else 100.0)
            if n % 5 == 0:
                t.pause()
                t.step(2).result(5.0)
                t.resume()

    racers = [threading.Thread(target=controls, args=(i,)) for i in range(0, 12, 3)]
    for r in racers:
        r.start()
    try:
        for t in tickers:
            assert t.wait_for_ticks(60, 20.0), [w.violations for w in worlds]
    finally:
        stop.set()
        for r in racers:
            r.join(10.0)
        stop_all(tickers)
    assert sum(w.violations for w in worlds) == 0
    used = set().union(*(w.threads for w in worlds))
    assert len(used) > 1  # the worlds really moved between threads: the guard was tested
    assert all(name.startswith("worldloop-pool") for name in used)
    assert all(calls[i] for i in range(0, 12, 3))


def test_a_raising_world_does_not_stop_the_others(manual_clock, caplog):
    pool = LoopPool(2, clock=manual_clock)
    bad = Guarded(fail_every=1)  # every tick raises
    good = [Guarded() for _ in range(5)]
    tickers = [Ticker(w, 1 / PERIOD, pool=pool) for w in [bad, *good]]
    for t in tickers:
        t.start()
    try:
        for n in range(2, 12):
            manual_clock.advance(PERIOD)
            for t in tickers:
                assert t.wait_for_ticks(n, 5.0)
        assert tickers[0].stats().errors == 11
        assert all(t.stats().errors == 0 for t in tickers[1:])
        assert all(len(w.infos) == 11 for w in good)
        assert "this world's system fails" in caplog.text
    finally:
        stop_all(tickers)


def test_a_stuck_world_holds_one_thread_and_the_others_go_on():
    pool = LoopPool(2)
    gate, entered = threading.Event(), threading.Event()

    def stuck(info: TickInfo) -> None:
        entered.set()
        gate.wait(10.0)

    slow = Ticker(stuck, 50.0, pool=pool)
    slow.start()
    assert entered.wait(5.0)
    others = [Ticker(Guarded(), 50.0, pool=pool) for _ in range(6)]
    for t in others:
        t.start()
    try:
        for t in others:  # 20 ticks at 50 Hz: 0.4 s, while the stuck world holds a thread
            assert t.wait_for_ticks(20, 10.0)
        assert not gate.is_set() and slow.stats().ticks == 0
    finally:
        gate.set()
        stop_all([slow, *others])


def test_a_world_that_dies_on_a_pool_thread_ends_alone(manual_clock):
    pool = LoopPool(1, clock=manual_clock)

    def dies(info: TickInfo) -> None:
        raise SystemExit("a tick that ends its thread")

    doomed = Ticker(dies, 1 / PERIOD, pool=pool)
    good = Guarded()
    alive = Ticker(good, 1 / PERIOD, pool=pool)
    doomed.start()
    alive.start()
    try:
        wait_for(lambda: not doomed.running, 5.0, what="the doomed ticker to end")
        manual_clock.advance(PERIOD)
        assert alive.wait_for_ticks(2, 5.0)
        assert pool.stats().threads == 1 and len(pool) == 1
    finally:
        assert doomed.stop(1.0)
        stop_all([alive])


def test_thread_count_does_not_grow_with_the_worlds():
    before = threading.active_count()
    pool = LoopPool(3)
    tickers = [Ticker(Guarded(), 20.0, pool=pool, name=f"w{i}") for i in range(200)]
    for t in tickers:
        t.start()
    try:
        for t in tickers:
            assert t.wait_for_ticks(2, 20.0)
        assert threading.active_count() <= before + 3
        assert pool.stats().threads == 3 and pool.stats().tickers == 200
    finally:
        stop_all(tickers)
    # the last ticker gone, the pool's threads end; the next one starts them again
    wait_for(lambda: pool.stats().threads == 0, 5.0, what="the pool's threads to end")
    wait_for(lambda: threading.active_count() <= before, 5.0, what="threads to be gone")
    again = Ticker(Guarded(), 20.0, pool=pool)
    again.start()
    try:
        assert again.wait_for_ticks(2, 5.0)
    finally:
        stop_all([again])


def test_stop_of_an_idle_ticker_ends_it_at_once_even_with_every_thread_busy():
    pool = LoopPool(1)
    gate, entered = threading.Event(), threading.Event()

    def busy(info: TickInfo) -> None:
        entered.set()
        gate.wait(10.0)

    hog = Ticker(busy, 50.0, pool=pool)
    hog.start()
    assert entered.wait(5.0)
    paused = Ticker(Guarded(), 50.0, pool=pool, start_paused=True)
    paused.start()
    pending = paused.step(1)  # queued, but the only thread is held by the hog
    try:
        assert paused.stop(1.0)
        assert pending.cancelled()
    finally:
        gate.set()
        stop_all([hog])


def test_a_pool_is_at_least_one_thread_and_shares_its_clock(manual_clock):
    with pytest.raises(ValueError):
        LoopPool(0)
    pool = LoopPool(1, clock=manual_clock)
    with pytest.raises(ValueError):
        Ticker(Guarded(), 10.0, pool=pool, clock=ManualClock())
    assert 1 <= default_size() <= 4


def test_a_tick_waiting_without_cpu_hands_its_turn_on_and_turns_stay_bounded() -> None:
    """On a pool of one thread, a world whose tick waits in blocking() (a journal commit
    waiting on its fsync, or on the transaction another world's write leads) does not hold the
    others up: its turn goes to another pool thread. At most ``size`` threads ever do work
    outside such waits, and once the waits are over the ticks run one at a time again."""
    from worldloop.looppool import blocking

    pool = LoopPool(1)
    release = threading.Event()
    entered = threading.Event()
    working = [0]
    most = [0]
    lock = threading.Lock()

    def count(delta: int) -> None:
        with lock:
            working[0] += delta
            most[0] = max(most[0], working[0])

    def waiter(info: TickInfo) -> None:
        count(1)
        try:
            with blocking():
                count(-1)
                entered.set()
                release.wait(10.0)
                count(1)
        finally:
            count(-1)

    others = [Guarded(hold=0.002) for _ in range(3)]

    def guarded(world: Guarded):  # type: ignore[no-untyped-def]
        def tick(info: TickInfo) -> None:
            count(1)
            try:
                world(info)
            finally:
                count(-1)

        return tick

    stuck = Ticker(waiter, 20.0, pool=pool, name="stuck")
    tickers = [Ticker(guarded(w), 20.0, pool=pool, name=f"w{i}") for i, w in enumerate(others)]
    try:
        stuck.start()
        assert entered.wait(5.0)
        for t in tickers:
            t.start()
        wait_for(lambda: all(len(w.infos) >= 10 for w in others), 10.0, what="the others tick")
        release.set()
        assert stuck.wait_for_ticks(3, 5.0), "the waiting world ticks again"
        assert most[0] == 1, "more than one thread worked at once on a pool of one"
        # the pool's own thread (waiting), the one its turn went to, and, while that one is
        # busy with a tick, one idle thread kept for due work (LoopPool._ensure_idle): three
        assert pool.stats().threads <= 3
        assert all(w.violations == 0 for w in others)
    finally:
        release.set()
        stop_all([stuck, *tickers])
