"""Redis helpers shared by the scale-out tests: the URL, a required-service check, and a key
prefix per test (removed afterwards) so tests never see each other's keys."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest

from tests.support import service_required

REDIS_URL = os.environ.get("WORLDLOOP_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


def redis_available() -> bool:
    try:
        import redis

        return bool(redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2).ping())
    except Exception:
        return False


def require_redis() -> None:
    if not redis_available():
        if service_required("redis"):
            pytest.fail(f"Redis is required under CI=true but {REDIS_URL} is unreachable")
        pytest.skip(f"Redis not reachable at {REDIS_URL}")


def drop_prefix(prefix: str) -> None:
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
    if keys:
        client.delete(*keys)
    client.close()


def redis_prefix() -> Iterator[str]:
    """A fresh key prefix on the test Redis (required: see :func:`require_redis`), deleted
    with every key under it afterwards (for a fixture)."""
    require_redis()
    prefix = f"wltest-{uuid.uuid4().hex[:12]}:"
    try:
        yield prefix
    finally:
        drop_prefix(prefix)


@pytest.fixture
def prefix() -> Iterator[str]:
    """A Redis key prefix of the test's own (tests/conftest.py makes it a fixture everywhere)."""
    yield from redis_prefix()


@pytest.fixture
def schema() -> Iterator[str]:
    """A PostgreSQL schema of the test's own, dropped afterwards."""
    from tests.store_support import drop_pg_schema, require_postgres

    require_postgres()
    name = f"wl_test_{uuid.uuid4().hex[:12]}"
    try:
        yield name
    finally:
        drop_pg_schema(name)
