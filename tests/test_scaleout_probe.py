"""The scale-out worker's /readyz reasons (worldloop.scaleout_probe) on a hand-driven clock:
each service is asked at most once per interval, a failing one is named until it answers
again, and lease_lost lasts from giving the world up until a newer epoch is served."""

from __future__ import annotations

from worldloop.errors import StoreError
from worldloop.scaleout_probe import ServiceProbe


class Flaky:
    """A Redis client and a store in one: each fails while ``down``; calls are counted."""

    def __init__(self) -> None:
        self.down = False
        self.calls = 0

    def ping(self) -> object:
        self.calls += 1
        if self.down:
            raise ConnectionError("Connection refused")
        return True

    def check_writable(self, timeout: float = 0.25) -> None:
        self.calls += 1
        if self.down:
            raise StoreError("write check failed: connection refused")


def test_services_are_named_while_down_and_asked_once_per_interval() -> None:
    now = [0.0]
    redis, store = Flaky(), Flaky()
    probe = ServiceProbe(redis, store, lambda: None, lambda: 1, every=1.0, clock=lambda: now[0])
    assert probe.problems() == []
    redis.down = store.down = True
    assert probe.problems() == []  # the answer of this interval is kept
    assert (redis.calls, store.calls) == (1, 1)
    now[0] = 1.0
    codes = [code for code, _ in probe.problems()]
    assert codes == ["redis_unreachable", "store_unreachable"]
    assert "Connection refused" in probe.problems()[0][1]
    redis.down = False
    now[0] = 2.5
    assert [code for code, _ in probe.problems()] == ["store_unreachable"]
    store.down = False
    now[0] = 3.5
    assert probe.problems() == []


def test_lease_lost_lasts_until_a_newer_epoch_is_served() -> None:
    given: list[tuple[str, int] | None] = [None]
    served = [3]
    probe = ServiceProbe(Flaky(), None, lambda: given[0], lambda: served[0])
    assert probe.problems() == []
    given[0] = ("lease not renewed within its ttl", 3)
    found = probe.problems()
    assert [code for code, _ in found] == ["lease_lost"] and "not renewed" in found[0][1]
    served[0] = 4  # a new owner published under a newer epoch
    assert probe.problems() == []
