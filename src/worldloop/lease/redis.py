"""The scale-out lease (``redis://host:port/db?prefix=wl:&ttl=5``): one holder per world on Redis.

``SET key value NX PX ttl`` takes it; a thread of its own renews it every ttl/3 with a
compare-and-extend script (only the holder's own value is extended, RedBeat #127), and a clean
stop releases it with compare-and-delete. Redis is not the safety: a holder paused past its ttl
(SIGSTOP, GC, a partition) may wake up believing it still holds it. Two things stop it:

- **self-fence**: :attr:`held` turns False once the monotonic clock passes the last confirmed
  renewal's send time + ttl x (1 - margin), before Redis can let the key expire, so the runtime
  stops ticking on its own (the ticks check :attr:`held`);
- **the epoch** in the store (``worldloop.store.epoch``), bumped by each new owner and checked in
  every journal, snapshot and prune transaction, so nothing the old holder writes commits.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit, urlunsplit

from ..errors import ConfigError, WorldLockedError

if TYPE_CHECKING:
    import redis

log = logging.getLogger("worldloop.lease")

EXTEND = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""
RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""

DEFAULT_TTL = 5.0
MARGIN = 0.2
"""Share of the ttl a holder gives up before the key can expire (clock rate drift, the
Redis side's own expiry granularity, one tick in flight)."""


def redis_url_options(url: str) -> tuple[str, dict[str, str]]:
    """``url`` without its worldloop query options, and those options (``prefix``, ``ttl``…)."""
    parts = urlsplit(url)
    opts = {k: v[-1] for k, v in parse_qs(parts.query).items()}
    mine: dict[str, str] = {k: opts.pop(k) for k in ("prefix", "ttl", "feed", "poll") if k in opts}
    query = "&".join(f"{k}={v}" for k, v in opts.items())
    return urlunsplit((parts.scheme, parts.netloc, parts.path, query, "")), mine


def connect(url: str) -> redis.Redis:
    """A client for ``url`` (redis-py, imported here: the embedded mode never loads it)."""
    try:
        import redis
    except ImportError as exc:  # pragma: no cover - the extra is installed with the mode
        raise ConfigError("the Redis mode needs redis-py: pip install 'worldloop[redis]'") from exc
    return redis.Redis.from_url(url, socket_timeout=2.0, socket_connect_timeout=2.0)


class RedisLease:
    """A world's lease on Redis, renewed from its own thread; see the module docstring."""

    def __init__(
        self,
        client: redis.Redis,
        world: str,
        *,
        prefix: str = "wl:",
        ttl: float = DEFAULT_TTL,
        wait: float = 0.0,
        url: str = "redis://",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if ttl <= 0:
            raise ConfigError(f"lease ttl must be > 0, not {ttl}")
        self.client = client
        self.world = world
        self.wait = float(wait)
        self.ttl = float(ttl)
        self.key = f"{prefix}{world}:lease"
        self._token_key = f"{prefix}{world}:lease:token"
        self._url = url
        self._clock = clock
        self._extend = client.register_script(EXTEND)
        self._release = client.register_script(RELEASE)
        self._me: str | None = None
        self._valid_until = 0.0
        self._token = 0
        self._stop = threading.Event()
        self._renewer: threading.Thread | None = None
        self.on_lost: Callable[[str], None] | None = None
        """Told why, once, when the lease is lost while held (renewal refused, or expired)."""

    def __repr__(self) -> str:
        return f"RedisLease({self.key!r})"

    @property
    def url(self) -> str:
        return self._url

    @property
    def held(self) -> bool:
        """True while acquired and confirmed by Redis recently enough that it cannot have
        expired there (the self-fence: False from the moment it might have)."""
        return self._me is not None and self._clock() < self._valid_until

    @property
    def token(self) -> int:
        return self._token

    def holder(self) -> str | None:
        raw: Any = self.client.get(self.key)
        if raw is None:
            return None
        text = raw.decode(errors="replace") if isinstance(raw, bytes) else str(raw)
        return text.rsplit(" ", 1)[0]

    def acquire(self, wait: float | None = None) -> None:
        if self._me is not None and self.held:
            return
        self._drop()
        bound = self.wait if wait is None else float(wait)
        deadline = self._clock() + max(0.0, bound)
        me = f"{socket.gethostname()} pid {os.getpid()} {uuid.uuid4().hex}"
        while True:
            sent = self._clock()
            if self.client.set(self.key, me, nx=True, px=int(self.ttl * 1000)):
                break
            left = deadline - self._clock()
            if left <= 0:
                holder = self.holder() or "unknown"
                raise WorldLockedError(
                    f"world {self.world!r} is already running on another runner ({holder}); "
                    "this one stands by and takes over when that lease frees",
                    details={"lease": self.key, "holder": holder},
                )
            time.sleep(min(0.05, left))
        self._me = me
        self._valid_until = sent + self.ttl * (1 - MARGIN)
        self._token = int(self.client.incr(self._token_key))
        self._stop = threading.Event()
        self._renewer = threading.Thread(
            target=self._renew_loop, args=(me, self._stop), name=f"lease-{self.world}", daemon=True
        )
        self._renewer.start()

    def release(self) -> None:
        me = self._me
        self._drop()
        if me is not None:
            try:
                self._release(keys=[self.key], args=[me])
            except Exception as exc:  # the key expires by itself: a failed delete only waits
                log.warning("lease %s: release failed (%s); it expires within its ttl", self, exc)

    def _drop(self) -> None:
        self._stop.set()
        renewer, self._renewer = self._renewer, None
        if renewer is not None and renewer is not threading.current_thread():
            renewer.join(2.0)
        self._me = None
        self._valid_until = 0.0

    def _renew_loop(self, me: str, stop: threading.Event) -> None:
        period = self.ttl / 3
        while not stop.wait(period):
            sent = self._clock()
            try:
                ok: Any = self._extend(keys=[self.key], args=[me, int(self.ttl * 1000)])
            except Exception as exc:
                log.warning("lease %s: renewal failed: %s", self, exc)
                if self._clock() >= self._valid_until:
                    self._lost(me, f"lease not renewed within its ttl: {exc}")
                    return
                continue
            if stop.is_set():
                return
            if not ok:
                self._lost(me, "lease taken over by another runner")
                return
            self._valid_until = sent + self.ttl * (1 - MARGIN)

    def _lost(self, me: str, why: str) -> None:
        if self._me != me:
            return
        self._valid_until = 0.0
        log.error("world %r: %s", self.world, why)
        if self.on_lost is not None:
            self.on_lost(why)
