"""Where worlds are kept: the journal of applied commands and full snapshots, opened by URL.

``open_store(url)`` picks the backend by the URL's scheme: ``memory://`` (this process only),
``sqlite:///path`` and ``postgresql+psycopg://...`` (the SQL store). The SQL store, and with it
SQLAlchemy, is imported only when a SQL URL is opened, so ``import worldloop`` stays light.
Plug-ins add schemes with :func:`register_store`.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from ..errors import ConfigError
from .base import Recovery, SnapshotInfo, Store, journal_record
from .memory import MemoryStore

if TYPE_CHECKING:
    from .sql import SqlStore


class StoreFactory(Protocol):
    """Builds a store for a URL of its scheme (not connected yet: see :meth:`Store.open`)."""

    def __call__(
        self, url: str, *, schema: str | None, readonly: bool, **options: Any
    ) -> Store: ...


_factories: dict[str, StoreFactory] = {}


def register_store(scheme: str, factory: StoreFactory) -> None:
    """Open URLs of ``scheme`` (``scheme://...``, and ``scheme+driver://...``) with ``factory``."""
    _factories[scheme.lower()] = factory


def store_schemes() -> list[str]:
    """The URL schemes :func:`open_store` knows."""
    return sorted(_factories)


def open_store(
    url: str, *, schema: str | None = None, readonly: bool = False, **options: Any
) -> Store:
    """The store for ``url`` (not connected yet: the first use, or ``open()``, connects).

    ``schema``: the PostgreSQL schema holding the tables; ``readonly``: never create or change
    anything (the CLI beside a running server). Backend options pass through (the SQL store
    takes ``busy_timeout``). An unknown scheme is a ConfigError that lists the known ones.
    """
    url = str(url)
    scheme = url.partition("://")[0].lower() if "://" in url else ""
    factory = _factories.get(scheme) or _factories.get(scheme.partition("+")[0])
    if factory is None:
        raise ConfigError(
            f"store URL {url!r}: unknown scheme {scheme!r}; known: {', '.join(store_schemes())}",
            details={"url": url, "known": store_schemes()},
        )
    return factory(url, schema=schema, readonly=readonly, **options)


def default_store_url(instance_path: str | Path) -> str:
    """The embedded default: one SQLite file in the app's instance folder."""
    return f"sqlite:///{Path(instance_path) / 'worldloop.db'}"


def _open_memory(url: str, *, schema: str | None, readonly: bool, **options: Any) -> Store:
    return MemoryStore(url, readonly=readonly)


def _open_sql(url: str, *, schema: str | None, readonly: bool, **options: Any) -> Store:
    from .sql import SqlStore  # SQLAlchemy loads here, on the first SQL URL

    return SqlStore(url, schema=schema, readonly=readonly, **options)


register_store("memory", _open_memory)
register_store("sqlite", _open_sql)
register_store("postgresql", _open_sql)


def __getattr__(name: str) -> Any:
    """``SqlStore`` and ``SCHEMA_VERSION`` stay importable from here, loaded on first use."""
    if name in ("SqlStore", "SCHEMA_VERSION"):
        from . import sql

        return getattr(sql, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "SCHEMA_VERSION",
    "MemoryStore",
    "Recovery",
    "SnapshotInfo",
    "SqlStore",
    "Store",
    "StoreFactory",
    "default_store_url",
    "journal_record",
    "open_store",
    "register_store",
    "store_schemes",
]
