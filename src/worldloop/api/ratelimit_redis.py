"""The deployment-wide limiter (``redis://host:port/db?prefix=wl:``): every worker of every host
takes its tokens from the same bucket, so a limit holds for the deployment, not per worker.

One Lua script refills and takes in one step (atomic on the Redis server: two workers can never
both take the last token). It is hand-written because the semantics are a token bucket with a
continuous refill (``rate`` per second up to ``burst``, the 429's Retry-After to the next token),
the same as the in-process limiter; ``limits``/flask-limiter (not a dependency) offer fixed and
moving windows only, and pyrate-limiter (only in the dev lock, via schemathesis) counts items
per interval without a fractional refill, so neither keeps the burst/rate/Retry-After contract.

Time is the Redis server's clock (``TIME`` in the script), one clock for every host; tests pass
their own. A bucket's key expires when it would be full again, which is exactly what a missing
key means, so Redis keeps only the buckets that are still limiting someone.

Redis unreachable: the limiter **fails open** (the request goes on unchecked), logs once per
``backoff`` and counts ``worldloop_rate_limit_unchecked_total``, and does not try Redis again
for ``backoff`` seconds so no request waits on a dead connection. Why open, not 503: a limit
protects capacity, not correctness; the Redis mode's commands travel on the same Redis, so while
it is down writes are refused with 503 + Retry-After by the bus anyway, and reads are served
from the worker's last snapshot — a closed limiter would turn those working reads into errors.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..lease.redis import connect, redis_url_options
from ..metrics import RATE_LIMIT_UNCHECKED
from .ratelimit import check_rate, refused

if TYPE_CHECKING:
    import redis

log = logging.getLogger("worldloop.ratelimit")

TAKE = """
local burst, rate, now = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
if now < 0 then
  local t = redis.call('TIME')
  now = tonumber(t[1]) + tonumber(t[2]) / 1000000
end
local b = redis.call('HMGET', KEYS[1], 't', 'at')
local tokens, at = tonumber(b[1]), tonumber(b[2])
if tokens == nil or at == nil then
  tokens, at = burst, now
end
tokens = math.min(burst, tokens + math.max(0, now - at) * rate)
local ok = 0
if tokens >= 1 then
  tokens = tokens - 1
  ok = 1
end
redis.call('HSET', KEYS[1], 't', string.format('%.17g', tokens), 'at', string.format('%.6f', now))
redis.call('PEXPIRE', KEYS[1], math.max(1, math.ceil((burst - tokens) / rate * 1000)))
if ok == 1 then
  return {1, '0'}
end
return {0, string.format('%.17g', (1 - tokens) / rate)}
"""
"""KEYS[1]: the bucket; ARGV: burst, rate, now (seconds; < 0: the server's clock). Returns
``{1, '0'}`` for a token taken, ``{0, wait}`` for a refusal (wait as a string: Redis turns a
Lua number into an integer)."""

BACKOFF = 1.0
"""Seconds the limiter lets requests through unchecked after Redis failed, before trying again."""


class RedisLimiter:
    """Token buckets on Redis shared by every worker; see the module docstring."""

    def __init__(
        self,
        client: redis.Redis,
        name: str,
        rate: float,
        burst: float,
        *,
        prefix: str = "wl:",
        clock: Callable[[], float] | None = None,
        backoff: float = BACKOFF,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        check_rate(rate, burst)
        self.client = client
        self.name = name
        self.rate = float(rate)
        self.burst = float(burst)
        self.prefix = f"{prefix}ratelimit:{name}:"
        self.backoff = float(backoff)
        self._clock = clock
        self._monotonic = monotonic
        self._take = client.register_script(TAKE)
        self._lock = threading.Lock()
        self._down_until = 0.0

    @classmethod
    def from_url(
        cls,
        url: str,
        name: str,
        rate: float,
        burst: float,
        *,
        clock: Callable[[], float] | None = None,
    ) -> RedisLimiter:
        base, opts = redis_url_options(url)
        return cls(connect(base), name, rate, burst, prefix=opts.get("prefix", "wl:"), clock=clock)

    def __repr__(self) -> str:
        return f"RedisLimiter({self.prefix!r}, rate={self.rate}, burst={self.burst})"

    def key(self, key: str) -> str:
        """The Redis key of ``key``'s bucket."""
        return self.prefix + key

    def hit(self, key: str) -> None:
        """Take one token for ``key`` or raise RateLimited with the wait until the next one;
        let the request through (fail open) while Redis is unreachable."""
        if self._down_until and self._monotonic() < self._down_until:
            RATE_LIMIT_UNCHECKED.labels(self.name).inc()
            return
        now = -1.0 if self._clock is None else float(self._clock())
        try:
            reply: Any = self._take(keys=[self.key(key)], args=[self.burst, self.rate, now])
        except Exception as exc:  # refused, timed out, or an error reply: never a 500
            self._unchecked(exc)
            return
        if self._down_until:
            with self._lock:
                was, self._down_until = self._down_until, 0.0
            if was:
                log.warning("rate limit %r: Redis answers again; limits apply", self.name)
        if int(reply[0]) != 1:
            raise refused(float(reply[1]))

    def _unchecked(self, exc: BaseException) -> None:
        RATE_LIMIT_UNCHECKED.labels(self.name).inc()
        with self._lock:
            first = self._down_until == 0.0
            self._down_until = self._monotonic() + self.backoff
        if first:
            log.error(
                "rate limit %r: Redis unreachable or failing (%s); requests pass unchecked "
                "(fail open), retrying Redis every %.1f s",
                self.name,
                exc,
                self.backoff,
            )
