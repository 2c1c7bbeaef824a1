"""The Limiter contract: the in-process limiter and the Redis one keep the same token bucket —
``burst`` hits at once, then one per ``1/rate`` s, a 429 wait that is the time to the next token,
refusals that take nothing, keys that do not share — on a clock driven by hand. The Redis one is
also shared by every limiter object on the same URL (every worker of a deployment) and atomic
under concurrent hits from separate connections."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest

from tests.redis_support import REDIS_URL, drop_prefix, require_redis
from worldloop import ManualClock
from worldloop.api.errors import RateLimited
from worldloop.api.ratelimit import Limiter, open_limiter


@dataclass(frozen=True)
class LimiterBackend:
    kind: str
    url: str
    shared: bool
    """Whether two limiter objects on this URL share their buckets (separate workers do)."""


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.redis)])
def place(request: pytest.FixtureRequest) -> Iterator[LimiterBackend]:
    if request.param == "memory":
        yield LimiterBackend("memory", "memory://", False)
    else:
        require_redis()
        prefix = f"wltest-{uuid.uuid4().hex[:12]}:"
        try:
            yield LimiterBackend("redis", f"{REDIS_URL}?prefix={prefix}", True)
        finally:
            drop_prefix(prefix)


Make = Callable[..., Limiter]


@pytest.fixture
def limiters(place: LimiterBackend, manual_clock: ManualClock) -> Make:
    """Opens limiters named ``name`` on ``place``, all on the test's hand-driven clock."""

    def make(rate: float = 2.0, burst: float = 3, name: str = "token") -> Limiter:
        return open_limiter(place.url, name, rate, burst, clock=manual_clock.now)

    return make


def takes(lim: Limiter, key: str, n: int) -> int:
    """How many of ``n`` hits on ``key`` were allowed."""
    allowed = 0
    for _ in range(n):
        try:
            lim.hit(key)
            allowed += 1
        except RateLimited:
            pass
    return allowed


def test_a_burst_then_the_wait_to_the_next_token(limiters: Make) -> None:
    lim = limiters(rate=2.0, burst=3)
    assert (lim.rate, lim.burst) == (2.0, 3.0)
    for _ in range(3):
        lim.hit("k")
    with pytest.raises(RateLimited) as err:
        lim.hit("k")
    assert err.value.retry_after == pytest.approx(0.5, abs=1e-6)
    assert err.value.status == 429 and err.value.code == "rate_limited"
    assert err.value.details["retry_after"] == 0.5
    assert "retry in 1 s" in err.value.message


def test_tokens_come_back_at_the_rate_and_the_wait_shrinks(
    limiters: Make, manual_clock: ManualClock
) -> None:
    lim = limiters(rate=2.0, burst=3)
    assert takes(lim, "k", 3) == 3
    manual_clock.advance(0.2)
    with pytest.raises(RateLimited) as err:
        lim.hit("k")
    assert err.value.retry_after == pytest.approx(0.3, abs=1e-6)
    manual_clock.advance(0.3)
    lim.hit("k")  # exactly one token back
    with pytest.raises(RateLimited):
        lim.hit("k")
    manual_clock.advance(1.0)
    assert takes(lim, "k", 5) == 2


def test_a_refusal_takes_nothing(limiters: Make, manual_clock: ManualClock) -> None:
    lim = limiters(rate=1.0, burst=1)
    lim.hit("k")
    assert takes(lim, "k", 50) == 0  # hammering does not push the next token further out
    manual_clock.advance(1.0)
    lim.hit("k")


def test_the_bucket_refills_up_to_the_burst_only(limiters: Make, manual_clock: ManualClock) -> None:
    lim = limiters(rate=10.0, burst=4)
    assert takes(lim, "k", 4) == 4
    manual_clock.advance(3600.0)
    assert takes(lim, "k", 10) == 4


def test_keys_and_names_do_not_share(limiters: Make) -> None:
    tokens, joins = limiters(rate=0.01, burst=2), limiters(rate=0.01, burst=2, name="join")
    assert takes(tokens, "a", 5) == 2
    assert takes(tokens, "b", 5) == 2
    assert takes(joins, "a", 5) == 2


def test_a_fractional_rate_and_burst(limiters: Make, manual_clock: ManualClock) -> None:
    lim = limiters(rate=0.25, burst=2.5)
    assert takes(lim, "k", 5) == 2  # 0.5 left
    manual_clock.advance(1.0)  # 0.75
    with pytest.raises(RateLimited) as err:
        lim.hit("k")
    assert err.value.retry_after == pytest.approx(1.0, abs=1e-6)
    manual_clock.advance(1.0)
    lim.hit("k")


def test_bad_rates_are_refused(place: LimiterBackend) -> None:
    for rate, burst in ((0.0, 5), (-1.0, 5), (1.0, 0.5), (float("inf"), 5)):
        with pytest.raises(ValueError):
            open_limiter(place.url, "token", rate, burst)


def test_limiters_on_one_url_share_buckets_when_the_backend_is_shared(
    place: LimiterBackend, limiters: Make
) -> None:
    first, second = limiters(rate=0.01, burst=4), limiters(rate=0.01, burst=4)
    assert takes(first, "k", 3) == 3
    assert takes(second, "k", 10) == (1 if place.shared else 4)


def test_concurrent_hits_never_take_more_than_the_burst(
    place: LimiterBackend, limiters: Make
) -> None:
    """8 threads, each with its own limiter object on a shared backend (its own Redis
    connection, as separate workers have), or one object in memory: exactly the burst passes."""
    burst = 25
    shared = limiters(rate=0.001, burst=burst)
    allowed: list[int] = []
    start = threading.Barrier(8)

    def hammer() -> None:
        lim = limiters(rate=0.001, burst=burst) if place.shared else shared
        start.wait()
        allowed.append(takes(lim, "hot", 20))

    threads = [threading.Thread(target=hammer) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert len(allowed) == 8 and sum(allowed) == burst


def test_an_unknown_scheme_is_a_config_error() -> None:
    from worldloop.errors import ConfigError

    with pytest.raises(ConfigError, match="unknown scheme"):
        open_limiter("mongodb://x", "token", 1.0, 1)
