"""Where background jobs run: a few daemon worker threads, what one run does there, and how a
run past its timeout is written off.

Background runs never touch the live world: they get the snapshot of the tick that claimed
their slot. Their bookkeeping is shared with the loop thread and admin requests, so it changes
only under the scheduler's lock, which is passed in.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING

from ..errors import ConfigError
from .runs import JobResult, JobState, Run, describe, jsonable

if TYPE_CHECKING:
    from ..snapshot import Snapshot

log = logging.getLogger("worldloop.jobs")


class WorkerPool:
    """A fixed number of daemon worker threads fed by a queue.

    Daemon threads, unlike ThreadPoolExecutor's, cannot hold the process open at exit: a hung
    background job must not break the bounded shutdown. The queue stays short because each
    job's runs are capped by its ``max_concurrent``.
    """

    def __init__(self, workers: int) -> None:
        if workers < 1:
            raise ConfigError("WORLDLOOP_JOB_WORKERS must be >= 1")
        self._queue: queue.SimpleQueue[Callable[[], None] | None] = queue.SimpleQueue()
        self._threads = [
            threading.Thread(target=self._work, name=f"worldloop-job-{i}", daemon=True)
            for i in range(workers)
        ]
        for t in self._threads:
            t.start()

    def submit(self, fn: Callable[[], None]) -> None:
        self._queue.put(fn)

    def _work(self) -> None:
        while True:
            fn = self._queue.get()
            if fn is None:
                return
            fn()  # the job wrapper catches and records everything

    def shutdown(self, wait: float) -> None:
        """Drop queued work, stop the workers, and wait up to ``wait`` s for running ones."""
        try:
            while True:
                self._queue.get_nowait()
        except queue.Empty:
            pass
        for _ in self._threads:
            self._queue.put(None)
        deadline = time.monotonic() + wait
        for t in self._threads:
            t.join(max(0.0, deadline - time.monotonic()))


def run_background(
    st: JobState,
    run: Run,
    snapshot: Snapshot,
    lock: AbstractContextManager[object],
    wall: Callable[[], float],
) -> None:
    """One background run, in a worker: call the job, then record how it ended, unless it was
    already written off as timed out. Any exception is logged and recorded, never raised."""
    spec, ctx = st.spec, run.ctx
    started = time.perf_counter()
    result: JobResult
    try:
        value = spec.func(snapshot, ctx)
    except Exception as exc:
        log.exception("background job %r failed (slot %s); it stays scheduled", spec.name, ctx.slot)
        result = JobResult(
            "error", ctx.slot, wall(), time.perf_counter() - started, None, describe(exc)
        )
    else:
        result = JobResult("ok", ctx.slot, wall(), time.perf_counter() - started, jsonable(value))
    with lock:
        if run in st.active:
            st.active.remove(run)
        if run.timed_out:
            log.warning("job %r: a timed-out run finished after %.3gs", spec.name, result.duration)
            return
        st.record(result)


def expire_runs(states: Iterable[JobState], now: float, wall: Callable[[], float]) -> None:
    """Write off every run past its job's timeout at monotonic ``now``: record it as timed out
    and tell it to cancel (a thread cannot be killed). The caller holds the scheduler's lock."""
    for st in states:
        limit = st.spec.timeout
        if limit is None:
            continue
        for run in st.active:
            if not run.timed_out and now - run.started > limit:
                run.timed_out = True
                run.ctx.cancelled.set()
                log.error(
                    "job %r: run for slot %s timed out after %gs; told to cancel",
                    st.spec.name,
                    run.ctx.slot,
                    limit,
                )
                st.record(
                    JobResult(
                        "timeout",
                        run.ctx.slot,
                        wall(),
                        now - run.started,
                        None,
                        f"timed out after {limit:g}s",
                    )
                )
