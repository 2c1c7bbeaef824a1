"""The runners of a scale-out deployment, registered in Redis with expiring entries.

Each process that may run worlds joins with its :class:`~worldloop.placement.Runner` record
and renews it every ttl/3 from a thread of its own; a clean stop removes it, a dead process
drops out after ttl. One sorted set ``{prefix}runners`` holds each runner's expiry (score,
milliseconds on the *Redis server's* clock, so hosts whose clocks disagree still agree on who
is alive) and one hash ``{prefix}runner_info`` its record. The scripts read ``TIME`` inside
Redis and prune the expired entries as they list, so the list never shows a runner past its
expiry however long ago it died.

A channel ``{prefix}released`` carries the name of each world a runner hands over
gracefully, so the next owner takes it at once rather than at its next poll.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import orjson

from .placement import Runner

if TYPE_CHECKING:
    import redis

log = logging.getLogger("worldloop.registry")

JOIN = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
redis.call('HSET', KEYS[2], ARGV[1], ARGV[3])
return now
"""
LIST = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local gone = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now)
if #gone > 0 then
  redis.call('ZREM', KEYS[1], unpack(gone))
  redis.call('HDEL', KEYS[2], unpack(gone))
end
local ids = redis.call('ZRANGE', KEYS[1], 0, -1)
if #ids == 0 then return {} end
return redis.call('HMGET', KEYS[2], unpack(ids))
"""


def _runner(raw: Any) -> Runner | None:
    if raw is None:
        return None
    try:
        d = orjson.loads(raw)
        return Runner(str(d["id"]), str(d["host"]), int(d["pid"]), float(d["capacity"]))
    except (ValueError, KeyError, TypeError):
        return None


class RunnerRegistry:
    """This process's entry among the deployment's runners, and the list of all of them."""

    def __init__(
        self, client: redis.Redis, me: Runner, *, prefix: str = "wl:", ttl: float = 5.0
    ) -> None:
        self.client = client
        self.me = me
        self.ttl = float(ttl)
        self.prefix = prefix
        self._keys = [f"{prefix}runners", f"{prefix}runner_info"]
        self.channel = f"{prefix}released"
        self._join = client.register_script(JOIN)
        self._list = client.register_script(LIST)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._listener: threading.Thread | None = None
        self._pubsub: Any = None
        self.joined = False
        self.healthy: Callable[[], bool] | None = None
        """Asked before each renewal: False (this process cannot run worlds now, e.g. its
        store does not answer) takes the entry out until it answers True again."""

    def __repr__(self) -> str:
        return f"RunnerRegistry({self.me.id!r})"

    # -- this runner -------------------------------------------------------------------------

    def join(self) -> None:
        """Register now (raises if Redis does not answer) and keep the entry fresh."""
        if self.me.capacity > 0:
            self._renew()
            self.joined = True
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(
                target=self._renew_loop, name="worldloop-registry", daemon=True
            )
            self._thread.start()

    def _renew(self) -> None:
        record = orjson.dumps(self.me.describe())
        self._join(keys=self._keys, args=[self.me.id, int(self.ttl * 1000), record])

    def _renew_loop(self) -> None:
        while not self._stop.wait(self.ttl / 3):
            if self.me.capacity <= 0:
                continue
            try:
                if self.healthy is not None and not self.healthy():
                    if self.joined:
                        log.warning("runner %s leaves the registry until it is healthy", self.me.id)
                        self._remove()
                    continue
                if not self.joined:
                    log.info("runner %s (re)joins the registry", self.me.id)
                self._renew()
                self.joined = True
            except Exception as exc:  # Redis away: the entry expires; rejoin when it answers
                log.warning("runner registry: renewal failed: %s", exc)

    def _remove(self) -> None:
        pipe = self.client.pipeline()
        pipe.zrem(self._keys[0], self.me.id)
        pipe.hdel(self._keys[1], self.me.id)
        pipe.execute()
        self.joined = False

    def leave(self) -> None:
        """Stop renewing and remove the entry (a clean stop: the others re-place at once)."""
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None and thread is not threading.current_thread():
            thread.join(2.0)
        if self.joined:
            try:
                self._remove()
            except Exception as exc:
                log.warning("runner registry: leaving failed (%s); the entry expires", exc)
            self.joined = False
        self.stop_listening()

    # -- everyone ----------------------------------------------------------------------------

    def runners(self) -> list[Runner]:
        """The live runners, by id (expired entries pruned first)."""
        raw: Any = self._list(keys=self._keys)
        found = [r for r in (_runner(x) for x in raw or []) if r is not None]
        return sorted(found, key=lambda r: r.id)

    def announce_release(self, world: str) -> None:
        """Tell every process that ``world`` was handed over (best effort)."""
        try:
            self.client.publish(self.channel, world.encode())
        except Exception as exc:
            log.debug("runner registry: announcing %r failed: %s", world, exc)

    def listen(self, on_release: Callable[[str], None]) -> None:
        """Call ``on_release(world)`` for every world any runner hands over."""
        if self._listener is not None:
            return
        self._pubsub = self.client.pubsub(ignore_subscribe_messages=True)  # type: ignore[no-untyped-call]
        self._listener = threading.Thread(
            target=self._listen_loop,
            args=(on_release,),
            name="worldloop-released",
            daemon=True,
        )
        self._listener.start()

    def _listen_loop(self, on_release: Callable[[str], None]) -> None:
        subscribed = False
        while not self._stop.is_set():
            try:
                if not subscribed:
                    self._pubsub.subscribe(self.channel)
                    subscribed = True
                msg = self._pubsub.get_message(timeout=0.5)
            except Exception:  # Redis away: listen again when it answers
                subscribed = False
                self._stop.wait(0.5)
                continue
            if msg and msg.get("type") == "message":
                data = msg.get("data")
                on_release(data.decode() if isinstance(data, bytes) else str(data))

    def stop_listening(self) -> None:
        self._stop.set()
        listener, self._listener = self._listener, None
        if listener is not None and listener is not threading.current_thread():
            listener.join(2.0)
        if self._pubsub is not None:
            with contextlib.suppress(Exception):
                self._pubsub.close()
            self._pubsub = None
