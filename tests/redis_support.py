"""Redis helpers shared by the scale-out tests: the URL, a required-service check, a key
prefix per test (removed afterwards) so tests never see each other's keys, and a redis-server
of the test's own for the tests that stop or restart Redis (the shared one is never touched)."""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support import free_port, service_required, wait_for

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


OwnRedis = tuple[str, Callable[[], "subprocess.Popen[bytes]"]]


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[OwnRedis]:
    """A redis-server of the test's own without persistence, which the test may stop and start
    again on the same port (a restart loses every key): its URL and a function that starts it,
    returning its process. Killed at the end."""
    import redis

    server = shutil.which("redis-server")
    if server is None:
        if service_required("redis"):
            pytest.fail("redis-server is required under CI=true (a Redis the test may stop)")
        pytest.skip("no redis-server binary to run a Redis of the test's own")
    port = free_port()
    url = f"redis://127.0.0.1:{port}/0"
    procs: list[subprocess.Popen[bytes]] = []

    def start() -> subprocess.Popen[bytes]:
        argv = [server, "--port", str(port), "--bind", "127.0.0.1", "--save", ""]
        proc = subprocess.Popen(
            [*argv, "--appendonly", "no"], stdout=subprocess.DEVNULL, cwd=tmp_path
        )
        procs.append(proc)
        wait_for(lambda: redis.Redis.from_url(url, socket_connect_timeout=0.5).ping(), 10)
        return proc

    try:
        yield url, start
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait(10)


def scaleout_env(
    prefix: str,
    schema: str,
    *,
    ttl: float,
    poll: float,
    redis_url: str = REDIS_URL,
    pg_url: str | None = None,
    **extra: str,
) -> dict[str, str]:
    """The environment of a Redis-mode test server: this checkout on the path, the test's key
    prefix and schema, lease ttl and standby poll, a small Drift world at 20 Hz that hashes
    every tick and keeps its whole journal (for the oracles); ``extra`` on top."""
    from tests.store_support import PG_URL
    from tests.support import ROOT, SRC

    return {
        "PYTHONPATH": f"{SRC}:{ROOT}",
        "WORLDLOOP_REDIS_URL": redis_url,
        "WORLDLOOP_REDIS_PREFIX": prefix,
        "WORLDLOOP_STORE_URL": pg_url or PG_URL,
        "WORLDLOOP_STORE_SCHEMA": schema,
        "WORLDLOOP_LEASE_TTL": str(ttl),
        "WORLDLOOP_STANDBY_POLL": str(poll),
        "WORLDLOOP_RATE_HZ": "20",
        "WORLDLOOP_HASH_EVERY": "1",
        "WORLDLOOP_SNAPSHOT_EVERY": "100",
        "WORLDLOOP_JOURNAL_RETENTION": "1000000",
        "DRIFT_PARTICLES": "8",
        **extra,
    }
