"""Token buckets per key (one per player token, one per client address for sign-ups), behind one
small protocol chosen by URL: ``memory://`` (this process, the default) or ``redis://…`` (every
worker of the deployment shares each bucket; api/ratelimit_redis.py, loaded on first use).

Both implementations keep the same contract (tests/contracts/test_limiter_contract.py): ``rate``
tokens a second refill a bucket of ``burst``; a hit takes one token or raises
:class:`~worldloop.api.errors.RateLimited` with the seconds until the next one (the 429's
``Retry-After``). A forgotten bucket is a full one, which only ever errs on the client's side.
"""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Protocol

from ..errors import ConfigError
from ..sizes import BUCKET_OVERHEAD, MiB
from .errors import RateLimited


class Limiter(Protocol):
    """Token buckets keyed by string: ``rate`` tokens/s refill up to ``burst``."""

    @property
    def rate(self) -> float: ...

    @property
    def burst(self) -> float: ...

    def hit(self, key: str) -> None:
        """Take one token for ``key`` or raise RateLimited with the wait until the next one."""
        ...


def refused(wait: float) -> RateLimited:
    """The error of a refused hit: ``wait`` seconds until a token is back (Retry-After)."""
    return RateLimited(f"rate limit exceeded; retry in {math.ceil(wait)} s", wait)


def check_rate(rate: float, burst: float) -> None:
    if not (rate > 0 and math.isfinite(rate)) or not (burst >= 1 and math.isfinite(burst)):
        raise ValueError("rate must be > 0 and burst >= 1")


class RateLimiter:
    """The in-process limiter (``memory://``): buckets in this process only.

    Bounded by memory: past ``max_bytes`` (estimated, ``worldloop.sizes``) the least recently
    used buckets go; a forgotten key starts again with a full bucket.
    """

    def __init__(
        self,
        rate: float,
        burst: float,
        *,
        max_bytes: int = 16 * MiB,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        check_rate(rate, burst)
        self.rate = float(rate)
        self.burst = float(burst)
        self.max_bytes = max_bytes
        self._bytes = 0
        self._clock = clock
        self._lock = threading.Lock()
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def hit(self, key: str) -> None:
        """Take one token for ``key`` or raise RateLimited with the wait until the next one."""
        now = self._clock()
        with self._lock:
            bucket = self._buckets.pop(key, None)
            if bucket is None:
                tokens, last = self.burst, now
                self._bytes += BUCKET_OVERHEAD + len(key)
            else:
                tokens, last = bucket
            tokens = min(self.burst, tokens + max(0.0, now - last) * self.rate)
            if tokens < 1.0:
                self._buckets[key] = (tokens, now)
                raise refused((1.0 - tokens) / self.rate)
            self._buckets[key] = (tokens - 1.0, now)
            while self._bytes > self.max_bytes and len(self._buckets) > 1:
                old, _ = self._buckets.popitem(last=False)
                self._bytes -= BUCKET_OVERHEAD + len(old)

    @property
    def memory_bytes(self) -> int:
        """Estimated bytes of the buckets kept."""
        return self._bytes

    def __len__(self) -> int:
        return len(self._buckets)

    def __contains__(self, key: object) -> bool:
        return key in self._buckets


def open_limiter(
    url: str,
    name: str,
    rate: float,
    burst: float,
    *,
    max_bytes: int = 16 * MiB,
    clock: Callable[[], float] | None = None,
) -> Limiter:
    """The limiter ``name`` (``token``, ``join``…) at ``url``: ``memory://`` or
    ``redis://host:port/db?prefix=wl:`` (keys ``{prefix}ratelimit:{name}:{key}``).

    ``clock``: seconds, for tests that drive time by hand; None is the monotonic clock in
    memory and the Redis server's own clock on Redis (one clock for every host)."""
    scheme = url.partition("://")[0].lower() if "://" in url else ""
    if scheme == "memory":
        return RateLimiter(rate, burst, max_bytes=max_bytes, clock=clock or time.monotonic)
    if scheme in ("redis", "rediss", "unix"):
        from .ratelimit_redis import RedisLimiter

        return RedisLimiter.from_url(url, name, rate, burst, clock=clock)
    raise ConfigError(
        f"rate-limit URL {url!r}: unknown scheme {scheme!r}; known: memory, redis, rediss, unix",
        details={"url": url, "known": ["memory", "redis", "rediss", "unix"]},
    )
