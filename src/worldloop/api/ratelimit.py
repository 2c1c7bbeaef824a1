"""Per-key token buckets (one per player token, one per client address for sign-ups)."""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable

from ..sizes import BUCKET_OVERHEAD, MiB
from .errors import RateLimited


class RateLimiter:
    """Token buckets keyed by string: ``rate`` tokens/s refill up to ``burst``.

    Bounded by memory: past ``max_bytes`` (estimated, ``worldloop.sizes``) the least recently
    used buckets go; a forgotten key starts again with a full bucket, which only ever errs on
    the client's side.
    """

    def __init__(
        self,
        rate: float,
        burst: float,
        *,
        max_bytes: int = 16 * MiB,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("rate must be > 0 and burst >= 1")
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
            tokens = min(self.burst, tokens + (now - last) * self.rate)
            if tokens < 1.0:
                self._buckets[key] = (tokens, now)
                wait = (1.0 - tokens) / self.rate
                raise RateLimited(f"rate limit exceeded; retry in {math.ceil(wait)} s", wait)
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
