"""How commands and published snapshots travel between the API and a world's loop, by URL.

``local://`` (the default) is in-process; ``redis://host/db?prefix=wl:`` is the scale-out bus on
Redis Streams (bus/redis.py, SCALEOUT.md), loaded on first use. Plug-ins add schemes with
:func:`register_bus`.
"""

from __future__ import annotations

from typing import Any, Protocol

from ..errors import ConfigError
from .base import Bus
from .local import LocalBus


class BusFactory(Protocol):
    """Builds the bus of ``world`` for a URL of its scheme."""

    def __call__(self, url: str, world: str, *, queue_size: int, **options: Any) -> Bus: ...


_factories: dict[str, BusFactory] = {}


def register_bus(scheme: str, factory: BusFactory) -> None:
    """Open bus URLs of ``scheme`` with ``factory``."""
    _factories[scheme.lower()] = factory


def open_bus(
    url: str = "local://", world: str = "world", *, queue_size: int = 10_000, **options: Any
) -> Bus:
    """The bus of ``world`` at ``url``: ``queue_size`` commands may wait (then QueueFull)."""
    scheme = url.partition("://")[0].lower() if "://" in url else ""
    factory = _factories.get(scheme)
    if factory is None:
        known = sorted(_factories)
        raise ConfigError(
            f"bus URL {url!r}: unknown scheme {scheme!r}; known: {', '.join(known)}",
            details={"url": url, "known": known},
        )
    return factory(url, world, queue_size=queue_size, **options)


def _open_local(url: str, world: str, *, queue_size: int, **options: Any) -> Bus:
    return LocalBus(world, queue_size=queue_size, **options)


def _open_redis(url: str, world: str, *, queue_size: int, **options: Any) -> Bus:
    from ..lease.redis import connect, redis_url_options
    from .redis import RedisBus

    base, opts = redis_url_options(url)
    if "feed" in opts:
        options.setdefault("feed_length", int(opts["feed"]))
    allowed = {"feed_length", "history", "key_seconds", "snapshot_cache_bytes", "read"}
    kwargs = {k: v for k, v in options.items() if k in allowed}
    prefix = opts.get("prefix", "wl:")
    return RedisBus(connect(base), world, prefix=prefix, queue_size=queue_size, url=url, **kwargs)


register_bus("local", _open_local)
register_bus("redis", _open_redis)

__all__ = ["Bus", "BusFactory", "LocalBus", "open_bus", "register_bus"]
