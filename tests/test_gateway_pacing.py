"""A viewer's ``hz`` on the gateway is paced in world ticks (worldloop.gateway.hub): an even
share of the ticks, caught up after a tick its channel missed, never a burst, and kept for a
viewer that was too far behind to be sent one."""

from __future__ import annotations

from typing import Any

from worldloop.api.stream import View
from worldloop.gateway.hub import MAX_BUFFER, Client, per_tick


class Transport:
    """What a client's asyncio transport shows the hub: its buffer, and what it was written."""

    def __init__(self) -> None:
        self.frames: list[bytes] = []
        self.buffered = 0

    def write(self, data: bytes) -> None:
        self.frames.append(data)

    def get_write_buffer_size(self) -> int:
        return self.buffered

    def is_closing(self) -> bool:
        return False


def client(hz: float | None) -> tuple[Client, Transport]:
    transport = Transport()
    tr: Any = transport
    return Client(View(None, 10, hz), tr), transport


def sent_ticks(transport: Transport) -> list[int]:
    return [int(f.decode()) for f in transport.frames]


def offer(c: Client, ticks: range | list[int], hz: float | None, rate: float = 20.0) -> None:
    for tick in ticks:
        c.offer(tick, str(tick).encode(), float(tick) / rate, per_tick(hz, rate))


def test_half_the_rate_takes_every_other_tick_from_the_first() -> None:
    c, t = client(10.0)
    offer(c, range(1, 21), 10.0)
    assert sent_ticks(t) == [1, 3, 5, 7, 9, 11, 13, 15, 17, 19]


def test_an_odd_rate_gets_its_share_of_the_ticks() -> None:
    c, t = client(7.0)
    offer(c, range(1, 201), 7.0)
    assert len(t.frames) == 1 + 199 * 7 // 20  # one at once, then 7/20 of the ticks after it
    gaps = {b - a for a, b in zip(sent_ticks(t), sent_ticks(t)[1:], strict=False)}
    assert gaps == {2, 3}


def test_a_missed_tick_is_caught_up_once_and_never_in_a_burst() -> None:
    c, t = client(10.0)
    offer(c, [1, 2, 4, 5, 6, 7, 20, 21, 22, 23], 10.0)  # 3 missed; then 8 to 19
    assert sent_ticks(t) == [1, 4, 5, 7, 20, 21, 23]


def test_a_client_behind_keeps_its_turn_for_the_next_tick() -> None:
    c, t = client(10.0)
    offer(c, [1], 10.0)
    t.buffered = MAX_BUFFER + 1
    offer(c, [2, 3], 10.0)
    assert c.skipped == 1
    t.buffered = 0
    offer(c, [4, 5, 6, 7], 10.0)
    assert sent_ticks(t) == [1, 4, 5, 7]


def test_uncapped_or_at_the_rate_takes_every_tick() -> None:
    for hz in (None, 20.0, 50.0):
        c, t = client(hz)
        offer(c, range(1, 6), hz)
        assert sent_ticks(t) == [1, 2, 3, 4, 5]
