"""A tick's frames leave the gateway a slice at a time (worldloop.gateway.pacing): the event loop
and everyone else on the host run between slices, a client skipping the tick costs no slice, and
a crowd too big for PACE_SHARE of a period gets bigger slices instead of a later frame."""

from __future__ import annotations

import asyncio

import pytest

from worldloop.gateway.pacing import PACE_GAP, PACE_SHARE, PACE_WRITES, fan_out, slice_size


def test_slices_are_pace_writes_until_the_pauses_would_take_too_much_of_a_period() -> None:
    period = 0.05
    most_pauses = int(period * PACE_SHARE / PACE_GAP)
    assert slice_size(10, period) == PACE_WRITES
    assert slice_size(PACE_WRITES * most_pauses, period) == PACE_WRITES
    big = PACE_WRITES * most_pauses * 4
    assert slice_size(big, period) == 4 * PACE_WRITES
    assert slice_size(big, None) == PACE_WRITES  # not ticking: nothing to keep up with


def run_fan_out(clients: list[int], wrote: set[int], period: float | None) -> list[int]:
    """Fan ``clients`` out (``wrote``: those whose send writes) beside a task that notes how
    many sends ran each time the loop let it run: the slices as the event loop saw them."""
    sends: list[int] = []
    seen: list[int] = []

    def send(client: int) -> bool:
        sends.append(client)
        return client in wrote

    async def main() -> None:
        done = False

        async def watch() -> None:
            while True:
                seen.append(len(sends))
                if done:
                    return
                await asyncio.sleep(0)

        watcher = asyncio.get_running_loop().create_task(watch())
        await asyncio.sleep(0)
        assert await fan_out(clients, send, period) == len(wrote)
        done = True
        await watcher

    asyncio.run(main())
    assert sends == clients  # everyone once, in order
    return sorted(set(seen))


def test_the_loop_runs_between_slices_of_writes() -> None:
    clients = list(range(2 * PACE_WRITES + 7))
    seen = run_fan_out(clients, set(clients), 0.05)
    assert seen == [0, PACE_WRITES, 2 * PACE_WRITES, len(clients)]


def test_a_client_that_skips_the_tick_costs_no_slice() -> None:
    clients = list(range(2 * PACE_WRITES + 7))
    every_other = set(clients[::2])  # 54 write, 53 skip: one pause, after the 50th write
    seen = run_fan_out(clients, every_other, 0.05)
    assert seen == [0, 2 * PACE_WRITES - 1, len(clients)]


def test_no_pause_after_the_last_write() -> None:
    clients = list(range(PACE_WRITES))
    assert run_fan_out(clients, set(clients), 0.05) == [0, PACE_WRITES]


def test_one_fan_out_stays_within_its_share_of_a_tick(monkeypatch: pytest.MonkeyPatch) -> None:
    """Pauses are counted, not timed: a crowd of 20 x the slices a period allows pauses no more
    often than PACE_SHARE of that period permits."""
    pauses: list[float] = []
    real_sleep = asyncio.sleep

    async def sleep(seconds: float) -> None:
        pauses.append(seconds)
        await real_sleep(0)

    period = 0.05
    most = int(period * PACE_SHARE / PACE_GAP)
    clients = list(range(PACE_WRITES * most * 20))
    monkeypatch.setattr(asyncio, "sleep", sleep)
    asyncio.run(fan_out(clients, lambda _c: True, period))
    assert pauses and all(p == PACE_GAP for p in pauses)
    assert most - 1 <= len(pauses) <= most
