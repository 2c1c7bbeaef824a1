"""Who runs a world: exactly one holder of a world's lease advances it. Leases open by URL.

``memory://`` is held in this process (in-memory worlds, tests); ``file:///path.lock`` is an OS
file lock (the embedded mode: one process per store). :func:`default_lease_url` derives the
lease from the store URL, so a second server on the same store is refused. ``redis://host/db?
prefix=wl:&ttl=5`` is the scale-out lease (lease/redis.py, loaded on first use). Plug-ins add
schemes with :func:`register_lease`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from ..errors import ConfigError
from .base import Lease
from .file import FileLease
from .memory import MemoryLease


class LeaseFactory(Protocol):
    """Builds the lease of ``world`` for a URL of its scheme (not acquired yet)."""

    def __call__(self, url: str, world: str, *, wait: float) -> Lease: ...


_factories: dict[str, LeaseFactory] = {}


def register_lease(scheme: str, factory: LeaseFactory) -> None:
    """Open lease URLs of ``scheme`` with ``factory``."""
    _factories[scheme.lower()] = factory


def open_lease(url: str, world: str, *, wait: float = 0.0) -> Lease:
    """The lease of ``world`` at ``url``; ``acquire`` then tries for ``wait`` s."""
    scheme = url.partition("://")[0].lower() if "://" in url else ""
    factory = _factories.get(scheme)
    if factory is None:
        known = sorted(_factories)
        raise ConfigError(
            f"lease URL {url!r}: unknown scheme {scheme!r}; known: {', '.join(known)}",
            details={"url": url, "known": known},
        )
    return factory(url, world, wait=wait)


def default_lease_url(store_url: str, world: str, instance_path: str | Path) -> str:
    """The lease that goes with a store: a lock file beside a SQLite file, an in-process lease
    for a store in memory, and a lock file per world in the instance folder otherwise (a
    server store: one runner per host until the Redis lease takes over)."""
    if store_url in ("memory://", "sqlite://", "sqlite:///:memory:") or store_url.startswith(
        "memory://"
    ):
        return "memory://"
    if store_url.startswith("sqlite:///"):
        return f"file://{store_url.removeprefix('sqlite:///')}.lock"
    return f"file://{Path(instance_path) / f'worldloop-{world}.lock'}"


def _open_memory(url: str, world: str, *, wait: float) -> Lease:
    name = url.removeprefix("memory://") or world
    return MemoryLease(name, wait, world=world)


def _open_file(url: str, world: str, *, wait: float) -> Lease:
    path = url.removeprefix("file://")
    if not path:
        raise ConfigError(f"lease URL {url!r} names no file")
    return FileLease(path, world, wait=wait)


def _open_redis(url: str, world: str, *, wait: float) -> Lease:
    from .redis import DEFAULT_TTL, RedisLease, connect, redis_url_options

    base, opts = redis_url_options(url)
    ttl = float(opts.get("ttl", DEFAULT_TTL))
    prefix = opts.get("prefix", "wl:")
    return RedisLease(connect(base), world, prefix=prefix, ttl=ttl, wait=wait, url=url)


register_lease("memory", _open_memory)
register_lease("file", _open_file)
register_lease("redis", _open_redis)

__all__ = [
    "FileLease",
    "Lease",
    "LeaseFactory",
    "MemoryLease",
    "default_lease_url",
    "open_lease",
    "register_lease",
]
