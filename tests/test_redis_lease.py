"""The Redis lease beyond the contract: renewed past its ttl by its own thread, never extending
or deleting another holder's key, and self-fenced on the monotonic clock when renewals stop."""

from __future__ import annotations

import time

import pytest
import redis

from tests.redis_support import REDIS_URL
from worldloop.lease import open_lease
from worldloop.lease.redis import RedisLease

pytestmark = pytest.mark.redis


def wait_for(cond: object, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if callable(cond) and cond():
            return True
        time.sleep(0.02)
    return False


def test_renewal_keeps_the_lease_past_its_ttl(prefix: str) -> None:
    lease = open_lease(f"{REDIS_URL}?prefix={prefix}&ttl=0.6", "w")
    other = open_lease(f"{REDIS_URL}?prefix={prefix}&ttl=0.6", "w")
    lease.acquire()
    try:
        deadline = time.monotonic() + 2.0  # more than three ttls
        while time.monotonic() < deadline:
            assert lease.held
            assert not other.held
            time.sleep(0.1)
        with pytest.raises(Exception, match="already running"):
            other.acquire()
    finally:
        lease.release()
    other.acquire()  # released with compare-and-delete: free at once
    other.release()


def test_a_lost_key_is_neither_extended_nor_deleted_for_the_new_holder(prefix: str) -> None:
    client = redis.Redis.from_url(REDIS_URL)
    lost: list[str] = []
    lease = RedisLease(client, "w", prefix=prefix, ttl=0.6)
    lease.on_lost = lost.append
    lease.acquire()
    client.set(lease.key, "someone else", px=60_000)  # taken over (as after a pause)
    assert wait_for(lambda: lost, 2.0), "the renewal noticed it is not the holder any more"
    assert not lease.held and "taken over" in lost[0]
    assert client.pttl(lease.key) > 50_000  # not extended to our ttl
    lease.release()
    assert client.get(lease.key) == b"someone else"  # not deleted either


def test_a_holder_that_cannot_renew_fences_itself_before_the_key_expires(prefix: str) -> None:
    client = redis.Redis.from_url(REDIS_URL)
    now = [100.0]
    lease = RedisLease(client, "w", prefix=prefix, ttl=3.0, clock=lambda: now[0])
    lease.acquire()
    try:
        assert lease.held
        now[0] += 3.0 * 0.79  # within ttl x (1 - margin): still ours
        assert lease.held
        now[0] += 0.05  # past it, though Redis still has the key for a while
        assert not lease.held
        assert client.pttl(lease.key) > 0
    finally:
        lease.release()
