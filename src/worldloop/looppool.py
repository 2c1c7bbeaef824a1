"""A bounded pool of loop threads that runs many tickers, each on its own deadline schedule.

One thread per world does not scale in count: a thousand worlds are a thousand threads whose
wake-ups fight for one interpreter lock. A :class:`LoopPool` keeps one deadline heap of the
tickers attached to it (each ticker's next deadline, on the ticker's unchanged semantics:
tick k due at t0 + k * period, overrun policy, pause/step/rate, calls) and serves it with at
most ``size`` threads, earliest deadline first. A ticker in the pool is claimed by one thread
for one piece of work (a tick, or its queued calls) and put back on the heap at its next
deadline, so no ticker ever runs on two threads at once (the one-writer invariant) and a world
whose tick is slow or stuck holds one thread, never the others.

Only one idle thread (the *leader*) sleeps towards the earliest deadline; the others wait
untimed until the leader leaves to work, so a deadline wakes one thread, not all of them.
Threads start with the first ticker attached and end when the last one leaves. Locks: a
ticker's control lock may be held while taking the pool's lock, never the other way round.

At most ``size`` threads do work at once. A pool thread that waits without using the CPU — a
world's journal commit waiting on its fsync or on another world's transaction
(worldloop.store.group) — says so with :func:`blocking` and hands its turn on meanwhile: an
idle pool thread (or a new one, up to ``SPARE`` beyond ``size``) runs the next due world,
whose journal write can then join the transaction in flight. Without it, a pool of two could
group at most two worlds per transaction and many journaling worlds fell behind.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import logging
import math
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field

from .clock import Clock, MonotonicClock, Ticker

log = logging.getLogger("worldloop.looppool")

SPARE = 64
"""Most threads a pool starts beyond its size for turns handed on in :func:`blocking`."""

_here = threading.local()
"""The pool whose thread this is (set by the pool's threads)."""


@contextlib.contextmanager
def blocking() -> Iterator[None]:
    """Around a wait that uses no CPU: on a pool thread, its turn goes to another thread
    meanwhile (see the module doc); anywhere else this does nothing."""
    pool: LoopPool | None = getattr(_here, "pool", None)
    if pool is None:
        yield
        return
    pool._block(1)
    try:
        yield
    finally:
        pool._block(-1)


def default_size() -> int:
    """The default number of loop threads: the CPUs this process may use, at most 4 (the
    worlds share one interpreter lock: more threads add switches, not throughput)."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not on Linux
        cpus = os.cpu_count() or 1
    return max(1, min(4, cpus))


@dataclass(slots=True)
class _Slot:
    """A ticker's place in the pool: which heap entry is current, and who runs it now."""

    gen: int = 0
    """Bumped at each (re)scheduling: heap entries of an older generation are stale."""
    running: bool = False
    """Claimed by a pool thread: nothing but that thread schedules it again."""


@dataclass(frozen=True, slots=True)
class PoolStats:
    """How many threads serve how many tickers (a copy; read without locks)."""

    size: int
    threads: int
    tickers: int
    served: int
    """Pieces of work (ticks, batches of calls) run since the pool was made."""


@dataclass(order=True, slots=True)
class _Entry:
    due: float
    seq: int
    gen: int = field(compare=False)
    ticker: Ticker = field(compare=False)


class LoopPool:
    """Runs the tickers attached to it on at most ``size`` threads (see the module doc)."""

    def __init__(self, size: int, *, clock: Clock | None = None, name: str = "worldloop-pool"):
        if size < 1:
            raise ValueError("a loop pool needs at least one thread")
        self.size = size
        self.clock: Clock = clock or MonotonicClock()
        self.name = name
        self._lock = threading.Lock()
        self._lead = threading.Condition(self._lock)
        """The leader sleeps here towards the earliest deadline (the clock wakes it too)."""
        self._follow = threading.Condition(self._lock)
        """The other idle threads wait here, untimed, for their turn to lead."""
        self._heap: list[_Entry] = []
        self._slots: dict[Ticker, _Slot] = {}
        self._seq = itertools.count()
        self._threads: set[threading.Thread] = set()
        self._names = itertools.count(1)
        self._leading = False
        self._served = 0
        self._active = 0
        """Pool threads doing work now, not counting those waiting in :func:`blocking`."""
        self._blocked = 0
        self._pid = os.getpid()

    # -- what tickers call (each holding its own control lock) -------------------------------

    def attach(self, ticker: Ticker) -> None:
        """Serve ``ticker`` from now on, first at its current deadline."""
        with self._lock:
            if os.getpid() != self._pid:  # forked: the parent's threads are not here
                self._pid = os.getpid()
                self._threads.clear()
                self._leading = False
                self._active = self._blocked = 0
            if ticker in self._slots:
                raise ValueError("this ticker is already in the pool")
            slot = self._slots[ticker] = _Slot()
            self._place(ticker, slot, ticker._due())
            self._ensure_idle()
            while len(self._threads) < min(self.size, len(self._slots)):
                self._spawn()

    def _spawn(self) -> None:
        thread = threading.Thread(
            target=self._serve, name=f"{self.name}-{next(self._names)}", daemon=True
        )
        self._threads.add(thread)
        thread.start()

    def _block(self, by: int) -> None:
        """A working pool thread starts (``1``) or ends (``-1``) a wait that uses no CPU."""
        with self._lock:
            self._active -= by
            self._blocked += by
            if by > 0:  # its turn goes to an idle thread, or to a new one
                if self._heap:
                    self._ensure_idle()
                self._lead.notify()

    def _ensure_idle(self) -> None:
        """While turns are handed on (threads waiting in blocking()), keep one idle thread to
        take due work: without it, work placed now would wait for the waits to end."""
        idle = len(self._threads) - self._active - self._blocked
        if idle == 0 and self._blocked and len(self._threads) < self.size + SPARE:
            self._spawn()

    def wake(self, ticker: Ticker) -> None:
        """``ticker``'s schedule changed (rate, pause, step, call, stop): place it again,
        unless a pool thread holds it (that thread places it when done)."""
        with self._lock:
            slot = self._slots.get(ticker)
            if slot is not None and not slot.running:
                self._place(ticker, slot, ticker._due())
                self._ensure_idle()

    def detach(self, ticker: Ticker) -> bool:
        """Forget ``ticker`` if no pool thread runs it now (True: the caller ends it); else
        False, and the thread that runs it ends it once its work is done."""
        with self._lock:
            slot = self._slots.get(ticker)
            if slot is None or slot.running:
                return False
            self._forget(ticker)
            return True

    # -- observation ---------------------------------------------------------------------

    def stats(self) -> PoolStats:
        return PoolStats(self.size, len(self._threads), len(self._slots), self._served)

    def __len__(self) -> int:
        """The number of tickers attached."""
        return len(self._slots)

    # -- inside the pool (pool lock held) --------------------------------------------------

    def _place(self, ticker: Ticker, slot: _Slot, due: float) -> None:
        """Put ``ticker`` on the heap at ``due`` (``inf``: off it until a wake)."""
        slot.gen += 1
        slot.running = False
        if due == math.inf:
            return
        entry = _Entry(due, next(self._seq), slot.gen, ticker)
        heapq.heappush(self._heap, entry)
        if self._heap[0] is entry:
            self._lead.notify()  # the leader sleeps towards a later deadline: look again

    def _forget(self, ticker: Ticker) -> None:
        del self._slots[ticker]
        # Its entries go now, not when their deadlines come up: they hold the ticker, and
        # through it the world (a hibernated world's memory is to be returned at once).
        self._heap[:] = [e for e in self._heap if e.ticker is not ticker]
        heapq.heapify(self._heap)
        if not self._slots:
            self._heap.clear()
            self._lead.notify_all()
            self._follow.notify_all()

    def _claim(self) -> Ticker | None:
        """Wait for the earliest due ticker and claim it; None when the pool is empty."""
        me = threading.current_thread()
        while True:
            if not self._slots or me not in self._threads:
                self._threads.discard(me)
                return None
            heap = self._heap
            if heap:
                top = heap[0]
                slot = self._slots.get(top.ticker)
                if slot is None or slot.gen != top.gen:
                    heapq.heappop(heap)  # stale: rescheduled or gone since
                    continue
                if top.due <= self.clock.now():
                    if self._active >= self.size:  # every turn taken: wait for one to end
                        due = math.inf
                    else:
                        heapq.heappop(heap)
                        slot.running = True
                        self._active += 1
                        if not self._leading:
                            self._follow.notify()  # an idle thread takes the lead meanwhile
                        return top.ticker
                else:
                    due = top.due
            else:
                due = math.inf
            if self._leading:
                self._follow.wait()
                continue
            self._leading = True
            try:
                if due < math.inf:
                    self.clock.wait(self._lead, due)
                else:
                    self._lead.wait()  # for work, or for a turn to end (notified)
            finally:
                self._leading = False

    # -- a pool thread ---------------------------------------------------------------------

    def _serve(self) -> None:
        _here.pool = self
        while True:
            with self._lock:
                ticker = self._claim()
            if ticker is None:
                return
            try:
                self._run(ticker)
            except BaseException:  # contained: this ticker ends, the pool goes on
                log.exception("ticker %s died on a pool thread; the others go on", ticker.name)
                self._end(ticker)
            finally:
                with self._lock:
                    self._active -= 1
                    self._lead.notify()  # a leader waiting for a turn may take this one
            # Not held while this thread waits for the next: a world that left the pool (and
            # hibernated) is to be freed now, not when this thread next finds work.
            del ticker

    def _run(self, ticker: Ticker) -> None:
        """Do the work ``ticker`` has due now, then put it back at its next deadline."""
        with ticker._cv:
            work = ticker._next(self.clock.now())
            if isinstance(work, float):  # its schedule moved since it was placed
                with self._lock:
                    self._place(ticker, self._slots[ticker], work)
                return
        if work is None:  # stopping
            self._end(ticker)
            return
        ticker._owner = threading.current_thread()
        try:
            ticker._work(work)
        finally:
            ticker._owner = None
        with ticker._cv, self._lock:
            self._served += 1
            self._place(ticker, self._slots[ticker], ticker._due())

    def _end(self, ticker: Ticker) -> None:
        with self._lock:
            if ticker in self._slots:
                self._forget(ticker)
        ticker._finish()
