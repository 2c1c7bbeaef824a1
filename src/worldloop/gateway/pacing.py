"""Fan-out pacing: a tick's frames go out in slices, not in one burst of a thousand writes.

Writing one frame to 1,000 sockets in one go hands the kernel 1,000 packets at once, and the
packets of everyone else on the host (an API request to the web workers, its answer) wait
behind that burst. Measured with `bench/gateway.py --phases viewers` (1,000 viewers at 10 Hz
on the 100,000-creature demo world, the clients on the same 2 cores as the server), the API's
p99 with the viewers was 1.9 and 2.1 times its p99 without them when each frame went out in
one burst, and 1.24 to 1.88 times (median 1.39, eleven runs) written as below, for frames
about 12 ms later at the median. Lowering the priority of the gateway or of the viewers'
client processes made no difference the run-to-run noise could show.

So :func:`fan_out` writes at most PACE_WRITES frames, then lets the event loop (and every other
process) run for PACE_GAP, and so on; but it never spreads one tick's fan-out over more than
PACE_SHARE of a tick period: with more clients its slices grow instead, so frames never fall a
tick behind.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable, Iterable
from typing import TypeVar

PACE_WRITES = 50
"""Frames written back to back before the fan-out pauses."""
PACE_GAP = 0.001
"""The pause, s: long enough for the kernel and other processes to clear the slice."""
PACE_SHARE = 0.5
"""The most of a tick period one fan-out's pauses may take."""

T = TypeVar("T")


def slice_size(writes: int, period: float | None) -> int:
    """How many frames to write between pauses when ``writes`` clients want this tick's frame
    on a world ticking every ``period`` s (None: not ticking, PACE_WRITES)."""
    if period is None or period <= 0 or writes <= PACE_WRITES:
        return PACE_WRITES
    pauses = max(1, int(period * PACE_SHARE / PACE_GAP))
    return max(PACE_WRITES, math.ceil(writes / pauses))


async def fan_out(clients: Iterable[T], send: Callable[[T], bool], period: float | None) -> int:
    """Call ``send`` on each of ``clients`` (a copy is taken: clients may join or leave during
    the pauses), pausing PACE_GAP after every slice of sends that wrote (``send`` returns
    whether it did: a client skipping this tick costs no packet). Returns the writes."""
    todo = list(clients)
    size = slice_size(len(todo), period)
    written = 0
    last = len(todo) - 1
    for i, client in enumerate(todo):
        if send(client):
            written += 1
            if written % size == 0 and i < last:
                await asyncio.sleep(PACE_GAP)
    return written
